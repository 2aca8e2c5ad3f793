//! The clock-driven rules: a vehicle in transit that stops reporting (`silent`), and a shipment
//! still under way when it was due (`late`). Raised even when no traffic arrives, so a task
//! runs [`tick`] periodically; each tick takes the seq lock and reads the rule state under it,
//! so however many instances tick, each alert is raised once. [`tick`] takes the time it
//! judges by, so tests drive it with a clock of their own.
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{
    apply,
    rules::{trip_ended, Change},
    AlertSettings, Rule, RuleState, Subject,
};
use crate::{
    settings::stored_or_default,
    tracking::{lock_seq, set_seq, Batch, Tracking},
};

/// Ticks every `every`, the first time one period after start, until cancelled.
pub async fn run_clock(
    db: PgPool,
    tracking: std::sync::Arc<Tracking>,
    every: Duration,
    cancel: CancellationToken,
) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = interval.tick() => {}
        }
        if let Err(e) = tick(&db, &tracking, Utc::now()).await {
            tracing::warn!(error = %e, "alert clock tick failed");
        }
    }
}

#[derive(sqlx::FromRow)]
struct Candidate {
    vehicle_id: i64,
    organisation_id: i64,
    shipment_id: i64,
    last_at: DateTime<Utc>,
    lat: Option<f64>,
    lon: Option<f64>,
    alert_state: Value,
    settings: Option<Value>,
    due_at: Option<DateTime<Utc>>,
    eta: Option<DateTime<Utc>>,
}

/// Those that may be due at `now`. No rule fires within a minute of the last position or before
/// the due time; the rest are judged in full by [`judge`].
async fn candidates(
    conn: impl sqlx::PgExecutor<'_>,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<Candidate>> {
    sqlx::query_as(
        "SELECT v.id AS vehicle_id, v.organisation_id, s.id AS shipment_id,
                COALESCE(v.last_recorded_at, s.started_at) AS last_at,
                ST_Y(v.last_point::geometry) AS lat, ST_X(v.last_point::geometry) AS lon,
                v.alert_state, COALESCE(o.settings->'alerts', '{}') || v.alert_overrides AS settings,
                s.due_at, s.eta
         FROM shipments s
         JOIN vehicles v ON v.id = s.vehicle_id
         JOIN organisations o ON o.id = v.organisation_id
         WHERE s.status = 'in_transit'
           AND (COALESCE(v.last_recorded_at, s.started_at) < $1 - interval '1 minute' OR s.due_at < $1)",
    )
    .bind(now)
    .fetch_all(conn)
    .await
}

/// What a tick does: the alerts it raises, and the rule states that change with them (vehicle
/// id, state as JSON).
#[derive(Default)]
struct Due {
    changes: Vec<(Subject, Change)>,
    states: Vec<(i64, String)>,
}

/// The alerts due at `now`, each raised with the seq `next` hands out.
fn judge(candidates: Vec<Candidate>, now: DateTime<Utc>, next: &mut i64) -> Due {
    let Due {
        mut changes,
        mut states,
    } = Due::default();
    for c in candidates {
        let settings: AlertSettings =
            stored_or_default(c.organisation_id, "alert settings", c.settings);
        let mut state: RuleState =
            stored_or_default(c.vehicle_id, "rule state", Some(c.alert_state));
        let before = state.clone();
        let subject = || Subject {
            organisation_id: c.organisation_id,
            vehicle_id: c.vehicle_id,
            shipment_id: Some(c.shipment_id),
            position: None,
        };
        let silent_for = now - c.last_at;
        let silent = settings
            .silent_min
            .is_some_and(|m| silent_for >= chrono::Duration::minutes(m.into()));
        if silent && state.silent.is_none() {
            *next += 1;
            state.silent = Some(*next);
            let mut details =
                json!({"last_position_at": c.last_at, "minutes": silent_for.num_minutes()});
            if let (Some(lat), Some(lon)) = (c.lat, c.lon) {
                details["last_position"] = json!({"lat": lat, "lon": lon});
            }
            changes.push((
                subject(),
                Change::Raise {
                    id: *next,
                    rule: Rule::Silent,
                    geofence_id: None,
                    details,
                },
            ));
        }
        let open = state.start_trip(c.shipment_id);
        let mut seq = || {
            *next += 1;
            *next
        };
        changes.extend(trip_ended(open, now, &mut seq).map(|change| (subject(), change)));
        if let Some(due) = c.due_at.filter(|due| *due < now && !state.late) {
            *next += 1;
            state.late = true;
            changes.push((
                subject(),
                Change::Raise {
                    id: *next,
                    rule: Rule::Late,
                    geofence_id: None,
                    details: json!({"due_at": due, "eta": c.eta}),
                },
            ));
        }
        if state != before {
            states.push((
                c.vehicle_id,
                serde_json::to_string(&state).expect("rule state serialises"),
            ));
        }
    }
    Due { changes, states }
}

/// Raises what is due at `now`; returns how many alerts it raised.
pub async fn tick(db: &PgPool, tracking: &Tracking, now: DateTime<Utc>) -> sqlx::Result<usize> {
    // A first look without the seq lock: most ticks find nothing, and must not hold up ingest.
    if judge(candidates(db, now).await?, now, &mut 0)
        .changes
        .is_empty()
    {
        return Ok(0);
    }
    // Then again under the lock, which makes the state read exact: whichever instance ticks
    // second sees what the first raised.
    let mut tx = db.begin().await?;
    let mut seq = lock_seq(&mut tx).await?;
    let first = seq + 1;
    let Due { changes, states } = judge(candidates(&mut *tx, now).await?, now, &mut seq);
    if changes.is_empty() {
        return Ok(0);
    }
    let stored = apply(&mut tx, &changes, now).await?;
    let (ids, json): (Vec<i64>, Vec<String>) = states.into_iter().unzip();
    sqlx::query(
        "UPDATE vehicles v SET alert_state = u.state::jsonb
         FROM UNNEST($1::bigint[], $2::text[]) AS u(id, state) WHERE v.id = u.id",
    )
    .bind(&ids)
    .bind(&json)
    .execute(&mut *tx)
    .await?;
    set_seq(&mut tx, seq).await?;
    tx.commit().await?;
    let raised = stored.len();
    tracing::info!(raised, "alert clock raised alerts");
    tracking.committed(Batch {
        first,
        last: seq,
        events: stored
            .iter()
            .flat_map(|(seq, event, alert)| alert.frames(*seq, *event, |k| tracking.wants(k)))
            .collect(),
    });
    Ok(raised)
}

#[cfg(test)]
mod tests;
