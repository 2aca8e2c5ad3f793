//! Keeps every vehicle's trips and stops up to date as fixes arrive, off the ingest path.
//!
//! Two steps, each safe with many instances running them at once:
//!
//! 1. **Noting.** New fixes are found by seq (committed positions take seqs in commit order):
//!    everything after `segmenter_cursor.seq` up to the committed counter is grouped by vehicle,
//!    and each vehicle's `dirty_from` becomes the earliest new fix's time. One instance at a time
//!    holds the cursor; the others skip the step.
//! 2. **Detecting.** Each vehicle with a `dirty_from` is taken (its row locked, others skip it)
//!    and brought up to date with fixes noted so far (seq up to the cursor, so that a fix is never
//!    fed before it is noted). If every new fix is later than the last one fed, the detector's
//!    saved state is fed just them. Otherwise (a late fix, a backlog, an import, new settings)
//!    the segments decided from that time on are dropped and the detector starts again at the end
//!    of the last one left ([`Detector::after`]), which gives what going through the whole history
//!    would. A closed trip's track is stored simplified ([`super::path`]).
//!
//! Imported fixes carry seq 0: they were never events. An import marks the vehicle itself
//! ([`mark`]). Retention drops raw fixes, never segments: starting again never reaches before
//! the oldest fix still stored.
use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    detect::{Detector, Fix, Kind, Segment},
    path::{self, Vertex},
    TripSettings,
};
use crate::{metrics::Metrics, settings};

/// Seqs noted per noting transaction: a long backlog is noted in steps.
const NOTE_STEP: i64 = 500_000;
/// Fixes read per query while feeding the detector.
const READ_CHUNK: i64 = 20_000;
/// Vehicles taken per round of detecting.
const ROUND: i64 = 64;

/// Wakes the segmenter before its next tick (an import, new settings).
#[derive(Clone, Default)]
pub struct Wake(Arc<Notify>);

impl Wake {
    pub fn now(&self) {
        self.0.notify_one();
    }
}

/// Notes new fixes and brings dirty vehicles up to date every `tick`, or at once when woken,
/// until cancelled.
pub async fn run(
    db: PgPool,
    tick: Duration,
    wake: Wake,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    loop {
        if let Err(e) = catch_up(&db, &metrics).await {
            tracing::warn!(error = %e, "detecting trips and stops; will try again");
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(tick) => {}
            _ = wake.0.notified() => {}
        }
    }
}

/// Notes every new fix and brings every dirty vehicle up to date; how many vehicles it did.
pub async fn catch_up(db: &PgPool, metrics: &Metrics) -> sqlx::Result<usize> {
    while note(db).await? {}
    let mut settings = HashMap::new();
    let mut done = 0;
    loop {
        let dirty: Vec<i64> = sqlx::query_scalar(
            "SELECT vehicle_id FROM segmenter_vehicles WHERE dirty_from IS NOT NULL
             ORDER BY dirty_from LIMIT $1",
        )
        .bind(ROUND)
        .fetch_all(db)
        .await?;
        if dirty.is_empty() {
            return Ok(done);
        }
        let mut progressed = false;
        for vehicle_id in dirty {
            let fed = detect(db, vehicle_id, &mut settings).await?;
            if let Some(fed) = fed {
                progressed = true;
                done += 1;
                metrics.segmented_fixes.inc_by(fed);
            }
        }
        if !progressed {
            // Every dirty vehicle is being done by another instance.
            return Ok(done);
        }
    }
}

