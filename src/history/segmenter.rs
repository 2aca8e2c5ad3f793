//! Keeps every vehicle's trips and stops up to date as fixes arrive, off the ingest path.
//!
//! Two steps, each safe with many instances running them at once:
//!
//! 1. **Noting.** New fixes are found by seq (committed positions take seqs in commit order):
//!    everything after `segmenter_cursor.seq` up to the committed counter is grouped by vehicle,
//!    and each vehicle's `dirty_from` becomes the earliest new fix's time. One instance at a time
//!    holds the cursor; the others skip the step.
//! 2. **Detecting.** Vehicles with a `dirty_from` are taken in rounds of up to 64 per transaction
//!    (their rows locked, other instances skip them; their new fixes read in one query) and each
//!    brought up to date with fixes noted so far (seq up to the cursor, so that a fix is never
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
    path::{self, FixRow, Vertex, FIX_COLUMNS},
    TripSettings,
};
use crate::{
    metrics::Metrics,
    settings::{self, Settings},
};

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
        let (vehicles, fed) = detect_round(db, &mut settings).await?;
        if vehicles == 0 {
            // None dirty, or every dirty one is being done by another instance.
            return Ok(done);
        }
        done += vehicles;
        metrics.segmented_fixes.inc_by(fed);
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
    vehicle_id: i64,
    organisation_id: i64,
    processed_until: Option<DateTime<Utc>>,
    state: Option<sqlx::types::Json<Detector>>,
    dirty_from: DateTime<Utc>,
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

/// One vehicle being brought up to date.
struct Work {
    vehicle_id: i64,
    organisation_id: i64,
    settings: TripSettings,
    /// The fastest a device may report moving (the organisation's filter): a reported speed above
    /// it is a glitch, left out of the stored track.
    max_speed_mps: Option<f64>,
    /// None: no fix to start from yet.
    detector: Option<Detector>,
    /// The time of the last fix fed.
    after: DateTime<Utc>,
    fed: u64,
    ended: Vec<Segment>,
    /// Each ended trip's stored track, when this run read all its fixes (None: read it again).
    tracks: Vec<Option<Vec<u8>>>,
    /// The fixes fed this run from the start of the segment going on.
    seen: Vec<Fix>,
}

impl Work {
    fn feed(&mut self, rows: Vec<FixRow>) {
        for row in rows {
            self.after = row.recorded_at;
            self.fed += 1;
            let fix = believed(row.into(), self.max_speed_mps);
            self.seen.push(fix);
            match self.detector.as_mut() {
                Some(d) => d.push(fix, &self.settings, &mut self.ended),
                None => self.detector = Some(Detector::after(fix)),
            }
            if self.tracks.len() < self.ended.len() {
                for i in self.tracks.len()..self.ended.len() {
                    let segment = self.ended[i];
                    let covered = self.seen.first().is_some_and(|f| f.at <= segment.start.at);
                    let track = (segment.kind == Kind::Trip && covered).then(|| {
                        let fixes = self
                            .seen
                            .iter()
                            .filter(|f| f.at >= segment.start.at && f.at <= segment.end.at);
                        stored_track(fixes.copied())
                    });
                    self.tracks.push(track);
                }
                let open = self.detector.as_ref().map(Detector::started_at);
                self.seen
                    .retain(|f| open.is_some_and(|start| f.at >= start));
            }
        }
    }
}

/// `fix` with its reported speed left out if it is faster than the organisation's filter lets a
/// vehicle move: a glitch, for which the speed between fixes stands in.
fn believed(mut fix: Fix, max_speed_mps: Option<f64>) -> Fix {
    fix.speed = fix
        .speed
        .filter(|&s| max_speed_mps.is_none_or(|max| f64::from(s) <= max));
    fix
}

/// A trip's fixes, simplified and encoded for storing.
fn stored_track(fixes: impl Iterator<Item = Fix>) -> Vec<u8> {
    let vertices: Vec<Vertex> = fixes
        .map(|f| Vertex {
            at: f.at,
            lat: f.lat,
            lon: f.lon,
            speed: f.speed,
        })
        .collect();
    let kept = path::simplify(vertices, path::STORED_TOLERANCE_M, |v| (v.lat, v.lon));
    path::encode(&kept)
}

