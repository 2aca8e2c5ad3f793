//! The plausibility filter. Well-formed but implausible points are stored for audit, marked with
//! the reason, and never become current, never get published, never feed alerts.
use chrono::{DateTime, Duration, Utc};
use geo::{Distance, Haversine, Point};

use crate::position::NewPosition;

/// A point this far ahead of the server clock (but within the 24 h accepted at all) is a device
/// with a wrong clock.
pub const FUTURE_TOLERANCE: Duration = Duration::minutes(5);
/// Accuracy radius beyond which a fix says little about where the vehicle is.
pub const MAX_ACCURACY_M: f64 = 500.0;
/// No road vehicle moves faster; a faster jump is a GNSS glitch (360 km/h).
pub const MAX_SPEED_MPS: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterReason {
    NullIsland,
    Future,
    Inaccurate,
    Jump,
}

impl FilterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FilterReason::NullIsland => "null_island",
            FilterReason::Future => "future",
            FilterReason::Inaccurate => "inaccurate",
            FilterReason::Jump => "jump",
        }
    }
}

/// The vehicle's current position, which a new point is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastFix {
    pub recorded_at: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
}

/// Why `p` is implausible, if it is. `last` is the vehicle's current position.
pub fn judge(p: &NewPosition, last: Option<&LastFix>, now: DateTime<Utc>) -> Option<FilterReason> {
    if p.lat.abs() < 1e-7 && p.lon.abs() < 1e-7 {
        return Some(FilterReason::NullIsland);
    }
    if p.recorded_at > now + FUTURE_TOLERANCE {
        return Some(FilterReason::Future);
    }
    if p.accuracy.is_some_and(|a| a > MAX_ACCURACY_M) {
        return Some(FilterReason::Inaccurate);
    }
    if let Some(last) = last {
        // Only a newer point can jump; the speed it implies shrinks as time passes, so a vehicle
        // that really moved while silent is accepted again soon.
        let dt = (p.recorded_at - last.recorded_at)
            .num_microseconds()
            .unwrap_or(i64::MAX) as f64
            / 1e6;
        if dt > 0.0 {
            let d = Haversine::distance(Point::new(last.lon, last.lat), Point::new(p.lon, p.lat));
            if d / dt > MAX_SPEED_MPS {
                return Some(FilterReason::Jump);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(lat: f64, lon: f64, t: DateTime<Utc>) -> NewPosition {
        NewPosition {
            lat,
            lon,
            recorded_at: t,
            accuracy: Some(5.0),
            speed: None,
            heading: None,
            altitude: None,
            battery: None,
            attributes: None,
        }
    }

    #[test]
    fn flags_null_island_future_and_inaccurate_points() {
        let now = Utc::now();
        assert_eq!(
            judge(&at(0.0, 0.0, now), None, now),
            Some(FilterReason::NullIsland)
        );
        assert_eq!(
            judge(&at(1.0, 1.0, now + Duration::minutes(6)), None, now),
            Some(FilterReason::Future)
        );
        let mut vague = at(1.0, 1.0, now);
        vague.accuracy = Some(800.0);
        assert_eq!(judge(&vague, None, now), Some(FilterReason::Inaccurate));
        assert_eq!(judge(&at(1.0, 1.0, now), None, now), None);
    }

    #[test]
    fn the_munich_tunnel_jump_is_filtered_and_heals_with_time() {
        // Two fixes of the real Munich trace, 470 m apart, one second apart.
        let t0 = Utc::now() - Duration::minutes(1);
        let last = LastFix {
            recorded_at: t0,
            lat: 48.1395,
            lon: 11.5200,
        };
        let jumped = at(48.1395, 11.5263, t0 + Duration::seconds(1));
        assert_eq!(
            judge(&jumped, Some(&last), Utc::now()),
            Some(FilterReason::Jump)
        );
        let later = at(48.1395, 11.5263, t0 + Duration::seconds(10));
        assert_eq!(judge(&later, Some(&last), Utc::now()), None);
    }
}
