//! What an operator graphs and alerts on, as Prometheus text at `/metrics`: ingest counts and
//! group-commit sizes, commit latency, WebSocket connections and subscriptions, fan-out lag,
//! conflated frames and slow clients closed, alerts raised, the ETA errors of arrived shipments,
//! refused requests, and the health of the database and Redis. Counters are this instance's since it started.
use std::{
    fmt::Write as _,
    sync::atomic::{AtomicI64, AtomicU64, Ordering},
    time::Duration,
};

use axum::{extract::State, http::header, response::IntoResponse};

use crate::{alerts::accuracy::HORIZONS_MIN, tracking::read_seq, AppState};

/// A monotonically growing count.
#[derive(Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Observations counted into fixed buckets (upper bounds), with their sum, as Prometheus
/// histograms are.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum, in millionths of the unit, so it stays an integer.
    sum_micro: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micro: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micro
            .fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        self.render_series(out, name, "");
    }

    /// The samples alone, each with `labels` (`key="value",` each, or empty) first.
    fn render_series(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        let plain = match labels.trim_end_matches(',') {
            "" => String::new(),
            l => format!("{{{l}}}"),
        };
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}le=\"+Inf\"}} {count}\n{name}_sum{plain} {sum}\n\
             {name}_count{plain} {count}"
        );
    }
}

/// The ETA errors of arrived shipments, per horizon ([`HORIZONS_MIN`]): the absolute error as a
/// histogram, and the signed error as two sums that only grow (later and earlier than the
/// arrival), so that the bias is (late − early) / count over any range.
pub struct EtaErrors {
    abs: Vec<Histogram>,
    late_micro: Vec<AtomicU64>,
    early_micro: Vec<AtomicU64>,
}

