//! Each organisation's geofences in memory, in an R-tree, so that judging a position against
//! thousands of them costs a tree lookup and an exact measure of the few whose box it meets.
//!
//! The index follows the database through `organisations.geofence_version`, which every
//! geofence change bumps in its own transaction: the writer reads the version with the vehicle
//! under the seq lock and reloads an organisation whose version moved, so every instance judges
//! against what is committed.
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use geo::{Contains, Coord, LineString, Point, Polygon};
use rstar::{RTree, RTreeObject, AABB};
use serde_json::Value;
use sqlx::{PgConnection, Row};

use super::route::{metres, Route};

#[derive(Debug, Clone)]
pub enum Shape {
    Circle { lat: f64, lon: f64, radius_m: f64 },
    Polygon(Area),
}

/// A polygon, with its rings kept as lines in metres for the distance to the boundary.
#[derive(Debug, Clone)]
pub struct Area {
    polygon: Polygon<f64>,
    rings: Vec<Route>,
}

impl Area {
    pub fn new(polygon: Polygon<f64>) -> Area {
        let rings = std::iter::once(polygon.exterior())
            .chain(polygon.interiors())
            .filter_map(|ring| {
                let coords: Vec<[f64; 2]> = ring.coords().map(|c| [c.x, c.y]).collect();
                Route::new(&coords)
            })
            .collect();
        Area { polygon, rings }
    }
}

#[derive(Debug, Clone)]
pub struct Fence {
    pub id: i64,
    pub name: String,
    pub shape: Shape,
    /// Empty: every vehicle.
    pub vehicle_ids: Vec<i64>,
    pub shipment_id: Option<i64>,
    pub debounce_s: Option<u32>,
    /// Seconds inside after which a visit raises `geofence_dwell`; none: never.
    pub dwell_s: Option<u32>,
}

impl Fence {
    pub fn applies_to(&self, vehicle_id: i64, shipment_id: Option<i64>) -> bool {
        let vehicle = self.vehicle_ids.is_empty() || self.vehicle_ids.contains(&vehicle_id);
        let shipment = self.shipment_id.is_none() || self.shipment_id == shipment_id;
        vehicle && shipment
    }

    /// How far the point lies inside the boundary, in metres: its distance to the boundary,
    /// negative outside.
    pub fn depth(&self, lat: f64, lon: f64) -> f64 {
        match &self.shape {
            Shape::Circle {
                lat: clat,
                lon: clon,
                radius_m,
            } => radius_m - metres((lat, lon), (*clat, *clon)),
            Shape::Polygon(area) => {
                let to_boundary = area
                    .rings
                    .iter()
                    .map(|ring| ring.locate(lat, lon).0)
                    .fold(f64::INFINITY, f64::min);
                if area.polygon.contains(&Point::new(lon, lat)) {
                    to_boundary
                } else {
                    -to_boundary
                }
            }
        }
    }

    fn envelope(&self) -> AABB<[f64; 2]> {
        match &self.shape {
            Shape::Circle { lat, lon, radius_m } => {
                // Degrees that the radius spans, a little generous so the box always holds it.
                let dlat = radius_m / 111_000.0;
                let dlon = dlat / lat.to_radians().cos().max(0.01);
                AABB::from_corners([lon - dlon, lat - dlat], [lon + dlon, lat + dlat])
            }
            Shape::Polygon(area) => {
                let coords = area.polygon.exterior().coords();
                let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
                for c in coords {
                    lo = [lo[0].min(c.x), lo[1].min(c.y)];
                    hi = [hi[0].max(c.x), hi[1].max(c.y)];
                }
                AABB::from_corners(lo, hi)
            }
        }
    }
}

/// Parses a GeoJSON Polygon's coordinates (`[[[lon, lat], ...], ...]`) into a polygon.
pub fn polygon_from_geojson(value: &Value) -> Option<Polygon<f64>> {
    let rings = value.get("coordinates")?.as_array()?;
    let mut rings = rings.iter().map(|ring| {
        ring.as_array().map(|points| {
            LineString::new(
                points
                    .iter()
                    .filter_map(|c| {
                        Some(Coord {
                            x: c.get(0)?.as_f64()?,
                            y: c.get(1)?.as_f64()?,
                        })
                    })
                    .collect(),
            )
        })
    });
    let exterior = rings.next()??;
    let interiors: Option<Vec<LineString<f64>>> = rings.collect();
    Some(Polygon::new(exterior, interiors?))
}

