//! The group-commit writer. Requests queue on a channel shared by a few workers (`workers`, one
//! task each); a worker takes everything waiting (up to a row limit), writes it with one multi-row
//! insert in one transaction, and only after the commit publishes the events and answers each
//! request. Under load many requests share a commit; idle, a lone request is written at once.
//!
//! The batch is one event transaction (`tracking::EventTx`): seqs are handed out under the
//! `event_seq` row lock, held to commit, so they follow commit order across every writer of every
//! instance, and the events are published only after the commit. The lock is released at the
//! commit record, before the fsync, which the worker then waits for outside it
//! ([`EventTx::begin_released`]): while one batch's WAL goes to disk the next batch is already
//! written, and a request is still answered only once its batch is durable. One part stays the writer's own
//! for speed: the counter is written by the batch's one big statement, not by one of its own. The
//! alert rules run here too, on each accepted current position, with the vehicle's rule state
//! read and written under the same lock: the alerts they raise take seqs between the positions'
//! and commit with them, once, whatever instance writes.
//!
//! Its statements stay runtime-checked rather than `query!`: each binds a batch as a score of
//! parallel arrays through `UNNEST`, and spells the active shipment statuses into its SQL
//! ([`ShipmentStatus::active_sql`]) so that the planner can use the index of active shipments.
use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    attribution::Window,
    filter::DeviceClock,
    plan::{
        plan, trusted_time, Incoming, Known, Neighbours, Planned, Row, ShipmentChange, VehicleState,
    },
};
use crate::{
    alerts::{self, accuracy, AlertChange, AlertEvent, Alerts, OrgFences, Trip},
    auth::{Device, Revoked},
    db::stored_or_default,
    error::AppError,
    fleet::shipments::ShipmentStatus,
    metrics::{CommitPhases, Metrics, Phase},
    tracking::position::{to_micros, LastFix, NewPosition, PositionEvent},
    tracking::{Committed, Event, EventTx},
};

/// Requests that may wait for the writer before senders are held back.
const QUEUE_DEPTH: usize = 8192;

/// What a write did, in the order of the request's positions.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteOutcome {
    pub seqs: Vec<i64>,
    /// New rows stored (published or filtered).
    pub accepted: usize,
    pub duplicates: usize,
    pub filtered: usize,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    #[error("the database is unavailable")]
    Unavailable,
    #[error("the write failed")]
    Failed,
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl From<WriteError> for AppError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Unavailable | WriteError::ShuttingDown => {
                AppError::Unavailable(sqlx::Error::PoolClosed)
            }
            WriteError::Failed => AppError::Internal(anyhow::anyhow!("position write failed")),
        }
    }
}

struct Request {
    device: Device,
    /// The shipment the sender says these fixes were taken for: they join it or none.
    shipment: Option<i64>,
    positions: Vec<NewPosition>,
    reply: oneshot::Sender<Result<WriteOutcome, WriteError>>,
}

#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
}

impl WriterHandle {
    /// Queues `positions` and waits until they are committed (or the write failed). Each joins
    /// the shipment whose time window on the vehicle holds its time, if any.
    pub async fn write(
        &self,
        device: Device,
        positions: Vec<NewPosition>,
    ) -> Result<WriteOutcome, WriteError> {
        self.write_for(device, None, positions).await
    }

    /// As [`WriterHandle::write`], for fixes the sender took while sharing for `shipment`: each
    /// joins that shipment if its window holds the fix's time, and no other.
    pub async fn write_for(
        &self,
        device: Device,
        shipment: Option<i64>,
        positions: Vec<NewPosition>,
    ) -> Result<WriteOutcome, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                device,
                shipment,
                positions,
                reply,
            })
            .await
            .map_err(|_| WriteError::ShuttingDown)?;
        rx.await.map_err(|_| WriteError::ShuttingDown)?
    }
}

