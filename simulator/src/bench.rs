//! `waymark-sim bench`: loads a running server with position posts while WebSocket subscribers
//! time the deliveries, then reports throughput and latency. Every phase is bounded in time.

mod load;
mod report;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use futures_util::{stream, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, NewShipment, Place, Shipment, Vehicle};
use crate::config::BenchArgs;
use crate::geo::{self, LatLon};

use load::{Lane, LoadStats, SentLog};
use report::Report;
use watch::{Progress, WatchStats};

/// Requests in flight while creating vehicles and shipments, and while tidying up.
const SETUP_CONCURRENCY: usize = 16;
/// Creating up to 10 000 vehicles and their shipments must not take longer than this.
const SETUP_LIMIT: Duration = Duration::from_secs(300);
/// After the load stops, subscribers keep listening until no event came for this long...
const QUIET: Duration = Duration::from_millis(500);
/// ...but no longer than this.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Marking the bench shipments delivered gets this long.
const CLEANUP_LIMIT: Duration = Duration::from_secs(60);
/// Bench vehicles are spread on a grid in Munich, where the demo's car also drives.
const GRID_ORIGIN: LatLon = LatLon::new(48.10, 11.45);
const GRID_COLUMNS: u32 = 100;
const GRID_SPACING_M: f64 = 150.0;

/// Histograms in µs from 1 µs to an hour at three significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"))
}

struct BenchVehicle {
    id: i64,
    shipment_id: i64,
    lane: Lane,
}

pub async fn bench(args: &BenchArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let server = &args.server;
    let api = Api::new(&server.url, server.credentials())?;
    api.login()
        .await
        .with_context(|| format!("cannot sign in to {} as {}", api.base(), server.email))?;

    let run_id = Utc::now().format("%Y%m%dT%H%M%S").to_string();
    tracing::info!("preparing {} vehicles with shipments", args.vehicles);
    let vehicles = tokio::select! {
        () = cancel.cancelled() => return Ok(()),
        prepared = tokio::time::timeout(SETUP_LIMIT, prepare(&api, args.vehicles, &run_id)) => {
            prepared.context("setting up the bench vehicles took too long")??
        }
    };
    let sent = Arc::new(SentLog::new(vehicles.iter().map(|v| v.id)));

    let epoch = Instant::now();
    let progress = Arc::new(Progress::new(epoch));
    let stop_watching = CancellationToken::new();
    let mut watchers = JoinSet::new();
    if args.subscribers > 0 {
        tracing::info!("opening {} WebSocket subscribers", args.subscribers);
        let url = api.websocket_url()?;
        let sockets: Vec<_> = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            sockets = stream::iter(0..args.subscribers)
                .map(|_| watch::subscribe(url.clone()))
                .buffer_unordered(SETUP_CONCURRENCY)
                .try_collect() => sockets.context("a subscriber could not subscribe to fleet")?,
        };
        for socket in sockets {
            watchers.spawn(watch::watch(
                socket,
                Arc::clone(&sent),
                Arc::clone(&progress),
                stop_watching.clone(),
            ));
        }
    }

    let shipment_ids: Vec<i64> = vehicles.iter().map(|v| v.shipment_id).collect();
    let workers = (args.concurrency as usize).min(vehicles.len());
    if workers < args.concurrency as usize {
        tracing::info!("{workers} requests in flight at most: one per vehicle keeps each vehicle's positions in order");
    }
    let mut lanes: Vec<Vec<Lane>> = vec![Vec::new(); workers];
    for (i, vehicle) in vehicles.into_iter().enumerate() {
        lanes[i % workers].push(vehicle.lane);
    }

    let duration = Duration::from_secs(u64::from(args.duration));
    tracing::info!(
        "posting for {} s with {workers} requests in flight, {} per request",
        args.duration,
        args.batch
    );
    let load_start = Instant::now();
    let deadline = load_start + duration;
    let mut tasks = JoinSet::new();
    for worker_lanes in lanes {
        tasks.spawn(load::worker(
            api.clone(),
            worker_lanes,
            args.batch as usize,
            deadline,
            Arc::clone(&sent),
            cancel.clone(),
        ));
    }
    let mut ingest = LoadStats::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(stats) => ingest.merge(&stats),
            Err(e) => tracing::error!("a load worker failed: {e}"),
        }
    }
    let load_elapsed = load_start.elapsed();

    // Deliveries trail the last commits a little; wait until they stop coming.
    let load_end = Instant::now();
    while !cancel.is_cancelled() && load_end.elapsed() < DRAIN_LIMIT && !watchers.is_empty() {
        let last = progress
            .last_delivery()
            .map_or(load_end, |t| t.max(load_end));
        if last.elapsed() >= QUIET {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_watching.cancel();
    let mut delivery: Vec<WatchStats> = Vec::new();
    while let Some(joined) = watchers.join_next().await {
        match joined {
            Ok(stats) => delivery.push(stats),
            Err(e) => tracing::error!("a subscriber failed: {e}"),
        }
    }
    let delivery_window = progress
        .last_delivery()
        .map(|t| t.saturating_duration_since(load_start));

    let report = Report::new(
        args,
        api.base().as_str(),
        &ingest,
        load_elapsed,
        &delivery,
        delivery_window,
    );
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }

    tidy_up(&api, &shipment_ids).await;
    anyhow::ensure!(
        ingest.requests_ok > 0,
        "no request succeeded ({} failed)",
        ingest.requests_failed
    );
    Ok(())
}

