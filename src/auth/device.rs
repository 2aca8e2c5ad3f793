//! Devices authenticate with their vehicle's ingest token. Lookups are cached briefly so that a
//! fleet posting every second does not cost a query per request.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use serde::Serialize;
use sqlx::PgPool;

use super::token;
use crate::{error::AppError, AppState};

/// How long a token lookup is trusted before the database is asked again.
const CACHE_TTL: Duration = Duration::from_secs(10);
/// Past this many cached tokens the cache starts afresh, so it cannot grow without bound.
const CACHE_MAX: usize = 100_000;

/// The vehicle a request's ingest token belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub vehicle_id: i64,
    pub organisation_id: i64,
    /// The unit this vehicle's OsmAnd-protocol app sends speed in.
    pub speed_unit: SpeedUnit,
    /// Retired vehicles are remembered too, so that a phone still posting for one is answered
    /// from memory.
    pub retired: bool,
}

/// Token hash → the device and when it was looked up.
type Entries = HashMap<Vec<u8>, (Device, Instant)>;

#[derive(Clone, Default)]
pub struct DeviceCache {
    entries: Arc<Mutex<Entries>>,
}

impl DeviceCache {
    /// The device for `ingest_token`; `401` for an unknown token, `410` for a retired vehicle's.
    pub async fn authenticate(
        &self,
        pool: &PgPool,
        ingest_token: &str,
    ) -> Result<Device, AppError> {
        let hash = token::hash(ingest_token);
        let device = match self.cached(&hash) {
            Some(device) => device,
            None => {
                let device = sqlx::query_as!(
                    Device,
                    r#"SELECT id AS vehicle_id, organisation_id,
                              speed_unit AS "speed_unit: SpeedUnit",
                              retired_at IS NOT NULL AS "retired!"
                       FROM vehicles WHERE token_hash = $1"#,
                    &hash
                )
                .fetch_optional(pool)
                .await?
                .ok_or(AppError::Unauthorized("unknown ingest token"))?;
                let mut entries = self.entries.lock().expect("device cache poisoned");
                if entries.len() >= CACHE_MAX {
                    entries.clear();
                }
                entries.insert(hash, (device.clone(), Instant::now()));
                device
            }
        };
        if device.retired {
            return Err(AppError::VehicleRetired);
        }
        Ok(device)
    }

    /// Forgets every cached token of a vehicle, e.g. after its token was rotated.
    pub fn forget_vehicle(&self, vehicle_id: i64) {
        self.entries
            .lock()
            .expect("device cache poisoned")
            .retain(|_, (d, _)| d.vehicle_id != vehicle_id);
    }

    fn cached(&self, hash: &[u8]) -> Option<Device> {
        let entries = self.entries.lock().expect("device cache poisoned");
        entries
            .get(hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(d, _)| d.clone())
    }
}

impl FromRequestParts<AppState> for Device {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AppError::Unauthorized(
                "send the vehicle's ingest token as Authorization: Bearer <token>",
            ))?;
        state.devices.authenticate(&state.db, token).await
    }
}

/// The unit a vehicle's OsmAnd-protocol app sends speed in: the vehicle's `speed_unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SpeedUnit {
    /// The protocol's own default, and what the legacy Traccar Client sends.
    #[default]
    Knots,
    Mps,
    Kmh,
    Mph,
}

impl SpeedUnit {
    pub const ALL: [SpeedUnit; 4] = [
        SpeedUnit::Knots,
        SpeedUnit::Mps,
        SpeedUnit::Kmh,
        SpeedUnit::Mph,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SpeedUnit::Knots => "knots",
            SpeedUnit::Mps => "mps",
            SpeedUnit::Kmh => "kmh",
            SpeedUnit::Mph => "mph",
        }
    }

    pub fn parse(s: &str) -> Option<SpeedUnit> {
        SpeedUnit::ALL.into_iter().find(|u| u.as_str() == s)
    }

    /// `speed`, in this unit, in m/s.
    pub fn to_mps(self, speed: f64) -> f64 {
        match self {
            SpeedUnit::Knots => speed * 0.514444,
            SpeedUnit::Mps => speed,
            SpeedUnit::Kmh => speed / 3.6,
            SpeedUnit::Mph => speed * 0.44704,
        }
    }
}
