//! `waymark-sim bench`: loads one or more running server instances with position posts while
//! WebSocket subscribers time the deliveries, then reports throughput, latency and memory.
//! Every phase is bounded in time. With `--processes` the bench runs as several processes of
//! itself, each over its own share (`processes`).

mod load;
mod memory;
mod processes;
mod report;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use futures_util::{stream, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, LineString, NewShipment, Place, Shipment, Vehicle};
use crate::config::{BenchArgs, Shape};
use crate::geo::{self, LatLon};

use load::{Lane, Load, LoadStats, Pacer, SentLog};
use processes::{Barriers, Part};
use report::{Findings, Memory, Report};
use watch::{LatencySink, Progress, Shared, Subscriber, Watch, WatchStats};

/// Requests in flight while creating vehicles and shipments, and while tidying up.
const SETUP_CONCURRENCY: usize = 16;
/// Creating up to 10 000 vehicles and their shipments must not take longer than this.
const SETUP_LIMIT: Duration = Duration::from_secs(300);
/// WebSocket handshakes (connect, hello, subscriptions) in progress at once.
const HANDSHAKES_AT_ONCE: usize = 200;
/// Opening up to 20 000 subscribers must not take longer than this.
const CONNECT_LIMIT: Duration = Duration::from_secs(300);
/// Once every subscriber is subscribed, the server gets this long to settle before its memory
/// is read.
const IDLE_SETTLE: Duration = Duration::from_secs(2);
/// Open files the bench needs besides its subscribers and HTTP connections.
const SPARE_FILES: u64 = 64;
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
/// Each bench shipment goes this far east.
const TRIP_M: f64 = 2_000.0;

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
    let part = Part::of_this_process()?;
    if args.processes > 1 && !part.is_split() {
        return processes::run(args, cancel).await;
    }
    let narrowed;
    let args = if part.is_split() {
        narrowed = part.narrow(args);
        &narrowed
    } else {
        args
    };
    let mut barriers = Barriers::for_part(part);
    check_open_files(args)?;
    for &pid in &args.server_pids {
        memory::rss_kib(Some(pid))
            .with_context(|| format!("cannot read the memory of process {pid} (--server-pid)"))?;
    }
    anyhow::ensure!(
        !args.idle_only || args.subscribers > 0,
        "--idle-only measures idle subscribers: give --subscribers"
    );
    let (first, others) = args.urls.split_first().context("give a server --url")?;
    let api = Api::new(first, args.server.credentials())?;
    let mut servers = vec![api.clone()];
    for url in others {
        servers.push(api.at(url)?);
    }
    api.login()
        .await
        .with_context(|| format!("cannot sign in to {} as {}", api.base(), args.server.email))?;

    let run_id = Utc::now().format("%Y%m%dT%H%M%S").to_string();
    // Idle subscribers need shipments only to watch them; the other shapes need the vehicles
    // to exist, so that their snapshots hold them.
    let vehicles = if args.idle_only && args.shape != Shape::Shipment {
        Vec::new()
    } else {
        tracing::info!("preparing {} vehicles with shipments", args.vehicles);
        let preparing = prepare(
            &api,
            args.first_vehicle,
            args.vehicles,
            args.route_points,
            &run_id,
        );
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            prepared = tokio::time::timeout(SETUP_LIMIT, preparing) => {
                prepared.context("setting up the bench vehicles took too long")??
            }
        }
    };
    let vehicle_ids: Vec<i64> = if vehicles.is_empty() {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            ids = tokio::time::timeout(SETUP_LIMIT, vehicle_ids(&api, args.first_vehicle, args.vehicles)) => {
                ids.context("finding the bench vehicles took too long")??
            }
        }
    } else {
        vehicles.iter().map(|v| v.id).collect()
    };
    let shipments: Vec<(i64, i64)> = vehicles.iter().map(|v| (v.shipment_id, v.id)).collect();
    let shipment_ids: Vec<i64> = vehicles.iter().map(|v| v.shipment_id).collect();

    let shared = Arc::new(Shared {
        sent: Arc::new(SentLog::new(vehicle_ids.iter().copied())),
        latency: LatencySink::new(),
        progress: Progress::new(Instant::now()),
    });
    barriers.reach("prepared").await?;
    let mut footprint = Memory {
        server_rss_before_kib: summed_rss(&args.server_pids),
        ..Memory::default()
    };
    let stop_watching = CancellationToken::new();
    let opened = tokio::select! {
        () = cancel.cancelled() => None,
        audience = open_subscribers(args, &servers, (&vehicle_ids, &shipments), &shared, &stop_watching) => Some(audience),
    };
    let mut audience = match opened {
        Some(Ok(audience)) => audience,
        stopped_or_failed => {
            stop_watching.cancel();
            tidy_up(&api, &shipment_ids).await;
            return stopped_or_failed.map_or(Ok(()), |failed| failed.map(drop));
        }
    };
    if audience.connected > 0 {
        // Idle: subscribed, and nothing posted yet.
        tokio::select! {
            () = cancel.cancelled() => {}
            () = tokio::time::sleep(IDLE_SETTLE) => {}
        }
    }
    barriers.reach("subscribed").await?;
    footprint.idle_connections = audience.connected;
    footprint.server_rss_after_kib = summed_rss(&args.server_pids);
    footprint.per_idle_connection();
    footprint.bench_rss_kib = memory::rss_kib(None).ok();

    let ingest = if args.idle_only || cancel.is_cancelled() {
        None
    } else {
        Some(post(args, servers, vehicles, &shared, &cancel).await)
    };

    // Deliveries trail the last commits a little; wait until they stop coming.
    let load_end = Instant::now();
    if ingest.is_some() && audience.connected > 0 {
        while !cancel.is_cancelled() && load_end.elapsed() < DRAIN_LIMIT {
            let last = shared
                .progress
                .last_delivery()
                .map_or(load_end, |t| t.max(load_end));
            if last.elapsed() >= QUIET {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop_watching.cancel();
    let mut watchers: Vec<WatchStats> = Vec::with_capacity(audience.tasks.len());
    while let Some(joined) = audience.tasks.join_next().await {
        match joined {
            Ok(stats) => watchers.push(stats),
            Err(e) => tracing::error!("a subscriber failed: {e}"),
        }
    }
    footprint.bench_peak_rss_kib = memory::own_peak_rss_kib().ok();

    let (expected, window) = match &ingest {
        Some((load, _, load_start)) => (
            report::expected_deliveries(
                &load.published_by_vehicle,
                audience
                    .watches
                    .iter()
                    .zip(&audience.subscribed)
                    .filter_map(|(w, &ok)| ok.then_some(w)),
            ),
            watchers
                .iter()
                .filter_map(|w| w.last_delivery)
                .max()
                .map(|t| t.saturating_duration_since(*load_start)),
        ),
        None => (0, None),
    };
    let latency = shared.latency.merged();
    let report = Report::new(Findings {
        args,
        ingest: ingest.as_ref().map(|(load, elapsed, _)| (load, *elapsed)),
        watchers: &watchers,
        subscribe_failures: audience.failures,
        delivery_latency_us: &latency,
        delivery_window: window,
        expected_deliveries: expected,
        memory: footprint,
    });
    if part.is_split() {
        let requests = ingest.as_ref().map(|(load, _, _)| &load.latency_us);
        processes::hand_in(&report, &latency, requests)?;
    } else if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }

    tidy_up(&api, &shipment_ids).await;
    if let Some((load, _, _)) = &ingest {
        anyhow::ensure!(
            load.requests_ok > 0,
            "no request succeeded ({} failed)",
            load.requests_failed
        );
    }
    Ok(())
}

/// Ten thousand sockets need ten thousand open files: raise the soft limit as far as the hard
/// limit allows, and say so up front when that is not enough.
fn check_open_files(args: &BenchArgs) -> anyhow::Result<()> {
    let limit = match memory::raise_open_file_limit() {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            return Ok(());
        }
    };
    let needed = u64::from(args.subscribers)
        + u64::from(args.concurrency) * args.urls.len() as u64
        + SPARE_FILES;
    anyhow::ensure!(
        needed <= limit,
        "{} subscribers and {} requests in flight need about {needed} open files, but the \
         limit is {limit}: raise the hard limit (ulimit -Hn) or use fewer",
        args.subscribers,
        args.concurrency
    );
    Ok(())
}

