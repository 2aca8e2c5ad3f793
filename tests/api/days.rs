//! A delivery day from a real trace, as the history tests post it: the Munich car's recorded
//! drive (1 Hz, about 20 minutes), 40 minutes parked at its far end with a fix every 30 s
//! wandering up to 30 m (a phone in a parked van), and the drive back.
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use geo::{Distance, Haversine, Point};
use serde_json::{json, Value};

/// One fix to post.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fix {
    pub at: DateTime<Utc>,
    pub lat: f64,
    pub lon: f64,
    /// m/s.
    pub speed: Option<f64>,
}

impl Fix {
    pub(crate) fn metres_to(&self, lat: f64, lon: f64) -> f64 {
        Haversine::distance(Point::new(self.lon, self.lat), Point::new(lon, lat))
    }

    /// As a phone posts it.
    pub(crate) fn json(&self) -> Value {
        json!({"lat": self.lat, "lon": self.lon, "speed": self.speed, "accuracy": 5.0,
               "recorded_at": self.at.to_rfc3339_opts(SecondsFormat::Millis, true)})
    }
}

/// The Munich car's recorded drive, as recorded: the server's filter marks the 470 m jump out of
/// the tunnel itself.
pub(crate) fn munich() -> Vec<Fix> {
    let car = waymark_sim::tracks::fleet()
        .unwrap()
        .into_iter()
        .find(|v| v.name == "Car Munich")
        .unwrap();
    car.trips[0]
        .fixes
        .iter()
        .map(|f| Fix {
            at: f.at,
            lat: f.point.lat,
            lon: f.point.lon,
            speed: f.speed,
        })
        .collect()
}

/// The drive from `start`, parked 40 minutes at its end, and the drive back.
pub(crate) struct Delivery {
    pub fixes: Vec<Fix>,
    /// Where it parked.
    pub place: (f64, f64),
    /// The index of the drive back's first fix.
    pub back_from: usize,
}

impl Delivery {
    pub(crate) fn at(start: DateTime<Utc>) -> Delivery {
        let drive = munich();
        let shift = start - drive[0].at;
        let out: Vec<Fix> = drive
            .iter()
            .map(|f| Fix {
                at: f.at + shift,
                ..*f
            })
            .collect();
        let end = *out.last().unwrap();
        let parked: Vec<Fix> = (1..=80i64)
            .map(|i| Fix {
                at: end.at + Duration::seconds(30 * i),
                lat: end.lat + ((i * 7919) % 61 - 30) as f64 / 111_195.0,
                lon: end.lon + ((i * 104_729) % 41 - 20) as f64 / 75_000.0,
                speed: Some(0.0),
            })
            .collect();
        let leave = parked.last().unwrap().at + Duration::seconds(30);
        let last = drive.last().unwrap().at;
        // Driven the other way, each fix's speed is that of the step the car takes to it: the
        // recorded step's, which the recording gives the fix at its other end.
        let back: Vec<Fix> = (0..drive.len())
            .rev()
            .map(|i| Fix {
                at: leave + (last - drive[i].at),
                speed: drive.get(i + 1).and_then(|next| next.speed),
                ..drive[i]
            })
            .collect();
        let back_from = out.len() + parked.len();
        Delivery {
            fixes: [out, parked, back].concat(),
            place: (end.lat, end.lon),
            back_from,
        }
    }

    /// Every fix as a phone posts it.
    pub(crate) fn json(&self) -> Vec<Value> {
        self.fixes.iter().map(Fix::json).collect()
    }
}
