//! Command-line and environment configuration, parsed once at start-up.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand, ValueEnum};
use reqwest::Url;

use crate::api::Credentials;
use crate::run::incident::Kind;
use crate::run::protocol::Protocol;

const ABOUT: &str = "Waymark's route simulator: replays real GPS traces as a live fleet, \
    or benchmarks ingest and WebSocket delivery.";

const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Subscribers over all the bench's processes.
const MAX_SUBSCRIBERS: i64 = 1_000_000;

const AFTER_HELP: &str = "Traces: UK Bus Open Data Service (Open Government Licence v3.0), \
    barefoot by BMW Car IT and gpxpy (Apache License 2.0). `waymark-sim credits` prints the \
    full attribution.";

#[derive(Debug, Parser)]
#[command(
    name = "waymark-sim",
    version,
    about = ABOUT,
    after_help = AFTER_HELP,
    // `waymark-sim --speedup 10` runs the demo, like `waymark-sim run --speedup 10`.
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    #[command(flatten)]
    run: RunArgs,
}

impl Cli {
    /// How chatty the logs should be.
    pub fn verbosity(&self) -> u8 {
        match &self.command {
            Some(Command::Run(a)) => a.server.verbose,
            Some(Command::Bench(a)) => a.server.verbose,
            Some(Command::Truth(a)) => a.server.verbose,
            Some(Command::Credits) => 0,
            None => self.run.server.verbose,
        }
    }

    /// The chosen subcommand; none means `run`.
    pub fn selected_command(&self) -> Command {
        self.command
            .clone()
            .unwrap_or_else(|| Command::Run(self.run.clone()))
    }
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Replay the embedded real traces as a live demo fleet (the default).
    Run(RunArgs),
    /// Measure ingest throughput and POST-to-WebSocket latency against a running server.
    Bench(BenchArgs),
    /// Replay every embedded trace with the faults real phones produce (a clock running ahead,
    /// a glitch in a backlog, re-sent and out-of-order batches) and vehicles parked by a
    /// geofence's edge, then check what the server shows; fails unless every check counts 0.
    Truth(TruthArgs),
    /// Print the sources, licences and required attribution of the embedded traces.
    Credits,
}

/// Whom to sign in as, and how much to log.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Dispatcher account that creates the vehicles and shipments.
    #[arg(long, env = "WAYMARK_SIM_EMAIL", default_value = "demo@waymark.local")]
    pub email: String,

    /// Password of that account.
    #[arg(
        long,
        env = "WAYMARK_SIM_PASSWORD",
        default_value = "demo-password",
        hide_env_values = true
    )]
    pub password: Secret,

    /// More log output: -v for debug, -vv for trace (RUST_LOG, when set, wins).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl ServerArgs {
    pub fn credentials(&self) -> Credentials {
        Credentials {
            email: self.email.clone(),
            password: self.password.0.clone(),
        }
    }
}

/// A string that `Debug` never prints.
#[derive(Clone)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Time factor: 10 replays the traces ten times faster than recorded. Above about 3 the
    /// motorway stretches look faster than 100 m/s to the server, which filters them.
    #[arg(long, env = "WAYMARK_SIM_SPEEDUP", default_value_t = 1.0, value_parser = parse_speedup)]
    pub speedup: f64,

    /// Drive every trace once and stop, instead of looping until interrupted.
    #[arg(long, env = "WAYMARK_SIM_ONCE")]
    pub once: bool,

    /// Where the ingest tokens the server handed out are kept between runs.
    #[arg(
        long,
        env = "WAYMARK_SIM_STATE_FILE",
        default_value = ".waymark/sim-state.json"
    )]
    pub state_file: PathBuf,

    #[command(flatten, next_help_heading = "Fleet")]
    pub fleet: FleetArgs,

    #[command(flatten, next_help_heading = "Incidents (for the alerts demo)")]
    pub incidents: IncidentArgs,

    /// Base URL of the Waymark server.
    #[arg(long, env = "WAYMARK_URL", default_value = DEFAULT_URL, help_heading = "Server")]
    pub url: Url,

    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerArgs,
}