struct Entry {
    envelope: AABB<[f64; 2]>,
    index: usize,
}

impl RTreeObject for Entry {
    type Envelope = AABB<[f64; 2]>;
    fn envelope(&self) -> Self::Envelope {
        self.envelope
    }
}

/// One organisation's geofences as of `version`.
pub struct OrgFences {
    pub version: i64,
    fences: Vec<Fence>,
    /// Geofence id to its place in `fences`.
    by_id: HashMap<i64, usize>,
    tree: RTree<Entry>,
}

impl OrgFences {
    pub fn new(version: i64, fences: Vec<Fence>) -> OrgFences {
        let entries = fences
            .iter()
            .enumerate()
            .map(|(index, f)| Entry {
                envelope: f.envelope(),
                index,
            })
            .collect();
        OrgFences {
            version,
            by_id: fences.iter().enumerate().map(|(i, f)| (f.id, i)).collect(),
            fences,
            tree: RTree::bulk_load(entries),
        }
    }

    /// The geofences whose box meets the box with corners `a` and `b` (latitude, longitude):
    /// those that a straight line from `a` to `b` may touch.
    pub fn near(&self, a: (f64, f64), b: (f64, f64)) -> impl Iterator<Item = &Fence> {
        self.tree
            .locate_in_envelope_intersecting(&AABB::from_corners([a.1, a.0], [b.1, b.0]))
            .map(|e| &self.fences[e.index])
    }

    pub fn get(&self, id: i64) -> Option<&Fence> {
        self.by_id.get(&id).map(|&i| &self.fences[i])
    }
}

/// The geofence index of every organisation this instance has seen positions for.
#[derive(Default)]
pub struct FenceIndex {
    orgs: RwLock<HashMap<i64, Arc<OrgFences>>>,
}

impl FenceIndex {
    /// The organisation's geofences at `version` (the committed one, read under the seq lock),
    /// reloading them on `conn` if this instance holds an older copy.
    pub async fn current(
        &self,
        conn: &mut PgConnection,
        organisation_id: i64,
        version: i64,
    ) -> sqlx::Result<Arc<OrgFences>> {
        if let Some(f) = self
            .orgs
            .read()
            .expect("index poisoned")
            .get(&organisation_id)
        {
            if f.version == version {
                return Ok(f.clone());
            }
        }
        let started = std::time::Instant::now();
        let loaded = Arc::new(load(conn, organisation_id).await?);
        // Under the seq lock: worth knowing when an organisation has very many.
        tracing::info!(
            organisation_id,
            version = loaded.version,
            geofences = loaded.fences.len(),
            ms = started.elapsed().as_millis() as u64,
            "geofence index loaded"
        );
        self.orgs
            .write()
            .expect("index poisoned")
            .insert(organisation_id, loaded.clone());
        Ok(loaded)
    }
}

