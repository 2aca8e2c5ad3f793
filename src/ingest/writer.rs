//! The group-commit writer. Requests queue on a channel; one task takes everything waiting (up to
//! a row limit), writes it with one multi-row insert in one transaction, and only after the commit
//! publishes the events and answers each request. Under load many requests share a commit; idle,
//! a lone request is written at once.
//!
//! seqs are handed out under the `event_seq` row lock, held to commit, so they follow commit order
//! across every writer of every instance.
use std::{collections::HashMap, sync::Arc};

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::filter::{judge, FilterSettings, LastFix};
use crate::{
    auth::Device,
    error::AppError,
    position::{to_micros, NewPosition, Position},
    tracking::{frames, Batch, Tracking},
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
    positions: Vec<NewPosition>,
    reply: oneshot::Sender<Result<WriteOutcome, WriteError>>,
}

#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
}

impl WriterHandle {
    /// Queues `positions` and waits until they are committed (or the write failed).
    pub async fn write(
        &self,
        device: Device,
        positions: Vec<NewPosition>,
    ) -> Result<WriteOutcome, WriteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                device,
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
    tracking: Arc<Tracking>,
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
            tracking.clone(),
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
async fn run(pool: PgPool, tracking: Arc<Tracking>, queue: Arc<Queue>, cancel: CancellationToken) {
    while let Some(first) = queue.first(&cancel).await {
        let mut batch = vec![first];
        let result = commit(&pool, &queue, &tracking, &mut batch).await;
        match result {
            Ok(written) => {
                if let Some(batch) = written.batch {
                    tracking.committed(batch);
                }
                for (request, outcome) in batch.into_iter().zip(written.outcomes) {
                    let _ = request.reply.send(Ok(outcome));
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
    /// The committed seq range and its publishable events; none if nothing new was stored.
    batch: Option<Batch>,
}

/// Per-vehicle state read under the lock: its current position, active shipment, and its
/// organisation's filter settings.
struct VehicleState {
    last: Option<LastFix>,
    filter: FilterSettings,
    shipment_id: Option<i64>,
    shipment_planned: bool,
    new_current: Option<Position>,
}

/// One row to insert.
struct Row {
    organisation_id: i64,
    seq: i64,
    position: Position,
    filter: Option<&'static str>,
    attributes: Option<String>,
}

async fn commit(
    pool: &PgPool,
    queue: &Queue,
    tracking: &Tracking,
    batch: &mut Vec<Request>,
) -> sqlx::Result<Written> {
    let mut tx = pool.begin().await?;
    // Taking the counter's row lock first serialises writers, so the duplicate check below and
    // the seqs handed out are exact.
    let mut next_seq: i64 = sqlx::query_scalar("SELECT value FROM event_seq FOR UPDATE")
        .fetch_one(&mut *tx)
        .await?;
    // Everything that arrived while this worker waited for the lock joins the batch.
    queue.fill(batch);
    let batch: &[Request] = batch;
    let now = to_micros(Utc::now());
    let first_seq = next_seq + 1;
    let (stored, mut vehicles) = read_state(&mut tx, batch).await?;

    let mut seen: HashMap<(i64, DateTime<Utc>), i64> = HashMap::new();
    let mut rows = Vec::new();
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in batch {
        let vehicle_id = request.device.vehicle_id;
        let mut outcome = WriteOutcome {
            seqs: Vec::with_capacity(request.positions.len()),
            accepted: 0,
            duplicates: 0,
            filtered: 0,
        };
        for p in &request.positions {
            let key = (vehicle_id, p.recorded_at);
            if let Some(seq) = stored.get(&key).or_else(|| seen.get(&key)) {
                outcome.seqs.push(*seq);
                outcome.duplicates += 1;
                continue;
            }
            next_seq += 1;
            seen.insert(key, next_seq);
            let state = vehicles
                .get_mut(&vehicle_id)
                .expect("every device's vehicle was read");
            let filter = judge(p, state.last.as_ref(), now, &state.filter);
            let late =
                filter.is_none() && state.last.is_some_and(|l| p.recorded_at < l.recorded_at);
            let position = Position {
                vehicle_id,
                shipment_id: state.shipment_id,
                lat: p.lat,
                lon: p.lon,
                recorded_at: p.recorded_at,
                received_at: now,
                accuracy: p.accuracy.map(|v| v as f32),
                speed: p.speed.map(|v| v as f32),
                heading: p.heading.map(|v| v as f32),
                altitude: p.altitude.map(|v| v as f32),
                battery: p.battery.map(|v| v as f32),
                late,
            };
            if filter.is_none() && !late {
                state.last = Some(LastFix {
                    recorded_at: p.recorded_at,
                    lat: p.lat,
                    lon: p.lon,
                });
                state.new_current = Some(position.clone());
            }
            outcome.seqs.push(next_seq);
            outcome.accepted += 1;
            if filter.is_some() {
                outcome.filtered += 1;
            }
            rows.push(Row {
                organisation_id: request.device.organisation_id,
                seq: next_seq,
                position,
                filter: filter.map(|f| f.as_str()),
                attributes: p
                    .attributes
                    .as_ref()
                    .map(|a| serde_json::Value::Object(a.clone()).to_string()),
            });
        }
        outcomes.push(outcome);
    }

    if !rows.is_empty() {
        write_rows(&mut tx, &rows, next_seq, &vehicles).await?;
    }
    tx.commit().await?;

    let batch = (!rows.is_empty()).then(|| Batch {
        first: first_seq,
        last: next_seq,
        events: rows
            .iter()
            .filter(|r| r.filter.is_none())
            .flat_map(|r| frames(r.seq, r.organisation_id, &r.position, |k| tracking.wants(k)))
            .collect(),
    });
    Ok(Written { outcomes, batch })
}

/// What the batch needs to know under the lock, in one round trip: the seqs of its positions
/// that are stored already (re-sends), and each vehicle's current position and active shipment.
async fn read_state(
    tx: &mut Transaction<'_, Postgres>,
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
    let found: Vec<StateRow> = sqlx::query_as(
        "SELECT k.vehicle_id AS id, k.recorded_at AS at, p.seq,
                NULL::float8 AS lat, NULL::float8 AS lon, NULL::bigint AS shipment_id, NULL::text AS status,
                NULL::jsonb AS filter
         FROM UNNEST($1::bigint[], $2::timestamptz[]) AS k(vehicle_id, recorded_at)
         CROSS JOIN LATERAL (
             SELECT seq FROM positions WHERE vehicle_id = k.vehicle_id AND recorded_at = k.recorded_at
         ) AS p
         UNION ALL
         SELECT v.id, v.last_recorded_at, NULL, ST_Y(v.last_point::geometry), ST_X(v.last_point::geometry),
                s.id, s.status, o.settings->'filter'
         FROM vehicles v
         JOIN organisations o ON o.id = v.organisation_id
         LEFT JOIN shipments s ON s.vehicle_id = v.id AND s.status IN ('planned', 'in_transit')
         WHERE v.id = ANY($3)",
    )
    .bind(&keys_vehicle)
    .bind(&keys_time)
    .bind(&ids)
    .fetch_all(&mut **tx)
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
                recorded_at,
                lat,
                lon,
            }),
            _ => None,
        };
        states.insert(
            row.id,
            VehicleState {
                last,
                filter: filter_settings(row.id, row.filter),
                shipment_id: row.shipment_id,
                shipment_planned: row.status.as_deref() == Some("planned"),
                new_current: None,
            },
        );
    }
    // A vehicle deleted while its request waited has no row: it gets a blank state here, and
    // its points are stored without a shipment (the API never deletes vehicles).
    for id in ids {
        states.entry(id).or_insert(VehicleState {
            last: None,
            filter: FilterSettings::default(),
            shipment_id: None,
            shipment_planned: false,
            new_current: None,
        });
    }
    Ok((stored, states))
}

#[derive(sqlx::FromRow)]
struct StateRow {
    id: i64,
    at: Option<DateTime<Utc>>,
    seq: Option<i64>,
    lat: Option<f64>,
    lon: Option<f64>,
    shipment_id: Option<i64>,
    status: Option<String>,
    filter: Option<serde_json::Value>,
}

/// The organisation's stored filter section; the defaults where it has none. The API checks
/// what it stores, so a section that does not parse was written by another version: it is
/// logged, and the defaults apply rather than the write failing.
fn filter_settings(vehicle_id: i64, stored: Option<serde_json::Value>) -> FilterSettings {
    match stored.map(serde_json::from_value) {
        None => FilterSettings::default(),
        Some(Ok(settings)) => settings,
        Some(Err(e)) => {
            tracing::warn!(vehicle_id, error = %e, "unreadable filter settings; using the defaults");
            FilterSettings::default()
        }
    }
}

/// Everything the batch changes, in one statement: the rows (one multi-row insert), the seq
/// counter, each vehicle's current position, and shipments that start with this batch.
/// A runtime query: the UNNEST of twenty arrays is beyond what the compile-time macros express
/// conveniently, and this is the hot path.
async fn write_rows(
    tx: &mut Transaction<'_, Postgres>,
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
    let current: Vec<&Position> = vehicles
        .values()
        .filter_map(|v| v.new_current.as_ref())
        .collect();
    let current_json: Vec<String> = current
        .iter()
        .map(|p| serde_json::to_string(p).expect("positions serialise"))
        .collect();
    let started: Vec<i64> = vehicles
        .values()
        .filter(|v| v.shipment_planned && v.new_current.is_some())
        .filter_map(|v| v.shipment_id)
        .collect();
    sqlx::query(
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
             UPDATE vehicles v SET last_recorded_at = u.r,
                 last_point = ST_SetSRID(ST_MakePoint(u.lon, u.lat), 4326)::geography,
                 last_position = u.pos::jsonb
             FROM UNNEST($18::bigint[], $19::timestamptz[], $20::float8[], $21::float8[], $22::text[])
                 AS u(id, r, lat, lon, pos)
             WHERE v.id = u.id
         ), started AS (
             UPDATE shipments SET status = 'in_transit', started_at = now(), updated_at = now()
             WHERE id = ANY($23) AND status = 'planned'
         )
         SELECT 1",
    )
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
    .bind(current.iter().map(|p| p.vehicle_id).collect::<Vec<_>>())
    .bind(current.iter().map(|p| p.recorded_at).collect::<Vec<_>>())
    .bind(current.iter().map(|p| p.lat).collect::<Vec<_>>())
    .bind(current.iter().map(|p| p.lon).collect::<Vec<_>>())
    .bind(&current_json)
    .bind(&started)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
