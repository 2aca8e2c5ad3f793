//! `waymark-sim run`, the demo driver: signs in, makes sure every simulated vehicle exists with
//! a known ingest token, then drives them all at once along the real traces, each phone in its
//! own protocol, with GNSS noise, signal losses and, on request, incidents.

pub mod incident;
pub mod noise;
mod outbox;
pub mod plan;
pub mod profile;
pub mod protocol;
mod vehicle;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiError, Vehicle};
use crate::backoff::retry;
use crate::config::RunArgs;
use crate::state::StateFile;
use crate::tracks::{self, SimVehicle};

use incident::{Kind, Pace, MAX_SPEEDING_MPS};
use protocol::{Device, Protocol, SpeedUnit};
use vehicle::{Behaviour, Driver, Mode};

pub use outbox::Backlog;
pub use vehicle::Report;

/// Fastest speed in the traces (the Munich motorway) is about 31 m/s; the server filters
/// anything that looks faster than 100 m/s between two `recorded_at`s.
const FILTER_SAFE_SPEEDUP: f64 = 3.0;
/// Synthesised vehicles start anywhere in the first 80 % of their first trip.
const MAX_PHASE: f64 = 0.8;

pub async fn run(args: &RunArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    run_fleet(args, tracks::fleet()?, cancel).await.map(drop)
}

/// One vehicle to drive: a recorded one, or a synthesised copy along another's trips.
#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub trips: Vec<tracks::Trip>,
    pub mode_synthesised: bool,
}

/// `count` vehicles from the recorded `base`: the recorded ones first, then copies named
/// "<name> #2", "#3", … that start on another of the original's trips.
pub fn members(base: &[SimVehicle], count: usize) -> Vec<Member> {
    (0..count)
        .filter(|_| !base.is_empty())
        .map(|i| {
            let original = &base[i % base.len()];
            let copy = i / base.len();
            let mut trips = original.trips.clone();
            if !trips.is_empty() {
                let turn = copy % trips.len();
                trips.rotate_left(turn);
            }
            Member {
                name: if copy == 0 {
                    original.name.clone()
                } else {
                    format!("{} #{}", original.name, copy + 1)
                },
                trips,
                mode_synthesised: copy > 0,
            }
        })
        .collect()
}

/// Drives `base` (usually [`tracks::fleet`]) as `--vehicles` vehicles until done or cancelled;
/// returns what each vehicle recorded and sent.
pub async fn run_fleet(
    args: &RunArgs,
    base: Vec<SimVehicle>,
    cancel: CancellationToken,
) -> anyhow::Result<Vec<Report>> {
    let mut fleet = members(&base, args.fleet.vehicles as usize);
    if let Some(n) = args.fleet.trip_fixes {
        for trip in fleet.iter_mut().flat_map(|m| m.trips.iter_mut()) {
            trip.fixes.truncate(n as usize);
        }
    }
    let names: HashSet<&str> = fleet.iter().map(|m| m.name.as_str()).collect();
    let chosen = &args.incidents.incident_vehicles;
    if let Some(unknown) = chosen.iter().find(|n| !names.contains(n.as_str())) {
        anyhow::bail!(
            "--incident-vehicles names {unknown:?}, which is not in the fleet; the fleet is: {}",
            fleet
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let behaviour = Arc::new(behaviour(args));
    let server = &args.server;
    let api = Api::new(&args.url, server.credentials())?;
    if args.speedup > FILTER_SAFE_SPEEDUP {
        tracing::warn!(
            "at --speedup {} fast stretches look faster than 100 m/s to the server, \
             which stores them as filtered and does not show them live",
            args.speedup
        );
    }
    let seed = args.fleet.seed.unwrap_or_else(|| rand::thread_rng().gen());
    tracing::info!(
        vehicles = fleet.len(),
        protocols = %args.fleet.protocols.iter().map(Protocol::to_string).collect::<Vec<_>>().join(","),
        incidents = %args.incidents.incidents.iter().map(Kind::to_string).collect::<Vec<_>>().join(","),
        seed,
        "fleet"
    );

    tracing::info!(url = %api.base(), email = %server.email, "signing in");
    let signed_in = retry("sign in", &cancel, || api.login())
        .await
        .map_err(|e| sign_in_error(e, &server.email))?;
    if signed_in.is_none() {
        return Ok(Vec::new());
    }
    let listed = retry("list vehicles", &cancel, || api.list_vehicles()).await;
    let Some(existing) = listed.context("cannot list vehicles")? else {
        return Ok(Vec::new());
    };
    let listed = retry("list shipments", &cancel, || api.list_shipments()).await;
    let Some(shipments) = listed.context("cannot list shipments")? else {
        return Ok(Vec::new());
    };

    let mut state = StateFile::load(&args.state_file, api.base().as_str());
    let protocols = &args.fleet.protocols;
    let mut ready = Vec::with_capacity(fleet.len());
    let mut osmand_count = 0;
    for (i, member) in fleet.into_iter().enumerate() {
        let protocol = protocols[i % protocols.len()];
        // Half the OsmAnd-protocol phones are legacy Traccar Clients (knots), half the OsmAnd
        // app (m/s): the unit is the vehicle's, set when it is created.
        let unit = (protocol == Protocol::Osmand).then(|| {
            osmand_count += 1;
            if osmand_count % 2 == 1 {
                SpeedUnit::Knots
            } else {
                SpeedUnit::Mps
            }
        });
        let Some((vehicle_id, token, stored_unit)) =
            ensure_vehicle(&api, &mut state, &existing, &member.name, unit, &cancel).await?
        else {
            return Ok(Vec::new());
        };
        ready.push((member, protocol, vehicle_id, token, stored_unit));
    }

    let candidates = if chosen.is_empty() {
        ready.len()
    } else {
        chosen.len()
    };
    // Per vehicle, so that the fleet as a whole has one every --incident-every minutes.
    let incident_every = args.incidents.incident_every * candidates as f64;

    // Shared from here on: a vehicle whose token is refused rotates it and saves the new one.
    let state = Arc::new(Mutex::new(state));
    let mut tasks = JoinSet::new();
    for (i, (member, protocol, vehicle_id, token, unit)) in ready.into_iter().enumerate() {
        let active_shipment = shipments
            .iter()
            .find(|s| s.vehicle_id == Some(vehicle_id) && s.is_active())
            .map(|s| s.id);
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64));
        let mode = if member.mode_synthesised {
            Mode::Synthesised {
                phase: rng.gen_range(0.0..MAX_PHASE),
            }
        } else {
            Mode::Recorded
        };
        let has_incidents = !args.incidents.incidents.is_empty()
            && (chosen.is_empty() || chosen.contains(&member.name));
        let driver = Driver {
            device: Device::new(protocol, token, unit, &member.name),
            name: member.name,
            vehicle_id,
            trips: member.trips,
            mode,
            active_shipment,
            next_reference: vehicle::next_reference_number(&shipments, vehicle_id),
            api: api.clone(),
            state: Arc::clone(&state),
            behaviour: Arc::clone(&behaviour),
            incident_every_min: has_incidents.then_some(incident_every),
            rng,
            cancel: cancel.clone(),
        };
        tasks.spawn(driver.drive());
    }
    let mut reports = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(e)) => tracing::error!("a vehicle stopped: {e:#}"),
            Err(e) => tracing::error!("a vehicle task failed: {e}"),
        }
    }
    reports.sort_by_key(|r| r.vehicle_id);
    for r in &reports {
        tracing::info!(
            vehicle = %r.name,
            protocol = %r.protocol,
            "{} fixes recorded, {} sent, {} refused or dropped, {} unsent; {} signal losses \
             caught up; incidents: {}",
            r.recorded,
            r.sent,
            r.dropped,
            r.unsent,
            r.backlogs.len(),
            if r.incidents.is_empty() {
                "none".to_owned()
            } else {
                r.incidents.iter().map(Kind::to_string).collect::<Vec<_>>().join(", ")
            }
        );
    }
    tracing::info!("simulator stopped");
    Ok(reports)
}

