//! The database pool and migrations; the statements that keep the positions table's time
//! partitions (run by the server's upkeep task, `state`); and values as they cross the boundary:
//! points, and stored JSON documents.
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

use crate::config::DbConfig;

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