impl Default for EtaErrors {
    fn default() -> Self {
        EtaErrors {
            abs: HORIZONS_MIN
                .iter()
                .map(|_| Histogram::new(ERROR_SECONDS))
                .collect(),
            late_micro: HORIZONS_MIN.iter().map(|_| AtomicU64::new(0)).collect(),
            early_micro: HORIZONS_MIN.iter().map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl EtaErrors {
    /// One shipment's error at a horizon, in seconds (ETA − arrival).
    pub fn observe(&self, horizon_min: i64, error_s: f64) {
        let Some(i) = HORIZONS_MIN.iter().position(|h| *h == horizon_min) else {
            return;
        };
        self.abs[i].observe(error_s.abs());
        let side = if error_s > 0.0 {
            &self.late_micro[i]
        } else {
            &self.early_micro[i]
        };
        side.fetch_add((error_s.abs() * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let abs = "waymark_eta_abs_error_seconds";
        let _ = writeln!(
            out,
            "# HELP {abs} How far off the ETA an arrived shipment showed at each horizon before \
             its arrival was.\n# TYPE {abs} histogram"
        );
        for (h, histogram) in HORIZONS_MIN.iter().zip(&self.abs) {
            histogram.render_series(out, abs, &format!("horizon=\"{h}m\","));
        }
        let signed = "waymark_eta_error_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {signed} The ETA errors summed, later than the arrival and earlier.\n\
             # TYPE {signed} counter"
        );
        for (i, h) in HORIZONS_MIN.iter().enumerate() {
            for (direction, sum) in [
                ("late", &self.late_micro[i]),
                ("early", &self.early_micro[i]),
            ] {
                let _ = writeln!(
                    out,
                    "{signed}{{horizon=\"{h}m\",direction=\"{direction}\"}} {}",
                    sum.load(Ordering::Relaxed) as f64 / 1e6
                );
            }
        }
    }
}

/// Bounds for ETA errors: 30 s to an hour.
const ERROR_SECONDS: &[f64] = &[
    30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
];
const ROWS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 4000.0];
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// This instance's measurements.
pub struct Metrics {
    pub positions_accepted: Counter,
    pub positions_duplicate: Counter,
    pub positions_filtered: Counter,
    /// Positions in each group commit.
    pub commit_rows: Histogram,
    /// From taking the seq lock to the commit's answer.
    pub commit_seconds: Histogram,
    pub write_failures: Counter,
    pub alerts_raised: Counter,
    pub rate_limited: Counter,
    pub websocket_connections: Gauge,
    /// Connections closed with 4008 because the client could not keep up.
    pub slow_clients_closed: Counter,
    pub eta_errors: EtaErrors,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            positions_accepted: Counter::default(),
            positions_duplicate: Counter::default(),
            positions_filtered: Counter::default(),
            commit_rows: Histogram::new(ROWS),
            commit_seconds: Histogram::new(SECONDS),
            write_failures: Counter::default(),
            alerts_raised: Counter::default(),
            rate_limited: Counter::default(),
            websocket_connections: Gauge::default(),
            slow_clients_closed: Counter::default(),
            eta_errors: EtaErrors::default(),
        }
    }
}

fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// `GET /metrics`.
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let m = &state.metrics;
    let t = &state.tracking;
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        "# HELP waymark_positions_total Positions received, by what the writer did with them.\n\
         # TYPE waymark_positions_total counter\n\
         waymark_positions_total{{outcome=\"accepted\"}} {}\n\
         waymark_positions_total{{outcome=\"duplicate\"}} {}\n\
         waymark_positions_total{{outcome=\"filtered\"}} {}",
        m.positions_accepted.get(),
        m.positions_duplicate.get(),
        m.positions_filtered.get(),
    );
    m.commit_rows.render(
        &mut out,
        "waymark_commit_rows",
        "Positions written per group commit.",
    );
    m.commit_seconds.render(
        &mut out,
        "waymark_commit_seconds",
        "Time from taking the seq lock to the commit.",
    );
    sample(
        &mut out,
        "waymark_write_failures_total",
        "counter",
        "Group commits that failed (nothing acknowledged).",
        m.write_failures.get(),
    );
    sample(
        &mut out,
        "waymark_alerts_raised_total",
        "counter",
        "Alerts raised by this instance's writer.",
        m.alerts_raised.get(),
    );
    m.eta_errors.render(&mut out);
    sample(
        &mut out,
        "waymark_rate_limited_total",
        "counter",
        "Requests answered 429.",
        m.rate_limited.get(),
    );
    sample(
        &mut out,
        "waymark_websocket_connections",
        "gauge",
        "Open WebSocket connections.",
        m.websocket_connections.get(),
    );
    sample(
        &mut out,
        "waymark_subscriptions",
        "gauge",
        "Topic subscriptions of this instance's connections.",
        t.hub.subscription_count(),
    );
    sample(
        &mut out,
        "waymark_slow_clients_closed_total",
        "counter",
        "Connections closed with 4008 (too far behind).",
        m.slow_clients_closed.get(),
    );
    sample(&mut out, "waymark_conflated_frames_total", "counter", "Queued position frames replaced by a newer one of the same vehicle for a slow client (all instances in this process).", crate::tracking::conflated_frames());
    sample(
        &mut out,
        "waymark_gap_fills_total",
        "counter",
        "Event ranges read from the database because no one delivered them in time.",
        t.sequencer.filled_from_database(),
    );
    sample(
        &mut out,
        "waymark_csp_reports_total",
        "counter",
        "Content-Security-Policy violations browsers reported.",
        state.csp_reports.load(Ordering::Relaxed),
    );
    let delivered = t.sequencer.delivered();
    let committed = tokio::time::timeout(Duration::from_secs(2), read_seq(&state.db)).await;
    let database_up = matches!(committed, Ok(Ok(_)));
    sample(
        &mut out,
        "waymark_delivered_seq",
        "gauge",
        "The highest seq this instance has delivered to its subscribers.",
        delivered,
    );
    if let Ok(Ok(committed)) = committed {
        sample(
            &mut out,
            "waymark_fanout_lag_events",
            "gauge",
            "Events committed (by any instance) but not yet delivered by this one.",
            (committed - delivered).max(0),
        );
    }
    sample(
        &mut out,
        "waymark_database_up",
        "gauge",
        "Whether the database answered this scrape.",
        u8::from(database_up),
    );
    sample(
        &mut out,
        "waymark_db_pool_connections",
        "gauge",
        "Open database connections.",
        state.db.size(),
    );
    sample(
        &mut out,
        "waymark_db_pool_idle",
        "gauge",
        "Idle database connections.",
        state.db.num_idle(),
    );
    if let Some(fanout) = &t.fanout {
        sample(
            &mut out,
            "waymark_redis_up",
            "gauge",
            "Whether the fan-out holds its Redis connection.",
            u8::from(fanout.connected().await),
        );
        sample(
            &mut out,
            "waymark_fanout_received_total",
            "counter",
            "Events of other instances received through Redis.",
            fanout.received(),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_with_sum_and_count() {
        let h = Histogram::new(&[1.0, 10.0]);
        for v in [0.5, 3.0, 30.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "test");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_sum 33.5\n"), "{out}");
        assert!(out.contains("x_count 3"), "{out}");
    }

    #[test]
    fn eta_errors_are_kept_per_horizon_with_their_signed_sums() {
        let e = EtaErrors::default();
        for (h, error) in [(10, 90.0), (10, -30.0), (5, 20.0), (7, 1000.0)] {
            e.observe(h, error);
        }
        let mut out = String::new();
        e.render(&mut out);
        for line in [
            "waymark_eta_abs_error_seconds_bucket{horizon=\"10m\",le=\"30\"} 1\n",
            "waymark_eta_abs_error_seconds_bucket{horizon=\"10m\",le=\"120\"} 2\n",
            "waymark_eta_abs_error_seconds_sum{horizon=\"10m\"} 120\n",
            "waymark_eta_abs_error_seconds_count{horizon=\"10m\"} 2\n",
            "waymark_eta_abs_error_seconds_count{horizon=\"5m\"} 1\n",
            "waymark_eta_abs_error_seconds_count{horizon=\"30m\"} 0\n",
            "waymark_eta_error_seconds_total{horizon=\"10m\",direction=\"late\"} 90\n",
            "waymark_eta_error_seconds_total{horizon=\"10m\",direction=\"early\"} 30\n",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
        assert!(!out.contains("7m"), "{out}");
    }
}