/// Reads the version and the geofences in one statement, so the two agree. A circle is tested by
/// its centre and radius, so its drawn polygon is not read.
async fn load(conn: &mut PgConnection, organisation_id: i64) -> sqlx::Result<OrgFences> {
    let rows = sqlx::query(
        "SELECT o.geofence_version, g.id, g.name,
                CASE WHEN g.radius_m IS NULL THEN ST_AsGeoJSON(g.area)::jsonb END AS area,
                ST_Y(g.center::geometry) AS lat, ST_X(g.center::geometry) AS lon, g.radius_m,
                g.vehicle_ids, g.shipment_id, g.debounce_s, g.dwell_s
         FROM organisations o LEFT JOIN geofences g ON g.organisation_id = o.id
         WHERE o.id = $1",
    )
    .bind(organisation_id)
    .fetch_all(&mut *conn)
    .await?;
    let version = rows.first().map_or(0, |r| r.get::<i64, _>(0));
    let mut fences = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(id) = row.get::<Option<i64>, _>("id") else {
            continue;
        };
        let shape = match (
            row.get::<Option<f64>, _>("lat"),
            row.get::<Option<f64>, _>("lon"),
            row.get::<Option<f64>, _>("radius_m"),
        ) {
            (Some(lat), Some(lon), Some(radius_m)) => Shape::Circle { lat, lon, radius_m },
            _ => match row
                .get::<Option<Value>, _>("area")
                .as_ref()
                .and_then(polygon_from_geojson)
            {
                Some(p) => Shape::Polygon(Area::new(p)),
                None => continue,
            },
        };
        fences.push(Fence {
            id,
            name: row.get("name"),
            shape,
            vehicle_ids: row.get("vehicle_ids"),
            shipment_id: row.get("shipment_id"),
            debounce_s: row
                .get::<Option<i32>, _>("debounce_s")
                .map(|s| s.max(0) as u32),
            dwell_s: row
                .get::<Option<i32>, _>("dwell_s")
                .map(|s| s.max(0) as u32),
        });
    }
    Ok(OrgFences::new(version, fences))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::test_support::fence;

    /// About 743 m east-west by 1113 m north-south.
    fn square() -> Shape {
        Shape::Polygon(Area::new(
            polygon_from_geojson(&serde_json::json!({
                "type": "Polygon",
                "coordinates": [[[11.0, 48.0], [11.01, 48.0], [11.01, 48.01], [11.0, 48.01], [11.0, 48.0]]]
            }))
            .unwrap(),
        ))
    }

    #[test]
    fn finds_the_circles_and_polygons_near_a_point_or_a_line() {
        let circle = |lat, lon| Shape::Circle {
            lat,
            lon,
            radius_m: 200.0,
        };
        let index = OrgFences::new(
            1,
            vec![
                fence(1, square()),
                fence(2, circle(48.0, 11.0)),
                fence(3, circle(50.0, 11.0)),
            ],
        );
        let ids = |a, b| {
            let mut ids: Vec<i64> = index.near(a, b).map(|f| f.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids((48.0005, 11.0005), (48.0005, 11.0005)), [1, 2]);
        assert_eq!(ids((48.005, 11.005), (48.005, 11.005)), [1]);
        assert_eq!(ids((47.9995, 10.9995), (47.9995, 10.9995)), [2]);
        assert!(ids((48.02, 11.02), (48.02, 11.02)).is_empty());
        // A line from south of the square to north of it meets the square's box.
        assert_eq!(ids((47.99, 11.005), (48.02, 11.005)), [1]);
        assert_eq!(ids((48.5, 11.0), (49.9995, 11.0)), [3]);
    }

    #[test]
    fn measures_how_deep_inside_or_how_far_outside_a_point_is() {
        let square = fence(1, square());
        let m_per_deg_lon = 111_320.0 * 48.005_f64.to_radians().cos();
        // Middle of the square: nearer the east and west sides (372 m) than north and south.
        let d = square.depth(48.005, 11.005);
        assert!((d - 0.005 * m_per_deg_lon).abs() < 1.0, "{d}");
        // 10 m inside the west side, and 10 m outside it.
        let d = square.depth(48.005, 11.0 + 10.0 / m_per_deg_lon);
        assert!((d - 10.0).abs() < 0.1, "{d}");
        let d = square.depth(48.005, 11.0 - 10.0 / m_per_deg_lon);
        assert!((d + 10.0).abs() < 0.1, "{d}");
        // Beyond a corner, the distance is to the corner.
        let d = square.depth(47.9991, 10.9991);
        let corner = metres((47.9991, 10.9991), (48.0, 11.0));
        assert!((d + corner).abs() < 0.5, "{d} {corner}");
        let circle = fence(
            2,
            Shape::Circle {
                lat: 48.0,
                lon: 11.0,
                radius_m: 200.0,
            },
        );
        assert!((circle.depth(48.0, 11.0) - 200.0).abs() < 1e-9);
        let d = circle.depth(48.0 + 150.0 / 111_195.0, 11.0);
        assert!((d - 50.0).abs() < 0.5, "{d}");
        let d = circle.depth(48.0 + 250.0 / 111_195.0, 11.0);
        assert!((d + 50.0).abs() < 0.5, "{d}");
    }

    #[test]
    fn a_hole_is_outside_and_its_edge_is_a_boundary() {
        let holed = fence(
            1,
            Shape::Polygon(Area::new(
                polygon_from_geojson(&serde_json::json!({
                    "type": "Polygon",
                    "coordinates": [
                        [[11.0, 48.0], [11.01, 48.0], [11.01, 48.01], [11.0, 48.01], [11.0, 48.0]],
                        [[11.004, 48.004], [11.006, 48.004], [11.006, 48.006], [11.004, 48.006], [11.004, 48.004]]
                    ]
                }))
                .unwrap(),
            )),
        );
        let m_per_deg_lon = 111_320.0 * 48.005_f64.to_radians().cos();
        assert!(holed.depth(48.005, 11.005) < -70.0);
        let d = holed.depth(48.005, 11.004 - 20.0 / m_per_deg_lon);
        assert!((d - 20.0).abs() < 0.2, "{d}");
    }
}