/// Notes the fixes after the cursor, a step of them; true if there may be more.
async fn note(db: &PgPool) -> sqlx::Result<bool> {
    let mut tx = db.begin().await?;
    let Some(cursor): Option<i64> =
        sqlx::query_scalar("SELECT seq FROM segmenter_cursor FOR UPDATE SKIP LOCKED")
            .fetch_optional(&mut *tx)
            .await?
    else {
        return Ok(false);
    };
    // Every seq up to the committed counter belongs to a committed transaction.
    let committed: i64 = sqlx::query_scalar("SELECT value FROM event_seq")
        .fetch_one(&mut *tx)
        .await?;
    if committed <= cursor {
        return Ok(false);
    }
    let through = committed.min(cursor + NOTE_STEP);
    sqlx::query(
        "INSERT INTO segmenter_vehicles AS s (vehicle_id, organisation_id, dirty_from)
         SELECT p.vehicle_id, v.organisation_id, p.earliest
         FROM (SELECT vehicle_id, min(recorded_at) AS earliest FROM positions
               WHERE seq > $1 AND seq <= $2 AND filter_reason IS NULL GROUP BY vehicle_id) p
         JOIN vehicles v ON v.id = p.vehicle_id
         ON CONFLICT (vehicle_id) DO UPDATE
         SET dirty_from = LEAST(s.dirty_from, EXCLUDED.dirty_from)",
    )
    .bind(cursor)
    .bind(through)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE segmenter_cursor SET seq = $1")
        .bind(through)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(through < committed)
}

