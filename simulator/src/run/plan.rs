//! A trip as the vehicle will drive it: the true position at each fix time (recorded, or
//! synthesised by the speed profile), changed by incidents, with the stretches where the phone
//! has no signal. Times are trace seconds from the trip's start; the speed-up turns them into
//! wall-clock time.

use rand::Rng;

use super::incident::Kind;
use crate::geo::LatLon;
use crate::tracks::{self, Trip};

/// One fix the phone will record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Trace seconds from the start of the trip.
    pub t: f64,
    pub point: LatLon,
    pub altitude: Option<f64>,
    /// m/s over the step from the sample before; `None` on the first.
    pub speed: Option<f64>,
    pub heading: Option<f64>,
    /// Recorded without signal: held back and sent when the signal returns.
    pub offline: bool,
}

impl Sample {
    pub fn at(t: f64, point: LatLon, altitude: Option<f64>) -> Self {
        Self {
            t,
            point,
            altitude,
            speed: None,
            heading: None,
            offline: false,
        }
    }
}

/// Something a demo operator should hear about when the drive reaches trace time `t`.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub t: f64,
    pub message: String,
    /// The incident that starts here, counted in the vehicle's report once it happens.
    pub starts: Option<Kind>,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub samples: Vec<Sample>,
    pub marks: Vec<Mark>,
}

impl Plan {
    /// The recorded fixes at their recorded times.
    pub fn recorded(trip: &Trip) -> Self {
        let samples = trip
            .fixes
            .iter()
            .map(|f| Sample {
                t: trip.offset(f).as_secs_f64(),
                point: f.point,
                altitude: f.altitude,
                speed: f.speed,
                heading: f.heading,
                offline: false,
            })
            .collect();
        Self {
            samples,
            marks: Vec::new(),
        }
    }

    pub fn duration(&self) -> f64 {
        self.samples.last().map_or(0.0, |s| s.t)
    }

    /// Starts the trip `from` trace seconds in, as if the vehicle had been driving already.
    pub fn start_at(&mut self, from: f64) {
        let keep = self.samples.partition_point(|s| s.t < from);
        // At least two samples stay, so the trip still goes somewhere.
        let keep = keep.min(self.samples.len().saturating_sub(2));
        self.samples.drain(..keep);
        if let Some(first) = self.samples.first().map(|s| s.t) {
            for s in &mut self.samples {
                s.t -= first;
            }
        }
        if let Some(first) = self.samples.first_mut() {
            first.speed = None;
        }
    }

    /// Speed and heading from the geometry and timing, after incidents have moved or retimed
    /// samples.
    pub fn derive_motion(&mut self) {
        let mut previous: Option<Sample> = None;
        for s in &mut self.samples {
            if let Some(p) = previous {
                let dt = s.t - p.t;
                if dt > 0.0 {
                    let (speed, heading) = tracks::step_motion(p.point, s.point, dt, p.heading);
                    s.speed = Some(speed);
                    s.heading = heading;
                }
            } else {
                s.speed = None;
            }
            previous = Some(*s);
        }
    }

    /// Plays the stretch `(from, to]` at real time whatever the speed-up: its trace seconds are
    /// stretched `speedup` times, so that they pass as real seconds, and everything after it
    /// comes that much later. Speeds and headings stay as they were (true ones).
    pub fn real_time(&mut self, from: f64, to: f64, speedup: f64) {
        let stretch = |t: f64| {
            if t <= from {
                t
            } else if t <= to {
                from + (t - from) * speedup
            } else {
                t + (to - from) * (speedup - 1.0)
            }
        };
        for s in &mut self.samples {
            s.t = stretch(s.t);
        }
        for m in &mut self.marks {
            m.t = stretch(m.t);
        }
    }

    /// The phone loses its signal for `duration` trace seconds from `start`: fixes are still
    /// recorded, but held back.
    pub fn lose_signal(&mut self, start: f64, duration: f64, wall_s: f64) {
        let end = start + duration;
        let mut held = 0;
        for s in &mut self.samples {
            if s.t >= start && s.t < end {
                s.offline = true;
                held += 1;
            }
        }
        if held > 0 {
            // The outbox says when the signal is back, with what it catches up.
            self.mark(
                start,
                format!("signal lost for {wall_s:.0} s (a tunnel, a dead zone); recording on"),
            );
        }
    }

    pub fn mark(&mut self, t: f64, message: String) {
        self.insert_mark(Mark {
            t,
            message,
            starts: None,
        });
    }

    pub fn mark_incident(&mut self, t: f64, kind: Kind, message: String) {
        self.insert_mark(Mark {
            t,
            message,
            starts: Some(kind),
        });
    }

