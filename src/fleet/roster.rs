//! The fleet's roster, live: a vehicle created or changed (renamed, a new speed unit, retired,
//! back in service) is a `vehicle` event on its organisation's `fleet` topic, so every open map
//! adds, renames or drops it at once. (Drivers, who follow a vehicle on `vehicle:{id}`, see of
//! it only their trips' positions.) Each vehicle keeps the seq of
//! its latest change (`updated_seq`), which `since` reads back: a client that was away gets
//! each changed vehicle once, as it is now.
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use sqlx::PgPool;

use super::vehicles::{Vehicle, VehicleStatus};
use crate::{
    auth::SpeedUnit,
    tracking::{Event, EventData, EventSource, TopicKey, Window},
};

/// A `vehicle` event's `data`: the vehicle as it is now, without its position (positions are
/// events of their own).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct VehicleUpdate {
    #[serde(skip)]
    pub organisation_id: i64,
    pub id: i64,
    pub name: String,
    pub speed_unit: SpeedUnit,
    pub status: VehicleStatus,
    pub retired_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub updated_seq: i64,
}

impl VehicleUpdate {
    /// The event of `vehicle`'s change at `seq`.
    pub fn of(organisation_id: i64, seq: i64, vehicle: &Vehicle) -> VehicleUpdate {
        VehicleUpdate {
            organisation_id,
            id: vehicle.id,
            name: vehicle.name.clone(),
            speed_unit: vehicle.speed_unit,
            status: vehicle.status,
            retired_at: vehicle.retired_at,
            created_at: vehicle.created_at,
            updated_seq: seq,
        }
    }
}

impl EventData for VehicleUpdate {
    fn kind(&self) -> &'static str {
        "vehicle"
    }

    fn keys(&self) -> Vec<TopicKey> {
        vec![TopicKey::Fleet {
            organisation_id: self.organisation_id,
        }]
    }

    fn data(&self) -> serde_json::Result<Box<RawValue>> {
        to_raw_value(self)
    }
}

/// Vehicle changes read back: each vehicle changed in the window, as it is now, at its latest
/// change.
pub struct VehicleEvents;

impl EventSource for VehicleEvents {
    fn events<'a>(
        &'a self,
        db: &'a PgPool,
        window: Window<'a>,
    ) -> BoxFuture<'a, sqlx::Result<Vec<Event>>> {
        Box::pin(async move {
            let organisations = window.ids(TopicKey::fleet);
            if organisations.is_empty() {
                return Ok(Vec::new());
            }
            let updates = sqlx::query_as!(
                VehicleUpdate,
                r#"SELECT organisation_id, id, name, speed_unit AS "speed_unit: SpeedUnit",
                          status AS "status: VehicleStatus", retired_at, created_at,
                          updated_seq AS "updated_seq!"
                   FROM vehicles
                   WHERE organisation_id = ANY($1) AND updated_seq > $2 AND updated_seq <= $3
                   ORDER BY updated_seq LIMIT $4"#,
                &organisations,
                window.after,
                window.through,
                window.limit
            )
            .fetch_all(db)
            .await?;
            Ok(updates
                .into_iter()
                .map(|u| Event::new(u.updated_seq, u))
                .collect())
        })
    }
}
