//! `waymark-sim truth`: replays every bundled trace through a running server with the faults real
//! phones produce (a clock running ahead, a glitch inside a backlog, re-sent and out-of-order
//! batches) and parks vehicles by a geofence's edge with drifting fixes, then reads back through
//! the public API what the server shows: current positions, drawn tracks, the audit log and the
//! alerts. Every count it reports, but those of what it injected, must be 0.
//!
//! The replay is time-compressed: each trace keeps its recorded spacing, shifted to end a few
//! seconds before it is posted, and goes in batches as fast as the server takes them. A fix
//! joins a shipment only if it was taken after the shipment got its vehicle (less two minutes),
//! so only each trace's last stretch ([`TAIL_S`]) joins one, and the drawn tracks are read for
//! that stretch; everything else is checked on the vehicle.

use std::collections::{HashMap, HashSet};
use std::fmt;

use anyhow::{bail, ensure, Context};
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::Rng;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiError, LineString, LoggedPosition, NewPosition, NewShipment, Place};
use crate::backoff::retry;
use crate::config::TruthArgs;
use crate::geo::{self, LatLon};
use crate::run::noise::Drift;
use crate::tracks::{self, SimVehicle};

/// A batch holds the fixes of this many seconds of the trace...
const BATCH_SPAN_S: i64 = 120;
/// ...and at most this many, or fewer, so that a short trace still makes [`MIN_BATCHES`].
const MAX_BATCH_FIXES: usize = 100;
const MIN_BATCHES: usize = 12;
/// A backlog goes in requests of this many fixes, as a phone catching up sends it.
const BACKLOG_CHUNK: usize = 30;
/// The last stretch of each trace, stamped after its shipment was created less the server's
/// two minutes of grace, joins the shipment: its drawn track is checked.
const TAIL_S: i64 = 100;
/// Each trace ends this long before it starts being posted.
const END_BEFORE_NOW: Duration = Duration::seconds(5);
/// A phone whose clock jumped ahead (within the server's 5-minute `future` limit)...
const CLOCK_AHEAD: Duration = Duration::minutes(4);
/// ...and whose fix is this far off besides.
const FAULT_M: f64 = 3_000.0;
/// Every this many batches is sent twice, as by a phone that never got the reply.
const RESEND_EVERY: usize = 7;
/// The most vertices a shipment's planned route gets.
const ROUTE_POINTS: usize = 200;

/// The geofence the parked vehicles stand by: a circle in Munich.
const FENCE_CENTRE: LatLon = LatLon::new(48.137, 11.575);
const FENCE_RADIUS_M: f64 = 150.0;
/// How far from the edge each pair of parked vehicles stands, one inside, one outside.
const PARKED_FROM_EDGE_M: [f64; 3] = [5.0, 10.0, 15.0];
/// GPS drift of a parked receiver: σ per axis, and correlation times dealt out in turn.
const PARKED_SIGMA_M: f64 = 7.0;
const PARKED_TAU_S: [f64; 2] = [120.0, 300.0];
const PARKED_EVERY_S: i64 = 10;
const PARKED_MINUTES: i64 = 30;
/// How fast a parked vehicle drove to its spot.
const PARKED_APPROACH_MPS: f64 = 10.0;
/// The parked vehicles' fixes go five minutes to a request.
const PARKED_BATCH: usize = 30;

/// What the replay did and found. The counts named in [`Report::failures`] must be 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Bundled vehicles replayed, and their distinct genuine fixes.
    pub traces: u64,
    pub fixes: u64,
    /// Position requests sent, re-sends included.
    pub requests: u64,
    /// Faults injected.
    pub clock_ahead_faults: u64,
    pub backlog_glitches: u64,
    /// Of those glitches, the ones inside a shipment's stretch, so in a track that was read.
    pub glitches_in_tracks: u64,
    pub resent_batches: u64,
    pub batches_out_of_order: u64,
    pub parked_vehicles: u64,
    pub parked_fixes: u64,
    /// What was read back.
    pub current_checks: u64,
    pub tracks_checked: u64,
    pub logged_rows: u64,
    /// Found: each must be 0.
    pub false_currents: u64,
    pub marked_drawn: u64,
    pub geofence_flaps: u64,
    pub geofence_enters_missed: u64,
    pub not_stored_once: u64,
    pub faults_unmarked: u64,
    /// Genuine recorded fixes the server marked all the same (the real 470 m jump in the Munich
    /// trace, say): told, not a failure.
    pub genuine_marked: u64,
}