fn behaviour(args: &RunArgs) -> Behaviour {
    let i = &args.incidents;
    Behaviour {
        speedup: args.speedup,
        once: args.once,
        noise: !args.fleet.no_noise,
        signal_loss_every_min: args.fleet.signal_loss_every,
        signal_loss_s: args.fleet.signal_loss_seconds,
        incidents: i.incidents.clone(),
        off_route_m: i.off_route_m,
        off_route_min: i.off_route_minutes,
        speeding: Pace {
            factor: i.speeding_factor,
            at_least_mps: (i.speeding_kmh / 3.6).min(MAX_SPEEDING_MPS),
        },
        speeding_min: i.speeding_minutes,
        silent_min: i.silent_minutes,
        stopped_min: i.stopped_minutes,
    }
}

/// The vehicle called `name` and a working ingest token for it: the saved token if this very
/// vehicle has one, else a rotated one, else a new vehicle. `None` if cancelled.
///
/// A new vehicle gets `unit` as its OsmAnd speed unit; the unit returned is the one the server
/// has, so that a vehicle made by an earlier run still gets speeds it reads right.
async fn ensure_vehicle(
    api: &Api,
    state: &mut StateFile,
    existing: &[Vehicle],
    name: &str,
    unit: Option<SpeedUnit>,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<(i64, String, SpeedUnit)>> {
    // Duplicates can exist (a create retried after a lost reply); the oldest is the one we use.
    let found = existing
        .iter()
        .filter(|v| v.name == name)
        .min_by_key(|v| v.id);
    let (vehicle_id, token, stored_unit, how) = match found {
        Some(v) => {
            if let Some(token) = state.token(name, v.id) {
                return Ok(Some((v.id, token.to_owned(), v.speed_unit)));
            }
            let what = format!("issue a new ingest token for {name}");
            let Some(token) = retry(&what, cancel, || api.rotate_token(v.id))
                .await
                .with_context(|| what.clone())?
            else {
                return Ok(None);
            };
            (v.id, token, v.speed_unit, "issued a new ingest token")
        }
        None => {
            let what = format!("create vehicle {name}");
            let create = || api.create_vehicle_with_unit(name, unit.map(SpeedUnit::as_str));
            let Some((v, token)) = retry(&what, cancel, create)
                .await
                .with_context(|| what.clone())?
            else {
                return Ok(None);
            };
            (v.id, token, v.speed_unit, "created")
        }
    };
    tracing::debug!(vehicle = name, id = vehicle_id, "{how}");
    if let Err(e) = state.remember(name, vehicle_id, &token) {
        // The token still works for this run; the next start just rotates it again.
        tracing::warn!("{e:#}");
    }
    Ok(Some((vehicle_id, token, stored_unit)))
}

fn sign_in_error(e: ApiError, email: &str) -> anyhow::Error {
    match e.status() {
        Some(reqwest::StatusCode::UNAUTHORIZED) => anyhow::anyhow!(
            "the server refused the sign-in for {email}: check --email/--password \
             (WAYMARK_SIM_EMAIL/WAYMARK_SIM_PASSWORD) and that the user exists"
        ),
        _ => anyhow::Error::new(e).context("sign in failed"),
    }
}
