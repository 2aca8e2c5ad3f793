//! The fleet: its [`vehicles`], the [`shipments`] they carry (with their tracks, share links and
//! who may see them), and the fleet at a glance: every vehicle's current position as GeoJSON,
//! the vehicles nearest a point.
pub mod openapi;
pub mod roster;
pub mod shipments;
pub mod vehicles;

use axum::{extract::State, routing::get, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::CurrentUser,
    auth::SpeedUnit,
    error::openapi::{BadRequest, CommonErrors, Forbidden},
    error::{ApiQuery, AppError, AppResult},
    fleet::openapi::FleetFeatureCollection,
    AppState,
};
use vehicles::{Vehicle, VehicleStatus};

/// The vehicles', shipments' and fleet map's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/fleet", get(fleet))
        .route("/vehicles/nearby", get(nearby))
        .merge(vehicles::router())
        .merge(shipments::router())
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct FleetQuery {
    /// `minLon,minLat,maxLon,maxLat` in degrees (lon −180..180, lat −90..90, minLat ≤ maxLat), compared in plain longitude and latitude; edges included. A box with minLon > maxLon crosses the antimeridian: `170,-10,-170,10` covers longitudes 170..180 and −180..−170.
    #[param(pattern = "^[^,]+,[^,]+,[^,]+,[^,]+$")]
    bbox: Option<String>,
}

/// A map box, `minLon,minLat,maxLon,maxLat` in degrees. Its west edge may lie east of its east
/// edge: such a box crosses the antimeridian (`170,-10,-170,10` covers 170..180 and -180..-170).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Bbox {
    west: f64,
    south: f64,
    east: f64,
    north: f64,
}

