//! ETA accuracy, measured by the product itself: the ETA each shipment showed 30, 20, 10 and 5
//! minutes before it arrived, how far off that was, and the organisation's error per horizon.
//!
//! The writer logs every ETA it gives a shipment, at the time of the fix that gave it
//! (`shipment_etas`, in the same statement as the shipment's new `eta`); when a shipment
//! arrives, [`record`] picks the ETA shown at each horizon from that log and the shipment's fixes
//! and stores the errors (`eta_errors`) in the same transaction as the arrival.
use axum::{extract::State, routing::get, Json, Router};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgConnection;

use super::eta::Method;
use crate::{
    alerts::openapi::EtaAccuracy,
    auth::CurrentUser,
    error::openapi::{BadRequest, CommonErrors, Forbidden, NotFound},
    error::{ApiQuery, AppError, AppResult},
    fleet::vehicles,
    AppState,
};

/// Minutes before arrival at which the shown ETA is judged, longest first.
pub const HORIZONS_MIN: [i64; 4] = [30, 20, 10, 5];
/// The ETA shown at a moment is the one the shipment had at its latest fix at or before it, if
/// that fix is no older than this; otherwise the vehicle had gone quiet and nothing is judged.
pub const STALE: Duration = Duration::minutes(2);

/// An ETA the writer gave a shipment: at the fix taken at `at`, made by `method` (none for the
/// arrival itself).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Given {
    pub at: DateTime<Utc>,
    pub eta: DateTime<Utc>,
    pub method: Option<Method>,
}

/// The ETA a shipment showed `horizon_min` before it arrived, and how far off it was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub horizon_min: i64,
    /// The fix as of which it was shown.
    pub shown_at: DateTime<Utc>,
    pub given: Given,
    /// ETA minus arrival: positive when it said later than the vehicle came.
    pub error_s: f64,
}

/// The ETA shown at each horizon before `arrived`, from the shipment's fixes and the ETAs it was
/// given, both in time order: at `arrived − h`, the latest ETA given at or before the latest fix
/// at or before that moment, if that fix is at most [`STALE`] old. A horizon with no such fix,
/// or before any ETA, has no sample.
pub fn shown(fixes: &[DateTime<Utc>], given: &[Given], arrived: DateTime<Utc>) -> Vec<Sample> {
    HORIZONS_MIN
        .iter()
        .filter_map(|h| {
            let moment = arrived - Duration::minutes(*h);
            let fix = *fixes[..fixes.partition_point(|t| *t <= moment)].last()?;
            if moment - fix > STALE {
                return None;
            }
            let given = *given[..given.partition_point(|g| g.at <= fix)].last()?;
            Some(Sample {
                horizon_min: *h,
                shown_at: fix,
                given,
                error_s: (given.eta - arrived).num_milliseconds() as f64 / 1000.0,
            })
        })
        .collect()
}

/// A method as it is stored and filtered on: its JSON name.
fn method_name(method: Method) -> String {
    serde_json::to_value(method)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .expect("a method serialises as its name")
}

/// Columns of the ETA log for the writer's statement: shipment, fix time, ETA, method.
pub type LogColumns = (
    Vec<i64>,
    Vec<DateTime<Utc>>,
    Vec<DateTime<Utc>>,
    Vec<Option<String>>,
);

/// The rows of `shipment_etas` for ETAs given to shipments, as UNNEST-ready columns.
pub fn log_columns<'a>(given: impl IntoIterator<Item = (i64, &'a Given)>) -> LogColumns {
    let mut columns: LogColumns = Default::default();
    for (shipment, g) in given {
        columns.0.push(shipment);
        columns.1.push(g.at);
        columns.2.push(g.eta);
        columns.3.push(g.method.map(method_name));
    }
    columns
}

#[derive(sqlx::FromRow)]
struct LogRow {
    id: i64,
    at: DateTime<Utc>,
    eta: Option<DateTime<Utc>>,
    method: Option<String>,
}

