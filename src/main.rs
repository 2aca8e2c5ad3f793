//! The `waymark` binary: parses the command line and hands over to the library.
use clap::Parser;
use waymark::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    waymark::telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(config) => waymark::run_server(config).await,
        Command::Migrate(db) => waymark::cli::migrate(&db).await,
        Command::User(cmd) => waymark::cli::user(cmd).await,
    }
}