impl Report {
    /// What went wrong, summed: 0 for a server that tells the truth.
    pub fn failures(&self) -> u64 {
        self.false_currents
            + self.marked_drawn
            + self.geofence_flaps
            + self.geofence_enters_missed
            + self.not_stored_once
            + self.faults_unmarked
    }

    fn add(&mut self, o: &Report) {
        self.traces += o.traces;
        self.fixes += o.fixes;
        self.requests += o.requests;
        self.clock_ahead_faults += o.clock_ahead_faults;
        self.backlog_glitches += o.backlog_glitches;
        self.glitches_in_tracks += o.glitches_in_tracks;
        self.resent_batches += o.resent_batches;
        self.batches_out_of_order += o.batches_out_of_order;
        self.parked_vehicles += o.parked_vehicles;
        self.parked_fixes += o.parked_fixes;
        self.current_checks += o.current_checks;
        self.tracks_checked += o.tracks_checked;
        self.logged_rows += o.logged_rows;
        self.false_currents += o.false_currents;
        self.marked_drawn += o.marked_drawn;
        self.geofence_flaps += o.geofence_flaps;
        self.geofence_enters_missed += o.geofence_enters_missed;
        self.not_stored_once += o.not_stored_once;
        self.faults_unmarked += o.faults_unmarked;
        self.genuine_marked += o.genuine_marked;
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replayed: {} traces, {} fixes, {} parked vehicles ({} fixes), {} requests",
            self.traces, self.fixes, self.parked_vehicles, self.parked_fixes, self.requests
        )?;
        writeln!(
            f,
            "injected: {} clock-ahead fixes, {} glitches in backlogs ({} in shipment tracks), \
             {} re-sent batches, {} batches out of order, {} vehicles parked by a geofence edge",
            self.clock_ahead_faults,
            self.backlog_glitches,
            self.glitches_in_tracks,
            self.resent_batches,
            self.batches_out_of_order,
            self.parked_vehicles
        )?;
        writeln!(
            f,
            "read back: {} current positions, {} tracks (GeoJSON and GPX), {} audit-log rows",
            self.current_checks, self.tracks_checked, self.logged_rows
        )?;
        let rows = [
            ("false current positions", self.false_currents),
            ("marked fixes drawn", self.marked_drawn),
            ("geofence flaps", self.geofence_flaps),
            ("geofence enters missed", self.geofence_enters_missed),
            (
                "acknowledged fixes not stored exactly once",
                self.not_stored_once,
            ),
            ("injected faults not marked", self.faults_unmarked),
        ];
        for (what, n) in rows {
            writeln!(f, "  {what:<44} {n}")?;
        }
        writeln!(
            f,
            "(genuine fixes the server marked, not counted as failures: {})",
            self.genuine_marked
        )
    }
}

/// `waymark-sim truth`: the replay, its report on standard output, and a failure when any
/// count that must be 0 is not.
pub async fn truth(args: &TruthArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let report = replay(args, tracks::fleet()?, cancel).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    ensure!(
        report.failures() == 0,
        "the server showed something untrue ({} failures)",
        report.failures()
    );
    Ok(())
}

/// Replays `base` (the first `--traces` of it) and the parked vehicles against the server.
pub async fn replay(
    args: &TruthArgs,
    base: Vec<SimVehicle>,
    cancel: CancellationToken,
) -> anyhow::Result<Report> {
    let api = Api::new(&args.url, args.server.credentials())?;
    match retry("sign in", &cancel, || api.login()).await {
        Ok(Some(())) => {}
        Ok(None) => bail!("cancelled"),
        Err(e) => return Err(e).context("signing in"),
    }
    // Names of their own, so that the replay can run again on the same account.
    let run = format!(
        "Truth {} {:04x}",
        Utc::now().format("%m-%d %H:%M:%S"),
        rand::thread_rng().gen::<u16>()
    );
    let count = args.traces.map_or(base.len(), |n| n as usize);
    let mut tasks = JoinSet::new();
    for vehicle in base.into_iter().take(count) {
        let (api, cancel, name) = (
            api.clone(),
            cancel.clone(),
            format!("{run} {}", vehicle.name),
        );
        tasks.spawn(async move { replay_trace(&api, &cancel, &name, &vehicle).await });
    }
    let parked = park_by_a_geofence(&api, &cancel, &run, args.seed);
    let mut report = parked.await?;
    while let Some(done) = tasks.join_next().await {
        report.add(&done??);
    }
    Ok(report)
}

