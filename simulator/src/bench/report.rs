//! The bench's findings, as a text table for people and as JSON for scripts.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::load::LoadStats;
use super::new_histogram;
use super::watch::WatchStats;
use crate::config::BenchArgs;

#[derive(Debug, Serialize)]
pub struct Report {
    pub url: String,
    pub config: Setup,
    pub ingest: Ingest,
    pub delivery: Delivery,
}

#[derive(Debug, Serialize)]
pub struct Setup {
    pub vehicles: u32,
    pub subscribers: u32,
    pub concurrency: u32,
    pub batch: u32,
    pub duration_s: u32,
}

#[derive(Debug, Serialize)]
pub struct Ingest {
    pub elapsed_s: f64,
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub requests_per_s: f64,
    /// Positions in 2xx replies: committed before the reply.
    pub durable_positions: u64,
    pub durable_positions_per_s: f64,
    pub accepted: u64,
    pub duplicates: u64,
    pub filtered: u64,
    pub latency_ms: Option<Latency>,
}

#[derive(Debug, Serialize)]
pub struct Delivery {
    pub subscribers: usize,
    pub deliveries: u64,
    /// From the start of the load to the last delivery.
    pub window_s: f64,
    pub deliveries_per_s: f64,
    /// Deliveries per (published position × subscriber); below 1 when the server conflates
    /// a slow subscriber's queue or drops it.
    pub delivery_ratio: Option<f64>,
    pub unmatched: u64,
    pub error_frames: u64,
    pub closed_early: Vec<String>,
    /// POST sent → WebSocket frame received.
    pub latency_ms: Option<Latency>,
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
    fn of(histogram_us: &Histogram<u64>) -> Option<Self> {
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

impl Report {
    pub fn new(
        args: &BenchArgs,
        url: &str,
        ingest: &LoadStats,
        load_elapsed: Duration,
        watchers: &[WatchStats],
        delivery_window: Option<Duration>,
    ) -> Self {
        let mut latency = new_histogram();
        for w in watchers {
            // Same bounds on both sides, so adding cannot fail.
            let _ = latency.add(&w.latency_us);
        }
        let deliveries: u64 = watchers.iter().map(|w| w.deliveries).sum();
        let published = ingest.accepted.saturating_sub(ingest.filtered);
        let expected = published * watchers.len() as u64;
        let window = delivery_window.unwrap_or_default();
        Self {
            url: url.to_owned(),
            config: Setup {
                vehicles: args.vehicles,
                subscribers: args.subscribers,
                concurrency: args.concurrency,
                batch: args.batch,
                duration_s: args.duration,
            },
            ingest: Ingest {
                elapsed_s: load_elapsed.as_secs_f64(),
                requests_ok: ingest.requests_ok,
                requests_failed: ingest.requests_failed,
                errors: ingest.errors.clone(),
                requests_per_s: per_second(ingest.requests_ok, load_elapsed),
                durable_positions: ingest.positions,
                durable_positions_per_s: per_second(ingest.positions, load_elapsed),
                accepted: ingest.accepted,
                duplicates: ingest.duplicates,
                filtered: ingest.filtered,
                latency_ms: Latency::of(&ingest.latency_us),
            },
            delivery: Delivery {
                subscribers: watchers.len(),
                deliveries,
                window_s: window.as_secs_f64(),
                deliveries_per_s: per_second(deliveries, window),
                delivery_ratio: (expected > 0).then(|| deliveries as f64 / expected as f64),
                unmatched: watchers.iter().map(|w| w.unmatched).sum(),
                error_frames: watchers.iter().map(|w| w.error_frames).sum(),
                closed_early: watchers.iter().filter_map(|w| w.closed.clone()).collect(),
                latency_ms: Latency::of(&latency),
            },
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

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let i = &self.ingest;
        let d = &self.delivery;
        let row = |f: &mut fmt::Formatter<'_>, name: &str, value: String| {
            writeln!(f, "  {name:<24} {value}")
        };
        let latency =
            |l: &Option<Latency>| l.map_or_else(|| "no samples".to_owned(), |l| l.to_string());

        writeln!(
            f,
            "Waymark bench against {}: {} vehicles, {} subscribers, {} in flight, {} per request, {} s",
            self.url, c.vehicles, c.subscribers, c.concurrency, c.batch, c.duration_s
        )?;
        writeln!(f)?;
        writeln!(f, "Ingest (POST /api/v1/positions)")?;
        row(f, "elapsed", format!("{:.2} s", i.elapsed_s))?;
        row(
            f,
            "requests",
            format!("{} ok, {} failed", i.requests_ok, i.requests_failed),
        )?;
        if !i.errors.is_empty() {
            let errors: Vec<String> = i.errors.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            row(f, "errors", errors.join(", "))?;
        }
        row(f, "requests/s", format!("{:.1}", i.requests_per_s))?;
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
        writeln!(f)?;
        writeln!(f, "WebSocket delivery (POST sent -> fleet event received)")?;
        if d.subscribers == 0 {
            return writeln!(f, "  not measured: no subscribers");
        }
        row(f, "subscribers", d.subscribers.to_string())?;
        let ratio = d.delivery_ratio.map_or_else(String::new, |r| {
            format!(" ({:.1} % of published x subscribers)", r * 100.0)
        });
        row(f, "deliveries", format!("{}{ratio}", d.deliveries))?;
        row(f, "deliveries/s", format!("{:.1}", d.deliveries_per_s))?;
        row(f, "delivery latency", latency(&d.latency_ms))?;
        if d.unmatched > 0 {
            row(f, "unmatched events", d.unmatched.to_string())?;
        }
        if d.error_frames > 0 {
            row(f, "error frames", d.error_frames.to_string())?;
        }
        if !d.closed_early.is_empty() {
            row(f, "closed early", d.closed_early.join("; "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> BenchArgs {
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
        <Wrapper as clap::Parser>::parse_from(argv).bench
    }

    #[test]
    fn the_report_computes_rates_and_percentiles() {
        let mut ingest = LoadStats::new();
        ingest.requests_ok = 200;
        ingest.positions = 200;
        ingest.accepted = 200;
        for us in 1..=100u64 {
            ingest.latency_us.record(us * 1000).unwrap();
        }
        let mut watcher = WatchStats {
            latency_us: new_histogram(),
            deliveries: 100,
            unmatched: 0,
            error_frames: 0,
            closed: Some("closed by server: 4008 too slow".into()),
        };
        watcher.latency_us.record(5_000).unwrap();
        let report = Report::new(
            &args(),
            "http://127.0.0.1:8080/",
            &ingest,
            Duration::from_secs(2),
            &[watcher],
            Some(Duration::from_secs(2)),
        );
        assert_eq!(report.ingest.requests_per_s, 100.0);
        assert_eq!(report.delivery.deliveries_per_s, 50.0);
        assert_eq!(report.delivery.delivery_ratio, Some(0.5));
        let l = report.ingest.latency_ms.unwrap();
        assert!(
            (l.p50 - 50.0).abs() < 0.1 && (l.p99 - 99.0).abs() < 0.1 && (l.max - 100.0).abs() < 0.1
        );

        let text = report.to_string();
        assert!(text.contains("durable positions/s"));
        assert!(text.contains("4008"));
        let json = serde_json::to_value(&report).unwrap();
        let p50 = json["delivery"]["latency_ms"]["p50"]
            .as_f64()
            .unwrap_or_default();
        assert!((p50 - 5.0).abs() < 0.01, "{p50}");
    }

    #[test]
    fn an_empty_run_reports_no_samples_instead_of_failing() {
        let report = Report::new(&args(), "u", &LoadStats::new(), Duration::ZERO, &[], None);
        assert!(report.ingest.latency_ms.is_none());
        assert_eq!(report.ingest.requests_per_s, 0.0);
        assert!(report.to_string().contains("not measured"));
    }
}