/// Who drives, how their phones talk, and how real their GPS is.
#[derive(Debug, Clone, Args)]
pub struct FleetArgs {
    /// Vehicles to drive. The first ten replay the recorded traces in recorded time; more are
    /// synthesised along the same traces ("Car Munich #2", …), each with its own start point,
    /// pace, vehicle and shipments. Fewer drive the first N recorded ones.
    #[arg(long, env = "WAYMARK_SIM_VEHICLES", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=2_000))]
    pub vehicles: u32,

    /// Protocols the phones speak, dealt out round-robin over the vehicles: native
    /// (POST /api/v1/positions), osmand (the OsmAnd protocol: every other such vehicle is a
    /// legacy Traccar Client in knots, the rest the OsmAnd app in m/s), traccar (Traccar
    /// Client JSON), owntracks (OwnTracks HTTP mode).
    #[arg(
        long,
        env = "WAYMARK_SIM_PROTOCOLS",
        value_enum,
        value_delimiter = ',',
        default_value = "native,osmand,traccar,owntracks"
    )]
    pub protocols: Vec<Protocol>,

    /// Report the exact trace positions: no GNSS error, no poor fixes, no outliers.
    #[arg(long, env = "WAYMARK_SIM_NO_NOISE")]
    pub no_noise: bool,

    /// Minutes of driving (as the server sees it) between two signal losses of a vehicle, on
    /// average; 0 never loses the signal. Fixes recorded without signal are sent when it
    /// returns: in one batch by native vehicles, one request at a time, oldest first, by the
    /// apps.
    #[arg(long, env = "WAYMARK_SIM_SIGNAL_LOSS_EVERY", default_value_t = 20.0,
          value_parser = parse_non_negative)]
    pub signal_loss_every: f64,

    /// Seconds a signal loss lasts, on average (each one 75–125 % of this).
    #[arg(long, env = "WAYMARK_SIM_SIGNAL_LOSS_SECONDS", default_value_t = 60.0,
          value_parser = parse_positive)]
    pub signal_loss_seconds: f64,

    /// Seed for every random choice (start points, paces, noise, losses, incidents), so that a
    /// run can be repeated; random when absent.
    #[arg(long, env = "WAYMARK_SIM_SEED")]
    pub seed: Option<u64>,

    /// Cut every trip after this many recorded fixes: a quick smoke run.
    #[arg(long, env = "WAYMARK_SIM_TRIP_FIXES",
          value_parser = clap::value_parser!(u32).range(2..))]
    pub trip_fixes: Option<u32>,
}

/// Incidents on purpose, so that the alerts channel has something to show. Durations are
/// wall-clock time as the server sees it, whatever the speed-up.
#[derive(Debug, Clone, Args)]
pub struct IncidentArgs {
    /// Incidents to cause, comma-separated: off-route, speeding, silent, stopped. None by
    /// default. Their durations are wall-clock minutes as the server sees them, whatever the
    /// speed-up; each is logged when it starts and ends.
    #[arg(long, env = "WAYMARK_SIM_INCIDENTS", value_enum, value_delimiter = ',')]
    pub incidents: Vec<Kind>,