/// Stores the errors of `arrivals` (shipment, arrival time), which arrived in this transaction
/// (after their fixes and ETAs were written in it): each horizon once, and only for a shipment
/// that is still `arrived` at that time. Gives the (horizon, error) of each error stored.
pub async fn record(
    tx: &mut PgConnection,
    arrivals: &[(i64, DateTime<Utc>)],
) -> sqlx::Result<Vec<(i64, f64)>> {
    let longest = Duration::minutes(HORIZONS_MIN[0]) + STALE;
    let shortest = Duration::minutes(HORIZONS_MIN[HORIZONS_MIN.len() - 1]);
    let ids: Vec<i64> = arrivals.iter().map(|a| a.0).collect();
    let earliest: Vec<DateTime<Utc>> = arrivals.iter().map(|a| a.1 - longest).collect();
    let latest: Vec<DateTime<Utc>> = arrivals.iter().map(|a| a.1 - shortest).collect();
    // The shipments' own current fixes in the window the horizons look at (eta NULL), and the
    // ETAs given up to its end, from the one in force at its start.
    let rows: Vec<LogRow> = sqlx::query_as(
        "SELECT a.id, p.recorded_at AS at, NULL::timestamptz AS eta, NULL::text AS method
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS a(id, earliest, latest)
         JOIN positions p ON p.shipment_id = a.id AND p.recorded_at BETWEEN a.earliest AND a.latest
          AND NOT p.late AND p.filter_reason IS NULL
         UNION ALL
         SELECT a.id, e.at, e.eta, e.method
         FROM UNNEST($1::bigint[], $2::timestamptz[], $3::timestamptz[]) AS a(id, earliest, latest)
         JOIN shipment_etas e ON e.shipment_id = a.id AND e.at <= a.latest
          AND e.at >= COALESCE((SELECT max(o.at) FROM shipment_etas o
                                WHERE o.shipment_id = a.id AND o.at <= a.earliest), '-infinity')
         ORDER BY 1, 2",
    )
    .bind(&ids)
    .bind(&earliest)
    .bind(&latest)
    .fetch_all(&mut *tx)
    .await?;
    let mut samples: Vec<(i64, DateTime<Utc>, Sample)> = Vec::new();
    for (id, arrived) in arrivals {
        let mine = rows.iter().filter(|r| r.id == *id);
        let fixes: Vec<DateTime<Utc>> = mine
            .clone()
            .filter(|r| r.eta.is_none())
            .map(|r| r.at)
            .collect();
        let given: Vec<Given> = mine
            .filter_map(|r| {
                Some(Given {
                    at: r.at,
                    eta: r.eta?,
                    method: r
                        .method
                        .as_deref()
                        .and_then(|m| serde_json::from_value(Value::String(m.to_owned())).ok()),
                })
            })
            .collect();
        samples.extend(
            shown(&fixes, &given, *arrived)
                .into_iter()
                .map(|s| (*id, *arrived, s)),
        );
    }
    if samples.is_empty() {
        return Ok(Vec::new());
    }
    let stored: Vec<(i16, f64)> = sqlx::query_as(
        "INSERT INTO eta_errors (shipment_id, horizon_min, organisation_id, vehicle_id, arrived_at,
             shown_at, eta, error_s, method)
         SELECT s.id, u.h, s.organisation_id, s.vehicle_id, u.arrived, u.shown, u.eta, u.err, u.method
         FROM UNNEST($1::bigint[], $2::int2[], $3::timestamptz[], $4::timestamptz[],
             $5::timestamptz[], $6::float8[], $7::text[]) AS u(id, h, arrived, shown, eta, err, method)
         JOIN shipments s ON s.id = u.id AND s.status = 'arrived' AND s.ended_at = u.arrived
         ON CONFLICT (shipment_id, horizon_min) DO NOTHING
         RETURNING horizon_min, error_s",
    )
    .bind(samples.iter().map(|s| s.0).collect::<Vec<_>>())
    .bind(samples.iter().map(|s| s.2.horizon_min as i16).collect::<Vec<_>>())
    .bind(samples.iter().map(|s| s.1).collect::<Vec<_>>())
    .bind(samples.iter().map(|s| s.2.shown_at).collect::<Vec<_>>())
    .bind(samples.iter().map(|s| s.2.given.eta).collect::<Vec<_>>())
    .bind(samples.iter().map(|s| s.2.error_s).collect::<Vec<_>>())
    .bind(
        samples
            .iter()
            .map(|s| s.2.given.method.map(method_name))
            .collect::<Vec<_>>(),
    )
    .fetch_all(&mut *tx)
    .await?;
    Ok(stored.into_iter().map(|(h, e)| (i64::from(h), e)).collect())
}