/// Marks `vehicle_id`'s history from `from` on to be detected again (after an import).
pub async fn mark(
    conn: &mut PgConnection,
    organisation_id: i64,
    vehicle_id: i64,
    from: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO segmenter_vehicles AS s (vehicle_id, organisation_id, dirty_from)
         VALUES ($1, $2, $3)
         ON CONFLICT (vehicle_id) DO UPDATE SET dirty_from = LEAST(s.dirty_from, EXCLUDED.dirty_from)",
    )
    .bind(vehicle_id)
    .bind(organisation_id)
    .bind(from)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks the whole history of every vehicle of the organisation to be detected again (new trip
/// settings).
pub async fn mark_organisation(conn: &mut PgConnection, organisation_id: i64) -> sqlx::Result<()> {
    sqlx::query("UPDATE segmenter_vehicles SET dirty_from = 'epoch' WHERE organisation_id = $1")
        .bind(organisation_id)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Standing {
    organisation_id: i64,
    processed_until: Option<DateTime<Utc>>,
    state: Option<sqlx::types::Json<Detector>>,
    dirty_from: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct FixRow {
    recorded_at: DateTime<Utc>,
    lat: f64,
    lon: f64,
    speed: Option<f32>,
}

impl From<FixRow> for Fix {
    fn from(r: FixRow) -> Fix {
        Fix {
            at: r.recorded_at,
            lat: r.lat,
            lon: r.lon,
            speed: r.speed,
        }
    }
}

const FIX_COLUMNS: &str =
    "recorded_at, ST_Y(point::geometry) AS lat, ST_X(point::geometry) AS lon, speed";

/// Brings one vehicle up to date, in one transaction; the fixes fed, or none if another
/// instance has it (or it was done meanwhile).
async fn detect(
    db: &PgPool,
    vehicle_id: i64,
    settings: &mut HashMap<i64, TripSettings>,
) -> sqlx::Result<Option<u64>> {
    let mut tx = db.begin().await?;
    let standing: Option<Standing> = sqlx::query_as(
        "SELECT organisation_id, processed_until, state, dirty_from FROM segmenter_vehicles
         WHERE vehicle_id = $1 AND dirty_from IS NOT NULL FOR UPDATE SKIP LOCKED",
    )
    .bind(vehicle_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(standing) = standing else {
        return Ok(None);
    };
    // Read after the row is locked: every noting that marked this vehicle has committed its
    // cursor, and any later one waits for this transaction.
    let noted: i64 = sqlx::query_scalar("SELECT seq FROM segmenter_cursor")
        .fetch_one(&mut *tx)
        .await?;
    let trip_settings = match settings.get(&standing.organisation_id) {
        Some(s) => *s,
        None => {
            let s = settings::load_trips(&mut tx, standing.organisation_id).await?;
            settings.insert(standing.organisation_id, s);
            s
        }
    };
    let dirty_from = standing.dirty_from.expect("selected dirty");
    let resume = match (standing.state, standing.processed_until) {
        (Some(state), Some(until)) if dirty_from > until => Some((state.0, until)),
        _ => None,
    };
    let (mut detector, mut after, mut fed) = match resume {
        Some((detector, until)) => (Some(detector), until, 0),
        None => {
            let boundary = rewind(&mut tx, vehicle_id, dirty_from).await?;
            // The boundary fix itself starts the detector again.
            let first: Option<FixRow> = sqlx::query_as(&format!(
                "SELECT {FIX_COLUMNS} FROM positions
                 WHERE vehicle_id = $1 AND recorded_at >= $2 AND seq <= $3 AND filter_reason IS NULL
                 ORDER BY recorded_at LIMIT 1"
            ))
            .bind(vehicle_id)
            .bind(boundary.unwrap_or(DateTime::UNIX_EPOCH))
            .bind(noted)
            .fetch_optional(&mut *tx)
            .await?;
            match first {
                Some(first) => {
                    let at = first.recorded_at;
                    (Some(Detector::after(first.into())), at, 1)
                }
                None => (None, DateTime::UNIX_EPOCH, 0),
            }
        }
    };
    sqlx::query("DELETE FROM segments WHERE vehicle_id = $1 AND NOT closed")
        .bind(vehicle_id)
        .execute(&mut *tx)
        .await?;
    let mut ended = Vec::new();
    if let Some(detector) = detector.as_mut() {
        loop {
            let rows: Vec<FixRow> = sqlx::query_as(&format!(
                "SELECT {FIX_COLUMNS} FROM positions
                 WHERE vehicle_id = $1 AND recorded_at > $2 AND seq <= $3 AND filter_reason IS NULL
                 ORDER BY recorded_at LIMIT $4"
            ))
            .bind(vehicle_id)
            .bind(after)
            .bind(noted)
            .bind(READ_CHUNK)
            .fetch_all(&mut *tx)
            .await?;
            let n = rows.len();
            for row in rows {
                after = row.recorded_at;
                detector.push(row.into(), &trip_settings, &mut ended);
            }
            fed += n as u64;
            if (n as i64) < READ_CHUNK {
                break;
            }
        }
    }
    let current = detector.as_ref().and_then(|d| d.current(&trip_settings));
    let mut paths = Vec::with_capacity(ended.len());
    for segment in &ended {
        paths.push(match segment.kind {
            Kind::Trip => Some(trip_path(&mut tx, vehicle_id, segment, noted).await?),
            Kind::Stop => None,
        });
    }
    store(
        &mut tx,
        standing.organisation_id,
        vehicle_id,
        &ended,
        &paths,
        current,
    )
    .await?;
    sqlx::query(
        "UPDATE segmenter_vehicles SET processed_until = $2, state = $3, dirty_from = NULL
         WHERE vehicle_id = $1",
    )
    .bind(vehicle_id)
    .bind(detector.as_ref().map(Detector::last_at))
    .bind(detector.map(sqlx::types::Json))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(fed))
}

/// Drops the segments decided from `from` on (and what is going on now), never those before the
/// oldest fix still stored; the end of the last segment left, where detection starts again.
async fn rewind(
    tx: &mut PgConnection,
    vehicle_id: i64,
    from: DateTime<Utc>,
) -> sqlx::Result<Option<DateTime<Utc>>> {
    let oldest: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT min(recorded_at) FROM positions WHERE vehicle_id = $1")
            .bind(vehicle_id)
            .fetch_one(&mut *tx)
            .await?;
    let from = oldest.map_or(from, |oldest| from.max(oldest));
    sqlx::query("DELETE FROM segments WHERE vehicle_id = $1 AND (decided_at >= $2 OR NOT closed)")
        .bind(vehicle_id)
        .bind(from)
        .execute(&mut *tx)
        .await?;
    sqlx::query_scalar(
        "SELECT ended_at FROM segments WHERE vehicle_id = $1 ORDER BY started_at DESC LIMIT 1",
    )
    .bind(vehicle_id)
    .fetch_optional(&mut *tx)
    .await
}

/// A trip's fixes, simplified for storing.
async fn trip_path(
    tx: &mut PgConnection,
    vehicle_id: i64,
    trip: &Segment,
    noted: i64,
) -> sqlx::Result<Vec<u8>> {
    let rows: Vec<FixRow> = sqlx::query_as(&format!(
        "SELECT {FIX_COLUMNS} FROM positions
         WHERE vehicle_id = $1 AND recorded_at >= $2 AND recorded_at <= $3 AND seq <= $4
           AND filter_reason IS NULL
         ORDER BY recorded_at"
    ))
    .bind(vehicle_id)
    .bind(trip.start.at)
    .bind(trip.end.at)
    .bind(noted)
    .fetch_all(&mut *tx)
    .await?;
    let vertices: Vec<Vertex> = rows
        .into_iter()
        .map(|r| Vertex {
            at: r.recorded_at,
            lat: r.lat,
            lon: r.lon,
            speed: r.speed,
        })
        .collect();
    let kept = path::simplify(vertices, path::STORED_TOLERANCE_M, |v| (v.lat, v.lon));
    Ok(path::encode(&kept))
}

/// Writes the segments that ended (closed) and the one going on now (open).
async fn store(
    tx: &mut PgConnection,
    organisation_id: i64,
    vehicle_id: i64,
    ended: &[Segment],
    paths: &[Option<Vec<u8>>],
    current: Option<Segment>,
) -> sqlx::Result<()> {
    let all: Vec<(&Segment, bool, Option<&Vec<u8>>)> = ended
        .iter()
        .zip(paths)
        .map(|(s, p)| (s, true, p.as_ref()))
        .chain(current.as_ref().map(|s| (s, false, None)))
        .collect();
    if all.is_empty() {
        return Ok(());
    }
    let column = |f: &dyn Fn(&Segment) -> f64| all.iter().map(|(s, ..)| f(s)).collect::<Vec<_>>();
    let kinds: Vec<&str> = all.iter().map(|(s, ..)| s.kind.as_str()).collect();
    let started: Vec<DateTime<Utc>> = all.iter().map(|(s, ..)| s.start.at).collect();
    let ended_at: Vec<DateTime<Utc>> = all.iter().map(|(s, ..)| s.end.at).collect();
    let decided: Vec<DateTime<Utc>> = all.iter().map(|(s, ..)| s.decided).collect();
    let closed: Vec<bool> = all.iter().map(|(_, c, _)| *c).collect();
    let max_speed: Vec<f32> = all.iter().map(|(s, ..)| s.totals.max_speed_mps).collect();
    let fixes: Vec<i32> = all
        .iter()
        .map(|(s, ..)| s.totals.fixes.min(i32::MAX as u32) as i32)
        .collect();
    let paths: Vec<Option<Vec<u8>>> = all.iter().map(|(.., p)| p.cloned()).collect();
    sqlx::query(
        "INSERT INTO segments (organisation_id, vehicle_id, kind, started_at, ended_at, decided_at,
                               closed, start_point, end_point, distance_m, max_speed_mps, fixes,
                               path)
         SELECT $1, $2, kind, started_at, ended_at, decided_at, closed,
                ST_SetSRID(ST_MakePoint(start_lon, start_lat), 4326)::geography,
                ST_SetSRID(ST_MakePoint(end_lon, end_lat), 4326)::geography,
                distance_m, max_speed_mps, fixes, path
         FROM UNNEST($3::text[], $4::timestamptz[], $5::timestamptz[], $6::bool[],
                     $7::float8[], $8::float8[], $9::float8[], $10::float8[], $11::float8[],
                     $12::real[], $13::int[], $14::bytea[], $15::timestamptz[])
              AS u(kind, started_at, ended_at, closed, start_lat, start_lon, end_lat, end_lon,
                   distance_m, max_speed_mps, fixes, path, decided_at)",
    )
    .bind(organisation_id)
    .bind(vehicle_id)
    .bind(kinds)
    .bind(started)
    .bind(ended_at)
    .bind(closed)
    .bind(column(&|s| s.start.lat))
    .bind(column(&|s| s.start.lon))
    .bind(column(&|s| s.end.lat))
    .bind(column(&|s| s.end.lon))
    .bind(column(&|s| s.totals.distance_m))
    .bind(max_speed)
    .bind(fixes)
    .bind(paths)
    .bind(decided)
    .execute(tx)
    .await?;
    Ok(())
}
