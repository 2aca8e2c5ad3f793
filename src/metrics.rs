//! What an operator graphs and alerts on, as Prometheus text at `/metrics`: ingest counts and
//! group-commit sizes, commit latency, WebSocket connections and subscriptions, fan-out lag,
//! conflated frames and slow clients closed, alerts raised, the ETA errors of arrived shipments,
//! refused requests, and the health of the database and Redis. Counters are this instance's since it started.
//!
//! The measurements live in `prometheus-client` metrics registered once in [`Metrics`]; what is
//! only known at a scrape (subscriptions, the committed seq, the pools, Redis) is read then and
//! registered for that scrape alone. Counters are registered without their `_total`, which the
//! encoder adds.
use std::{sync::atomic::Ordering, time::Duration};

use axum::{extract::State, http::header, response::IntoResponse};
use prometheus_client::{
    encoding::{prometheus_text, EncodeLabelSet},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::{alerts::accuracy::HORIZONS_MIN, tracking::read_seq, AppState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Horizon {
    horizon: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignedError {
    horizon: String,
    direction: &'static str,
}

/// A sum of seconds that only grows.
type SecondsCounter = Counter<f64, std::sync::atomic::AtomicU64>;

/// The ETA errors of arrived shipments, per horizon ([`HORIZONS_MIN`]): the absolute error as a
/// histogram, and the signed error as two sums that only grow (later and earlier than the
/// arrival), so that the bias is (late − early) / count over any range.
pub struct EtaErrors {
    /// Per horizon, in [`HORIZONS_MIN`]'s order: the histogram, the late and the early sum.
    series: Vec<(Histogram, SecondsCounter, SecondsCounter)>,
}

impl EtaErrors {
    /// Every horizon's series, made now so that the page shows them before any arrival.
    fn register(registry: &mut Registry) -> EtaErrors {
        let abs = Family::<Horizon, Histogram>::new_with_constructor(|| {
            Histogram::new(ERROR_SECONDS.iter().copied())
        });
        let signed = Family::<SignedError, SecondsCounter>::default();
        let series = HORIZONS_MIN
            .iter()
            .map(|h| {
                let horizon = format!("{h}m");
                let side = |direction| {
                    signed.get_or_create_owned(&SignedError {
                        horizon: horizon.clone(),
                        direction,
                    })
                };
                let (late, early) = (side("late"), side("early"));
                let histogram = abs.get_or_create_owned(&Horizon { horizon });
                (histogram, late, early)
            })
            .collect();
        registry.register(
            "waymark_eta_abs_error_seconds",
            "How far off the ETA an arrived shipment showed at each horizon before its arrival was",
            abs,
        );
        registry.register(
            "waymark_eta_error_seconds",
            "The ETA errors summed, later than the arrival and earlier",
            signed,
        );
        EtaErrors { series }
    }

    /// One shipment's error at a horizon, in seconds (ETA − arrival).
    pub fn observe(&self, horizon_min: i64, error_s: f64) {
        let Some(i) = HORIZONS_MIN.iter().position(|h| *h == horizon_min) else {
            return;
        };
        let (abs, late, early) = &self.series[i];
        abs.observe(error_s.abs());
        let side = if error_s > 0.0 { late } else { early };
        side.inc_by(error_s.abs());
    }
}

/// A group commit's phases, in order: what the writer's time per batch is spent on, so that the
/// budget per fix can be read off a running server (`waymark_commit_phase_seconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `BEGIN` and the wait for the seq lock (another batch committing).
    Lock,
    /// Reading what the batch needs under the lock: re-sends, each vehicle's state, rules.
    Read,
    /// Planning in memory: filters, shipments, rules, seqs.
    Plan,
    /// The batch's statements: rows, vehicles, shipments, alerts.
    Write,
    /// `COMMIT`, which releases the seq lock once the commit record is written.
    Commit,
    /// The wait, outside the lock, until the commit is on disk (the WAL flush).
    Flush,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Lock,
        Phase::Read,
        Phase::Plan,
        Phase::Write,
        Phase::Commit,
        Phase::Flush,
    ];

    fn name(self) -> &'static str {
        match self {
            Phase::Lock => "lock",
            Phase::Read => "read",
            Phase::Plan => "plan",
            Phase::Write => "write",
            Phase::Commit => "commit",
            Phase::Flush => "flush",
        }
    }
}

/// One histogram per [`Phase`], made at start so the page lists them all before any write.
pub struct CommitPhases {
    series: Vec<Histogram>,
}

