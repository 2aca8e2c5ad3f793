//! Waymark's route simulator: replays real GPS traces as a live fleet through the HTTP API
//! (`run`), measures ingest throughput and WebSocket delivery latency (`bench`), and checks that
//! what the server shows is true when phones misbehave (`truth`).

pub mod api;
pub mod backoff;
pub mod bench;
pub mod config;
pub mod geo;
pub mod run;
pub mod state;
pub mod tracks;
pub mod truth;

use std::io::IsTerminal;

use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use config::{Cli, Command};

/// Logs go to standard error, so that `bench --json` keeps standard output clean.
pub fn init_tracing(verbose: u8) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(match verbose {
            0 => "info",
            1 => "info,waymark_sim=debug",
            _ => "debug,waymark_sim=trace",
        })
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Runs the chosen command until it finishes or the process is asked to stop.
pub async fn main(cli: Cli) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    tokio::spawn(stop_on_signal(cancel.clone()));
    match cli.selected_command() {
        Command::Run(args) => run::run(&args, cancel).await,
        Command::Bench(args) => bench::bench(&args, cancel).await,
        Command::Truth(args) => truth::truth(&args, cancel).await,
        Command::Credits => {
            print!("{}", tracks::CREDITS);
            for (name, notice) in tracks::NOTICES {
                println!("\n## {name}\n\n{notice}");
            }
            Ok(())
        }
    }
}

/// Ctrl-C or SIGTERM asks every task to wind down (vehicles hand over their queued fixes
/// first); a second signal ends the process at once.
async fn stop_on_signal(cancel: CancellationToken) {
    wait_for_signal().await;
    tracing::info!("stopping (signal again to quit at once)");
    cancel.cancel();
    wait_for_signal().await;
    std::process::exit(130);
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