pub fn router() -> Router<AppState> {
    Router::new().route("/eta/accuracy", get(accuracy))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct AccuracyQuery {
    /// Only shipments this vehicle carried (one of the organisation's, else 404).
    vehicle_id: Option<i64>,
    /// Only shipments whose planned route is the same as this shipment's (one of the
    /// organisation's with a planned route), as earlier trips are matched.
    same_route_as: Option<i64>,
    /// Only ETAs made this way.
    #[param(value_type = Option<Method>, inline)]
    method: Option<String>,
    /// Arrivals at or after this time.
    since: Option<DateTime<Utc>>,
    /// Arrivals before this time (after `since`).
    until: Option<DateTime<Utc>>,
}

/// One horizon's errors: how many, mean absolute, 90th percentile of the absolute (the nearest
/// rank), and mean signed (bias), in seconds; null when there are none.
#[derive(Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub(crate) struct Horizon {
    /// Minutes before arrival: 30, 20, 10 or 5.
    horizon_min: i32,
    /// Shipments with a sample at this horizon.
    #[schema(minimum = 0)]
    n: i64,
    /// Mean absolute error, seconds; null when n = 0.
    #[schema(required = true)]
    mae_s: Option<f64>,
    /// 90th percentile of the absolute error (nearest rank), seconds; null when n = 0.
    #[schema(required = true)]
    p90_s: Option<f64>,
    /// Mean error (ETA − arrival), seconds: positive when ETAs said later than the vehicles came;
    /// null when n = 0.
    #[schema(required = true)]
    bias_s: Option<f64>,
}