impl CommitPhases {
    fn register(registry: &mut Registry) -> CommitPhases {
        let family = Family::<PhaseLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(PHASE_SECONDS.iter().copied())
        });
        let series = Phase::ALL
            .iter()
            .map(|p| family.get_or_create_owned(&PhaseLabel { phase: p.name() }))
            .collect();
        registry.register(
            "waymark_commit_phase_seconds",
            "Time a group commit spends in each phase (lock, read, plan, write, commit, flush)",
            family,
        );
        CommitPhases { series }
    }

    pub fn observe(&self, phase: Phase, took: Duration) {
        self.series[phase as usize].observe(took.as_secs_f64());
    }
}

/// Bounds for a commit's phases: 50 µs to a second.
const PHASE_SECONDS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Bounds for ETA errors: 30 s to an hour.
const ERROR_SECONDS: &[f64] = &[
    30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0, 3600.0,
];
const ROWS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 4000.0];
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// This instance's measurements, and the registry that names them.
pub struct Metrics {
    registry: Registry,
    pub positions_accepted: Counter,
    pub positions_duplicate: Counter,
    pub positions_filtered: Counter,
    /// Positions in each group commit.
    pub commit_rows: Histogram,
    /// From taking the seq lock to the commit's answer.
    pub commit_seconds: Histogram,
    /// Where a group commit's time goes, phase by phase ([`CommitPhases`]).
    pub commit_phases: CommitPhases,
    pub write_failures: Counter,
    pub alerts_raised: Counter,
    pub rate_limited: Counter,
    pub websocket_connections: Gauge,
    /// Connections closed with 4008 because the client could not keep up.
    pub slow_clients_closed: Counter,
    /// Fixes fed to the trip and stop detector.
    pub segmented_fixes: Counter,
    pub eta_errors: EtaErrors,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let positions = Family::<Outcome, Counter>::default();
        let outcome = |outcome| positions.get_or_create_owned(&Outcome { outcome });
        let (positions_accepted, positions_duplicate, positions_filtered) = (
            outcome("accepted"),
            outcome("duplicate"),
            outcome("filtered"),
        );
        registry.register(
            "waymark_positions",
            "Positions received, by what the writer did with them",
            positions,
        );
        let commit_rows = Histogram::new(ROWS.iter().copied());
        registry.register(
            "waymark_commit_rows",
            "Positions written per group commit",
            commit_rows.clone(),
        );
        let commit_seconds = Histogram::new(SECONDS.iter().copied());
        registry.register(
            "waymark_commit_seconds",
            "Time from taking the seq lock to the commit",
            commit_seconds.clone(),
        );
        let commit_phases = CommitPhases::register(&mut registry);
        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let write_failures = counter(
            "waymark_write_failures",
            "Group commits that failed (nothing acknowledged)",
        );
        let alerts_raised = counter(
            "waymark_alerts_raised",
            "Alerts raised by this instance's writer",
        );
        let rate_limited = counter("waymark_rate_limited", "Requests answered 429");
        let slow_clients_closed = counter(
            "waymark_slow_clients_closed",
            "Connections closed with 4008 (too far behind)",
        );
        let segmented_fixes = counter(
            "waymark_segmented_fixes",
            "Fixes fed to the trip and stop detector",
        );
        let websocket_connections = Gauge::default();
        registry.register(
            "waymark_websocket_connections",
            "Open WebSocket connections",
            websocket_connections.clone(),
        );
        let eta_errors = EtaErrors::register(&mut registry);
        Metrics {
            registry,
            positions_accepted,
            positions_duplicate,
            positions_filtered,
            commit_rows,
            commit_seconds,
            commit_phases,
            write_failures,
            alerts_raised,
            rate_limited,
            websocket_connections,
            slow_clients_closed,
            segmented_fixes,
            eta_errors,
        }
    }
}

impl Metrics {
    /// The measurements as Prometheus text.
    fn encode(&self, out: &mut String) {
        prometheus_text::encode(out, &self.registry).expect("writing to a String");
    }
}

