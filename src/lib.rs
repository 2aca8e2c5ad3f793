//! Waymark: live GPS fleet tracking. Devices post positions, PostGIS stores them, and WebSocket
//! subscribers see them the moment they are committed.
//!
//! The tree reads by capability; infrastructure sits at the root.
//!
//! - [`ingest`]: positions come in (the HTTP edge, the tracker apps' formats, the filter) and are
//!   stored by the group-commit writer's workers, which also judge each fix for [`alerts`].
//! - [`tracking`]: the position, and the real-time path out: events and their transaction, the
//!   sequencer, fan-out through Redis, the hub, and reading missed events back.
//! - [`socket`]: the WebSocket protocol and its sessions, over [`tracking`].
//! - [`fleet`]: vehicles, shipments (tracks, share links, who may see them) and the fleet map.
//! - [`alerts`]: rules over positions and the clock, geofences, the ETA and its accuracy.
//! - [`chat`]: conversations between drivers and dispatch.
//! - [`auth`]: who is asking (people, devices, share links) and what they may see; managing people.
//! - [`settings`]: each organisation's settings, section by section.
//! - [`web`]: the HTML pages and the driver's phone page.
//!
//! Infrastructure: [`app`] (the router and serving), [`state`], [`config`], [`cli`], [`db`],
//! [`error`], [`metrics`], [`security`] and [`telemetry`]. `fuzzing` exposes entry points for the
//! fuzz targets and is built only for them and the unit tests.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod app;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod fleet;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod history;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod security;
pub mod settings;
pub mod socket;
pub mod state;
pub mod telemetry;
pub mod tracking;
pub mod web;

pub use app::{app, listen, run_server, serve};
pub use state::AppState;
