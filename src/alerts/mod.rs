//! The alerts channel: geofences, the rules that watch every accepted position (and a clock, for
//! vehicles that go quiet or run late), and the alerts they raise, which are stored, published on
//! `alerts` and the shipment's topic with a seq, listed, and acknowledged.
//!
//! Rules run inside the position writer's transaction, under the seq lock, with each vehicle's
//! rule state read and written with the vehicle: each alert is raised once however many
//! instances run, survives restarts, and takes its seq in commit order like any position.
pub mod accuracy;
pub(crate) mod api;
mod clock;
pub mod eta;
mod fence_state;
mod fences;
#[cfg(test)]
mod geofence_tests;
pub(crate) mod geofences;
pub mod openapi;
mod route;
mod rules;
mod settings;
mod store;
#[cfg(test)]
mod test_support;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::Router;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;

pub use accuracy::Given;
pub use api::{acknowledge, recent, unacknowledged};
pub use clock::{run_clock, tick};
pub use fence_state::{FenceState, Mark, Pending};
pub use fences::{Area, Fence, FenceIndex, OrgFences, Shape};
pub use route::Route;
pub use rules::{evaluate, Change, Context, Outcome, RuleState, Trip};
pub use settings::AlertSettings;
pub use store::{apply, Alert, AlertChange, AlertEvent, AlertEvents, Subject, ALERT_COLUMNS};

use crate::{db::DbPoint, tracking::Tracking, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(api::router())
        .merge(geofences::router())
        .merge(accuracy::router())
}

/// What raised an alert: its `rule`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum Rule {
    GeofenceEnter,
    GeofenceExit,
    GeofenceDwell,
    Overspeed,
    Stopped,
    Silent,
    OffRoute,
    Arrived,
    Late,
}

impl Rule {
    pub const ALL: [Rule; 9] = [
        Rule::GeofenceEnter,
        Rule::GeofenceExit,
        Rule::GeofenceDwell,
        Rule::Overspeed,
        Rule::Stopped,
        Rule::Silent,
        Rule::OffRoute,
        Rule::Arrived,
        Rule::Late,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::GeofenceEnter => "geofence_enter",
            Rule::GeofenceExit => "geofence_exit",
            Rule::GeofenceDwell => "geofence_dwell",
            Rule::Overspeed => "overspeed",
            Rule::Stopped => "stopped",
            Rule::Silent => "silent",
            Rule::OffRoute => "off_route",
            Rule::Arrived => "arrived",
            Rule::Late => "late",
        }
    }

    pub fn parse(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// How many of the latest earlier shipments on the same planned route time a new one's ETA.
const EARLIER_TRIPS: i64 = 10;

/// One accepted fix of an earlier trip.
struct TripFix {
    shipment_id: i64,
    recorded_at: DateTime<Utc>,
    point: DbPoint,
}

/// `route`, shipment `id`'s planned route, timed by the latest earlier shipments of its
/// organisation that followed the same planned route and have arrived.
async fn with_history(conn: &mut PgConnection, id: i64, route: Route) -> sqlx::Result<Route> {
    let rows = sqlx::query_as!(
        TripFix,
        r#"SELECT p.shipment_id AS "shipment_id!", p.recorded_at,
             p.point::geometry AS "point!: DbPoint"
         FROM positions p
         WHERE p.shipment_id IN (
             SELECT e.id FROM shipments e JOIN shipments s ON s.id = $1
             WHERE e.id <> s.id AND e.organisation_id = s.organisation_id
               AND e.status IN ('arrived', 'delivered') AND e.planned_route IS NOT NULL
               AND ST_Equals(e.planned_route::geometry, s.planned_route::geometry)
             ORDER BY e.ended_at DESC NULLS LAST LIMIT $2)
           AND NOT p.late AND p.filter_reason IS NULL
         ORDER BY p.shipment_id, p.recorded_at"#,
        id,
        EARLIER_TRIPS
    )
    .fetch_all(&mut *conn)
    .await?;
    let trips: Vec<Box<eta::Fixes>> = rows
        .chunk_by(|a, b| a.shipment_id == b.shipment_id)
        .map(|trip| {
            trip.iter()
                .map(|f| (f.recorded_at, (f.point.0.y(), f.point.0.x())))
                .collect::<Box<eta::Fixes>>()
        })
        .collect();
    let history = eta::History::learn(&route, trips.iter().map(|f| &**f));
    Ok(route.with_history(history))
}

/// Most planned routes one instance keeps; past this the cache starts afresh.
const MAX_ROUTES: usize = 10_000;

/// The engine's in-memory side, shared by the writer workers and the clock: the geofence index
/// and the planned routes of the shipments seen.
pub struct Alerts {
    pub fences: FenceIndex,
    routes: Mutex<HashMap<i64, Option<Arc<Route>>>>,
    pub tracking: Arc<Tracking>,
}

impl Alerts {
    pub fn new(tracking: Arc<Tracking>) -> Arc<Alerts> {
        Arc::new(Alerts {
            fences: FenceIndex::default(),
            routes: Mutex::new(HashMap::new()),
            tracking,
        })
    }

    /// The planned routes of `shipments` (none for a shipment without one), reading on `conn`
    /// those this instance has not seen. A planned route never changes once the shipment exists.
    pub async fn routes(
        &self,
        conn: &mut PgConnection,
        shipments: &[i64],
    ) -> sqlx::Result<HashMap<i64, Option<Arc<Route>>>> {
        let missing: Vec<i64> = {
            let routes = self.routes.lock().expect("routes poisoned");
            shipments
                .iter()
                .copied()
                .filter(|id| !routes.contains_key(id))
                .collect()
        };
        if !missing.is_empty() {
            let rows = sqlx::query!(
                "SELECT id, ST_AsGeoJSON(planned_route)::jsonb AS route FROM shipments
                 WHERE id = ANY($1)",
                &missing
            )
            .fetch_all(&mut *conn)
            .await?;
            let mut found = Vec::with_capacity(rows.len());
            for row in rows {
                let (id, route) = (row.id, row.route);
                let route = match route.as_ref().and_then(Route::from_geojson) {
                    Some(route) => Some(Arc::new(with_history(conn, id, route).await?)),
                    None => None,
                };
                found.push((id, route));
            }
            let mut routes = self.routes.lock().expect("routes poisoned");
            if routes.len() > MAX_ROUTES {
                routes.clear();
            }
            routes.extend(found);
        }
        let routes = self.routes.lock().expect("routes poisoned");
        Ok(shipments
            .iter()
            .map(|id| (*id, routes.get(id).cloned().flatten()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_as_the_api_and_the_database_spell_them() {
        for rule in Rule::ALL {
            assert_eq!(serde_json::to_value(rule).unwrap(), rule.as_str());
            assert_eq!(Rule::parse(rule.as_str()), Some(rule));
        }
        assert_eq!(Rule::parse("speeding"), None);
    }
}
