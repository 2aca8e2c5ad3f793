//! The plausibility filter. Well-formed but implausible points are stored for audit, marked with
//! the reason, and never become current, never get published, never feed alerts. Each
//! organisation sets its own limits ([`FilterSettings`]); the defaults suit road vehicles.
use chrono::{DateTime, Duration, Utc};
use geo::{Distance, Haversine, Point};
use serde::{Deserialize, Serialize};

use crate::{
    error::AppError,
    tracking::position::{FilterReason, LastFix, NewPosition},
};

/// How an organisation's positions are judged. `None` turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
#[schema(
    default,
    description = "How an organisation's positions are judged. A point that fails a check is stored with `filter_reason` set, never becomes current, is never published and never feeds alerts. `null` turns a limit off."
)]
pub struct FilterSettings {
    /// Mark fixes at 0°, 0° (`null_island`): what a phone without a fix, or a tracker's blank
    /// record, reports.
    pub zero: bool,
    /// Seconds a fix may be ahead of the server clock (a device with a wrong clock) before it is
    /// marked `future`. Fixes more than 24 h ahead are rejected outright.
    #[schema(maximum = 86400)]
    pub max_ahead_s: u32,
    /// Hours a fix may be older than the server clock when it arrives before it is marked
    /// `outdated`. Catches GNSS week-number rollovers, which date fixes about 19.6 years back.
    #[schema(minimum = 1, maximum = 263520)]
    pub max_age_h: Option<u32>,
    /// Accuracy radius in metres beyond which a fix says too little about where the vehicle is
    /// (`inaccurate`).
    #[schema(minimum = 1, maximum = 100000)]
    pub max_accuracy_m: Option<f64>,
    /// Speed in m/s, implied by the distance and time from the current position, beyond which a
    /// fix is a jump (a GNSS glitch) rather than movement.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_speed_mps: Option<f64>,
}

impl Default for FilterSettings {
    fn default() -> Self {
        FilterSettings {
            zero: true,
            max_ahead_s: 300,
            max_age_h: Some(30 * 24),
            max_accuracy_m: Some(500.0),
            // No road vehicle moves faster: 360 km/h.
            max_speed_mps: Some(100.0),
        }
    }
}

impl FilterSettings {
    /// What `key` accepts, as the error for any other value says it; none for an unknown key.
    pub fn accepted(key: &str) -> Option<&'static str> {
        Some(match key {
            "zero" => "must be true or false",
            "max_ahead_s" => "must be a whole number of seconds, 0 to 86400",
            "max_age_h" => "must be a whole number of hours, 1 to 263520, or null for no limit",
            "max_accuracy_m" => "must be 1 to 100000 metres, or null",
            "max_speed_mps" => "must be 1 to 1000 m/s, or null",
            _ => return None,
        })
    }

    /// Range checks, naming the field as `filter.<name>`.
    pub fn validate(&self) -> Result<(), AppError> {
        let bad = |name: &str| {
            let accepted = Self::accepted(name).expect("every checked key says what it accepts");
            Err(AppError::validation(
                format!("filter.{name}"),
                format!("filter.{name} {accepted}"),
            ))
        };
        if self.max_ahead_s > 86_400 {
            return bad("max_ahead_s");
        }
        if self.max_age_h.is_some_and(|h| h == 0 || h > 24 * 366 * 30) {
            return bad("max_age_h");
        }
        if self
            .max_accuracy_m
            .is_some_and(|m| !(1.0..=100_000.0).contains(&m))
        {
            return bad("max_accuracy_m");
        }
        if self
            .max_speed_mps
            .is_some_and(|v| !(1.0..=1_000.0).contains(&v))
        {
            return bad("max_speed_mps");
        }
        Ok(())
    }
}

/// Seconds a fix may be stamped ahead of its arrival, beyond what its device's clock usually
/// shows, before it is `clock_ahead`. A phone's clock is set by the network or by GNSS time, so
/// its fixes arrive a little after they were taken; one stamped minutes ahead would hold the
/// marker (every genuine fix after it would look late) until real time caught up.
pub const CLOCK_TOLERANCE_S: f64 = 60.0;
/// How far one fix can raise what a device's clock is learnt to show: a clock that really runs
/// ahead is learnt within a few dozen fixes, one wild fix teaches next to nothing.
const CLOCK_LEARN_STEP_S: f64 = 10.0;

/// What a device's clock usually shows: how many seconds its live fixes are stamped ahead of
/// their arrival at the server (negative: behind, the usual network delay).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DeviceClock {
    pub offset_s: Option<f64>,
}

impl DeviceClock {
    /// Whether a fix stamped `offset_s` ahead of its arrival runs ahead of this clock's habit by
    /// more than [`CLOCK_TOLERANCE_S`]. A clock is never held to less than the server's own.
    pub fn is_ahead(&self, offset_s: f64) -> bool {
        offset_s > self.offset_s.unwrap_or(0.0).max(0.0) + CLOCK_TOLERANCE_S
    }

    /// Learns from one fix's offset: down at once (a late fix, or a clock put right only makes
    /// the check stricter, never laxer than the server clock), up by at most a step per fix.
    pub fn learn(&mut self, offset_s: f64) {
        let known = self.offset_s.unwrap_or(0.0);
        self.offset_s = Some(if offset_s <= known {
            offset_s
        } else {
            offset_s.min(known.max(0.0) + CLOCK_LEARN_STEP_S)
        });
    }
}

/// Metres per second a vehicle must have moved to be at `(lat, lon)` at `t`, having been at
/// `from`; `None` when the two times are equal.
fn implied_speed(from: &LastFix, t: DateTime<Utc>, lat: f64, lon: f64) -> Option<f64> {
    let dt = (t - from.recorded_at)
        .num_microseconds()
        .unwrap_or(i64::MAX)
        .unsigned_abs() as f64
        / 1e6;
    let d = Haversine::distance(Point::new(from.lon, from.lat), Point::new(lon, lat));
    (dt > 0.0).then(|| d / dt)
}

