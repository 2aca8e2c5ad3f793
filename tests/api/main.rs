//! Integration tests: a real server on a real socket, real PostgreSQL/PostGIS (a fresh database
//! per test from `#[sqlx::test]`), real HTTP and WebSocket clients.
mod alerts;
mod attribution;
mod browser;
mod chat;
mod chat_live;
mod deploy;
mod driver;
mod eta_accuracy;
mod faults;
mod filters;
mod fleet_page;
mod ingest;
mod instances;
mod operations;
mod read_api;
mod readme;
mod revocation;
mod security;
mod simulator;
mod support;
mod trackers;
mod websocket;
