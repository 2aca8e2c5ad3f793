//! The `waymark` binary: parses the command line and hands over to the library.
use clap::Parser;
use waymark::cli::{Cli, Command};

/// mimalloc returns freed memory to the system more readily than glibc's allocator with many
/// small, long-lived per-connection allocations, which keeps idle WebSockets cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    waymark::telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(config) => waymark::run_server(*config).await,
        Command::Migrate(db) => waymark::cli::migrate(&db).await,
        Command::User(cmd) => waymark::cli::user(cmd).await,
    }
}