impl Bbox {
    /// Each value in range, and minLat ≤ maxLat.
    fn parse(s: &str) -> AppResult<Bbox> {
        let bad = || {
            AppError::validation(
                "bbox",
                "bbox must be minLon,minLat,maxLon,maxLat in degrees, with minLat ≤ maxLat",
            )
        };
        let parts: Vec<f64> = s
            .split(',')
            .map(|p| p.trim().parse::<f64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let [west, south, east, north] = parts[..] else {
            return Err(bad());
        };
        let lon_ok = |v: f64| (-180.0..=180.0).contains(&v);
        let lat_ok = |v: f64| (-90.0..=90.0).contains(&v);
        if !(lon_ok(west) && lon_ok(east) && lat_ok(south) && lat_ok(north)) || south > north {
            return Err(bad());
        }
        Ok(Bbox {
            west,
            south,
            east,
            north,
        })
    }

    /// The box's longitudes as two ranges that do not cross the antimeridian (the same one
    /// twice for a box that does not cross it).
    fn lon_ranges(&self) -> [(f64, f64); 2] {
        if self.west <= self.east {
            [(self.west, self.east); 2]
        } else {
            [(self.west, 180.0), (-180.0, self.east)]
        }
    }
}

#[utoipa::path(
    get,
    path = "/fleet",
    operation_id = "fleet",
    summary = "The fleet's last positions",
    description = "Dispatchers and admins.",
    tag = "fleet",
    params(FleetQuery),
    responses(
        (status = 200, body = FleetFeatureCollection, description = "GeoJSON FeatureCollection."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn fleet(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<FleetQuery>,
) -> AppResult<Json<Value>> {
    user.require_dispatcher()?;
    let bbox = q.bbox.as_deref().map(Bbox::parse).transpose()?;
    let rows: Vec<Vehicle> = match bbox {
        None => {
            vehicles::list(&state.db, user.organisation_id, Some(VehicleStatus::Active)).await?
        }
        // In plain lon/lat: a box cast to geography has geodesic edges, and one spanning a
        // hemisphere has none PostGIS can draw ("antipodal edge"). `&&` finds the candidates
        // through the index on `last_point::geometry`; the comparisons are exact, where the
        // index's boxes are rounded to single precision.
        Some(b) => {
            let [(w1, e1), (w2, e2)] = b.lon_ranges();
            sqlx::query_as!(
                Vehicle,
                r#"SELECT id, name, speed_unit AS "speed_unit: SpeedUnit",
                          status AS "status: VehicleStatus", retired_at, created_at, last_position
                   FROM vehicles
                   WHERE organisation_id = $1 AND status = 'active'
                     AND (last_point::geometry && ST_MakeEnvelope($2, $3, $4, $5, 4326)
                          OR last_point::geometry && ST_MakeEnvelope($6, $3, $7, $5, 4326))
                     AND ST_Y(last_point::geometry) BETWEEN $3 AND $5
                     AND (ST_X(last_point::geometry) BETWEEN $2 AND $4
                          OR ST_X(last_point::geometry) BETWEEN $6 AND $7)
                   ORDER BY name, id"#,
                user.organisation_id,
                w1,
                b.south,
                e1,
                b.north,
                w2,
                e2
            )
            .fetch_all(&state.db)
            .await?
        }
    };
    let features: Vec<Value> = rows
        .into_iter()
        .filter_map(|v| {
            let p = v.last_position?;
            Some(json!({
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [p["lon"], p["lat"]]},
                "properties": {"vehicle_id": v.id, "name": v.name, "position": p},
            }))
        })
        .collect();
    Ok(Json(
        json!({"type": "FeatureCollection", "features": features}),
    ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct NearbyQuery {
    /// Latitude.
    #[param(minimum = -90, maximum = 90)]
    lat: f64,
    /// Longitude.
    #[param(minimum = -180, maximum = 180)]
    lon: f64,
    /// Search radius in metres (at most 100 km).
    #[param(exclusive_minimum = 0, maximum = 100000, default = 10000)]
    radius_m: Option<f64>,
    /// At most this many vehicles.
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
}

#[derive(Serialize, sqlx::FromRow, ToSchema)]
struct Near {
    #[sqlx(flatten)]
    vehicle: Vehicle,
    #[schema(minimum = 0)]
    distance_m: f64,
}

#[utoipa::path(
    get,
    path = "/vehicles/nearby",
    operation_id = "nearby",
    summary = "Vehicles near a point",
    description = "Dispatchers and admins. Uses each vehicle's current position.",
    tag = "fleet",
    params(NearbyQuery),
    responses(
        (status = 200, body = inline(Vec<Near>), description = "Nearest first."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn nearby(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiQuery(q): ApiQuery<NearbyQuery>,
) -> AppResult<Json<Vec<Near>>> {
    user.require_dispatcher()?;
    if !(-90.0..=90.0).contains(&q.lat) {
        return Err(AppError::validation(
            "lat",
            "lat must be between -90 and 90",
        ));
    }
    if !(-180.0..=180.0).contains(&q.lon) {
        return Err(AppError::validation(
            "lon",
            "lon must be between -180 and 180",
        ));
    }
    let radius = q.radius_m.unwrap_or(10_000.0);
    if !(radius > 0.0 && radius <= 100_000.0) {
        return Err(AppError::validation(
            "radius_m",
            "radius_m must be between 0 and 100000",
        ));
    }
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(AppError::validation(
            "limit",
            "limit must be between 1 and 100",
        ));
    }
    // ST_DWithin uses the GiST index on last_point. The matches are ordered by their distance
    // rather than by the index's `<->`: PostGIS's geography index ordering fails near the poles
    // ("index returned tuples in wrong order"), and the radius keeps the sort small.
    let rows: Vec<Near> = sqlx::query_as(
        "SELECT id, name, speed_unit, status, retired_at, created_at, last_position,
                ST_Distance(last_point, ref.p) AS distance_m
         FROM vehicles, (SELECT ST_SetSRID(ST_MakePoint($2, $3), 4326)::geography AS p) AS ref
         WHERE organisation_id = $1 AND status = 'active' AND ST_DWithin(last_point, ref.p, $4)
         ORDER BY distance_m, id LIMIT $5",
    )
    .bind(user.organisation_id)
    .bind(q.lon)
    .bind(q.lat)
    .bind(radius)
    .bind(limit)
    .fetch_all(&state.db)
    .await?;
    Ok(Json(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_whose_west_edge_is_east_of_its_east_edge_crosses_the_antimeridian() {
        let crossing = Bbox::parse("170,-10,-170,10").unwrap();
        assert_eq!(crossing.lon_ranges(), [(170.0, 180.0), (-180.0, -170.0)]);
        let world = Bbox::parse("-180,-90,180,90").unwrap();
        assert_eq!(world.lon_ranges(), [(-180.0, 180.0); 2]);
        for bad in [
            "0,10,1,5",
            "0,0,1",
            "0,0,1,1,2",
            "181,0,1,1",
            "0,-91,1,1",
            "NaN,0,1,1",
            "x,0,1,1",
        ] {
            let e = Bbox::parse(bad).unwrap_err();
            assert_eq!(e.field(), Some("bbox"), "{bad}");
        }
    }
}