/// Bench vehicles are reused across runs by name ("Bench 0001", …), with fresh tokens, so
/// repeated runs do not pile up vehicles; each gets an active shipment.
async fn prepare(api: &Api, count: u32, run_id: &str) -> anyhow::Result<Vec<BenchVehicle>> {
    let existing = api.list_vehicles().await.context("cannot list vehicles")?;
    let shipments = api
        .list_shipments()
        .await
        .context("cannot list shipments")?;
    let mut by_name: HashMap<&str, &Vehicle> = HashMap::new();
    for v in &existing {
        let slot = by_name.entry(v.name.as_str()).or_insert(v);
        if v.id < slot.id {
            *slot = v;
        }
    }
    let by_name = &by_name;
    let shipments = &shipments;
    stream::iter(0..count)
        .map(|i| async move {
            let name = format!("Bench {:04}", i + 1);
            prepare_one(
                api,
                i,
                &name,
                by_name.get(name.as_str()).copied(),
                shipments,
                run_id,
            )
            .await
            .with_context(|| format!("cannot prepare {name}"))
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}

async fn prepare_one(
    api: &Api,
    index: u32,
    name: &str,
    existing: Option<&Vehicle>,
    shipments: &[Shipment],
    run_id: &str,
) -> anyhow::Result<BenchVehicle> {
    let (id, token, last) = match existing {
        Some(v) => (v.id, api.rotate_token(v.id).await?, v.last_position.clone()),
        None => {
            let (v, token) = api.create_vehicle(name).await?;
            (v.id, token, None)
        }
    };
    let home = grid_point(index);
    let start = last.as_ref().map_or(home, |p| LatLon::new(p.lat, p.lon));
    let shipment_id = match shipments
        .iter()
        .find(|s| s.vehicle_id == Some(id) && s.is_active())
    {
        Some(s) => s.id,
        None => {
            let new = NewShipment {
                reference: format!("BENCH-{run_id}-{:04}", index + 1),
                origin: Place::new(start, None),
                destination: Place::new(geo::destination(start, 90.0, 2_000.0), None),
                planned_route: None,
                vehicle_id: id,
            };
            api.create_shipment(&new).await?.id
        }
    };
    Ok(BenchVehicle {
        id,
        shipment_id,
        lane: Lane::new(id, token, start, last.map(|p| p.recorded_at)),
    })
}

fn grid_point(index: u32) -> LatLon {
    let east = geo::destination(
        GRID_ORIGIN,
        90.0,
        f64::from(index % GRID_COLUMNS) * GRID_SPACING_M,
    );
    geo::destination(east, 0.0, f64::from(index / GRID_COLUMNS) * GRID_SPACING_M)
}

/// Leaves no bench shipment active, so the vehicles are idle between runs.
async fn tidy_up(api: &Api, shipment_ids: &[i64]) {
    let work = stream::iter(shipment_ids)
        .map(|&id| async move { api.set_shipment_status(id, "delivered").await })
        .buffer_unordered(SETUP_CONCURRENCY)
        .filter(|r| std::future::ready(r.is_err()))
        .count();
    match tokio::time::timeout(CLEANUP_LIMIT, work).await {
        Ok(0) => {}
        Ok(failed) => tracing::warn!("{failed} bench shipments could not be marked delivered"),
        Err(_) => tracing::warn!("gave up marking the bench shipments delivered"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_points_are_distinct_and_near_the_origin() {
        let a = grid_point(0);
        let b = grid_point(1);
        let c = grid_point(GRID_COLUMNS);
        assert!((geo::haversine_m(a, b) - GRID_SPACING_M).abs() < 0.5);
        assert!((geo::haversine_m(a, c) - GRID_SPACING_M).abs() < 0.5);
        assert!(geo::haversine_m(GRID_ORIGIN, grid_point(9_999)) < 25_000.0);
    }
}
