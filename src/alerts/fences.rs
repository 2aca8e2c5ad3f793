//! Each organisation's geofences in memory, in an R-tree, so that judging a position against
//! thousands of them costs a tree lookup and an exact test of the few whose box holds it.
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

use super::route::metres;

#[derive(Debug, Clone)]
pub enum Shape {
    Circle { lat: f64, lon: f64, radius_m: f64 },
    Polygon(Polygon<f64>),
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
}

impl Fence {
    pub fn applies_to(&self, vehicle_id: i64, shipment_id: Option<i64>) -> bool {
        let vehicle = self.vehicle_ids.is_empty() || self.vehicle_ids.contains(&vehicle_id);
        let shipment = self.shipment_id.is_none() || self.shipment_id == shipment_id;
        vehicle && shipment
    }

    pub fn contains(&self, lat: f64, lon: f64) -> bool {
        match &self.shape {
            Shape::Circle {
                lat: clat,
                lon: clon,
                radius_m,
            } => metres((lat, lon), (*clat, *clon)) <= *radius_m,
            Shape::Polygon(p) => p.contains(&Point::new(lon, lat)),
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
            Shape::Polygon(p) => {
                let coords = p.exterior().coords();
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

    /// The geofences that hold the point.
    pub fn containing(&self, lat: f64, lon: f64) -> impl Iterator<Item = &Fence> {
        self.tree
            .locate_in_envelope_intersecting(&AABB::from_point([lon, lat]))
            .map(|e| &self.fences[e.index])
            .filter(move |f| f.contains(lat, lon))
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
                g.vehicle_ids, g.shipment_id, g.debounce_s
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
                Some(p) => Shape::Polygon(p),
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
        });
    }
    Ok(OrgFences::new(version, fences))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_circles_and_polygons_that_hold_a_point() {
        let square = polygon_from_geojson(&serde_json::json!({
            "type": "Polygon",
            "coordinates": [[[11.0, 48.0], [11.01, 48.0], [11.01, 48.01], [11.0, 48.01], [11.0, 48.0]]]
        }))
        .unwrap();
        let fence = |id, shape| Fence {
            id,
            name: format!("fence {id}"),
            shape,
            vehicle_ids: vec![],
            shipment_id: None,
            debounce_s: None,
        };
        let index = OrgFences::new(
            1,
            vec![
                fence(1, Shape::Polygon(square)),
                fence(
                    2,
                    Shape::Circle {
                        lat: 48.0,
                        lon: 11.0,
                        radius_m: 200.0,
                    },
                ),
                fence(
                    3,
                    Shape::Circle {
                        lat: 50.0,
                        lon: 11.0,
                        radius_m: 200.0,
                    },
                ),
            ],
        );
        let ids = |lat, lon| {
            let mut ids: Vec<i64> = index.containing(lat, lon).map(|f| f.id).collect();
            ids.sort();
            ids
        };
        assert_eq!(ids(48.0005, 11.0005), [1, 2]);
        assert_eq!(ids(48.005, 11.005), [1]);
        assert_eq!(ids(47.9995, 10.9995), [2]);
        assert!(ids(48.02, 11.02).is_empty());
    }
}