/// The resident memory of the server processes, summed; none without any.
fn summed_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&pid| server_rss(pid)).sum()
}

fn server_rss(pid: u32) -> Option<u64> {
    memory::rss_kib(Some(pid))
        .inspect_err(|e| tracing::warn!("cannot read the memory of process {pid}: {e}"))
        .ok()
}

/// The subscriber tasks, and what became of their handshakes.
struct Audience {
    tasks: JoinSet<WatchStats>,
    /// What subscriber `i` watches...
    watches: Vec<Watch>,
    /// ...and whether it subscribed.
    subscribed: Vec<bool>,
    connected: usize,
    failures: BTreeMap<String, u64>,
}

/// Opens `--subscribers` subscribers, round-robin over the servers, a bounded number of
/// handshakes at a time, and waits until each has subscribed or given up. `targets` are the
/// bench vehicles and their (shipment, vehicle) pairs.
async fn open_subscribers(
    args: &BenchArgs,
    servers: &[Api],
    (vehicle_ids, shipments): (&[i64], &[(i64, i64)]),
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) -> anyhow::Result<Audience> {
    let count = args.subscribers as usize;
    let mut audience = Audience {
        tasks: JoinSet::new(),
        watches: Vec::with_capacity(count),
        subscribed: vec![false; count],
        connected: 0,
        failures: BTreeMap::new(),
    };
    if count == 0 {
        return Ok(audience);
    }
    tracing::info!(
        "opening {count} WebSocket subscribers ({} shape) on {} server(s)",
        args.shape,
        servers.len()
    );
    let urls = servers
        .iter()
        .map(Api::websocket_url)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let gate = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    let (ready_tx, mut ready) = mpsc::channel(count);
    for index in 0..count {
        let watch = Watch::for_subscriber(
            args.shape,
            index,
            vehicle_ids,
            shipments,
            args.topics as usize,
        );
        audience.watches.push(watch.clone());
        audience.tasks.spawn(watch::subscriber(
            Subscriber {
                index,
                url: urls[index % urls.len()].clone(),
                source: (!args.source_ips.is_empty())
                    .then(|| args.source_ips[index % args.source_ips.len()]),
                watch,
            },
            Arc::clone(&gate),
            ready_tx.clone(),
            Arc::clone(shared),
            stop.clone(),
        ));
    }
    drop(ready_tx);

    let started = Instant::now();
    let deadline = started + CONNECT_LIMIT;
    let mut next_note = started + Duration::from_secs(5);
    let mut answered = 0;
    while answered < count {
        let Ok(Some((index, outcome))) = tokio::time::timeout_at(deadline, ready.recv()).await
        else {
            stop.cancel();
            anyhow::bail!(
                "only {answered} of {count} subscribers were through their handshake after {CONNECT_LIMIT:?}"
            );
        };
        answered += 1;
        match outcome {
            Ok(()) => {
                audience.subscribed[index] = true;
                audience.connected += 1;
            }
            Err(why) => *audience.failures.entry(why).or_default() += 1,
        }
        if Instant::now() >= next_note {
            tracing::info!("{} of {count} subscribed", audience.connected);
            next_note += Duration::from_secs(5);
        }
    }
    if audience.connected == 0 {
        stop.cancel();
        let why = audience.failures.keys().next().cloned().unwrap_or_default();
        anyhow::bail!("no subscriber could subscribe: {why}");
    }
    if !audience.failures.is_empty() {
        tracing::warn!(
            "{} of {count} subscribers could not subscribe",
            count - audience.connected
        );
    }
    tracing::info!(
        "{} subscribers subscribed in {:.1} s",
        audience.connected,
        started.elapsed().as_secs_f64()
    );
    Ok(audience)
}