/// `p` moved `m` metres north.
fn displaced(p: &NewPosition, m: f64) -> NewPosition {
    let moved = geo::destination(LatLon::new(p.lat, p.lon), 0.0, m);
    NewPosition {
        lat: moved.lat,
        lon: moved.lon,
        ..p.clone()
    }
}

/// Milliseconds since the epoch: how fixes are told apart (the server keeps microseconds, the
/// replay posts milliseconds).
fn key(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// A time to the millisecond, as it is posted.
fn to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.timestamp_millis()).unwrap_or(t)
}

/// A current position read back: after how many genuine fixes had been posted, and its time.
struct Observation {
    posted: usize,
    current: Option<i64>,
    what: &'static str,
}

/// One vehicle as the replay posts for it, and what the server acknowledged.
struct Phone<'a> {
    api: &'a Api,
    cancel: &'a CancellationToken,
    name: &'a str,
    vehicle_id: i64,
    token: String,
    /// Every acknowledged fix's seq, by time.
    acked: HashMap<i64, i64>,
    /// The genuine fixes posted so far, in the order posted.
    posted: Vec<i64>,
    /// The injected faults, by time.
    faults: HashSet<i64>,
    observations: Vec<Observation>,
    report: Report,
}

impl<'a> Phone<'a> {
    async fn new(
        api: &'a Api,
        cancel: &'a CancellationToken,
        name: &'a str,
    ) -> anyhow::Result<Phone<'a>> {
        let (vehicle, token) = call(cancel, name, || api.create_vehicle(name)).await?;
        Ok(Phone {
            api,
            cancel,
            name,
            vehicle_id: vehicle.id,
            token,
            acked: HashMap::new(),
            posted: Vec::new(),
            faults: HashSet::new(),
            observations: Vec::new(),
            report: Report::default(),
        })
    }

    /// Posts `fixes` in one request; those not registered as faults are genuine.
    async fn post(&mut self, fixes: &[NewPosition]) -> anyhow::Result<()> {
        if fixes.is_empty() {
            return Ok(());
        }
        let (api, token) = (self.api, &self.token);
        let ack = call(self.cancel, self.name, || api.ingest(token, fixes)).await?;
        self.report.requests += 1;
        ensure!(
            ack.seqs.len() == fixes.len(),
            "{}: {} seqs for {} fixes",
            self.name,
            ack.seqs.len(),
            fixes.len()
        );
        for (p, seq) in fixes.iter().zip(&ack.seqs) {
            let k = key(p.recorded_at);
            // A re-send must get the stored copy's seq: another would be a second row.
            if *self.acked.entry(k).or_insert(*seq) != *seq {
                self.report.not_stored_once += 1;
            }
            if !self.faults.contains(&k) {
                self.posted.push(k);
            }
        }
        Ok(())
    }

    /// Reads the vehicle's current position back.
    async fn observe(&mut self, what: &'static str) -> anyhow::Result<()> {
        let (api, id) = (self.api, self.vehicle_id);
        let vehicle = call(self.cancel, self.name, || api.get_vehicle(id)).await?;
        self.observations.push(Observation {
            posted: self.posted.len(),
            current: vehicle.last_position.map(|p| key(p.recorded_at)),
            what,
        });
        Ok(())
    }

    /// One fix stamped [`CLOCK_AHEAD`] of now and [`FAULT_M`] off `like`, alone in a request.
    async fn clock_ahead(&mut self, like: &NewPosition) -> anyhow::Result<()> {
        let mut fault = displaced(like, FAULT_M);
        fault.recorded_at = to_millis(Utc::now() + CLOCK_AHEAD);
        self.faults.insert(key(fault.recorded_at));
        self.post(&[fault]).await?;
        self.report.clock_ahead_faults += 1;
        self.observe("after a fix stamped ahead").await
    }

    /// Sends `held` as a phone catching up after a tunnel, with one fix in it replaced by a
    /// glitch far enough off that no vehicle could have reached it from its neighbours (in the
    /// backlog, or `before` and `after` it, posted already); answers the glitch's time.
    async fn backlog(
        &mut self,
        before: &NewPosition,
        held: &[NewPosition],
        after: &NewPosition,
    ) -> anyhow::Result<Option<i64>> {
        let mut held = held.to_vec();
        let around = |held: &[NewPosition], i: usize| {
            let prev = if i == 0 { before } else { &held[i - 1] };
            let next = held.get(i + 1).unwrap_or(after);
            (next.recorded_at - prev.recorded_at).num_milliseconds()
        };
        // The fix with the closest neighbours, so that the glitch stays on this planet.
        let glitch = match (0..held.len()).min_by_key(|&i| (around(&held, i), i)) {
            Some(i) => {
                let gap = around(&held, i) as f64 / 1000.0;
                // 150 m/s over the whole gap: beyond the 100 m/s limit from either neighbour.
                held[i] = displaced(&held[i], (150.0 * gap).max(FAULT_M));
                let k = key(held[i].recorded_at);
                self.faults.insert(k);
                self.report.backlog_glitches += 1;
                Some(k)
            }
            None => None,
        };
        for chunk in held.chunks(BACKLOG_CHUNK) {
            self.post(chunk).await?;
        }
        self.observe("after a backlog").await?;
        Ok(glitch)
    }

    /// The audit log, every page.
    async fn log(&self) -> anyhow::Result<Vec<LoggedPosition>> {
        let mut rows = Vec::new();
        let mut after = None;
        loop {
            let (api, id) = (self.api, self.vehicle_id);
            let page = call(self.cancel, self.name, || api.positions_log(id, after)).await?;
            rows.extend(page.positions);
            match page.next {
                Some(next) => after = Some(next),
                None => return Ok(rows),
            }
        }
    }

    /// Checks what was posted against the audit log and the current positions read back;
    /// answers the log.
    async fn audit(&mut self) -> anyhow::Result<Vec<LoggedPosition>> {
        let log = self.log().await?;
        self.report.logged_rows += log.len() as u64;
        let mut rows: HashMap<i64, Vec<&LoggedPosition>> = HashMap::new();
        for row in &log {
            rows.entry(key(row.recorded_at)).or_default().push(row);
        }
        // Every acknowledged fix is stored once, as the seq it was acknowledged with, and
        // nothing else is stored.
        for (k, seq) in &self.acked {
            match rows.get(k).map(Vec::as_slice) {
                Some([row]) if row.seq == *seq => {}
                other => {
                    self.report.not_stored_once += 1;
                    tracing::warn!(
                        "{}: fix at {k} ms acknowledged as {seq}: {other:?}",
                        self.name
                    );
                }
            }
        }
        self.report.not_stored_once +=
            rows.keys().filter(|k| !self.acked.contains_key(k)).count() as u64;

        let marked: HashSet<i64> = log
            .iter()
            .filter(|r| r.filter_reason.is_some())
            .map(|r| key(r.recorded_at))
            .collect();
        for fault in &self.faults {
            if !marked.contains(fault) {
                self.report.faults_unmarked += 1;
                tracing::warn!("{}: the fault at {fault} ms was not marked", self.name);
            }
        }
        let genuine: HashSet<i64> = self.posted.iter().copied().collect();
        self.report.fixes += genuine.len() as u64;
        self.report.genuine_marked += genuine.intersection(&marked).count() as u64;

        // The current position is always the newest genuine fix posted that the server did not
        // mark: never a fault, never an older one.
        for o in &self.observations {
            let expected = self.posted[..o.posted]
                .iter()
                .filter(|k| !marked.contains(k))
                .max()
                .copied();
            self.report.current_checks += 1;
            if o.current != expected {
                self.report.false_currents += 1;
                tracing::warn!(
                    "{}: {}: current {:?}, expected {:?}",
                    self.name,
                    o.what,
                    o.current.map(fmt_millis),
                    expected.map(fmt_millis)
                );
            }
        }
        Ok(log)
    }
}