/// Brings a round of dirty vehicles up to date in one transaction (their rows locked; those
/// another instance holds are skipped): how many, and the fixes fed.
async fn detect_round(
    db: &PgPool,
    settings: &mut HashMap<i64, Settings>,
) -> sqlx::Result<(usize, u64)> {
    let mut tx = db.begin().await?;
    let standings: Vec<Standing> = sqlx::query_as(
        "SELECT vehicle_id, organisation_id, processed_until, state, dirty_from
         FROM segmenter_vehicles WHERE dirty_from IS NOT NULL
         ORDER BY dirty_from LIMIT $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(ROUND)
    .fetch_all(&mut *tx)
    .await?;
    if standings.is_empty() {
        return Ok((0, 0));
    }
    // Read after the rows are locked: every noting that marked these vehicles has committed its
    // cursor, and any later one waits for this transaction.
    let noted: i64 = sqlx::query_scalar("SELECT seq FROM segmenter_cursor")
        .fetch_one(&mut *tx)
        .await?;
    let mut work = Vec::with_capacity(standings.len());
    for standing in standings {
        let org = match settings.get(&standing.organisation_id) {
            Some(s) => s,
            None => {
                let s = settings::load_in(&mut tx, standing.organisation_id).await?;
                settings.entry(standing.organisation_id).or_insert(s)
            }
        };
        let mut w = Work {
            vehicle_id: standing.vehicle_id,
            organisation_id: standing.organisation_id,
            settings: TripSettings {
                plausible_speed_mps: org.filter.max_speed_mps,
                ..org.trips
            },
            max_speed_mps: org.filter.max_speed_mps,
            detector: None,
            after: DateTime::UNIX_EPOCH,
            fed: 0,
            ended: Vec::new(),
            tracks: Vec::new(),
            seen: Vec::new(),
        };
        match (standing.state, standing.processed_until) {
            // Only new fixes, all later than the last one fed: feed them to the saved state.
            (Some(state), Some(until)) if standing.dirty_from > until => {
                w.detector = Some(state.0);
                w.after = until;
            }
            _ => {
                // The boundary fix itself starts the detector again.
                let boundary = rewind(&mut tx, w.vehicle_id, standing.dirty_from).await?;
                if let Some(boundary) = boundary {
                    w.after = boundary - chrono::Duration::microseconds(1);
                }
            }
        }
        work.push(w);
    }
    // Every vehicle's next fixes in one query, then those with more to read one by one.
    let ids: Vec<i64> = work.iter().map(|w| w.vehicle_id).collect();
    let afters: Vec<DateTime<Utc>> = work.iter().map(|w| w.after).collect();
    let rows: Vec<(i64, FixRow)> = sqlx::query_as::<_, VehicleFix>(&format!(
        "SELECT v.id AS vehicle_id, f.* FROM UNNEST($1::bigint[], $2::timestamptz[]) AS v(id, after)
         CROSS JOIN LATERAL (
             SELECT {FIX_COLUMNS} FROM positions
             WHERE vehicle_id = v.id AND recorded_at > v.after AND seq <= $3
               AND filter_reason IS NULL
             ORDER BY recorded_at LIMIT $4) f
         ORDER BY v.id, f.recorded_at"
    ))
    .bind(&ids)
    .bind(&afters)
    .bind(noted)
    .bind(READ_CHUNK)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|r| (r.vehicle_id, r.fix))
    .collect();
    let mut by_vehicle: HashMap<i64, Vec<FixRow>> = HashMap::new();
    for (vehicle_id, fix) in rows {
        by_vehicle.entry(vehicle_id).or_default().push(fix);
    }
    for w in &mut work {
        let mut rows = by_vehicle.remove(&w.vehicle_id).unwrap_or_default();
        loop {
            let n = rows.len();
            w.feed(rows);
            if (n as i64) < READ_CHUNK {
                break;
            }
            rows = sqlx::query_as(&format!(
                "SELECT {FIX_COLUMNS} FROM positions
                 WHERE vehicle_id = $1 AND recorded_at > $2 AND seq <= $3 AND filter_reason IS NULL
                 ORDER BY recorded_at LIMIT $4"
            ))
            .bind(w.vehicle_id)
            .bind(w.after)
            .bind(noted)
            .bind(READ_CHUNK)
            .fetch_all(&mut *tx)
            .await?;
        }
    }
    let mut rows = Vec::new();
    for w in &work {
        for (segment, track) in w.ended.iter().zip(&w.tracks) {
            let path = match (segment.kind, track) {
                (Kind::Trip, Some(track)) => Some(track.clone()),
                (Kind::Trip, None) => Some(trip_path(&mut tx, w, segment, noted).await?),
                (Kind::Stop, _) => None,
            };
            rows.push(Stored {
                work: w,
                segment: *segment,
                closed: true,
                path,
            });
        }
        let current = w.detector.as_ref().and_then(|d| d.current(&w.settings));
        rows.extend(current.map(|segment| Stored {
            work: w,
            segment,
            closed: false,
            path: None,
        }));
    }
    sqlx::query("DELETE FROM segments WHERE vehicle_id = ANY($1) AND NOT closed")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    store(&mut tx, &rows).await?;
    let until: Vec<Option<DateTime<Utc>>> = work
        .iter()
        .map(|w| w.detector.as_ref().map(Detector::last_at))
        .collect();
    let states: Vec<Option<serde_json::Value>> = work
        .iter()
        .map(|w| {
            w.detector
                .as_ref()
                .map(|d| serde_json::to_value(d).expect("the detector serialises"))
        })
        .collect();
    sqlx::query(
        "UPDATE segmenter_vehicles s SET processed_until = u.until, state = u.state, dirty_from = NULL
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::jsonb[]) AS u(id, until, state)
         WHERE s.vehicle_id = u.id",
    )
    .bind(&ids)
    .bind(until)
    .bind(states)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((work.len(), work.iter().map(|w| w.fed).sum()))
}