/// Posts for `--duration` seconds; returns what was measured, how long it took, and when it
/// started.
async fn post(
    args: &BenchArgs,
    servers: Vec<Api>,
    vehicles: Vec<BenchVehicle>,
    shared: &Shared,
    cancel: &CancellationToken,
) -> (LoadStats, Duration, Instant) {
    let workers = (args.concurrency as usize).min(vehicles.len());
    if workers < args.concurrency as usize {
        tracing::info!("{workers} requests in flight at most: one per vehicle keeps each vehicle's positions in order");
    }
    let mut lanes: Vec<Vec<Lane>> = vec![Vec::new(); workers];
    for (i, vehicle) in vehicles.into_iter().enumerate() {
        lanes[i % workers].push(vehicle.lane);
    }
    let pace = if args.rate > 0 {
        format!("{} positions/s offered", args.rate)
    } else {
        "as fast as the server answers".to_owned()
    };
    tracing::info!(
        "posting for {} s with up to {workers} requests in flight, {} per request, {pace}",
        args.duration,
        args.batch
    );
    let load_start = Instant::now();
    let load = Arc::new(Load {
        servers,
        batch: args.batch as usize,
        pacer: Pacer::new(load_start, args.rate, args.batch),
        deadline: load_start + Duration::from_secs(u64::from(args.duration)),
        sent: Arc::clone(&shared.sent),
    });
    let mut tasks = JoinSet::new();
    for worker_lanes in lanes {
        tasks.spawn(load::worker(
            Arc::clone(&load),
            worker_lanes,
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
    (ingest, load_start.elapsed(), load_start)
}

/// Index of the existing vehicles by name; of two with one name, the older.
fn by_name(existing: &[Vehicle]) -> HashMap<&str, &Vehicle> {
    let mut by_name: HashMap<&str, &Vehicle> = HashMap::new();
    for v in existing {
        let slot = by_name.entry(v.name.as_str()).or_insert(v);
        if v.id < slot.id {
            *slot = v;
        }
    }
    by_name
}

fn bench_vehicle_name(index: u32) -> String {
    format!("Bench {:04}", index + 1)
}

/// The ids of the bench vehicles, creating missing ones, without tokens or shipments: enough
/// to watch them.
async fn vehicle_ids(api: &Api, first: u32, count: u32) -> anyhow::Result<Vec<i64>> {
    let existing = api.list_vehicles().await.context("cannot list vehicles")?;
    let by_name = &by_name(&existing);
    stream::iter(first..first + count)
        .map(|i| async move {
            let name = bench_vehicle_name(i);
            match by_name.get(name.as_str()) {
                Some(v) => Ok(v.id),
                None => Ok(api
                    .create_vehicle(&name)
                    .await
                    .with_context(|| format!("cannot create {name}"))?
                    .0
                    .id),
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
}

/// Bench vehicles are reused across runs by name ("Bench 0001", …), with fresh tokens, so
/// repeated runs do not pile up vehicles; each gets an active shipment, new ones with a planned
/// route of `route_points` points (none for 0). A process of a split bench prepares its own run
/// of them, from `first`.
async fn prepare(
    api: &Api,
    first: u32,
    count: u32,
    route_points: u32,
    run_id: &str,
) -> anyhow::Result<Vec<BenchVehicle>> {
    let existing = api.list_vehicles().await.context("cannot list vehicles")?;
    let shipments = api
        .list_shipments()
        .await
        .context("cannot list shipments")?;
    let by_name = &by_name(&existing);
    let shipments = &shipments;
    stream::iter(first..first + count)
        .map(|i| async move {
            let name = bench_vehicle_name(i);
            prepare_one(
                api,
                (i, &name),
                by_name.get(name.as_str()).copied(),
                shipments,
                route_points,
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
    (index, name): (u32, &str),
    existing: Option<&Vehicle>,
    shipments: &[Shipment],
    route_points: u32,
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
            let destination = geo::destination(start, 90.0, TRIP_M);
            let new = NewShipment {
                reference: format!("BENCH-{run_id}-{:04}", index + 1),
                origin: Place::new(start, None),
                destination: Place::new(destination, None),
                planned_route: (route_points > 0).then(|| straight_route(start, route_points)),
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

/// `points` (at least 2) points evenly along the [`TRIP_M`] east from `start`, both ends
/// included.
fn straight_route(start: LatLon, points: u32) -> LineString {
    let step = TRIP_M / f64::from(points - 1);
    let route: Vec<LatLon> = (0..points)
        .map(|i| geo::destination(start, 90.0, f64::from(i) * step))
        .collect();
    LineString::new(&route)
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

    #[test]
    fn a_straight_route_has_its_points_evenly_from_start_to_destination() {
        let start = grid_point(7);
        let route = serde_json::to_value(straight_route(start, 1_000)).unwrap();
        let points: Vec<[f64; 2]> = serde_json::from_value(route["coordinates"].clone()).unwrap();
        assert_eq!(points.len(), 1_000);
        assert_eq!(points[0], start.to_geojson());
        let [lon, lat] = points[999];
        let end = LatLon::new(lat, lon);
        assert!((geo::haversine_m(start, end) - TRIP_M).abs() < 0.5);
    }
}