    /// Minutes between two incidents across the fleet, on average.
    #[arg(long, env = "WAYMARK_SIM_INCIDENT_EVERY", default_value_t = 10.0,
          value_parser = parse_positive)]
    pub incident_every: f64,

    /// Only these vehicles have incidents (names, comma-separated); any vehicle by default.
    #[arg(long, env = "WAYMARK_SIM_INCIDENT_VEHICLES", value_delimiter = ',')]
    pub incident_vehicles: Vec<String>,

    /// How far an off-route vehicle strays from its planned route, in metres (twice the
    /// server's default `off_route_m`).
    #[arg(long, default_value_t = 400.0, value_parser = parse_positive)]
    pub off_route_m: f64,

    /// How long a vehicle stays off route (a quarter of it to leave, a quarter to rejoin; more
    /// than half the offset away for 2¼ of the default 3 minutes, over twice the server's
    /// default `off_route_s`).
    #[arg(long, default_value_t = 3.0, value_parser = parse_positive)]
    pub off_route_minutes: f64,

    /// A speeding vehicle drives this many times the speed of the stretch...
    #[arg(long, default_value_t = 1.5, value_parser = parse_speeding_factor)]
    pub speeding_factor: f64,

    /// ...but at least this speed (above the server's default limit of 90 km/h), through the
    /// stretch's stops, and never above 216 km/h (under the server's jump filter).
    #[arg(long, default_value_t = 110.0, value_parser = parse_positive)]
    pub speeding_kmh: f64,

    /// How long a speeding vehicle keeps it up.
    #[arg(long, default_value_t = 2.0, value_parser = parse_positive)]
    pub speeding_minutes: f64,

    /// How long a silent vehicle sends nothing; it records nothing either, so no backlog
    /// follows (a phone that was off). Longer than the server's default `silent_min` (10).
    #[arg(long, default_value_t = 12.0, value_parser = parse_positive)]
    pub silent_minutes: f64,

    /// How long a stopped vehicle stands still mid-trip, still reporting. Longer than the
    /// server's default `stopped_min` (10).
    #[arg(long, default_value_t = 12.0, value_parser = parse_positive)]
    pub stopped_minutes: f64,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Vehicles to post for, each with an active shipment ("Bench 0001", … are reused across
    /// runs; use a separate account to keep them off the demo fleet's map). With --idle-only
    /// they are created if missing, so that the `fleet` snapshot holds them.
    #[arg(long, env = "WAYMARK_BENCH_VEHICLES", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub vehicles: u32,

    /// WebSocket clients, each measuring delivery latency (see --shape). Each is an open file:
    /// each bench process raises its own limit to the hard limit, and may hold up to 20 000
    /// (more with --processes).
    #[arg(long, env = "WAYMARK_BENCH_SUBSCRIBERS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(0..=MAX_SUBSCRIBERS))]
    pub subscribers: u32,

    /// What the subscribers watch: `broadcast` puts all of them on the `fleet` topic, `fleet`
    /// gives each the `vehicle:{id}` topics of up to --topics vehicles, dealt out round-robin,
    /// `shipment` gives each the `shipment:{id}` topic of one bench shipment, round-robin.
    #[arg(long, env = "WAYMARK_BENCH_SHAPE", value_enum, default_value_t = Shape::Broadcast)]
    pub shape: Shape,

    /// In the `fleet` shape, how many `vehicle:{id}` topics each subscriber watches.
    #[arg(long, env = "WAYMARK_BENCH_TOPICS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub topics: u32,

    /// Local addresses the subscribers connect from, dealt out round-robin (e.g.
    /// `127.0.0.2,127.0.0.3`: all of 127.0.0.0/8 is loopback on Linux). Connections from one
    /// address to one server port are bounded by the ephemeral port range (about 28 000);
    /// without this the system picks the address.
    #[arg(long, env = "WAYMARK_BENCH_SOURCE_IPS", value_delimiter = ',')]
    pub source_ips: Vec<IpAddr>,

    /// Run as this many bench processes, each with its share of the vehicles, the subscribers
    /// and the rate (so each may open as many sockets as one process's open-file limit allows).
    /// They open their subscribers, then all post at once; the report adds them up, with the
    /// latency histograms merged.
    #[arg(long, env = "WAYMARK_BENCH_PROCESSES", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub processes: u32,

    /// The first bench vehicle of this process's share (not a flag: set for the processes of
    /// --processes).
    #[arg(skip)]
    pub first_vehicle: u32,

    /// Points of the planned route each new bench shipment gets, straight to its destination
    /// (0: none). A long route makes a long `shipment:{id}` snapshot, as a real trip's is.
    #[arg(long, env = "WAYMARK_BENCH_ROUTE_POINTS", default_value_t = 0,
          value_parser = parse_route_points)]
    pub route_points: u32,

    /// Seconds of load.
    #[arg(long, env = "WAYMARK_BENCH_DURATION", default_value_t = 15,
          value_parser = clap::value_parser!(u32).range(1..=3_600))]
    pub duration: u32,

    /// Positions per second to offer in total, paced open-loop across the vehicles; 0 posts as
    /// fast as --concurrency allows.
    #[arg(long, env = "WAYMARK_BENCH_RATE", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub rate: u32,

    /// Requests in flight at once (never more than one per vehicle, so a vehicle's positions
    /// stay in order).
    #[arg(long, env = "WAYMARK_BENCH_CONCURRENCY", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4_096))]
    pub concurrency: u32,

    /// Positions per request: 1 posts a single object, more post an array.
    #[arg(long, env = "WAYMARK_BENCH_BATCH", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub batch: u32,

    /// Process id of the server (on this machine): its resident memory is read before the
    /// subscribers connect and once they are all subscribed and idle. Repeat it (or separate
    /// with commas) for several server processes: their memory is summed.
    #[arg(
        long = "server-pid",
        env = "WAYMARK_BENCH_SERVER_PID",
        value_delimiter = ','
    )]
    pub server_pids: Vec<u32>,

    /// Only open the subscribers, wait until all are subscribed, measure memory and stop,
    /// without posting anything.
    #[arg(long)]
    pub idle_only: bool,

    /// Print the report as JSON on standard output instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Base URL of a Waymark server; repeat it (or separate with commas) to spread posts and
    /// subscribers round-robin over several instances. Set-up uses the first.
    #[arg(long = "url", env = "WAYMARK_URL", default_value = DEFAULT_URL, value_delimiter = ',',
          help_heading = "Server")]
    pub urls: Vec<Url>,

    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Args)]
