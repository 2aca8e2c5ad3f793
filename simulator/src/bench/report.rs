//! The bench's findings, as a text table for people and as JSON for scripts.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::load::LoadStats;
use super::watch::{Ended, Watch, WatchStats};
use crate::config::{BenchArgs, Shape};

#[derive(Debug, Serialize)]
pub struct Report {
    pub urls: Vec<String>,
    pub config: Setup,
    /// Absent with `--idle-only`, which posts nothing.
    pub ingest: Option<Ingest>,
    pub delivery: Delivery,
    pub memory: Memory,
}

#[derive(Debug, Serialize)]
pub struct Setup {
    pub shape: Shape,
    /// `vehicle:{id}` topics per subscriber in the `fleet` shape.
    pub topics: u32,
    pub vehicles: u32,
    pub subscribers: u32,
    pub concurrency: u32,
    pub batch: u32,
    pub duration_s: u32,
    /// Positions per second offered in total; absent when posting as fast as possible.
    pub rate: Option<u32>,
    pub idle_only: bool,
}

#[derive(Debug, Serialize)]
pub struct Ingest {
    pub elapsed_s: f64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    /// Failed requests by HTTP status and error code, or `network` / `decode`.
    pub errors: BTreeMap<String, u64>,
    pub requests_per_s: f64,
    /// Positions sent, whatever the reply.
    pub positions_sent: u64,
    /// The achieved offered rate: positions sent per second.
    pub positions_sent_per_s: f64,
    /// Positions in 2xx replies: committed before the reply.
    pub durable_positions: u64,
    pub durable_positions_per_s: f64,
    pub accepted: u64,
    pub duplicates: u64,
    pub filtered: u64,
    pub latency_ms: Option<Latency>,
    /// How late paced requests left after their due instant (a pacer that cannot keep up
    /// shows here and in a lower achieved rate).
    pub schedule_lag_ms: Option<Latency>,
}

#[derive(Debug, Serialize)]
pub struct Delivery {
    /// Subscribers whose subscriptions were confirmed.
    pub subscribers: usize,
    /// Subscribers that could not connect or subscribe, by reason.
    pub subscribe_failures: BTreeMap<String, u64>,
    pub deliveries: u64,
    /// From the start of the load to the last delivery.
    pub window_s: f64,
    pub deliveries_per_s: f64,
    /// Σ over subscribers of the published positions of the vehicles each watches.
    pub expected_deliveries: u64,
    /// Deliveries per expected delivery; below 1 when the server conflates a slow subscriber's
    /// queue, closes it, or events were still on their way when the bench stopped listening.
    pub delivered_fraction: Option<f64>,
    pub unmatched: u64,
    pub error_frames: u64,
    /// Connections that ended before the bench stopped them, by how (4008 and 1012 are the
    /// server's "resume elsewhere" codes).
    pub closed_early: BTreeMap<String, u64>,
    /// POST sent → WebSocket frame received.
    pub latency_ms: Option<Latency>,
}

/// Resident memory, in KiB.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Memory {
    /// Subscribers connected and idle when the server's memory was read the second time.
    pub idle_connections: usize,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_after_kib: Option<u64>,
    /// (after − before) / idle connections.
    pub server_rss_per_idle_connection_kib: Option<f64>,
    /// The bench itself, with every subscriber connected.
    pub bench_rss_kib: Option<u64>,
    pub bench_peak_rss_kib: Option<u64>,
}

