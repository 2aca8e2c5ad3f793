//! `waymark-sim run`, the demo driver: signs in, makes sure every simulated vehicle exists with
//! a known ingest token, then drives them all at once along their recorded traces.

mod outbox;
mod vehicle;

use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{Api, ApiError, Vehicle};
use crate::backoff::retry;
use crate::config::RunArgs;
use crate::state::StateFile;
use crate::tracks;

use vehicle::Driver;

/// Fastest speed in the traces (the Munich motorway) is about 31 m/s; the server filters
/// anything that looks faster than 100 m/s between two `recorded_at`s.
const FILTER_SAFE_SPEEDUP: f64 = 3.0;

pub async fn run(args: &RunArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    let fleet = tracks::fleet()?;
    let server = &args.server;
    let api = Api::new(&args.url, server.credentials())?;
    if args.speedup > FILTER_SAFE_SPEEDUP {
        tracing::warn!(
            "at --speedup {} fast stretches look faster than 100 m/s to the server, \
             which stores them as filtered and does not show them live",
            args.speedup
        );
    }

    tracing::info!(url = %api.base(), email = %server.email, "signing in");
    let signed_in = retry("sign in", &cancel, || api.login())
        .await
        .map_err(|e| sign_in_error(e, &server.email))?;
    if signed_in.is_none() {
        return Ok(());
    }
    let listed = retry("list vehicles", &cancel, || api.list_vehicles()).await;
    let Some(existing) = listed.context("cannot list vehicles")? else {
        return Ok(());
    };
    let listed = retry("list shipments", &cancel, || api.list_shipments()).await;
    let Some(shipments) = listed.context("cannot list shipments")? else {
        return Ok(());
    };

    let mut state = StateFile::load(&args.state_file, api.base().as_str());
    let mut ready = Vec::with_capacity(fleet.len());
    for sim in fleet {
        let Some((vehicle_id, token)) =
            ensure_vehicle(&api, &mut state, &existing, &sim.name, &cancel).await?
        else {
            return Ok(());
        };
        ready.push((sim, vehicle_id, token));
    }

    // Shared from here on: a vehicle whose token is refused rotates it and saves the new one.
    let state = Arc::new(Mutex::new(state));
    let mut tasks = JoinSet::new();
    for (sim, vehicle_id, token) in ready {
        let active_shipment = shipments
            .iter()
            .find(|s| s.vehicle_id == Some(vehicle_id) && s.is_active())
            .map(|s| s.id);
        let driver = Driver {
            name: sim.name,
            vehicle_id,
            token,
            trips: sim.trips,
            active_shipment,
            next_reference: vehicle::next_reference_number(&shipments, vehicle_id),
            api: api.clone(),
            state: Arc::clone(&state),
            speedup: args.speedup,
            once: args.once,
            cancel: cancel.clone(),
        };
        tasks.spawn(driver.drive());
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("a vehicle stopped: {e:#}"),
            Err(e) => tracing::error!("a vehicle task failed: {e}"),
        }
    }
    tracing::info!("simulator stopped");
    Ok(())
}

/// The vehicle called `name` and a working ingest token for it: the saved token if this very
/// vehicle has one, else a rotated one, else a new vehicle. `None` if cancelled.
async fn ensure_vehicle(
    api: &Api,
    state: &mut StateFile,
    existing: &[Vehicle],
    name: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<Option<(i64, String)>> {
    // Duplicates can exist (a create retried after a lost reply); the oldest is the one we use.
    let found = existing
        .iter()
        .filter(|v| v.name == name)
        .min_by_key(|v| v.id);
    let (vehicle_id, token, how) = match found {
        Some(v) => {
            if let Some(token) = state.token(name, v.id) {
                return Ok(Some((v.id, token.to_owned())));
            }
            let what = format!("issue a new ingest token for {name}");
            let Some(token) = retry(&what, cancel, || api.rotate_token(v.id))
                .await
                .with_context(|| what.clone())?
            else {
                return Ok(None);
            };
            (v.id, token, "issued a new ingest token")
        }
        None => {
            let what = format!("create vehicle {name}");
            let Some((v, token)) = retry(&what, cancel, || api.create_vehicle(name))
                .await
                .with_context(|| what.clone())?
            else {
                return Ok(None);
            };
            (v.id, token, "created")
        }
    };
    tracing::debug!(vehicle = name, id = vehicle_id, "{how}");
    if let Err(e) = state.remember(name, vehicle_id, &token) {
        // The token still works for this run; the next start just rotates it again.
        tracing::warn!("{e:#}");
    }
    Ok(Some((vehicle_id, token)))
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