pub struct TruthArgs {
    /// Replay only the first N embedded vehicles (all by default).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub traces: Option<u32>,

    /// Seed for the parked vehicles' GPS drift.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Print the report as JSON on standard output instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Base URL of the Waymark server.
    #[arg(long, env = "WAYMARK_URL", default_value = DEFAULT_URL, help_heading = "Server")]
    pub url: Url,

    #[command(flatten, next_help_heading = "Server")]
    pub server: ServerArgs,
}

/// What the bench's subscribers watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Every subscriber on the one `fleet` topic: each position goes to all of them.
    Broadcast,
    /// Each subscriber on the `vehicle:{id}` topics of a few vehicles, like dispatchers and
    /// customers following their own vehicles.
    Fleet,
    /// Each subscriber on one shipment's `shipment:{id}` topic, like customers following a
    /// delivery.
    Shipment,
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Broadcast => "broadcast",
            Self::Fleet => "fleet",
            Self::Shipment => "shipment",
        })
    }
}

fn parse_route_points(s: &str) -> Result<u32, String> {
    let v: u32 = s.parse().map_err(|e| format!("{e}"))?;
    if v == 0 || (2..=10_000).contains(&v) {
        Ok(v)
    } else {
        Err("a route has 2 to 10000 points (0: none)".into())
    }
}

fn parse_speedup(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() && (0.01..=1000.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be between 0.01 and 1000".into())
    }
}

fn parse_number(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err("must be a finite number".into())
    }
}

fn parse_non_negative(s: &str) -> Result<f64, String> {
    parse_number(s).and_then(|v| {
        if v >= 0.0 {
            Ok(v)
        } else {
            Err("must be 0 or more".into())
        }
    })
}

fn parse_positive(s: &str) -> Result<f64, String> {
    parse_number(s).and_then(|v| {
        if v > 0.0 {
            Ok(v)
        } else {
            Err("must be more than 0".into())
        }
    })
}