impl Memory {
    pub fn per_idle_connection(&mut self) {
        self.server_rss_per_idle_connection_kib =
            match (self.server_rss_before_kib, self.server_rss_after_kib) {
                (Some(before), Some(after)) if self.idle_connections > 0 => {
                    Some((after as f64 - before as f64) / self.idle_connections as f64)
                }
                _ => None,
            };
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub samples: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    pub fn of(histogram_us: &Histogram<u64>) -> Option<Self> {
        if histogram_us.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(Self {
            samples: histogram_us.len(),
            p50: ms(histogram_us.value_at_quantile(0.50)),
            p90: ms(histogram_us.value_at_quantile(0.90)),
            p99: ms(histogram_us.value_at_quantile(0.99)),
            max: ms(histogram_us.max()),
            mean: histogram_us.mean() / 1000.0,
        })
    }
}

fn per_second(count: u64, over: Duration) -> f64 {
    let secs = over.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// How many events the subscribers should have received: each published position once for
/// every connected subscriber that watches its vehicle.
pub fn expected_deliveries<'a>(
    published_by_vehicle: &HashMap<i64, u64>,
    watching: impl IntoIterator<Item = &'a Watch>,
) -> u64 {
    let everything: u64 = published_by_vehicle.values().sum();
    watching
        .into_iter()
        .map(|w| match w {
            Watch::Fleet => everything,
            Watch::Vehicles(ids) => ids
                .iter()
                .filter_map(|id| published_by_vehicle.get(id))
                .sum(),
            Watch::Shipment { vehicle, .. } => {
                published_by_vehicle.get(vehicle).copied().unwrap_or(0)
            }
        })
        .sum()
}

/// What the bench measured, to be reported.
pub struct Findings<'a> {
    pub args: &'a BenchArgs,
    /// The load and how long it ran; none with `--idle-only`.
    pub ingest: Option<(&'a LoadStats, Duration)>,
    /// Every subscriber, connected or not.
    pub watchers: &'a [WatchStats],
    pub subscribe_failures: BTreeMap<String, u64>,
    pub delivery_latency_us: &'a Histogram<u64>,
    pub delivery_window: Option<Duration>,
    pub expected_deliveries: u64,
    pub memory: Memory,
}

impl Report {
    pub fn new(found: Findings<'_>) -> Self {
        let args = found.args;
        let connected: Vec<&WatchStats> = found.watchers.iter().filter(|w| w.subscribed).collect();
        let deliveries: u64 = connected.iter().map(|w| w.deliveries).sum();
        let window = found.delivery_window.unwrap_or_default();
        let mut closed_early: BTreeMap<String, u64> = BTreeMap::new();
        for w in &connected {
            if w.ended != Ended::Stopped {
                *closed_early.entry(w.ended.to_string()).or_default() += 1;
            }
        }
        let ingest = found.ingest.map(|(load, elapsed)| Ingest {
            elapsed_s: elapsed.as_secs_f64(),
            requests_ok: load.requests_ok,
            requests_failed: load.requests_failed,
            errors: load.errors.clone(),
            requests_per_s: per_second(load.requests_ok, elapsed),
            positions_sent: load.positions_sent,
            positions_sent_per_s: per_second(load.positions_sent, elapsed),
            durable_positions: load.positions,
            durable_positions_per_s: per_second(load.positions, elapsed),
            accepted: load.accepted,
            duplicates: load.duplicates,
            filtered: load.filtered,
            latency_ms: Latency::of(&load.latency_us),
            schedule_lag_ms: Latency::of(&load.schedule_lag_us),
        });
        Self {
            urls: args.urls.iter().map(ToString::to_string).collect(),
            config: Setup {
                shape: args.shape,
                topics: args.topics,
                vehicles: args.vehicles,
                subscribers: args.subscribers,
                concurrency: args.concurrency,
                batch: args.batch,
                duration_s: args.duration,
                rate: (args.rate > 0).then_some(args.rate),
                idle_only: args.idle_only,
            },
            ingest,
            delivery: Delivery {
                subscribers: connected.len(),
                subscribe_failures: found.subscribe_failures,
                deliveries,
                window_s: window.as_secs_f64(),
                deliveries_per_s: per_second(deliveries, window),
                expected_deliveries: found.expected_deliveries,
                delivered_fraction: (found.expected_deliveries > 0)
                    .then(|| deliveries as f64 / found.expected_deliveries as f64),
                unmatched: connected.iter().map(|w| w.unmatched).sum(),
                error_frames: connected.iter().map(|w| w.error_frames).sum(),
                closed_early,
                latency_ms: Latency::of(found.delivery_latency_us),
            },
            memory: found.memory,
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  (ms, {} samples)",
            self.p50, self.p90, self.p99, self.max, self.samples
        )
    }
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn kib(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| format!("{v} KiB"))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let d = &self.delivery;
        let m = &self.memory;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "  {name:<28} {value}")
        };
        let latency =
            |l: &Option<Latency>| l.map_or_else(|| "no samples".to_owned(), |l| l.to_string());

        let pace = c.rate.map_or_else(
            || "as fast as possible".to_owned(),
            |r| format!("{r} positions/s offered"),
        );
        if c.idle_only {
            writeln!(
                f,
                "Waymark bench, idle connections only: {} shape, {} subscribers",
                c.shape, c.subscribers
            )?;
        } else {
            writeln!(
                f,
                "Waymark bench: {} shape, {} vehicles, {} subscribers, {} in flight, {} per request, {} s, {pace}",
                c.shape, c.vehicles, c.subscribers, c.concurrency, c.batch, c.duration_s
            )?;
        }
        writeln!(f, "  against {}", self.urls.join(", "))?;

        if let Some(i) = &self.ingest {
            writeln!(f)?;
            writeln!(f, "Ingest (POST /api/v1/positions)")?;
            row(f, "elapsed", format!("{:.2} s", i.elapsed_s))?;
            row(
                f,
                "requests",
                format!("{} ok, {} failed", i.requests_ok, i.requests_failed),
            )?;
            if !i.errors.is_empty() {
                row(f, "failed by status", counts(&i.errors))?;
            }
            row(f, "requests/s", format!("{:.1}", i.requests_per_s))?;
            let offered = c
                .rate
                .map_or_else(|| "unpaced".to_owned(), |r| format!("offered {r}"));
            row(
                f,
                "rate (positions/s)",
                format!("{offered}, achieved {:.1}", i.positions_sent_per_s),
            )?;
            if let Some(lag) = &i.schedule_lag_ms {
                row(f, "behind schedule", lag.to_string())?;
            }
            row(
                f,
                "durable positions",
                format!(
                    "{} (accepted {}, duplicates {}, filtered {})",
                    i.durable_positions, i.accepted, i.duplicates, i.filtered
                ),
            )?;
            row(
                f,
                "durable positions/s",
                format!("{:.1}", i.durable_positions_per_s),
            )?;
            row(f, "request latency", latency(&i.latency_ms))?;
        }

        writeln!(f)?;
        let what = match c.shape {
            Shape::Broadcast => "every subscriber on `fleet`".to_owned(),
            Shape::Fleet => format!(
                "each subscriber on up to {} `vehicle:{{id}}` topics",
                c.topics
            ),
            Shape::Shipment => "each subscriber on one `shipment:{id}` topic".to_owned(),
        };
        writeln!(
            f,
            "WebSocket delivery (POST sent -> event received; {what})"
        )?;
        if c.subscribers == 0 {
            writeln!(f, "  not measured: no subscribers")?;
        } else {
            row(f, "subscribers", format!("{} connected", d.subscribers))?;
            if !d.subscribe_failures.is_empty() {
                row(f, "could not subscribe", counts(&d.subscribe_failures))?;
            }
            if self.ingest.is_some() {
                let fraction = d.delivered_fraction.map_or_else(String::new, |r| {
                    format!(
                        " ({:.2} % of {} expected)",
                        r * 100.0,
                        d.expected_deliveries
                    )
                });
                row(f, "deliveries", format!("{}{fraction}", d.deliveries))?;
                row(f, "deliveries/s", format!("{:.1}", d.deliveries_per_s))?;
                row(f, "delivery latency", latency(&d.latency_ms))?;
                if d.unmatched > 0 {
                    row(f, "unmatched events", d.unmatched.to_string())?;
                }
            }
            if d.error_frames > 0 {
                row(f, "error frames", d.error_frames.to_string())?;
            }
            if !d.closed_early.is_empty() {
                row(f, "closed early", counts(&d.closed_early))?;
            }
        }

        writeln!(f)?;
        writeln!(f, "Memory (resident)")?;
        if m.server_rss_before_kib.is_some() || m.server_rss_after_kib.is_some() {
            row(
                f,
                "server",
                format!(
                    "{} before the subscribers, {} with {} idle",
                    kib(m.server_rss_before_kib),
                    kib(m.server_rss_after_kib),
                    m.idle_connections
                ),
            )?;
            if let Some(per) = m.server_rss_per_idle_connection_kib {
                row(f, "server per idle connection", format!("{per:.2} KiB"))?;
            }
        } else {
            row(f, "server", "not measured (give --server-pid)".to_owned())?;
        }
        row(
            f,
            "bench",
            format!(
                "{} with the subscribers connected, peak {}",
                kib(m.bench_rss_kib),
                kib(m.bench_peak_rss_kib)
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::new_histogram;
    use super::*;

    fn args(extra: &[&str]) -> BenchArgs {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let argv = [
            "bench",
            "--vehicles",
            "2",
            "--subscribers",
            "1",
            "--duration",
            "1",
        ];
        <Wrapper as clap::Parser>::parse_from(argv.iter().chain(extra)).bench
    }

    fn watcher(deliveries: u64, ended: Ended) -> WatchStats {
        let mut w = WatchStats::new();
        w.subscribed = true;
        w.deliveries = deliveries;
        w.ended = ended;
        w
    }

    #[test]
    fn the_report_computes_rates_and_percentiles() {
        let mut ingest = LoadStats::new();
        ingest.requests_ok = 200;
        ingest.positions = 200;
        ingest.positions_sent = 210;
        ingest.accepted = 200;
        ingest.errors.insert("503 unavailable".into(), 10);
        for us in 1..=100u64 {
            ingest.latency_us.record(us * 1000).unwrap();
        }
        let watchers = [
            watcher(100, Ended::Closed(4008)),
            watcher(0, Ended::Closed(4008)),
            watcher(0, Ended::Stopped),
        ];
        let mut latency = new_histogram();
        latency.record(5_000).unwrap();
        let mut memory = Memory {
            idle_connections: 3,
            server_rss_before_kib: Some(100_000),
            server_rss_after_kib: Some(100_012),
            ..Memory::default()
        };
        memory.per_idle_connection();
        let report = Report::new(Findings {
            args: &args(&["--rate", "100", "--url", "http://a:1,http://b:2"]),
            ingest: Some((&ingest, Duration::from_secs(2))),
            watchers: &watchers,
            subscribe_failures: BTreeMap::from([("WebSocket connect failed".to_owned(), 2)]),
            delivery_latency_us: &latency,
            delivery_window: Some(Duration::from_secs(2)),
            expected_deliveries: 200,
            memory,
        });
        let i = report.ingest.as_ref().unwrap();
        assert_eq!(i.requests_per_s, 100.0);
        assert_eq!(i.positions_sent_per_s, 105.0);
        assert_eq!(report.delivery.deliveries_per_s, 50.0);
        assert_eq!(report.delivery.delivered_fraction, Some(0.5));
        assert_eq!(report.delivery.subscribers, 3);
        assert_eq!(report.delivery.closed_early["4008 too slow (resume)"], 2);
        assert_eq!(report.memory.server_rss_per_idle_connection_kib, Some(4.0));
        let l = i.latency_ms.unwrap();
        assert!(
            (l.p50 - 50.0).abs() < 0.1 && (l.p99 - 99.0).abs() < 0.1 && (l.max - 100.0).abs() < 0.1
        );

        let text = report.to_string();
        for wanted in [
            "durable positions/s",
            "offered 100, achieved 105.0",
            "503 unavailable: 10",
            "4008 too slow (resume): 2",
            "could not subscribe",
            "50.00 % of 200 expected",
            "4.00 KiB",
            "http://a:1/, http://b:2/",
        ] {
            assert!(text.contains(wanted), "{wanted:?} missing from\n{text}");
        }
        let json = serde_json::to_value(&report).unwrap();
        let p50 = json["delivery"]["latency_ms"]["p50"]
            .as_f64()
            .unwrap_or_default();
        assert!((p50 - 5.0).abs() < 0.01, "{p50}");
        assert_eq!(json["config"]["shape"], "broadcast");
        assert_eq!(json["config"]["rate"], 100);
        assert_eq!(json["urls"][1], "http://b:2/");
    }

    #[test]
    fn an_idle_run_reports_memory_and_no_ingest() {
        let mut failed = WatchStats::new();
        failed.ended = Ended::Lost("refused".into());
        let report = Report::new(Findings {
            args: &args(&["--idle-only"]),
            ingest: None,
            watchers: &[watcher(0, Ended::Stopped), failed],
            subscribe_failures: BTreeMap::new(),
            delivery_latency_us: &new_histogram(),
            delivery_window: None,
            expected_deliveries: 0,
            memory: Memory::default(),
        });
        assert!(report.ingest.is_none());
        assert_eq!(report.delivery.subscribers, 1, "only connected ones count");
        assert!(report.delivery.closed_early.is_empty());
        assert_eq!(report.delivery.delivered_fraction, None);
        let text = report.to_string();
        assert!(text.contains("idle connections only"), "{text}");
        assert!(text.contains("give --server-pid"));
        assert!(!text.contains("Ingest"));
        assert_eq!(
            serde_json::to_value(&report).unwrap()["ingest"],
            serde_json::Value::Null
        );
    }

    #[test]
    fn expected_deliveries_follow_what_each_subscriber_watches() {
        let published = HashMap::from([(1, 10), (2, 5), (3, 0)]);
        let watching = [
            Watch::Fleet,
            Watch::Vehicles(vec![1, 3]),
            Watch::Vehicles(vec![2, 4]),
            Watch::Shipment {
                shipment: 20,
                vehicle: 2,
            },
        ];
        assert_eq!(expected_deliveries(&published, &watching), 15 + 10 + 5 + 5);
        assert_eq!(expected_deliveries(&published, &[]), 0);
    }
}
