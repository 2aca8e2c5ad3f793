//! `waymark-sim`: the route simulator and load benchmark for Waymark.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = waymark_sim::config::Cli::parse();
    waymark_sim::init_tracing(cli.verbosity());
    waymark_sim::main(cli).await
}