fn parse_speeding_factor(s: &str) -> Result<f64, String> {
    parse_number(s).and_then(|v| {
        if (1.05..=5.0).contains(&v) {
            Ok(v)
        } else {
            Err("must be between 1.05 and 5".into())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("waymark-sim").chain(args.iter().copied()))
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        <Cli as CommandFactory>::command().debug_assert();
    }

    #[test]
    fn no_subcommand_means_run_with_its_flags() {
        let cli = parse(&["--speedup", "10", "--once"]).unwrap();
        match cli.selected_command() {
            Command::Run(run) => {
                assert_eq!(run.speedup, 10.0);
                assert!(run.once);
            }
            other => panic!("expected run, got {other:?}"),
        }
        let cli = parse(&["run", "--state-file", "s.json"]).unwrap();
        assert!(
            matches!(cli.selected_command(), Command::Run(r) if r.state_file == std::path::Path::new("s.json") && !r.once)
        );
    }

    #[test]
    fn server_flags_follow_the_subcommand() {
        let cli = parse(&[
            "bench",
            "--url",
            "http://127.0.0.1:9001",
            "--batch",
            "100",
            "--json",
            "-v",
        ])
        .unwrap();
        assert_eq!(cli.verbosity(), 1);
        match cli.selected_command() {
            Command::Bench(b) => {
                assert_eq!(b.urls[0].port(), Some(9001));
                assert_eq!(
                    (
                        b.batch,
                        b.vehicles,
                        b.subscribers,
                        b.duration,
                        b.concurrency
                    ),
                    (100, 100, 10, 15, 64)
                );
                assert!(b.json);
            }
            other => panic!("expected bench, got {other:?}"),
        }
        let cli = parse(&["--url", "http://127.0.0.1:9000", "-vv"]).unwrap();
        assert_eq!(cli.verbosity(), 2);
        assert!(matches!(cli.selected_command(), Command::Run(r) if r.url.port() == Some(9000)));
        assert!(
            parse(&["--url", "http://127.0.0.1:9000", "bench"]).is_err(),
            "flags go after the subcommand"
        );
    }

    #[test]
    fn the_bench_takes_several_urls_a_shape_and_a_rate() {
        let bench = |args: &[&str]| match parse(args).unwrap().selected_command() {
            Command::Bench(b) => b,
            other => panic!("expected bench, got {other:?}"),
        };
        let b = bench(&["bench"]);
        assert_eq!(
            b.urls.iter().map(reqwest::Url::as_str).collect::<Vec<_>>(),
            ["http://127.0.0.1:8080/"]
        );
        assert_eq!(
            (b.shape, b.rate, b.server_pids.is_empty(), b.idle_only),
            (Shape::Broadcast, 0, true, false)
        );
        assert_eq!((b.topics, b.processes), (10, 1));
        assert!(b.source_ips.is_empty());

        let b = bench(&[
            "bench",
            "--url",
            "http://127.0.0.1:8081,http://127.0.0.1:8082",
            "--url",
            "http://127.0.0.1:8083",
            "--shape",
            "fleet",
            "--rate",
            "2000",
            "--server-pid",
            "4242,4243",
            "--server-pid",
            "4244",
            "--idle-only",
            "--subscribers",
            "10000",
        ]);
        let ports: Vec<_> = b.urls.iter().filter_map(reqwest::Url::port).collect();
        assert_eq!(ports, [8081, 8082, 8083]);
        assert_eq!(
            (b.shape, b.rate, b.server_pids, b.idle_only, b.subscribers),
            (Shape::Fleet, 2000, vec![4242, 4243, 4244], true, 10_000)
        );
        assert_eq!(Shape::Fleet.to_string(), "fleet");
        assert!(parse(&["bench", "--shape", "star"]).is_err());
        assert!(parse(&["bench", "--subscribers", "1000001"]).is_err());
        assert!(parse(&["bench", "--url", "not a url"]).is_err());
    }

    #[test]
    fn the_bench_spreads_over_source_addresses_and_processes() {
        let b = match parse(&[
            "bench",
            "--source-ips",
            "127.0.0.2,127.0.0.3",
            "--source-ips",
            "::1",
            "--processes",
            "6",
            "--topics",
            "1",
            "--subscribers",
            "100000",
        ])
        .unwrap()
        .selected_command()
        {
            Command::Bench(b) => b,
            other => panic!("expected bench, got {other:?}"),
        };
        let ips: Vec<String> = b.source_ips.iter().map(ToString::to_string).collect();
        assert_eq!(ips, ["127.0.0.2", "127.0.0.3", "::1"]);
        assert_eq!((b.processes, b.topics, b.subscribers), (6, 1, 100_000));
        assert!(parse(&["bench", "--source-ips", "localhost"]).is_err());
        assert!(parse(&["bench", "--processes", "0"]).is_err());
        assert!(parse(&["bench", "--topics", "0"]).is_err());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        assert!(parse(&["--speedup", "0"]).is_err());
        assert!(parse(&["--speedup", "NaN"]).is_err());
        assert!(parse(&["bench", "--batch", "1001"]).is_err());
        assert!(parse(&["bench", "--vehicles", "0"]).is_err());
        assert!(
            parse(&["bench", "--speedup", "2"]).is_err(),
            "run flags belong to run"
        );
    }

    #[test]
    fn fleet_and_incident_flags_have_demo_defaults_and_take_lists() {
        let run = |args: &[&str]| match parse(args).unwrap().selected_command() {
            Command::Run(r) => r,
            other => panic!("expected run, got {other:?}"),
        };
        let r = run(&[]);
        assert_eq!(r.fleet.vehicles, 10);
        assert_eq!(r.fleet.protocols, Protocol::ALL);
        assert!(!r.fleet.no_noise && r.fleet.seed.is_none() && r.fleet.trip_fixes.is_none());
        assert_eq!(
            (r.fleet.signal_loss_every, r.fleet.signal_loss_seconds),
            (20.0, 60.0)
        );
        assert!(
            r.incidents.incidents.is_empty(),
            "no incidents unless asked"
        );
        // Beyond the server's default alert settings (see `run::incident`).
        let i = &r.incidents;
        assert_eq!((i.off_route_m, i.off_route_minutes), (400.0, 3.0));
        assert_eq!((i.speeding_factor, i.speeding_kmh), (1.5, 110.0));
        assert_eq!((i.silent_minutes, i.stopped_minutes), (12.0, 12.0));

        let r = run(&[
            "run",
            "--vehicles",
            "40",
            "--protocols",
            "osmand,owntracks",
            "--incidents",
            "off-route,speeding,silent,stopped",
            "--incident-every",
            "2.5",
            "--incident-vehicles",
            "Car Munich,Car Višnjan",
            "--speeding-kmh",
            "120",
            "--signal-loss-every",
            "0",
            "--seed",
            "7",
        ]);
        assert_eq!(r.fleet.vehicles, 40);
        assert_eq!(r.fleet.protocols, [Protocol::Osmand, Protocol::Owntracks]);
        assert_eq!(r.incidents.incidents, Kind::ALL);
        assert_eq!(r.incidents.incident_every, 2.5);
        assert_eq!(r.incidents.incident_vehicles, ["Car Munich", "Car Višnjan"]);
        assert_eq!(r.incidents.speeding_kmh, 120.0);
        assert_eq!((r.fleet.signal_loss_every, r.fleet.seed), (0.0, Some(7)));

        assert!(parse(&["--protocols", "carrier-pigeon"]).is_err());
        assert!(parse(&["--incidents", "meteor"]).is_err());
        assert!(parse(&["--vehicles", "0"]).is_err());
        assert!(parse(&["--signal-loss-every", "-1"]).is_err());
        assert!(parse(&["--silent-minutes", "0"]).is_err());
        assert!(parse(&["--speeding-factor", "1"]).is_err());
        assert!(parse(&["--trip-fixes", "1"]).is_err());
    }

    #[test]
    fn truth_takes_the_server_flags_and_a_subset() {
        let truth = |args: &[&str]| match parse(args).unwrap().selected_command() {
            Command::Truth(t) => t,
            other => panic!("expected truth, got {other:?}"),
        };
        let t = truth(&["truth"]);
        assert_eq!((t.traces, t.seed, t.json), (None, 1, false));
        let t = truth(&[
            "truth",
            "--traces",
            "3",
            "--url",
            "http://127.0.0.1:9002",
            "-v",
        ]);
        assert_eq!(
            (t.traces, t.url.port(), t.server.verbose),
            (Some(3), Some(9002), 1)
        );
        assert!(parse(&["truth", "--traces", "0"]).is_err());
    }

    #[test]
    fn the_password_is_never_printed() {
        let cli = parse(&["run", "--password", "hunter2"]).unwrap();
        assert!(!format!("{cli:?}").contains("hunter2"));
    }
}
