//! Writing GPX 1.1, shared by a vehicle's export and a shipment's track: a document with one
//! track, split into segments where the data has gaps, written point by point so that a long
//! history is never held whole.
//!
//! GPX 1.1 has elevation and time for a track point but no speed or course; they go in its
//! `<extensions>`, as Garmin's `TrackPointExtension` (which most GPX readers know) writes them,
//! and accuracy and battery in Waymark's own namespace, so an export reads back unchanged.
use std::fmt::Write;

use chrono::{DateTime, SecondsFormat, Utc};

/// The GPX media type.
pub const CONTENT_TYPE: &str = "application/gpx+xml";
/// Garmin's track point extension (version 2): `speed` (m/s) and `course` (degrees).
pub const GARMIN_NS: &str = "http://www.garmin.com/xmlschemas/TrackPointExtension/v2";
/// Waymark's own extension elements: `accuracy` (metres) and `battery` (percent).
pub const WAYMARK_NS: &str = "urn:waymark:gpx:1";

/// One track point: where and when, and what the device said besides.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct TrackPoint {
    pub recorded_at: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    /// Metres.
    pub altitude: Option<f32>,
    /// m/s.
    pub speed: Option<f32>,
    /// Degrees clockwise from north.
    pub heading: Option<f32>,
    /// Metres.
    pub accuracy: Option<f32>,
    /// Percent.
    pub battery: Option<f32>,
}

/// A time as every export writes it: RFC 3339 in UTC, with as many fractional digits as it has.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The document's start, up to the opening of its one track, named `name`.
pub fn begin(out: &mut String, name: &str) {
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <gpx version=\"1.1\" creator=\"Waymark\" xmlns=\"http://www.topografix.com/GPX/1/1\" \
         xmlns:gpxtpx=\"{GARMIN_NS}\" xmlns:wm=\"{WAYMARK_NS}\">\n<trk><name>{}</name>\n",
        escape(name)
    );
}

/// Opens a track segment.
pub fn open_segment(out: &mut String) {
    out.push_str("<trkseg>\n");
}

/// Closes a track segment.
pub fn close_segment(out: &mut String) {
    out.push_str("</trkseg>\n");
}

/// The document's end, after the last segment is closed.
pub fn end(out: &mut String) {
    out.push_str("</trk>\n</gpx>\n");
}

/// One `<trkpt>`, its children in the order the schema wants them.
pub fn point(out: &mut String, p: &TrackPoint) {
    let _ = write!(out, "<trkpt lat=\"{}\" lon=\"{}\">", p.lat, p.lon);
    if let Some(ele) = p.altitude {
        let _ = write!(out, "<ele>{ele}</ele>");
    }
    let _ = write!(out, "<time>{}</time>", time(p.recorded_at));
    // The extension's course is below 360: north is 0.
    let course = p.heading.map(|h| if h >= 360.0 { 0.0 } else { h });
    if p.speed.is_some() || course.is_some() || p.accuracy.is_some() || p.battery.is_some() {
        out.push_str("<extensions>");
        if p.speed.is_some() || course.is_some() {
            out.push_str("<gpxtpx:TrackPointExtension>");
            if let Some(v) = p.speed {
                let _ = write!(out, "<gpxtpx:speed>{v}</gpxtpx:speed>");
            }
            if let Some(v) = course {
                let _ = write!(out, "<gpxtpx:course>{v}</gpxtpx:course>");
            }
            out.push_str("</gpxtpx:TrackPointExtension>");
        }
        if let Some(v) = p.accuracy {
            let _ = write!(out, "<wm:accuracy>{v}</wm:accuracy>");
        }
        if let Some(v) = p.battery {
            let _ = write!(out, "<wm:battery>{v}</wm:battery>");
        }
        out.push_str("</extensions>");
    }
    out.push_str("</trkpt>\n");
}

/// A whole document of one segment, for answers small enough to build at once.
pub fn document<'a>(name: &str, points: impl IntoIterator<Item = &'a TrackPoint>) -> String {
    let mut out = String::new();
    begin(&mut out, name);
    open_segment(&mut out);
    for p in points {
        point(&mut out, p);
    }
    close_segment(&mut out);
    end(&mut out);
    out
}

/// Text made safe for XML content and attribute values. Characters XML 1.0 cannot hold at all
/// (control characters other than tab and line breaks) are dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_control_characters_dropped() {
        assert_eq!(
            escape("A&B <\"x\"> 'y'\u{1}"),
            "A&amp;B &lt;&quot;x&quot;&gt; &apos;y&apos;"
        );
    }

    #[test]
    fn a_point_writes_its_children_in_schema_order() {
        let p = TrackPoint {
            recorded_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            lat: 48.1374,
            lon: 11.5755,
            altitude: Some(520.5),
            speed: Some(8.5),
            heading: Some(360.0),
            accuracy: Some(5.0),
            battery: None,
        };
        let mut out = String::new();
        point(&mut out, &p);
        assert_eq!(
            out,
            "<trkpt lat=\"48.1374\" lon=\"11.5755\"><ele>520.5</ele><time>2023-11-14T22:13:20.123456Z</time>\
             <extensions><gpxtpx:TrackPointExtension><gpxtpx:speed>8.5</gpxtpx:speed>\
             <gpxtpx:course>0</gpxtpx:course></gpxtpx:TrackPointExtension>\
             <wm:accuracy>5</wm:accuracy></extensions></trkpt>\n"
        );
    }
}