#[derive(sqlx::FromRow)]
struct VehicleFix {
    vehicle_id: i64,
    #[sqlx(flatten)]
    fix: FixRow,
}

/// A segment to write: whose, and (for a closed trip) its stored track.
struct Stored<'a> {
    work: &'a Work,
    segment: Segment,
    closed: bool,
    path: Option<Vec<u8>>,
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

/// A trip's stored track, from its fixes read again (it began before this run).
async fn trip_path(
    tx: &mut PgConnection,
    w: &Work,
    trip: &Segment,
    noted: i64,
) -> sqlx::Result<Vec<u8>> {
    let rows: Vec<FixRow> = sqlx::query_as(&format!(
        "SELECT {FIX_COLUMNS} FROM positions
         WHERE vehicle_id = $1 AND recorded_at >= $2 AND recorded_at <= $3 AND seq <= $4
           AND filter_reason IS NULL
         ORDER BY recorded_at"
    ))
    .bind(w.vehicle_id)
    .bind(trip.start.at)
    .bind(trip.end.at)
    .bind(noted)
    .fetch_all(&mut *tx)
    .await?;
    Ok(stored_track(
        rows.into_iter()
            .map(|r| believed(r.into(), w.max_speed_mps)),
    ))
}

/// Writes segments, closed and going on now.
async fn store(tx: &mut PgConnection, rows: &[Stored<'_>]) -> sqlx::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let column =
        |f: &dyn Fn(&Segment) -> f64| rows.iter().map(|r| f(&r.segment)).collect::<Vec<_>>();
    let time = |f: &dyn Fn(&Segment) -> DateTime<Utc>| {
        rows.iter().map(|r| f(&r.segment)).collect::<Vec<_>>()
    };
    let organisations: Vec<i64> = rows.iter().map(|r| r.work.organisation_id).collect();
    let vehicles: Vec<i64> = rows.iter().map(|r| r.work.vehicle_id).collect();
    let kinds: Vec<&str> = rows.iter().map(|r| r.segment.kind.as_str()).collect();
    let closed: Vec<bool> = rows.iter().map(|r| r.closed).collect();
    let max_speed: Vec<f32> = rows
        .iter()
        .map(|r| r.segment.totals.max_speed_mps)
        .collect();
    let fixes: Vec<i32> = rows
        .iter()
        .map(|r| r.segment.totals.fixes.min(i32::MAX as u32) as i32)
        .collect();
    let paths: Vec<Option<&[u8]>> = rows.iter().map(|r| r.path.as_deref()).collect();
    sqlx::query(
        "INSERT INTO segments (organisation_id, vehicle_id, kind, started_at, ended_at, decided_at,
                               closed, start_point, end_point, distance_m, max_speed_mps, fixes,
                               path)
         SELECT organisation_id, vehicle_id, kind, started_at, ended_at, decided_at, closed,
                ST_SetSRID(ST_MakePoint(start_lon, start_lat), 4326)::geography,
                ST_SetSRID(ST_MakePoint(end_lon, end_lat), 4326)::geography,
                distance_m, max_speed_mps, fixes, path
         FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::timestamptz[],
                     $6::timestamptz[], $7::bool[], $8::float8[], $9::float8[], $10::float8[],
                     $11::float8[], $12::float8[], $13::real[], $14::int[], $15::bytea[])
              AS u(organisation_id, vehicle_id, kind, started_at, ended_at, decided_at, closed,
                   start_lat, start_lon, end_lat, end_lon, distance_m, max_speed_mps, fixes, path)",
    )
    .bind(organisations)
    .bind(vehicles)
    .bind(kinds)
    .bind(time(&|s| s.start.at))
    .bind(time(&|s| s.end.at))
    .bind(time(&|s| s.decided))
    .bind(closed)
    .bind(column(&|s| s.start.lat))
    .bind(column(&|s| s.start.lon))
    .bind(column(&|s| s.end.lat))
    .bind(column(&|s| s.end.lon))
    .bind(column(&|s| s.totals.distance_m))
    .bind(max_speed)
    .bind(fixes)
    .bind(paths)
    .execute(tx)
    .await?;
    Ok(())
}
