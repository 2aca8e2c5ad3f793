//! Tracks kept small: Douglas–Peucker simplification in metres, and the compact form a closed
//! trip's simplified track is stored in.
//!
//! A stored path is a sequence of 16-byte vertices, little-endian: latitude and longitude as
//! `i32` in 1e-7 degrees (about 1 cm), milliseconds since the path's first vertex as `u32` (49
//! days), and speed in m/s as `f32` (`NaN` where the device reported none). The first vertex's
//! time is the trip's start.
use chrono::{DateTime, Duration, Utc};
use geo::{Coord, LineString, SimplifyIdx};

/// The tolerance a closed trip's track is stored at: finer than a lane, and on 1 Hz data of a
/// drive it keeps about one fix in ten.
pub const STORED_TOLERANCE_M: f64 = 2.0;

const VERTEX_BYTES: usize = 16;

/// One vertex of a track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Vertex {
    pub at: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    /// m/s, as reported.
    pub speed: Option<f32>,
}

/// An accepted fix as a track reads it from `positions` ([`FIX_COLUMNS`]).
#[derive(Debug, sqlx::FromRow)]
pub struct FixRow {
    pub recorded_at: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    pub speed: Option<f32>,
}

/// The columns of `positions` a [`FixRow`] reads.
pub const FIX_COLUMNS: &str =
    "recorded_at, ST_Y(point::geometry) AS lat, ST_X(point::geometry) AS lon, speed";

impl From<FixRow> for Vertex {
    fn from(r: FixRow) -> Vertex {
        Vertex {
            at: r.recorded_at,
            lat: r.lat,
            lon: r.lon,
            speed: r.speed,
        }
    }
}

/// The indices of the points to keep so that none left out is further than `tolerance_m` from
/// the line through those kept (Douglas–Peucker on a local equirectangular projection, exact
/// enough at the scale of a day's driving). The first and last are always kept.
pub fn keep(points: &[(f64, f64)], tolerance_m: f64) -> Vec<usize> {
    const M_PER_DEG: f64 = 111_320.0;
    if points.len() <= 2 || tolerance_m <= 0.0 {
        return (0..points.len()).collect();
    }
    let cos_lat = points[0].0.to_radians().cos();
    let line: LineString<f64> = points
        .iter()
        .map(|&(lat, lon)| Coord {
            x: lon * M_PER_DEG * cos_lat,
            y: lat * M_PER_DEG,
        })
        .collect();
    line.simplify_idx(&tolerance_m)
}

/// `items` with only those [`keep`] keeps, in order.
pub fn simplify<T>(items: Vec<T>, tolerance_m: f64, at: impl Fn(&T) -> (f64, f64)) -> Vec<T> {
    let points: Vec<(f64, f64)> = items.iter().map(at).collect();
    let kept = keep(&points, tolerance_m);
    if kept.len() == items.len() {
        return items;
    }
    let mut kept = kept.into_iter().peekable();
    items
        .into_iter()
        .enumerate()
        .filter_map(|(i, item)| {
            (kept.peek() == Some(&i)).then(|| {
                kept.next();
                item
            })
        })
        .collect()
}

/// `vertices` (in time order, spanning less than 49 days) in the stored form.
pub fn encode(vertices: &[Vertex]) -> Vec<u8> {
    let Some(first) = vertices.first() else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(vertices.len() * VERTEX_BYTES);
    for v in vertices {
        let ms = (v.at - first.at)
            .num_milliseconds()
            .clamp(0, u32::MAX.into()) as u32;
        out.extend_from_slice(&((v.lat * 1e7).round() as i32).to_le_bytes());
        out.extend_from_slice(&((v.lon * 1e7).round() as i32).to_le_bytes());
        out.extend_from_slice(&ms.to_le_bytes());
        out.extend_from_slice(&v.speed.unwrap_or(f32::NAN).to_le_bytes());
    }
    out
}

/// A stored path read back, its first vertex at `start`. Trailing bytes short of a vertex are
/// ignored (a stored path never has them).
pub fn decode(start: DateTime<Utc>, bytes: &[u8]) -> Vec<Vertex> {
    bytes
        .chunks_exact(VERTEX_BYTES)
        .map(|v| {
            let word = |i: usize| <[u8; 4]>::try_from(&v[i..i + 4]).expect("four bytes");
            let speed = f32::from_le_bytes(word(12));
            Vertex {
                lat: f64::from(i32::from_le_bytes(word(0))) / 1e7,
                lon: f64::from(i32::from_le_bytes(word(4))) / 1e7,
                at: start + Duration::milliseconds(u32::from_le_bytes(word(8)).into()),
                speed: (!speed.is_nan()).then_some(speed),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_path_reads_back_as_written_to_the_centimetre_and_millisecond() {
        let vertices: Vec<Vertex> = (0..100)
            .map(|i| Vertex {
                at: at(i * 7) + Duration::milliseconds(i * 3),
                lat: 48.137_154_3 + i as f64 * 1.3e-5,
                lon: -11.575_490_1 - i as f64 * 2.1e-5,
                speed: (i % 3 != 0).then_some(i as f32 * 0.25),
            })
            .collect();
        let bytes = encode(&vertices);
        assert_eq!(bytes.len(), 100 * VERTEX_BYTES);
        let back = decode(vertices[0].at, &bytes);
        assert_eq!(back.len(), vertices.len());
        for (a, b) in vertices.iter().zip(&back) {
            assert_eq!(a.at, b.at);
            assert_eq!(a.speed, b.speed);
            assert!((a.lat - b.lat).abs() < 1e-7 && (a.lon - b.lon).abs() < 1e-7);
        }
        assert!(decode(at(0), &[]).is_empty());
    }

    #[test]
    fn simplification_keeps_the_ends_and_the_corners() {
        // East 1 km along a line, then north 1 km: the corner must stay, the points on the
        // straight parts go.
        let mut points = Vec::new();
        for i in 0..=100 {
            points.push((48.0, 11.0 + i as f64 * 0.000_134));
        }
        for i in 1..=100 {
            points.push((48.0 + i as f64 * 0.000_09, 11.0134));
        }
        assert_eq!(keep(&points, 2.0), vec![0, 100, 200]);
        assert_eq!(keep(&points, 0.0).len(), 201, "no tolerance keeps all");
        let kept = simplify(points.clone(), 2.0, |&p| p);
        assert_eq!(kept, vec![points[0], points[100], points[200]]);
    }
}