/// Starts the writer on `tracker`. On cancel it writes everything already queued, then stops.
pub fn spawn_writer(
    pool: PgPool,
    metrics: Arc<Metrics>,
    alerts: Arc<Alerts>,
    max_rows: usize,
    workers: usize,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> WriterHandle {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let queue = Arc::new(Queue {
        rx: Mutex::new(rx),
        max_rows: max_rows.max(1),
    });
    for _ in 0..workers.max(1) {
        tracker.spawn(run(
            pool.clone(),
            metrics.clone(),
            alerts.clone(),
            queue.clone(),
            cancel.clone(),
        ));
    }
    WriterHandle { tx }
}

/// The requests waiting to be written, shared by the workers.
struct Queue {
    rx: Mutex<mpsc::Receiver<Request>>,
    max_rows: usize,
}

impl Queue {
    /// Waits for the next request; on cancel, refuses new ones but still hands out the queued.
    async fn first(&self, cancel: &CancellationToken) -> Option<Request> {
        let mut rx = self.rx.lock().await;
        tokio::select! {
            biased;
            r = rx.recv() => r,
            _ = cancel.cancelled() => {
                rx.close();
                rx.recv().await
            }
        }
    }

    /// Adds whatever else is waiting to `batch`, up to the row limit. Never waits: if another
    /// worker holds the queue it is waiting in [`Queue::first`] because the queue is empty, and
    /// waiting for it while holding the seq lock would deadlock the two.
    fn fill(&self, batch: &mut Vec<Request>) {
        let mut rows: usize = batch.iter().map(|r| r.positions.len()).sum();
        let Ok(mut rx) = self.rx.try_lock() else {
            return;
        };
        while rows < self.max_rows {
            match rx.try_recv() {
                Ok(r) => {
                    rows += r.positions.len();
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
    }
}

/// One writer worker. Several run, so that while one commits the next is already waiting for
/// the seq lock with a batch that keeps growing until it gets it: the lock never idles under load.
async fn run(
    pool: PgPool,
    metrics: Arc<Metrics>,
    alerts: Arc<Alerts>,
    queue: Arc<Queue>,
    cancel: CancellationToken,
) {
    while let Some(first) = queue.first(&cancel).await {
        let mut batch = vec![first];
        let started = std::time::Instant::now();
        let laps = Laps::new(&metrics.commit_phases);
        let result = commit(&pool, &queue, &alerts, &mut batch, laps).await;
        match result {
            Ok(written) => {
                written.count(&metrics, started.elapsed());
                written.events.publish(&alerts.tracking);
                for (request, outcome) in batch.into_iter().zip(written.outcomes) {
                    let _ = request.reply.send(Ok(outcome));
                }
                // An arrived shipment's vehicle is no longer its driver's to watch.
                for driver in written.drivers_arrived {
                    alerts.tracking.revoke(Revoked::Assignment(driver)).await;
                }
            }
            Err(e) => {
                let rows: usize = batch.iter().map(|r| r.positions.len()).sum();
                let error = if crate::error::is_unavailable(&e) {
                    tracing::warn!(error = %e, rows, "position batch not written: database unavailable");
                    WriteError::Unavailable
                } else {
                    tracing::error!(error = %e, rows, "position batch not written");
                    WriteError::Failed
                };
                metrics.write_failures.inc();
                for request in batch {
                    let _ = request.reply.send(Err(error.clone()));
                }
            }
        }
    }
    tracing::debug!("position writer stopped");
}

struct Written {
    outcomes: Vec<WriteOutcome>,
    /// The committed positions and the alerts they raised, to publish.
    events: Committed,
    alerts_raised: u64,
    /// The ETA errors (horizon in minutes, seconds) of the shipments that arrived.
    eta_errors: Vec<(i64, f64)>,
    /// The drivers of the shipments that arrived.
    drivers_arrived: Vec<i64>,
}

impl Written {
    fn count(&self, metrics: &Metrics, took: std::time::Duration) {
        let (mut accepted, mut duplicates, mut filtered) = (0, 0, 0);
        for o in &self.outcomes {
            accepted += o.accepted as u64;
            duplicates += o.duplicates as u64;
            filtered += o.filtered as u64;
        }
        metrics.positions_accepted.inc_by(accepted - filtered);
        metrics.positions_duplicate.inc_by(duplicates);
        metrics.positions_filtered.inc_by(filtered);
        metrics.commit_rows.observe((accepted + duplicates) as f64);
        metrics.commit_seconds.observe(took.as_secs_f64());
        metrics.alerts_raised.inc_by(self.alerts_raised);
        for (horizon_min, error_s) in &self.eta_errors {
            metrics.eta_errors.observe(*horizon_min, *error_s);
        }
    }
}

/// Times a commit's phases one after the other, each from the end of the one before.
struct Laps<'a> {
    phases: &'a CommitPhases,
    since: std::time::Instant,
}

impl<'a> Laps<'a> {
    fn new(phases: &'a CommitPhases) -> Self {
        Laps {
            phases,
            since: std::time::Instant::now(),
        }
    }

    fn done(&mut self, phase: Phase) {
        let now = std::time::Instant::now();
        self.phases.observe(phase, now - self.since);
        self.since = now;
    }
}

async fn commit(
    pool: &PgPool,
    queue: &Queue,
    engine: &Alerts,
    batch: &mut Vec<Request>,
    mut laps: Laps<'_>,
) -> sqlx::Result<Written> {
    let mut tx = EventTx::begin_released(pool).await?;
    laps.done(Phase::Lock);
    // Taking the counter's row lock first serialises writers, so the duplicate check below and
    // the seqs handed out are exact. Everything that arrived while this worker waited for the
    // lock joins the batch.
    queue.fill(batch);
    let batch: &[Request] = batch;
    let now = to_micros(Utc::now());
    let (stored, mut vehicles) = read_state(&mut tx, batch).await?;
    let fences = prepare_rules(&mut tx, engine, &mut vehicles).await?;
    let neighbours = read_neighbours(&mut tx, batch, &vehicles).await?;
    laps.done(Phase::Read);
    let incoming: Vec<Incoming> = batch
        .iter()
        .map(|r| Incoming {
            vehicle_id: r.device.vehicle_id,
            organisation_id: r.device.organisation_id,
            shipment: r.shipment,
            positions: &r.positions,
        })
        .collect();
    let Planned {
        rows,
        outcomes,
        changes,
    } = tx.hand_out(|next_seq| {
        plan(
            &incoming,
            &Known {
                stored: &stored,
                neighbours: &neighbours,
                fences: &fences,
                now,
            },
            &mut vehicles,
            next_seq,
        )
    });
    laps.done(Phase::Plan);

    if !rows.is_empty() {
        // The rows' one statement writes the counter too, saving a round trip under the lock.
        let last_seq = tx.record_seq();
        write_rows(&mut tx, &rows, last_seq, &vehicles).await?;
    }
    // After the arrival fixes and the ETAs are written, in the same transaction.
    let arrivals: Vec<(i64, DateTime<Utc>)> = vehicles
        .values()
        .flat_map(|v| v.shipment_changes.values())
        .filter_map(|c| Some((c.id, c.arrived_at?)))
        .collect();
    let (eta_errors, drivers_arrived) = if arrivals.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let ids: Vec<i64> = arrivals.iter().map(|(id, _)| *id).collect();
        let drivers = sqlx::query_scalar(
            "SELECT DISTINCT driver_id FROM shipments
             WHERE id = ANY($1) AND status = 'arrived' AND driver_id IS NOT NULL",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        (accuracy::record(&mut tx, &arrivals).await?, drivers)
    };
    let raised = if changes.is_empty() {
        Vec::new()
    } else {
        alerts::apply(&mut tx, &changes, now).await?
    };
    let alerts_raised = raised
        .iter()
        .filter(|(_, event, _)| *event == AlertEvent::Raised)
        .count() as u64;
    // Moved, not serialised: the frames are built after the commit, outside the lock.
    for row in rows.into_iter().filter(|r| r.filter.is_none()) {
        tx.push(Event::new(
            row.seq,
            PositionEvent {
                organisation_id: row.organisation_id,
                position: row.position,
            },
        ));
    }
    for (seq, event, alert) in raised {
        tx.push(AlertChange::at(seq, event, alert));
    }
    laps.done(Phase::Write);
    let recorded = tx.commit_recorded().await?;
    laps.done(Phase::Commit);
    let events = recorded.durable().await?;
    laps.done(Phase::Flush);
    Ok(Written {
        outcomes,
        events,
        alerts_raised,
        eta_errors,
        drivers_arrived,
    })
}

/// What the batch needs to know under the lock, in one round trip: the seqs of its positions
/// that are stored already (re-sends), and each vehicle's current position and active shipment.
/// A second round trip, only for a batch with fixes older than a shipment of their vehicle that
/// has ended (a backlog), reads the windows those fixes may belong to.
async fn read_state(
    tx: &mut PgConnection,
    batch: &[Request],
) -> sqlx::Result<(
    HashMap<(i64, DateTime<Utc>), i64>,
    HashMap<i64, VehicleState>,
)> {
    let (keys_vehicle, keys_time): (Vec<i64>, Vec<DateTime<Utc>>) = batch
        .iter()
        .flat_map(|r| {
            r.positions
                .iter()
                .map(|p| (r.device.vehicle_id, p.recorded_at))
        })
        .unzip();
    let mut ids: Vec<i64> = batch.iter().map(|r| r.device.vehicle_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // Two kinds of rows: a stored re-send (seq set), or a vehicle's state (seq NULL). The LATERAL
    // pins the re-send check to one primary-key probe per key, in the one partition that can
    // hold it: a plain join lets a generic plan hash-join against every partition.
    let found: Vec<StateRow> = sqlx::query_as(&format!(
        "SELECT k.vehicle_id AS id, k.recorded_at AS at, p.seq,
                NULL::float8 AS lat, NULL::float8 AS lon, NULL::bigint AS shipment_id,
                NULL::timestamptz AS fixes_from, NULL::timestamptz AS started_at,
                NULL::timestamptz AS last_ended_at, NULL::timestamptz AS last_received_at,
                NULL::float8 AS clock_offset_s, NULL::jsonb AS filter, NULL::bigint AS organisation_id, NULL::jsonb AS alert_settings,
                NULL::bigint AS geofence_version, NULL::jsonb AS alert_state, NULL::timestamptz AS due_at,
                NULL::float8 AS dest_lat, NULL::float8 AS dest_lon, NULL::bool AS has_route
         FROM UNNEST($1::bigint[], $2::timestamptz[]) AS k(vehicle_id, recorded_at)
         CROSS JOIN LATERAL (
             SELECT seq FROM positions WHERE vehicle_id = k.vehicle_id AND recorded_at = k.recorded_at
         ) AS p
         UNION ALL
         SELECT v.id, v.last_recorded_at, NULL, ST_Y(v.last_point::geometry), ST_X(v.last_point::geometry),
                s.id, COALESCE(s.fixes_from, s.created_at) AS fixes_from, s.started_at,
                (SELECT max(e.ended_at) FROM shipments e
                 WHERE e.vehicle_id = v.id AND e.started_at IS NOT NULL AND e.ended_at IS NOT NULL),
                (v.last_position->>'received_at')::timestamptz, v.clock_offset_s, o.settings->'filter', v.organisation_id,
                COALESCE(o.settings->'alerts', '{{}}') || v.alert_overrides,
                o.geofence_version, v.alert_state, s.due_at, ST_Y(s.destination::geometry),
                ST_X(s.destination::geometry), s.planned_route IS NOT NULL
         FROM vehicles v
         JOIN organisations o ON o.id = v.organisation_id
         LEFT JOIN shipments s ON s.vehicle_id = v.id AND s.status IN {active}
         WHERE v.id = ANY($3)",
        active = ShipmentStatus::active_sql()
    ))
    .bind(&keys_vehicle)
    .bind(&keys_time)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    let mut stored = HashMap::new();
    let mut states = HashMap::new();
    for row in found {
        if let (Some(seq), Some(at)) = (row.seq, row.at) {
            stored.insert((row.id, at), seq);
            continue;
        }
        let last = match (row.at, row.lat, row.lon) {
            (Some(recorded_at), Some(lat), Some(lon)) => Some(LastFix {
                recorded_at: trusted_time(recorded_at, row.last_received_at),
                lat,
                lon,
            }),
            _ => None,
        };
        let organisation_id = row.organisation_id.unwrap_or_default();
        let trip = match (row.shipment_id, row.dest_lat, row.dest_lon) {
            (Some(id), Some(lat), Some(lon)) => Some(Trip {
                id,
                // Planned or in transit: a planned one starts with its first fix.
                in_transit: true,
                destination: (lat, lon),
                due_at: row.due_at,
                route: None,
            }),
            _ => None,
        };
        let mut state = VehicleState {
            last,
            clock: DeviceClock {
                offset_s: row.clock_offset_s,
            },
            filter: stored_or_default(organisation_id, "filter settings", row.filter),
            alert_settings: stored_or_default(
                organisation_id,
                "alert settings",
                row.alert_settings,
            ),
            geofence_version: row.geofence_version.unwrap_or_default(),
            rules: stored_or_default(row.id, "rule state", row.alert_state),
            active: row.shipment_id,
            last_ended_at: row.last_ended_at,
            trip,
            has_route: row.has_route.unwrap_or(false),
            ..VehicleState::blank(organisation_id)
        };
        if let (Some(id), Some(from)) = (row.shipment_id, row.fixes_from) {
            state.windows.push(Window {
                shipment_id: id,
                from,
                until: None,
            });
            state.started.insert(id, row.started_at);
        }
        states.insert(row.id, state);
    }
    // A vehicle deleted while its request waited has no row: it gets a blank state here, and
    // its points are stored without a shipment (the API never deletes vehicles).
    for id in ids {
        states.entry(id).or_insert_with(|| VehicleState::blank(0));
    }
    read_ended_windows(tx, batch, &mut states).await?;
    Ok((stored, states))
}

/// For each of the batch's fixes older than its vehicle's current position (a backlog, or one
/// out of order), the good fixes stored just before and just after it, which it is judged
/// against: two index probes a late fix, and no query at all for a batch of live fixes.
async fn read_neighbours(
    tx: &mut PgConnection,
    batch: &[Request],
    states: &HashMap<i64, VehicleState>,
) -> sqlx::Result<Neighbours> {
    let (vehicles, times): (Vec<i64>, Vec<DateTime<Utc>>) = batch
        .iter()
        .flat_map(|r| {
            let current = states
                .get(&r.device.vehicle_id)
                .and_then(|s| s.last.map(|l| l.recorded_at));
            r.positions
                .iter()
                .filter(move |p| current.is_some_and(|c| p.recorded_at < c))
                .map(|p| (r.device.vehicle_id, p.recorded_at))
        })
        .unzip();
    if vehicles.is_empty() {
        return Ok(Neighbours::new());
    }
    let rows: Vec<NeighbourRow> = sqlx::query_as(
        "SELECT k.vehicle_id, k.t,
                b.recorded_at AS before_at, ST_Y(b.point::geometry) AS before_lat,
                ST_X(b.point::geometry) AS before_lon,
                a.recorded_at AS after_at, ST_Y(a.point::geometry) AS after_lat,
                ST_X(a.point::geometry) AS after_lon
         FROM UNNEST($1::bigint[], $2::timestamptz[]) AS k(vehicle_id, t)
         LEFT JOIN LATERAL (
             SELECT recorded_at, point FROM positions
             WHERE vehicle_id = k.vehicle_id AND recorded_at < k.t AND filter_reason IS NULL
             ORDER BY recorded_at DESC LIMIT 1
         ) AS b ON true
         LEFT JOIN LATERAL (
             SELECT recorded_at, point FROM positions
             WHERE vehicle_id = k.vehicle_id AND recorded_at > k.t AND filter_reason IS NULL
             ORDER BY recorded_at LIMIT 1
         ) AS a ON true",
    )
    .bind(&vehicles)
    .bind(&times)
    .fetch_all(&mut *tx)
    .await?;
    let fix = |at: Option<DateTime<Utc>>, lat: Option<f64>, lon: Option<f64>| match (at, lat, lon) {
        (Some(recorded_at), Some(lat), Some(lon)) => Some(LastFix {
            recorded_at,
            lat,
            lon,
        }),
        _ => None,
    };
    Ok(rows
        .into_iter()
        .map(|r| {
            let before = fix(r.before_at, r.before_lat, r.before_lon);
            let after = fix(r.after_at, r.after_lat, r.after_lon);
            ((r.vehicle_id, r.t), (before, after))
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct NeighbourRow {
    vehicle_id: i64,
    t: DateTime<Utc>,
    before_at: Option<DateTime<Utc>>,
    before_lat: Option<f64>,
    before_lon: Option<f64>,
    after_at: Option<DateTime<Utc>>,
    after_lat: Option<f64>,
    after_lon: Option<f64>,
}

/// Adds to each vehicle's windows those of its ended shipments that the batch's older fixes may
/// belong to. Live fixes, newer than every ended shipment, need no query.
async fn read_ended_windows(
    tx: &mut PgConnection,
    batch: &[Request],
    states: &mut HashMap<i64, VehicleState>,
) -> sqlx::Result<()> {
    let mut oldest: HashMap<i64, DateTime<Utc>> = HashMap::new();
    for r in batch {
        let id = r.device.vehicle_id;
        let Some(ended) = states.get(&id).and_then(|s| s.last_ended_at) else {
            continue;
        };
        for p in r.positions.iter().filter(|p| p.recorded_at < ended) {
            let t = oldest.entry(id).or_insert(p.recorded_at);
            *t = (*t).min(p.recorded_at);
        }
    }
    if oldest.is_empty() {
        return Ok(());
    }
    let (vehicles, times): (Vec<i64>, Vec<DateTime<Utc>>) = oldest.into_iter().unzip();
    let windows: Vec<EndedWindow> = sqlx::query_as(
        "SELECT s.vehicle_id, s.id, COALESCE(s.fixes_from, s.created_at) AS fixes_from,
                s.started_at, s.ended_at
         FROM UNNEST($1::bigint[], $2::timestamptz[]) AS k(vehicle_id, oldest)
         JOIN shipments s ON s.vehicle_id = k.vehicle_id AND s.ended_at > k.oldest
         WHERE s.started_at IS NOT NULL AND s.ended_at IS NOT NULL",
    )
    .bind(&vehicles)
    .bind(&times)
    .fetch_all(&mut *tx)
    .await?;
    for w in windows {
        if let Some(state) = states.get_mut(&w.vehicle_id) {
            state.windows.push(Window {
                shipment_id: w.id,
                from: w.fixes_from,
                until: Some(w.ended_at),
            });
            state.started.insert(w.id, Some(w.started_at));
        }
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct EndedWindow {
    vehicle_id: i64,
    id: i64,
    fixes_from: DateTime<Utc>,
    started_at: DateTime<Utc>,
    ended_at: DateTime<Utc>,
}

/// Brings what the rules need into memory under the lock: each organisation's geofence index
/// at its committed version, and the planned routes of the shipments in the batch.
async fn prepare_rules(
    tx: &mut PgConnection,
    engine: &Alerts,
    vehicles: &mut HashMap<i64, VehicleState>,
) -> sqlx::Result<HashMap<i64, Arc<OrgFences>>> {
    let mut fences = HashMap::new();
    for v in vehicles.values() {
        if let std::collections::hash_map::Entry::Vacant(slot) = fences.entry(v.organisation_id) {
            slot.insert(
                engine
                    .fences
                    .current(tx, v.organisation_id, v.geofence_version)
                    .await?,
            );
        }
    }
    let with_route: Vec<i64> = vehicles
        .values()
        .filter(|v| v.has_route)
        .filter_map(|v| v.active)
        .collect();
    if !with_route.is_empty() {
        let routes = engine.routes(tx, &with_route).await?;
        for v in vehicles.values_mut() {
            if let Some(trip) = v.trip.as_mut() {
                trip.route = routes.get(&trip.id).cloned().flatten();
            }
        }
    }
    Ok(fences)
}

#[derive(sqlx::FromRow)]
struct StateRow {
    id: i64,
    at: Option<DateTime<Utc>>,
    seq: Option<i64>,
    lat: Option<f64>,
    lon: Option<f64>,
    shipment_id: Option<i64>,
    fixes_from: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    last_ended_at: Option<DateTime<Utc>>,
    last_received_at: Option<DateTime<Utc>>,
    clock_offset_s: Option<f64>,
    filter: Option<serde_json::Value>,
    organisation_id: Option<i64>,
    alert_settings: Option<serde_json::Value>,
    geofence_version: Option<i64>,
    alert_state: Option<serde_json::Value>,
    due_at: Option<DateTime<Utc>>,
    dest_lat: Option<f64>,
    dest_lon: Option<f64>,
    has_route: Option<bool>,
}

/// Everything the batch changes, in one statement: the rows (one multi-row insert), the seq
/// counter, each vehicle's current position and rule state, the shipments its fixes joined
/// (started or started earlier, arrived, or with a new ETA), and the log of the ETAs it gave
/// them ([`accuracy`]). Alerts, which few batches raise, are a statement of their
/// own ([`alerts::apply`]).
/// A runtime query: the UNNEST of twenty arrays is beyond what the compile-time macros express
/// conveniently, and this is the hot path.
async fn write_rows(
    tx: &mut PgConnection,
    rows: &[Row],
    last_seq: i64,
    vehicles: &HashMap<i64, VehicleState>,
) -> sqlx::Result<()> {
    let n = rows.len();
    let mut org = Vec::with_capacity(n);
    let mut vehicle = Vec::with_capacity(n);
    let mut shipment = Vec::with_capacity(n);
    let mut seq = Vec::with_capacity(n);
    let mut recorded = Vec::with_capacity(n);
    let mut lat = Vec::with_capacity(n);
    let mut lon = Vec::with_capacity(n);
    let mut accuracy = Vec::with_capacity(n);
    let mut speed = Vec::with_capacity(n);
    let mut heading = Vec::with_capacity(n);
    let mut altitude = Vec::with_capacity(n);
    let mut battery = Vec::with_capacity(n);
    let mut late = Vec::with_capacity(n);
    let mut filter = Vec::with_capacity(n);
    let mut attributes = Vec::with_capacity(n);
    for r in rows {
        let p = &r.position;
        org.push(r.organisation_id);
        vehicle.push(p.vehicle_id);
        shipment.push(p.shipment_id);
        seq.push(r.seq);
        recorded.push(p.recorded_at);
        lat.push(p.lat);
        lon.push(p.lon);
        accuracy.push(p.accuracy);
        speed.push(p.speed);
        heading.push(p.heading);
        altitude.push(p.altitude);
        battery.push(p.battery);
        late.push(p.late);
        filter.push(r.filter);
        attributes.push(r.attributes.as_deref());
    }
    // Every vehicle of the batch: its clock always; its current position and rule state when
    // it has a new one.
    let states: Vec<(i64, &VehicleState)> = vehicles.iter().map(|(id, v)| (*id, v)).collect();
    let current_json: Vec<Option<String>> = states
        .iter()
        .map(|(_, v)| {
            v.new_current
                .as_ref()
                .map(|p| serde_json::to_string(p).expect("positions serialise"))
        })
        .collect();
    let rule_json: Vec<Option<String>> = states
        .iter()
        .map(|(_, v)| {
            v.new_current
                .as_ref()
                .map(|_| serde_json::to_string(&v.rules).expect("state serialises"))
        })
        .collect();
    let trips: Vec<&ShipmentChange> = vehicles
        .values()
        .flat_map(|v| v.shipment_changes.values())
        .collect();
    let (log_id, log_at, log_eta, log_method) = accuracy::log_columns(
        trips
            .iter()
            .flat_map(|t| t.etas.iter().map(move |g| (t.id, g))),
    );
    sqlx::query(&format!(
        "WITH inserted AS (
             INSERT INTO positions (organisation_id, vehicle_id, shipment_id, seq, recorded_at,
                 received_at, point, accuracy, speed, heading, altitude, battery, late,
                 filter_reason, attributes)
             SELECT o, v, s, q, r, $16, ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography,
                 acc, spd, hdg, alt, bat, late, reason, attrs::jsonb
             FROM UNNEST($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::timestamptz[],
                 $6::float8[], $7::float8[], $8::float4[], $9::float4[], $10::float4[], $11::float4[],
                 $12::float4[], $13::bool[], $14::text[], $15::text[])
                 AS t(o, v, s, q, r, lat, lon, acc, spd, hdg, alt, bat, late, reason, attrs)
         ), counter AS (
             UPDATE event_seq SET value = $17
         ), current AS (
             UPDATE vehicles v SET last_recorded_at = COALESCE(u.r, v.last_recorded_at),
                 last_point = COALESCE(ST_SetSRID(ST_MakePoint(u.lon, u.lat), 4326)::geography,
                     v.last_point),
                 last_position = COALESCE(u.pos::jsonb, v.last_position),
                 alert_state = COALESCE(u.st::jsonb, v.alert_state), clock_offset_s = u.clock
             FROM UNNEST($18::bigint[], $19::timestamptz[], $20::float8[], $21::float8[], $22::text[],
                 $23::text[], $28::float8[]) AS u(id, r, lat, lon, pos, st, clock)
             WHERE v.id = u.id
         ), trips AS (
             UPDATE shipments s SET
                 status = CASE
                     WHEN s.status NOT IN {active} THEN s.status
                     WHEN u.arrived_at IS NOT NULL THEN 'arrived'
                     WHEN u.first_at IS NOT NULL THEN 'in_transit'
                     ELSE s.status END,
                 started_at = LEAST(s.started_at, u.first_at),
                 ended_at = CASE WHEN s.status IN {active}
                     THEN COALESCE(u.arrived_at, s.ended_at) ELSE s.ended_at END,
                 eta = CASE WHEN s.status IN {active}
                     THEN COALESCE(u.eta, s.eta) ELSE s.eta END,
                 updated_at = now()
             FROM UNNEST($24::bigint[], $25::timestamptz[], $26::timestamptz[], $27::timestamptz[])
                 AS u(id, first_at, arrived_at, eta)
             WHERE s.id = u.id
         ), etas AS (
             INSERT INTO shipment_etas (shipment_id, at, eta, method)
             SELECT u.* FROM UNNEST($29::bigint[], $30::timestamptz[], $31::timestamptz[],
                 $32::text[]) AS u(id, at, eta, method)
             JOIN shipments s ON s.id = u.id AND s.status IN {active}
             ON CONFLICT DO NOTHING
         )
         SELECT 1",
        active = ShipmentStatus::active_sql()
    ))
    .bind(&org)
    .bind(&vehicle)
    .bind(&shipment)
    .bind(&seq)
    .bind(&recorded)
    .bind(&lat)
    .bind(&lon)
    .bind(&accuracy)
    .bind(&speed)
    .bind(&heading)
    .bind(&altitude)
    .bind(&battery)
    .bind(&late)
    .bind(&filter)
    .bind(&attributes)
    .bind(rows[0].position.received_at)
    .bind(last_seq)
    .bind(states.iter().map(|(id, _)| *id).collect::<Vec<_>>())
    .bind(
        states
            .iter()
            .map(|(_, v)| v.new_current.as_ref().map(|p| p.recorded_at))
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|(_, v)| v.new_current.as_ref().map(|p| p.lat))
            .collect::<Vec<_>>(),
    )
    .bind(
        states
            .iter()
            .map(|(_, v)| v.new_current.as_ref().map(|p| p.lon))
            .collect::<Vec<_>>(),
    )
    .bind(&current_json)
    .bind(&rule_json)
    .bind(trips.iter().map(|t| t.id).collect::<Vec<_>>())
    .bind(trips.iter().map(|t| t.first_at).collect::<Vec<_>>())
    .bind(trips.iter().map(|t| t.arrived_at).collect::<Vec<_>>())
    .bind(trips.iter().map(|t| t.eta()).collect::<Vec<_>>())
    .bind(
        states
            .iter()
            .map(|(_, v)| v.clock.offset_s)
            .collect::<Vec<_>>(),
    )
    .bind(&log_id)
    .bind(&log_at)
    .bind(&log_eta)
    .bind(&log_method)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
