//! Waymark: live GPS fleet tracking. Devices post positions, PostGIS stores them, and WebSocket
//! subscribers see them the moment they are committed.
//!
//! Where things live: positions come in through [`ingest`] and are written by its group-commit
//! writer; they go out through [`tracking`] (the hub and the WebSocket sessions). [`auth`] decides
//! who may see what; [`vehicles`], [`shipments`] and [`fleet`] are the read and management API;
//! [`alerts`] watches positions (and the clock) for what needs a dispatcher's attention;
//! [`settings`] holds each organisation's settings; [`pages`] serves the map pages.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod app;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod db;
pub mod driver;
pub mod error;
pub mod fleet;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod pages;
pub mod position;
pub mod security;
pub mod settings;
pub mod shipments;
pub mod state;
pub mod telemetry;
pub mod tracking;
pub mod users;
pub mod vehicles;

pub use app::{app, run_server, serve};
pub use state::AppState;