#[utoipa::path(
    get,
    path = "/eta/accuracy",
    operation_id = "etaAccuracy",
    summary = "How far off the ETAs of arrived shipments were, per horizon",
    description = "Dispatchers and admins, their organisation's shipments. For each horizon (30, 20, 10 and 5 minutes before arrival), the ETA the shipment showed then: the one in force at its latest fix at or before that moment, if that fix is at most 2 minutes old (otherwise the shipment has no sample at that horizon). The error is ETA − arrival in seconds, positive when it said later than the vehicle came.",
    tag = "eta",
    params(AccuracyQuery),
    responses(
        (status = 200, body = EtaAccuracy, description = "One entry per horizon, longest first."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn accuracy(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<AccuracyQuery>,
) -> AppResult<Json<Value>> {
    user.require_dispatcher()?;
    let org = user.organisation_id;
    if let Some(m) = &q.method {
        if serde_json::from_value::<Method>(Value::String(m.clone())).is_err() {
            return Err(AppError::validation(
                "method",
                "method must be route_progress, earlier_trips or straight_line",
            ));
        }
    }
    if let (Some(since), Some(until)) = (q.since, q.until) {
        if until <= since {
            return Err(AppError::validation("until", "until must be after since"));
        }
    }
    if let Some(v) = q.vehicle_id {
        vehicles::get(&state.db, org, v).await?;
    }
    if let Some(s) = q.same_route_as {
        let routed = sqlx::query_scalar!(
            r#"SELECT planned_route IS NOT NULL AS "routed!" FROM shipments
               WHERE id = $1 AND organisation_id = $2"#,
            s,
            org
        )
        .fetch_optional(&state.db)
        .await?;
        match routed {
            None => return Err(AppError::NotFound("shipment")),
            Some(false) => {
                return Err(AppError::validation(
                    "same_route_as",
                    "that shipment has no planned route",
                ))
            }
            Some(true) => {}
        }
    }
    let horizons = sqlx::query_as!(
        Horizon,
        r#"SELECT h.m::int4 AS "horizon_min!", count(e.shipment_id) AS "n!",
                round(avg(abs(e.error_s))::numeric, 3)::float8 AS mae_s,
                round((percentile_disc(0.9) WITHIN GROUP (ORDER BY abs(e.error_s)))::numeric, 3)::float8 AS p90_s,
                round(avg(e.error_s)::numeric, 3)::float8 AS bias_s
         FROM UNNEST($1::int2[]) WITH ORDINALITY AS h(m, i)
         LEFT JOIN eta_errors e ON e.horizon_min = h.m AND e.organisation_id = $2
          AND ($3::bigint IS NULL OR e.vehicle_id = $3)
          AND ($4::bigint IS NULL OR e.shipment_id IN (
              SELECT o.id FROM shipments o JOIN shipments r ON r.id = $4
              WHERE o.organisation_id = $2 AND o.planned_route IS NOT NULL
                AND ST_Equals(o.planned_route::geometry, r.planned_route::geometry)))
          AND ($5::text IS NULL OR e.method = $5)
          AND ($6::timestamptz IS NULL OR e.arrived_at >= $6)
          AND ($7::timestamptz IS NULL OR e.arrived_at < $7)
         GROUP BY h.m, h.i ORDER BY h.i"#,
        &HORIZONS_MIN.iter().map(|h| *h as i16).collect::<Vec<_>>(),
        org,
        q.vehicle_id,
        q.same_route_as,
        q.method.as_deref(),
        q.since,
        q.until
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Json(json!({ "horizons": horizons })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn given(at: i64, eta: i64) -> Given {
        Given {
            at: t(at),
            eta: t(eta),
            method: Some(Method::StraightLine),
        }
    }

    #[test]
    fn each_horizon_takes_the_eta_in_force_at_the_latest_fix_at_or_before_it() {
        let arrived = t(3600);
        // Fixes every 30 s for the hour, and one 10 s after the 20-minute moment.
        let mut fixes: Vec<DateTime<Utc>> = (0..120).map(|i| t(i * 30)).collect();
        fixes.push(t(2400 + 10));
        fixes.sort();
        let etas = [
            given(300, 3500),
            // Given at the fix at the 30-minute moment itself: it is the one shown then.
            given(1800, 3660),
            // Given 10 s after the 20-minute moment: not yet shown then.
            given(2410, 3700),
            given(3030, 3590),
        ];
        let samples = shown(&fixes, &etas, arrived);
        let errors: Vec<(i64, f64)> = samples.iter().map(|s| (s.horizon_min, s.error_s)).collect();
        assert_eq!(errors, [(30, 60.0), (20, 60.0), (10, 100.0), (5, -10.0)]);
        assert_eq!(samples[1].shown_at, t(2400));
        assert_eq!(samples[1].given, etas[1]);
    }

    #[test]
    fn a_horizon_whose_latest_fix_is_over_two_minutes_old_or_before_any_eta_has_no_sample() {
        let arrived = t(3600);
        // No ETA yet at the 30-minute moment; quiet for 2 min 30 s at the 10-minute one; the
        // latest fix exactly 2 min before the 5-minute one still counts.
        let fixes = [
            t(0),
            t(600),
            t(1200),
            t(1800),
            t(2300),
            t(2850),
            t(3180),
            t(3600),
        ];
        let etas = [given(1900, 3650), given(2850, 3700)];
        let samples = shown(&fixes, &etas, arrived);
        let errors: Vec<(i64, f64)> = samples.iter().map(|s| (s.horizon_min, s.error_s)).collect();
        assert_eq!(errors, [(20, 50.0), (5, 100.0)]);
        assert_eq!(samples[1].shown_at, t(3180));
        assert!(shown(&fixes, &[], arrived).is_empty());
    }
}