/// `GET /metrics`: the measurements kept in [`Metrics`], then what this scrape reads.
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let t = &state.tracking;
    let mut now = Registry::default();
    let counter = |now: &mut Registry, name: &str, help: &str, value: u64| {
        now.register(name, help, ConstCounter::new(value));
    };
    let gauge = |now: &mut Registry, name: &str, help: &str, value: i64| {
        now.register(name, help, ConstGauge::new(value));
    };
    gauge(
        &mut now,
        "waymark_subscriptions",
        "Topic subscriptions of this instance's connections",
        t.hub.subscription_count() as i64,
    );
    counter(&mut now, "waymark_conflated_frames", "Queued position frames replaced by a newer one of the same vehicle for a slow client (all instances in this process)", crate::tracking::conflated_frames());
    counter(
        &mut now,
        "waymark_gap_fills",
        "Event ranges read from the database because no one delivered them in time",
        t.sequencer.filled_from_database(),
    );
    counter(
        &mut now,
        "waymark_csp_reports",
        "Content-Security-Policy violations browsers reported",
        state.csp_reports.load(Ordering::Relaxed),
    );
    let delivered = t.sequencer.delivered();
    let committed = tokio::time::timeout(Duration::from_secs(2), read_seq(&state.db)).await;
    let database_up = matches!(committed, Ok(Ok(_)));
    gauge(
        &mut now,
        "waymark_delivered_seq",
        "The highest seq this instance has delivered to its subscribers",
        delivered,
    );
    if let Ok(Ok(committed)) = committed {
        gauge(
            &mut now,
            "waymark_fanout_lag_events",
            "Events committed (by any instance) but not yet delivered by this one",
            (committed - delivered).max(0),
        );
    }
    gauge(
        &mut now,
        "waymark_database_up",
        "Whether the database answered this scrape",
        i64::from(database_up),
    );
    gauge(
        &mut now,
        "waymark_db_pool_connections",
        "Open database connections",
        i64::from(state.db.size()),
    );
    gauge(
        &mut now,
        "waymark_db_pool_idle",
        "Idle database connections",
        state.db.num_idle() as i64,
    );
    if let Some(fanout) = &t.fanout {
        gauge(
            &mut now,
            "waymark_redis_up",
            "Whether the fan-out holds its Redis connection",
            i64::from(fanout.connected().await),
        );
        counter(
            &mut now,
            "waymark_fanout_received",
            "Events of other instances received through Redis",
            fanout.received(),
        );
    }
    let mut out = String::with_capacity(4096);
    state.metrics.encode(&mut out);
    prometheus_text::encode(&mut out, &now).expect("writing to a String");
    ([(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)], out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(metrics: &Metrics) -> String {
        let mut out = String::new();
        metrics.encode(&mut out);
        out
    }

    #[test]
    fn counters_and_histograms_keep_their_documented_names() {
        let m = Metrics::default();
        m.positions_accepted.inc_by(3);
        m.positions_filtered.inc();
        m.write_failures.inc();
        m.websocket_connections.inc();
        for v in [0.5, 3.0, 30.0] {
            m.commit_rows.observe(v);
        }
        let out = page(&m);
        for line in [
            "# TYPE waymark_positions_total counter\n",
            "waymark_positions_total{outcome=\"accepted\"} 3\n",
            "waymark_positions_total{outcome=\"duplicate\"} 0\n",
            "waymark_positions_total{outcome=\"filtered\"} 1\n",
            "# HELP waymark_write_failures_total Group commits that failed (nothing acknowledged).\n",
            "waymark_write_failures_total 1\n",
            "waymark_alerts_raised_total 0\n",
            "# TYPE waymark_websocket_connections gauge\n",
            "waymark_websocket_connections 1\n",
            "# TYPE waymark_commit_rows histogram\n",
            "waymark_commit_rows_bucket{le=\"1\"} 1\n",
            "waymark_commit_rows_bucket{le=\"5\"} 2\n",
            "waymark_commit_rows_bucket{le=\"+Inf\"} 3\n",
            "waymark_commit_rows_sum 33.5\n",
            "waymark_commit_rows_count 3\n",
            "waymark_commit_seconds_bucket{le=\"0.001\"} 0\n",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
        assert!(!out.contains("_total_total"), "{out}");
    }

    #[test]
    fn eta_errors_are_kept_per_horizon_with_their_signed_sums() {
        let m = Metrics::default();
        for (h, error) in [(10, 90.0), (10, -30.0), (5, 20.0), (7, 1000.0)] {
            m.eta_errors.observe(h, error);
        }
        let out = page(&m);
        for line in [
            "# TYPE waymark_eta_abs_error_seconds histogram\n",
            "waymark_eta_abs_error_seconds_bucket{horizon=\"10m\",le=\"30\"} 1\n",
            "waymark_eta_abs_error_seconds_bucket{horizon=\"10m\",le=\"120\"} 2\n",
            "waymark_eta_abs_error_seconds_sum{horizon=\"10m\"} 120",
            "waymark_eta_abs_error_seconds_count{horizon=\"10m\"} 2\n",
            "waymark_eta_abs_error_seconds_count{horizon=\"5m\"} 1\n",
            "waymark_eta_abs_error_seconds_count{horizon=\"30m\"} 0\n",
            "# TYPE waymark_eta_error_seconds_total counter\n",
            "waymark_eta_error_seconds_total{horizon=\"10m\",direction=\"late\"} 90",
            "waymark_eta_error_seconds_total{horizon=\"10m\",direction=\"early\"} 30",
            "waymark_eta_error_seconds_total{horizon=\"30m\",direction=\"late\"} 0",
        ] {
            assert!(out.contains(line), "{line} in {out}");
        }
        assert!(!out.contains("7m"), "{out}");
    }
}