/// Whether a late fix (older than the current position) is a jump: judged against its
/// neighbours in time, the good fixes just before and just after it (stored, or in the same
/// batch), it is one when every neighbour it has implies a speed beyond the limit. A glitch
/// inside a phone's backlog is far from both; a genuine fix next to an old unflagged glitch is
/// still near its other neighbour.
pub fn judge_late(
    p: &NewPosition,
    before: Option<&LastFix>,
    after: Option<&LastFix>,
    settings: &FilterSettings,
) -> Option<FilterReason> {
    let limit = settings.max_speed_mps?;
    let speeds: Vec<f64> = [before, after]
        .into_iter()
        .flatten()
        .filter_map(|n| implied_speed(n, p.recorded_at, p.lat, p.lon))
        .collect();
    (!speeds.is_empty() && speeds.iter().all(|v| *v > limit)).then_some(FilterReason::Jump)
}

/// Whether `p` is at 0°, 0°: what a phone without a fix, or a tracker's blank record, reports.
pub fn at_null_island(p: &NewPosition) -> bool {
    p.lat.abs() < 1e-7 && p.lon.abs() < 1e-7
}

/// Why `p` is implausible under `settings`, if it is. `last` is the vehicle's current position.
pub fn judge(
    p: &NewPosition,
    last: Option<&LastFix>,
    now: DateTime<Utc>,
    settings: &FilterSettings,
) -> Option<FilterReason> {
    if settings.zero && at_null_island(p) {
        return Some(FilterReason::NullIsland);
    }
    if p.recorded_at > now + Duration::seconds(settings.max_ahead_s.into()) {
        return Some(FilterReason::Future);
    }
    if let Some(hours) = settings.max_age_h {
        if p.recorded_at < now - Duration::hours(hours.into()) {
            return Some(FilterReason::Outdated);
        }
    }
    if let (Some(accuracy), Some(limit)) = (p.accuracy, settings.max_accuracy_m) {
        if accuracy > limit {
            return Some(FilterReason::Inaccurate);
        }
    }
    if let (Some(last), Some(limit)) = (last, settings.max_speed_mps) {
        // Only a newer point can jump here (late ones are judged by [`judge_late`]); the speed
        // it implies shrinks as time passes, so a vehicle that really moved while silent (or
        // whose last accepted fix was itself off) is accepted again once the distance is
        // plausible for the time gone by.
        if p.recorded_at > last.recorded_at
            && implied_speed(last, p.recorded_at, p.lat, p.lon).is_some_and(|v| v > limit)
        {
            return Some(FilterReason::Jump);
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

    fn judged(p: &NewPosition, last: Option<&LastFix>, now: DateTime<Utc>) -> Option<FilterReason> {
        judge(p, last, now, &FilterSettings::default())
    }

    #[test]
    fn flags_null_island_future_outdated_and_inaccurate_points() {
        let now = Utc::now();
        assert_eq!(
            judged(&at(0.0, 0.0, now), None, now),
            Some(FilterReason::NullIsland)
        );
        assert_eq!(
            judged(&at(1.0, 1.0, now + Duration::minutes(6)), None, now),
            Some(FilterReason::Future)
        );
        assert_eq!(
            judged(&at(1.0, 1.0, now - Duration::days(31)), None, now),
            Some(FilterReason::Outdated)
        );
        let mut vague = at(1.0, 1.0, now);
        vague.accuracy = Some(800.0);
        assert_eq!(judged(&vague, None, now), Some(FilterReason::Inaccurate));
        assert_eq!(judged(&at(1.0, 1.0, now), None, now), None);
    }

    #[test]
    fn an_organisation_can_loosen_or_turn_off_each_limit() {
        let now = Utc::now();
        let off = FilterSettings {
            zero: false,
            max_ahead_s: 3600,
            max_age_h: None,
            max_accuracy_m: None,
            max_speed_mps: None,
        };
        let mut vague = at(0.0, 0.0, now + Duration::minutes(30));
        vague.accuracy = Some(5_000.0);
        assert_eq!(judge(&vague, None, now, &off), None);
        assert_eq!(
            judge(&at(1.0, 1.0, now - Duration::days(400)), None, now, &off),
            None
        );
        let last = LastFix {
            recorded_at: now - Duration::seconds(1),
            lat: 1.0,
            lon: 1.0,
        };
        assert_eq!(judge(&at(1.0, 2.0, now), Some(&last), now, &off), None);
        let strict = FilterSettings {
            max_accuracy_m: Some(20.0),
            ..FilterSettings::default()
        };
        let mut fair = at(1.0, 1.0, now);
        fair.accuracy = Some(25.0);
        assert_eq!(
            judge(&fair, None, now, &strict),
            Some(FilterReason::Inaccurate)
        );
    }

    #[test]
    fn settings_out_of_range_name_their_field() {
        let bad = FilterSettings {
            max_speed_mps: Some(0.0),
            ..FilterSettings::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().field(),
            Some("filter.max_speed_mps")
        );
        let bad = FilterSettings {
            max_age_h: Some(0),
            ..FilterSettings::default()
        };
        assert_eq!(
            bad.validate().unwrap_err().field(),
            Some("filter.max_age_h")
        );
        assert!(FilterSettings::default().validate().is_ok());
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
            judged(&jumped, Some(&last), Utc::now()),
            Some(FilterReason::Jump)
        );
        let later = at(48.1395, 11.5263, t0 + Duration::seconds(10));
        assert_eq!(judged(&later, Some(&last), Utc::now()), None);
    }
}
