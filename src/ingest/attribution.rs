//! Which shipment a fix belongs to: the one whose time window on the vehicle holds the time the
//! fix was taken, not the one the vehicle carries when the fix arrives. A phone catching up on
//! yesterday's delivery must not draw it into today's shipment, nor start today's.
//!
//! A shipment's window runs from when it was assigned its vehicle to when it ended (arrived,
//! delivered or cancelled); the active shipment's is open. A shipment that ended without ever
//! starting took no fixes, and has no window.
use chrono::{DateTime, Utc};

/// One shipment's claim on its vehicle's fixes: `from` ≤ `recorded_at` < `until`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub shipment_id: i64,
    pub from: DateTime<Utc>,
    /// `None` while the shipment is active.
    pub until: Option<DateTime<Utc>>,
}

impl Window {
    pub fn holds(&self, t: DateTime<Utc>) -> bool {
        self.from <= t && self.until.is_none_or(|until| t < until)
    }
}

/// The shipment a fix taken at `t` belongs to, among a vehicle's `windows`. `only` is the
/// shipment the sender said it was sharing for (the driver's page names it): the fix joins that
/// shipment if its window holds `t`, and no other. Windows of one vehicle do not overlap (a
/// vehicle carries one active shipment at a time); if data written by hand makes them, the latest
/// assignment wins.
pub fn shipment_for(t: DateTime<Utc>, windows: &[Window], only: Option<i64>) -> Option<i64> {
    windows
        .iter()
        .filter(|w| w.holds(t))
        .max_by_key(|w| w.from)
        .map(|w| w.shipment_id)
        .filter(|id| only.is_none_or(|only| only == *id))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 2, h, m, 0).unwrap()
    }

    /// Shipment 78 ran 08:00–09:50 on the vehicle; 79 was assigned at 10:00 and is active.
    fn day() -> Vec<Window> {
        vec![
            Window {
                shipment_id: 78,
                from: at(8, 0),
                until: Some(at(9, 50)),
            },
            Window {
                shipment_id: 79,
                from: at(10, 0),
                until: None,
            },
        ]
    }

    #[test]
    fn a_fix_joins_the_shipment_whose_window_holds_its_time() {
        let cases = [
            (at(7, 59), None, "before any shipment"),
            (at(8, 0), Some(78), "the first instant of 78"),
            (at(9, 30), Some(78), "a backlog of 78 arriving during 79"),
            (at(9, 50), None, "the instant 78 ended"),
            (at(9, 55), None, "between the two"),
            (at(10, 0), Some(79), "the instant 79 was assigned"),
            (at(18, 0), Some(79), "79, open"),
        ];
        for (t, want, case) in cases {
            assert_eq!(shipment_for(t, &day(), None), want, "{case}");
        }
    }

    #[test]
    fn the_named_shipment_is_honoured_and_no_other_is_joined() {
        let cases = [
            (at(9, 30), Some(78), Some(78), "78's own fix"),
            (at(10, 30), Some(78), None, "sharing for 78 after it ended"),
            (at(10, 30), Some(79), Some(79), "79's own fix"),
            (
                at(9, 30),
                Some(79),
                None,
                "sharing for 79 before it was assigned",
            ),
            (
                at(9, 30),
                Some(12),
                None,
                "a shipment without a window here",
            ),
        ];
        for (t, only, want, case) in cases {
            assert_eq!(shipment_for(t, &day(), only), want, "{case}");
        }
    }

    #[test]
    fn no_windows_no_shipment() {
        assert_eq!(shipment_for(at(9, 0), &[], None), None);
    }

    #[test]
    fn overlapping_windows_prefer_the_latest_assignment() {
        let windows = [
            Window {
                shipment_id: 1,
                from: at(8, 0),
                until: Some(at(12, 0)),
            },
            Window {
                shipment_id: 2,
                from: at(11, 0),
                until: None,
            },
        ];
        assert_eq!(shipment_for(at(11, 30), &windows, None), Some(2));
        assert_eq!(shipment_for(at(10, 0), &windows, None), Some(1));
    }
}
