//! The database pool, migrations, and upkeep: the time partitions of the positions table, and
//! records that outlived their use.
use std::time::Duration;

use geo::{Geometry, Point};
use geozero::wkb;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::{
    encode::IsNull,
    error::BoxDynError,
    postgres::{PgArgumentBuffer, PgPoolOptions, PgTypeInfo, PgValueRef},
    PgPool, Postgres,
};
use tokio_util::sync::CancellationToken;

use crate::{auth::forget_expired_sign_outs, config::DbConfig};

/// A PostGIS point as a value, crossing the database boundary as EWKB (through geozero) rather
/// than as a pair of numbers: `x` is the longitude, `y` the latitude. It is a `geometry`, so
/// SQL casts a `geography` column to `::geometry` to read it, and sets the SRID and casts back
/// to write one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DbPoint(pub Point<f64>);

impl sqlx::Type<Postgres> for DbPoint {
    fn type_info() -> PgTypeInfo {
        <wkb::Decode<Geometry<f64>> as sqlx::Type<Postgres>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, Postgres> for DbPoint {
    fn decode(value: PgValueRef<'r>) -> Result<DbPoint, BoxDynError> {
        match <wkb::Decode<Geometry<f64>> as sqlx::Decode<Postgres>>::decode(value)?.geometry {
            Some(Geometry::Point(p)) => Ok(DbPoint(p)),
            other => Err(format!("expected a point, got {other:?}").into()),
        }
    }
}

impl sqlx::Encode<'_, Postgres> for DbPoint {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        wkb::Encode(Geometry::Point(self.0)).encode_by_ref(buf)
    }
}

/// Months of position partitions kept ready ahead of the clock.
const PARTITION_MONTHS_AHEAD: i32 = 2;

pub async fn connect(config: &DbConfig) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(config.db_pool)
        // A request fails fast with 503 rather than hang when the database is gone.
        .acquire_timeout(Duration::from_secs(5))
        .connect(&config.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to the database: {e}"))?;
    Ok(pool)
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::migrate!().run(pool).await?;
    ensure_partitions(pool).await?;
    Ok(())
}

pub async fn ensure_partitions(pool: &PgPool) -> sqlx::Result<i32> {
    sqlx::query_scalar!(
        r#"SELECT waymark_ensure_position_partitions($1) AS "created!""#,
        PARTITION_MONTHS_AHEAD
    )
    .fetch_one(pool)
    .await
}

/// Drops the position partitions (and default-partition rows) older than `keep_months` full
/// months before the current one; returns how many partitions went.
pub async fn drop_old_partitions(pool: &PgPool, keep_months: u32) -> sqlx::Result<i32> {
    sqlx::query_scalar!(
        r#"SELECT waymark_drop_position_partitions($1) AS "dropped!""#,
        i32::try_from(keep_months).unwrap_or(i32::MAX)
    )
    .fetch_one(pool)
    .await
}

/// Keeps future partitions ready and, with a retention period, drops the expired ones; forgets
/// signed-out sessions once they have expired anyway. Checks every few hours until cancelled.
/// With many instances each does it; every step is idempotent.
pub async fn upkeep(pool: PgPool, retention_months: Option<u32>, cancel: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(6 * 3600));
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = every.tick() => {
                match ensure_partitions(&pool).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(created = n, "position partitions created"),
                    Err(e) => tracing::error!(error = %e, "creating position partitions"),
                }
                match forget_expired_sign_outs(&pool).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(forgotten = n, "expired sign-outs forgotten"),
                    Err(e) => tracing::warn!(error = %e, "forgetting expired sign-outs; will try again"),
                }
                let Some(months) = retention_months else { continue };
                match drop_old_partitions(&pool, months).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(dropped = n, keep_months = months, "old position partitions dropped"),
                    Err(e) => tracing::warn!(error = %e, "dropping old position partitions; will try again"),
                }
            }
        }
    }
}

/// A stored JSON document that ingest reads (a settings section, a vehicle's rule state); the
/// defaults where there is none. The API checks what it stores, so one that does not parse was
/// written by another version: it is logged, and the defaults apply rather than ingest failing.
pub fn stored_or_default<T: DeserializeOwned + Default>(
    owner_id: i64,
    what: &str,
    stored: Option<Value>,
) -> T {
    match stored.map(serde_json::from_value) {
        None => T::default(),
        Some(Ok(value)) => value,
        Some(Err(e)) => {
            tracing::warn!(owner_id, what, error = %e, "unreadable stored document; using the defaults");
            T::default()
        }
    }
}
