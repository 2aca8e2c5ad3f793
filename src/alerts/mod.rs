//! The alerts channel: geofences, the rules that watch every accepted position (and a clock, for
//! vehicles that go quiet or run late), and the alerts they raise, which are stored, published on
//! `alerts` and the shipment's topic with a seq, listed, and acknowledged.
//!
//! Rules run inside the position writer's transaction, under the seq lock, with each vehicle's
//! rule state read and written with the vehicle: each alert is raised once however many
//! instances run, survives restarts, and takes its seq in commit order like any position.
mod api;
mod clock;
pub mod eta;
mod fence_state;
mod fences;
#[cfg(test)]
mod geofence_tests;
mod geofences;
mod route;
mod rules;
mod settings;
mod store;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::Router;
use serde_json::Value;
use sqlx::PgConnection;

pub use api::{acknowledge, recent, unacknowledged};
pub use clock::{run_clock, tick};
pub use fence_state::{FenceState, Mark, Pending};
pub use fences::{Area, Fence, FenceIndex, OrgFences, Shape};
pub use route::Route;
pub use rules::{evaluate, Change, Context, Outcome, RuleState, Trip};
pub use settings::AlertSettings;
pub use store::{alert_frame, apply, Alert, Subject, ALERT_COLUMNS};

use crate::{tracking::Tracking, AppState};

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(api::router())
        .merge(geofences::router())
}

/// What raised an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
            let rows: Vec<(i64, Option<Value>)> = sqlx::query_as(
                "SELECT id, ST_AsGeoJSON(planned_route)::jsonb FROM shipments WHERE id = ANY($1)",
            )
            .bind(&missing)
            .fetch_all(&mut *conn)
            .await?;
            let mut routes = self.routes.lock().expect("routes poisoned");
            if routes.len() > MAX_ROUTES {
                routes.clear();
            }
            for (id, route) in rows {
                let route = route.as_ref().and_then(Route::from_geojson).map(Arc::new);
                routes.insert(id, route);
            }
        }
        let routes = self.routes.lock().expect("routes poisoned");
        Ok(shipments
            .iter()
            .map(|id| (*id, routes.get(id).cloned().flatten()))
            .collect())
    }
}