fn fmt_millis(k: i64) -> String {
    DateTime::from_timestamp_millis(k)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// Calls the API until it answers, retrying what may pass (a rate limit, a restart).
async fn call<T, F, Fut>(cancel: &CancellationToken, name: &str, op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    match retry(name, cancel, op).await {
        Ok(Some(value)) => Ok(value),
        Ok(None) => bail!("cancelled"),
        Err(e) => Err(e).with_context(|| name.to_owned()),
    }
}

/// A trace's fixes as a phone reports them, shifted so that the last was taken
/// [`END_BEFORE_NOW`] ago, with the trace's speeds and headings and an accuracy of 5 m.
fn positions(vehicle: &SimVehicle) -> Vec<NewPosition> {
    let fixes: Vec<&tracks::Fix> = vehicle.trips.iter().flat_map(|t| &t.fixes).collect();
    let Some(last) = fixes.last() else {
        return Vec::new();
    };
    let shift = to_millis(Utc::now() - END_BEFORE_NOW) - last.at;
    let mut out: Vec<NewPosition> = Vec::with_capacity(fixes.len());
    for f in fixes {
        let recorded_at = to_millis(f.at + shift);
        // Trips follow each other; a fix not after the one before would be a re-send.
        if out.last().is_some_and(|p| p.recorded_at >= recorded_at) {
            continue;
        }
        out.push(NewPosition {
            lat: f.point.lat,
            lon: f.point.lon,
            recorded_at,
            accuracy: Some(5.0),
            speed: f.speed,
            heading: f.heading,
            altitude: f.altitude,
            battery: None,
        });
    }
    out
}

/// Consecutive fixes in batches of [`BATCH_SPAN_S`] of recorded time, [`MAX_BATCH_FIXES`] at
/// most.
fn batches(fixes: &[NewPosition]) -> Vec<&[NewPosition]> {
    let most = (fixes.len() / MIN_BATCHES).clamp(1, MAX_BATCH_FIXES);
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=fixes.len() {
        let full = i == fixes.len()
            || i - start == most
            || (fixes[i].recorded_at - fixes[start].recorded_at).num_seconds() >= BATCH_SPAN_S;
        if full {
            out.push(&fixes[start..i]);
            start = i;
        }
    }
    out
}

/// One bundled vehicle: its trace with the faults, then the checks.
async fn replay_trace(
    api: &Api,
    cancel: &CancellationToken,
    name: &str,
    vehicle: &SimVehicle,
) -> anyhow::Result<Report> {
    let mut phone = Phone::new(api, cancel, name).await?;
    let trip = vehicle.trips.last().context("a vehicle without trips")?;
    let shipment = NewShipment {
        reference: format!("TRUTH-{}", phone.vehicle_id),
        origin: Place::new(trip.first().point, trip.origin_name.clone()),
        destination: Place::new(trip.last().point, trip.destination_name.clone()),
        planned_route: Some(LineString::new(&trip.route(ROUTE_POINTS))),
        vehicle_id: phone.vehicle_id,
    };
    let shipment = call(cancel, name, || api.create_shipment(&shipment)).await?;
    // Stamped after the shipment was created, so that its last stretch joins it.
    let fixes = positions(vehicle);
    let end = fixes.last().context("an empty trace")?.recorded_at;
    let tail_from = fixes.partition_point(|p| (end - p.recorded_at).num_seconds() > TAIL_S);
    let (history, tail) = fixes.split_at(tail_from);

    let b = batches(history);
    let m = b.len();
    let clock_at = m / 4;
    let swap_at = m / 2;
    let backlog_len = (m / 8).max(1);
    let backlog_at = 3 * m / 4;
    let mut j = 0;
    while j < m {
        if j == swap_at && j + 1 < backlog_at {
            // Out of order: the newer batch arrives first.
            phone.post(b[j + 1]).await?;
            phone.observe("after a batch sent early").await?;
            phone.post(b[j]).await?;
            phone.observe("after a batch sent late").await?;
            phone.report.batches_out_of_order += 1;
            j += 2;
            continue;
        }
        if j == backlog_at && j > 0 && j + backlog_len < m {
            // A tunnel: the batch after it goes first, then what was held.
            let after = b[j + backlog_len];
            phone.post(after).await?;
            let held: Vec<NewPosition> = b[j..j + backlog_len].concat();
            let before = &b[j - 1][b[j - 1].len() - 1];
            phone.backlog(before, &held, &after[0]).await?;
            j += backlog_len + 1;
            continue;
        }
        phone.post(b[j]).await?;
        if j % RESEND_EVERY == RESEND_EVERY - 1 {
            phone.post(b[j]).await?;
            phone.report.resent_batches += 1;
        }
        if j == clock_at && j + 1 < m {
            phone.clock_ahead(&b[j + 1][0]).await?;
            phone.post(b[j + 1]).await?;
            phone
                .observe("after the fix after one stamped ahead")
                .await?;
            j += 2;
            continue;
        }
        j += 1;
    }

    // The stretch that joins the shipment: its start, its end, then a backlog of the rest.
    let mut glitch_in_track = None;
    if let [first, held @ .., last] = tail {
        phone.post(std::slice::from_ref(first)).await?;
        phone.post(std::slice::from_ref(last)).await?;
        glitch_in_track = phone.backlog(first, held, last).await?;
    } else {
        phone.post(tail).await?;
    }
    phone.observe("at the end").await?;

    let log = phone.audit().await?;
    let marked: HashSet<i64> = log
        .iter()
        .filter(|r| r.filter_reason.is_some())
        .map(|r| key(r.recorded_at))
        .collect();
    // The shipment's current position is the newest good fix that joined it (the fixes after
    // it arrived are the vehicle's alone).
    let shipment_id = shipment.id;
    let joined: HashSet<i64> = log
        .iter()
        .filter(|r| r.shipment_id == Some(shipment_id))
        .map(|r| key(r.recorded_at))
        .collect();
    let expected = phone
        .posted
        .iter()
        .filter(|k| joined.contains(k) && !marked.contains(k))
        .max()
        .copied();
    let read = call(cancel, name, || api.get_shipment(shipment_id)).await?;
    let current = read.last_position.map(|p| key(p.recorded_at));
    phone.report.current_checks += 1;
    if current.is_none() || current != expected {
        phone.report.false_currents += 1;
        tracing::warn!(
            "{name}: the shipment's current position is {:?}, expected {:?}",
            current.map(fmt_millis),
            expected.map(fmt_millis)
        );
    }
    for format in ["geojson", "gpx"] {
        let text = call(cancel, name, || api.track(shipment_id, format)).await?;
        let drawn = if format == "gpx" {
            gpx_times(&text)
        } else {
            geojson_times(&text)?
        };
        ensure!(
            !drawn.is_empty(),
            "{name}: the shipment's {format} track is empty"
        );
        phone.report.tracks_checked += 1;
        let wrong = drawn.iter().filter(|k| marked.contains(k)).count();
        if wrong > 0 {
            tracing::warn!("{name}: {wrong} marked fixes drawn in the {format} track");
        }
        phone.report.marked_drawn += wrong as u64;
    }
    if glitch_in_track.is_some() {
        phone.report.glitches_in_tracks += 1;
    }
    phone.report.traces = 1;
    Ok(phone.report)
}

/// The times of a GeoJSON track's vertices (`properties.times`).
fn geojson_times(text: &str) -> anyhow::Result<Vec<i64>> {
    let track: serde_json::Value = serde_json::from_str(text)?;
    let features = track["features"].as_array().cloned().unwrap_or_default();
    let mut times = Vec::new();
    for feature in &features {
        for t in feature["properties"]["times"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let t = t.as_str().context("a vertex time that is not a string")?;
            times.push(key(DateTime::parse_from_rfc3339(t)?.with_timezone(&Utc)));
        }
    }
    Ok(times)
}

/// The times of a GPX track's points.
fn gpx_times(text: &str) -> Vec<i64> {
    text.split("<trkpt")
        .skip(1)
        .filter_map(|point| {
            let start = point.find("<time>")? + "<time>".len();
            let end = point[start..].find("</time>")? + start;
            let t = DateTime::parse_from_rfc3339(&point[start..end]).ok()?;
            Some(key(t.with_timezone(&Utc)))
        })
        .collect()
}

/// Vehicles parked [`PARKED_FROM_EDGE_M`] inside and outside a circular geofence for half an
/// hour, their fixes drifting by σ 7 m: each inside one must raise one enter (it drove in from
/// the middle), each outside one nothing (it came from 300 m out).
async fn park_by_a_geofence(
    api: &Api,
    cancel: &CancellationToken,
    run: &str,
    seed: u64,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut parked = Vec::new();
    for (i, from_edge) in PARKED_FROM_EDGE_M.iter().enumerate() {
        for inside in [true, false] {
            let side = if inside { "inside" } else { "outside" };
            let name = format!("{run} parked {from_edge} m {side}");
            let (vehicle, token) = call(cancel, &name, || api.create_vehicle(&name)).await?;
            let drift = Drift::new(
                seed.wrapping_mul(100).wrapping_add(parked.len() as u64),
                PARKED_SIGMA_M,
                PARKED_TAU_S[i % PARKED_TAU_S.len()],
            );
            // A phone's figure for σ 7 m on some, none on the others.
            let accuracy = (i % 2 == 0).then_some(10.0);
            let fixes = parked_fixes(*from_edge, inside, drift, accuracy);
            parked.push((name, vehicle.id, token, inside, fixes));
        }
    }
    let ids: Vec<i64> = parked.iter().map(|p| p.1).collect();
    let fence_name = format!("{run} depot");
    let fence = call(cancel, &fence_name, || {
        api.create_circle_geofence(&fence_name, FENCE_CENTRE, FENCE_RADIUS_M, &ids)
    })
    .await?;
    for (name, vehicle_id, token, inside, fixes) in parked {
        for batch in fixes.chunks(PARKED_BATCH) {
            call(cancel, &name, || api.ingest(&token, batch)).await?;
            report.requests += 1;
        }
        report.parked_vehicles += 1;
        report.parked_fixes += fixes.len() as u64;
        let alerts = call(cancel, &name, || api.vehicle_alerts(vehicle_id)).await?;
        let ours = alerts.iter().filter(|a| a.geofence_id == Some(fence));
        let enters = ours.clone().filter(|a| a.rule == "geofence_enter").count() as u64;
        let exits = ours.filter(|a| a.rule == "geofence_exit").count() as u64;
        let flaps = if inside {
            report.geofence_enters_missed += u64::from(enters == 0);
            enters.saturating_sub(1) + exits
        } else {
            enters + exits
        };
        if flaps > 0 {
            tracing::warn!("{name}: {enters} enters and {exits} exits");
        }
        report.geofence_flaps += flaps;
    }
    Ok(report)
}

/// The fixes of a vehicle that comes to a spot `from_edge` metres inside or outside the
/// geofence's southern edge and stays [`PARKED_MINUTES`]: from the centre (where it waits a
/// minute first) when the spot is inside, from 300 m farther south when outside; one fix every
/// [`PARKED_EVERY_S`], each with the drift, the last [`END_BEFORE_NOW`] ago.
fn parked_fixes(
    from_edge: f64,
    inside: bool,
    mut drift: Drift,
    accuracy: Option<f64>,
) -> Vec<NewPosition> {
    const SOUTH: f64 = 180.0;
    let from_centre = if inside {
        FENCE_RADIUS_M - from_edge
    } else {
        FENCE_RADIUS_M + from_edge
    };
    let spot = geo::destination(FENCE_CENTRE, SOUTH, from_centre);
    let start = if inside {
        FENCE_CENTRE
    } else {
        geo::destination(spot, SOUTH, 300.0)
    };
    let mut truth: Vec<LatLon> = Vec::new();
    if inside {
        truth.extend(std::iter::repeat_n(start, (60 / PARKED_EVERY_S) as usize));
    }
    let way = geo::haversine_m(start, spot);
    let steps = (way / PARKED_APPROACH_MPS / PARKED_EVERY_S as f64).ceil() as usize;
    truth.extend((1..=steps).map(|i| {
        let k = i as f64 / steps as f64;
        LatLon::new(
            start.lat + k * (spot.lat - start.lat),
            start.lon + k * (spot.lon - start.lon),
        )
    }));
    truth.extend(std::iter::repeat_n(
        spot,
        (PARKED_MINUTES * 60 / PARKED_EVERY_S) as usize,
    ));
    let end = to_millis(Utc::now() - END_BEFORE_NOW);
    let n = truth.len() as i64;
    truth
        .into_iter()
        .zip(0..)
        .map(|(place, i)| {
            let (north, east) = drift.step(PARKED_EVERY_S as f64);
            let off = geo::destination(geo::destination(place, 0.0, north), 90.0, east);
            NewPosition {
                lat: off.lat,
                lon: off.lon,
                recorded_at: end - Duration::seconds((n - 1 - i) * PARKED_EVERY_S),
                accuracy,
                speed: None,
                heading: None,
                altitude: None,
                battery: None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_trace_gets_every_fault_and_a_stretch_for_its_shipment() {
        for vehicle in tracks::fleet().unwrap() {
            let fixes = positions(&vehicle);
            assert!(
                fixes
                    .windows(2)
                    .all(|w| w[0].recorded_at < w[1].recorded_at),
                "{}",
                vehicle.name
            );
            let end = fixes.last().unwrap().recorded_at;
            assert!(end < Utc::now() && end > Utc::now() - Duration::minutes(1));
            let tail = fixes
                .iter()
                .filter(|p| (end - p.recorded_at).num_seconds() <= TAIL_S)
                .count();
            let b = batches(&fixes[..fixes.len() - tail]);
            // Room for the clock fault, the swap and the backlog, apart from each other.
            assert!(
                b.len() >= MIN_BATCHES,
                "{}: {} batches",
                vehicle.name,
                b.len()
            );
            // A first and a last fix, and a backlog between them with a glitch.
            assert!(
                tail >= 3,
                "{}: {tail} fixes join the shipment",
                vehicle.name
            );
            assert!(b
                .iter()
                .all(|b| !b.is_empty() && b.len() <= MAX_BATCH_FIXES));
            assert_eq!(b.iter().map(|b| b.len()).sum::<usize>(), fixes.len() - tail);
        }
    }

    #[test]
    fn parked_fixes_drift_about_their_spot() {
        let fixes = parked_fixes(10.0, false, Drift::new(1, PARKED_SIGMA_M, 120.0), None);
        let spot = geo::destination(FENCE_CENTRE, 180.0, FENCE_RADIUS_M + 10.0);
        let parked = &fixes[fixes.len() - 180..];
        let mean = parked
            .iter()
            .map(|p| geo::haversine_m(spot, LatLon::new(p.lat, p.lon)))
            .sum::<f64>()
            / parked.len() as f64;
        // The mean distance of a 2-D normal error of σ 7 m is σ·√(π/2) ≈ 8.8 m.
        assert!((4.0..14.0).contains(&mean), "{mean}");
        assert!(fixes
            .windows(2)
            .all(|w| (w[1].recorded_at - w[0].recorded_at).num_seconds() == PARKED_EVERY_S));
    }

    #[test]
    fn track_times_are_read_from_geojson_and_gpx() {
        let geojson = r#"{"type":"FeatureCollection","features":[{"type":"Feature",
            "geometry":{"type":"LineString","coordinates":[[1,2],[3,4]]},
            "properties":{"times":["2026-12-02T10:00:00Z","2026-12-02T10:00:01.500Z"]}}]}"#;
        let gpx = "<gpx><metadata><time>2026-12-02T09:00:00Z</time></metadata><trk><trkseg>\
            <trkpt lat=\"2\" lon=\"1\"><time>2026-12-02T10:00:00Z</time></trkpt>\
            <trkpt lat=\"4\" lon=\"3\"><time>2026-12-02T10:00:01.500Z</time></trkpt>\
            </trkseg></trk></gpx>";
        let t0 = key("2026-12-02T10:00:00Z".parse().unwrap());
        assert_eq!(geojson_times(geojson).unwrap(), [t0, t0 + 1500]);
        assert_eq!(gpx_times(gpx), [t0, t0 + 1500]);
    }
}