    fn insert_mark(&mut self, mark: Mark) {
        let at = self.marks.partition_point(|m| m.t <= mark.t);
        self.marks.insert(at, mark);
    }
}

/// When a recurring event (a signal loss, an incident) next happens, counted in trace seconds
/// of driving across trips and laps, so that events rarer than a trip still come round.
#[derive(Debug, Clone)]
pub struct Every {
    mean_s: f64,
    next_at: f64,
}

impl Every {
    /// Events `mean_s` trace seconds apart on average (each gap 0.5–1.5 times the mean); `None`
    /// when `mean_s` is zero, which turns the event off.
    pub fn new<R: Rng>(mean_s: f64, rng: &mut R) -> Option<Self> {
        (mean_s > 0.0).then(|| Self {
            mean_s,
            next_at: mean_s * rng.gen_range(0.5..1.5),
        })
    }

    /// Start times (trip seconds) of the events that fall in a trip of `trip_s` seconds which
    /// starts after `driven_s` seconds of driving. An event lasting `length(rng)` seconds must end
    /// before the trip's last `margin_s`; one that does not fit waits for the next trip's start.
    pub fn take<R: Rng>(
        &mut self,
        driven_s: f64,
        trip_s: f64,
        margin_s: f64,
        mut length: impl FnMut(&mut R) -> f64,
        rng: &mut R,
    ) -> Vec<(f64, f64)> {
        let mut events = Vec::new();
        while self.next_at < driven_s + trip_s {
            let start = (self.next_at - driven_s).max(0.0);
            let len = length(rng);
            if start + len > trip_s - margin_s {
                self.next_at = driven_s + trip_s;
                break;
            }
            events.push((start, len));
            self.next_at = driven_s + start + len + self.mean_s * rng.gen_range(0.5..1.5);
        }
        events
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// `n` samples `dt` seconds apart, `step_m` metres apart going east.
    pub fn line(n: usize, dt: f64, step_m: f64) -> Plan {
        let start = LatLon::new(48.0, 11.0);
        let samples = (0..n)
            .map(|i| {
                let p = crate::geo::destination(start, 90.0, i as f64 * step_m);
                Sample::at(i as f64 * dt, p, None)
            })
            .collect();
        let mut plan = Plan {
            samples,
            marks: Vec::new(),
        };
        plan.derive_motion();
        plan
    }

    #[test]
    fn motion_follows_the_geometry() {
        let plan = line(5, 2.0, 20.0);
        assert_eq!(plan.samples[0].speed, None);
        for s in &plan.samples[1..] {
            assert!((s.speed.unwrap() - 10.0).abs() < 1e-6);
            assert!((s.heading.unwrap() - 90.0).abs() < 0.01);
        }
    }

    #[test]
    fn a_signal_loss_holds_back_its_stretch_and_says_so() {
        let mut plan = line(10, 1.0, 10.0);
        plan.lose_signal(3.0, 4.0, 4.0);
        let offline: Vec<bool> = plan.samples.iter().map(|s| s.offline).collect();
        assert_eq!(
            offline,
            [false, false, false, true, true, true, true, false, false, false]
        );
        let times: Vec<f64> = plan.marks.iter().map(|m| m.t).collect();
        assert_eq!(times, [3.0]);
    }

    #[test]
    fn starting_mid_trip_keeps_time_from_zero() {
        let mut plan = line(10, 1.0, 10.0);
        plan.start_at(4.5);
        assert_eq!(plan.samples.len(), 5);
        assert_eq!(plan.samples[0].t, 0.0);
        assert_eq!(plan.samples[0].speed, None);
        let mut short = line(3, 1.0, 10.0);
        short.start_at(100.0);
        assert_eq!(
            short.samples.len(),
            2,
            "a trip never shrinks below two fixes"
        );
    }

    #[test]
    fn recurring_events_carry_over_trips_and_fit_inside_them() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut every = Every::new(100.0, &mut rng).unwrap();
        let mut driven = 0.0;
        let mut all = Vec::new();
        for _ in 0..200 {
            let trip = 60.0;
            for (start, len) in every.take(driven, trip, 5.0, |_| 10.0, &mut rng) {
                assert!(start >= 0.0 && start + len <= trip - 5.0, "{start} {len}");
                all.push(driven + start);
            }
            driven += trip;
        }
        // One every 100 s on average, over 12 000 s of driving, some pushed to a trip start.
        assert!((80..=130).contains(&all.len()), "{}", all.len());
        assert!(all.windows(2).all(|w| w[1] - w[0] >= 10.0));
        assert!(Every::new(0.0, &mut rng).is_none());
    }
}
