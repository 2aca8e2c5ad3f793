//! `--processes N`: one bench split over N processes of this program, because one process may
//! hold only as many sockets as its open-file limit allows. Each process runs the ordinary bench
//! over its share: vehicles of its own (so its send log has every position its subscribers
//! time), its share of the subscribers and of the rate. They meet at two barriers over their
//! standard input and output: when every one has its vehicles ready (the servers' memory is read
//! before any subscriber connects) and when every one has its subscribers subscribed and idle
//! (read again); then all post at once. Each hands in its report with its latency histograms,
//! and the process that started them adds them up.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines, Stdin};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use super::report::{Latency, Memory, Report};
use super::{new_histogram, summed_rss, CLEANUP_LIMIT, CONNECT_LIMIT, IDLE_SETTLE, SETUP_LIMIT};
use crate::config::BenchArgs;

/// Set in the environment of each process of a split bench: `index/count`.
const PART_ENV: &str = "WAYMARK_BENCH_PART";
/// Every process gets this long past the set-up and connect limits to reach a barrier...
const BARRIER_SLACK: Duration = Duration::from_secs(60);
/// ...and this long past the load to hand in its report.
const REPORT_SLACK: Duration = Duration::from_secs(30);

/// Which share of a split bench this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    index: u32,
    count: u32,
}

impl Part {
    /// This process's part: the one its environment names, or the whole bench.
    pub fn of_this_process() -> anyhow::Result<Self> {
        match std::env::var(PART_ENV) {
            Err(_) => Ok(Self { index: 0, count: 1 }),
            Ok(value) => Self::parse(&value).with_context(|| format!("bad {PART_ENV}: {value}")),
        }
    }

    fn parse(value: &str) -> Option<Self> {
        let (index, count) = value.split_once('/')?;
        let part = Self {
            index: index.parse().ok()?,
            count: count.parse().ok()?,
        };
        (part.index < part.count).then_some(part)
    }

    pub fn is_split(self) -> bool {
        self.count > 1
    }

    /// This part's share of `total`, as even as can be (the first parts take one more).
    fn share(self, total: u32) -> u32 {
        total / self.count + u32::from(self.index < total % self.count)
    }

    /// How many of `total` the parts before this one take.
    fn before(self, total: u32) -> u32 {
        (0..self.index)
            .map(|index| Self { index, ..self }.share(total))
            .sum()
    }

    /// `args` narrowed to this part.
    pub fn narrow(self, args: &BenchArgs) -> BenchArgs {
        let mut mine = args.clone();
        mine.first_vehicle = args.first_vehicle + self.before(args.vehicles);
        mine.vehicles = self.share(args.vehicles);
        mine.subscribers = self.share(args.subscribers);
        mine.rate = self.share(args.rate);
        mine.processes = 1;
        // The process that split the bench reads the servers' memory, once for all.
        mine.server_pids.clear();
        mine
    }
}

/// What a process of a split bench says on its standard output, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Said {
    Reached(String),
    Report(Box<Handed>),
}

/// A part's report, and its histograms to be merged.
#[derive(Debug, Serialize, Deserialize)]
struct Handed {
    report: PartReport,
    delivery_latency_us: Vec<(u64, u64)>,
    request_latency_us: Vec<(u64, u64)>,
}

/// The fields of a part's [`Report`] that add up (the rest are the same in every part, or
/// come from the merged histograms).
#[derive(Debug, Serialize, Deserialize)]
struct PartReport {
    ingest: Option<PartIngest>,
    delivery: PartDelivery,
    memory: PartMemory,
}

#[derive(Debug, Serialize, Deserialize)]
struct PartIngest {
    elapsed_s: f64,
    requests_ok: u64,
    requests_failed: u64,
    durable_positions: u64,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct PartDelivery {
    subscribers: usize,
    subscribe_failures: BTreeMap<String, u64>,
    deliveries: u64,
    expected_deliveries: u64,
    unmatched: u64,
    closed_early: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PartMemory {
    idle_connections: usize,
    bench_rss_kib: Option<u64>,
    bench_peak_rss_kib: Option<u64>,
}

/// A process's side of the barriers; nothing to do for a bench that is not split.
pub struct Barriers {
    input: Option<Lines<BufReader<Stdin>>>,
}

impl Barriers {
    pub fn for_part(part: Part) -> Self {
        Self {
            input: part
                .is_split()
                .then(|| BufReader::new(tokio::io::stdin()).lines()),
        }
    }

    /// Says this process got to `name`, and waits until every process has.
    pub async fn reach(&mut self, name: &str) -> anyhow::Result<()> {
        let Some(input) = &mut self.input else {
            return Ok(());
        };
        say(&Said::Reached(name.to_owned()))?;
        input
            .next_line()
            .await?
            .context("the bench that started this process is gone")?;
        Ok(())
    }
}

/// Hands this part's report in to the process that started it.
pub fn hand_in(
    report: &Report,
    delivery_latency_us: &Histogram<u64>,
    request_latency_us: Option<&Histogram<u64>>,
) -> anyhow::Result<()> {
    let report = serde_json::from_value(serde_json::to_value(report)?)?;
    say(&Said::Report(Box::new(Handed {
        report,
        delivery_latency_us: recorded(delivery_latency_us),
        request_latency_us: request_latency_us.map(recorded).unwrap_or_default(),
    })))
}

fn say(said: &Said) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(said)?);
    Ok(())
}

/// A histogram as (value, count) pairs; recording them again gives the same histogram.
fn recorded(histogram: &Histogram<u64>) -> Vec<(u64, u64)> {
    histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn merge_into(histogram: &mut Histogram<u64>, pairs: &[(u64, u64)]) {
    for &(value, count) in pairs {
        histogram.saturating_record_n(value, count);
    }
}

/// One process of the split, as its parent sees it.
struct Process {
    child: Child,
    input: ChildStdin,
    output: Lines<BufReader<ChildStdout>>,
}

impl Process {
    async fn hear(&mut self, index: usize, within: Duration) -> anyhow::Result<Said> {
        let line = tokio::time::timeout(within, self.output.next_line())
            .await
            .with_context(|| format!("bench process {} said nothing for {within:?}", index + 1))??
            .with_context(|| format!("bench process {} ended early (see its log)", index + 1))?;
        serde_json::from_str(&line)
            .with_context(|| format!("bench process {} said {line:?}", index + 1))
    }
}

/// Runs the bench as `args.processes` processes of this program, and reports their sum.
pub async fn run(args: &BenchArgs, cancel: CancellationToken) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.vehicles >= args.processes,
        "each of the {} processes needs vehicles of its own: give --vehicles {} or more",
        args.processes,
        args.processes
    );
    anyhow::ensure!(
        args.rate == 0 || args.rate >= args.processes,
        "each of the {} processes needs a rate of its own: give --rate {} or more (or 0)",
        args.processes,
        args.processes
    );
    let mut processes = spawn(args.processes)?;
    let combined = tokio::select! {
        () = cancel.cancelled() => return Ok(()),
        combined = coordinate(args, &mut processes) => combined?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&combined)?);
    } else {
        print!("{combined}");
    }
    // Each tidies up its own shipments before it exits.
    for p in &mut processes {
        let _ = tokio::time::timeout(CLEANUP_LIMIT, p.child.wait()).await;
    }
    Ok(())
}

fn spawn(count: u32) -> anyhow::Result<Vec<Process>> {
    let program = std::env::current_exe().context("cannot find this program to run it again")?;
    // The same command line: each process narrows it to its part.
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    (0..count)
        .map(|index| {
            let mut child = Command::new(&program)
                .args(&argv)
                .env(PART_ENV, format!("{index}/{count}"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("cannot start a bench process")?;
            let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
                unreachable!("both are piped")
            };
            Ok(Process {
                child,
                input,
                output: BufReader::new(output).lines(),
            })
        })
        .collect()
}

async fn coordinate(args: &BenchArgs, processes: &mut [Process]) -> anyhow::Result<Combined> {
    let mut memory = Memory::default();
    meet(processes, "prepared", SETUP_LIMIT + BARRIER_SLACK).await?;
    memory.server_rss_before_kib = summed_rss(&args.server_pids);
    meet(
        processes,
        "subscribed",
        CONNECT_LIMIT + IDLE_SETTLE + BARRIER_SLACK,
    )
    .await?;
    memory.server_rss_after_kib = summed_rss(&args.server_pids);

    let load = Duration::from_secs(u64::from(args.duration));
    let mut handed = Vec::with_capacity(processes.len());
    for (index, p) in processes.iter_mut().enumerate() {
        match p.hear(index, load + REPORT_SLACK).await? {
            Said::Report(h) => handed.push(*h),
            Said::Reached(other) => bail!("bench process {} is at {other:?}", index + 1),
        }
    }
    Ok(Combined::new(args, &handed, memory))
}

/// Waits until every process has reached `barrier`, then lets them all go on.
async fn meet(processes: &mut [Process], barrier: &str, within: Duration) -> anyhow::Result<()> {
    for (index, p) in processes.iter_mut().enumerate() {
        match p.hear(index, within).await? {
            Said::Reached(name) if name == barrier => {}
            other => bail!(
                "bench process {} said {other:?} instead of reaching {barrier:?}",
                index + 1
            ),
        }
    }
    for p in processes.iter_mut() {
        p.input.write_all(b"go\n").await?;
        p.input.flush().await?;
    }
    Ok(())
}

/// The sum of the parts.
#[derive(Debug, Serialize)]
struct Combined {
    urls: Vec<String>,
    processes: usize,
    /// One line per process, then the total.
    parts: Vec<Line>,
    total: Line,
    memory: Memory,
}

#[derive(Debug, Default, Serialize)]
struct Line {
    #[serde(flatten)]
    delivery: PartDelivery,
    durable_positions: u64,
    durable_positions_per_s: f64,
    requests_failed: u64,
    /// POST sent → WebSocket frame received.
    delivery_latency_ms: Option<Latency>,
    request_latency_ms: Option<Latency>,
}

impl Line {
    fn of(report: &PartReport, delivery: &Histogram<u64>, request: &Histogram<u64>) -> Self {
        let mut line = Self {
            delivery: report.delivery.clone(),
            delivery_latency_ms: Latency::of(delivery),
            request_latency_ms: Latency::of(request),
            ..Self::default()
        };
        if let Some(i) = &report.ingest {
            line.durable_positions = i.durable_positions;
            line.requests_failed = i.requests_failed;
            line.durable_positions_per_s = per_second(i.durable_positions, i.elapsed_s);
        }
        line
    }

    fn add(&mut self, other: &Self) {
        self.delivery.add(&other.delivery);
        self.durable_positions += other.durable_positions;
        // The parts post side by side for the same time.
        self.durable_positions_per_s += other.durable_positions_per_s;
        self.requests_failed += other.requests_failed;
    }
}

impl PartDelivery {
    fn add(&mut self, other: &Self) {
        self.subscribers += other.subscribers;
        add_counts(&mut self.subscribe_failures, &other.subscribe_failures);
        self.deliveries += other.deliveries;
        self.expected_deliveries += other.expected_deliveries;
        self.unmatched += other.unmatched;
        add_counts(&mut self.closed_early, &other.closed_early);
    }
}

fn add_counts(to: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *to.entry(k.clone()).or_default() += v;
    }
}

fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

impl Combined {
    fn new(args: &BenchArgs, handed: &[Handed], mut memory: Memory) -> Self {
        let (mut all_delivery, mut all_request) = (new_histogram(), new_histogram());
        let mut total = Line::default();
        let mut parts = Vec::with_capacity(handed.len());
        for h in handed {
            let (mut delivery, mut request) = (new_histogram(), new_histogram());
            merge_into(&mut delivery, &h.delivery_latency_us);
            merge_into(&mut request, &h.request_latency_us);
            let line = Line::of(&h.report, &delivery, &request);
            total.add(&line);
            // Same bounds on both sides, so adding cannot fail.
            let _ = all_delivery.add(&delivery);
            let _ = all_request.add(&request);
            parts.push(line);

            let m = &h.report.memory;
            memory.idle_connections += m.idle_connections;
            memory.bench_rss_kib = sum(memory.bench_rss_kib, m.bench_rss_kib);
            memory.bench_peak_rss_kib = sum(memory.bench_peak_rss_kib, m.bench_peak_rss_kib);
        }
        total.delivery_latency_ms = Latency::of(&all_delivery);
        total.request_latency_ms = Latency::of(&all_request);
        memory.per_idle_connection();
        Self {
            urls: args.urls.iter().map(ToString::to_string).collect(),
            processes: handed.len(),
            parts,
            total,
            memory,
        }
    }
}

fn sum(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    Some(a.unwrap_or(0) + b?)
}

fn ms(latency: Option<Latency>) -> String {
    latency.map_or_else(
        || "-".to_owned(),
        |l| format!("{:.2} / {:.2}", l.p50, l.p99),
    )
}

fn kib(value: Option<u64>) -> String {
    value.map_or_else(|| "?".to_owned(), |v| format!("{v} KiB"))
}

impl fmt::Display for Combined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Waymark bench in {} processes", self.processes)?;
        writeln!(f, "  against {}", self.urls.join(", "))?;
        writeln!(f)?;
        writeln!(
            f,
            "  {:<8} {:>11} {:>7} {:>11} {:>9} {:>20} {:>11}",
            "process",
            "subscribers",
            "failed",
            "deliveries",
            "of exp.",
            "POST->WS p50/p99 ms",
            "positions/s"
        )?;
        let row = |f: &mut fmt::Formatter<'_>, name: String, l: &Line| {
            let failed: u64 = l.delivery.subscribe_failures.values().sum();
            let fraction = if l.delivery.expected_deliveries > 0 {
                format!(
                    "{:.2} %",
                    l.delivery.deliveries as f64 * 100.0 / l.delivery.expected_deliveries as f64
                )
            } else {
                "-".to_owned()
            };
            writeln!(
                f,
                "  {name:<8} {:>11} {failed:>7} {:>11} {fraction:>9} {:>20} {:>11.1}",
                l.delivery.subscribers,
                l.delivery.deliveries,
                ms(l.delivery_latency_ms),
                l.durable_positions_per_s
            )
        };
        for (i, line) in self.parts.iter().enumerate() {
            row(f, (i + 1).to_string(), line)?;
        }
        row(f, "total".to_owned(), &self.total)?;
        writeln!(f)?;
        let t = &self.total;
        if let Some(l) = &t.delivery_latency_ms {
            writeln!(f, "  delivery latency, all processes: {l}")?;
        }
        if let Some(l) = &t.request_latency_ms {
            writeln!(f, "  request latency, all processes:  {l}")?;
        }
        for (what, counts) in [
            ("could not subscribe", &t.delivery.subscribe_failures),
            ("closed early", &t.delivery.closed_early),
        ] {
            for (why, n) in counts {
                writeln!(f, "  {what}: {why}: {n}")?;
            }
        }
        if t.delivery.unmatched > 0 || t.requests_failed > 0 {
            writeln!(
                f,
                "  unmatched events {}, failed requests {}",
                t.delivery.unmatched, t.requests_failed
            )?;
        }
        let m = &self.memory;
        writeln!(f)?;
        writeln!(f, "Memory (resident)")?;
        if m.server_rss_before_kib.is_some() {
            writeln!(
                f,
                "  servers, summed: {} before the subscribers, {} with {} idle",
                kib(m.server_rss_before_kib),
                kib(m.server_rss_after_kib),
                m.idle_connections
            )?;
            if let Some(per) = m.server_rss_per_idle_connection_kib {
                writeln!(f, "  servers per idle connection: {per:.2} KiB")?;
            }
        } else {
            writeln!(f, "  servers: not measured (give --server-pid)")?;
        }
        writeln!(
            f,
            "  bench processes, summed: {} with the subscribers connected, peaks {}",
            kib(m.bench_rss_kib),
            kib(m.bench_peak_rss_kib)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_even_and_cover_the_whole() {
        let parts = |count| (0..count).map(move |index| Part { index, count });
        for (total, count) in [(100_000, 6), (7, 3), (0, 4), (5, 5), (1000, 1)] {
            let shares: Vec<u32> = parts(count).map(|p| p.share(total)).collect();
            assert_eq!(shares.iter().sum::<u32>(), total, "{shares:?}");
            assert!(shares.iter().max().unwrap() - shares.iter().min().unwrap() <= 1);
            let starts: Vec<u32> = parts(count).map(|p| p.before(total)).collect();
            for i in 1..count as usize {
                assert_eq!(starts[i], starts[i - 1] + shares[i - 1], "contiguous");
            }
        }
        assert_eq!(Part::parse("2/6"), Some(Part { index: 2, count: 6 }));
        assert_eq!(Part::parse("6/6"), None);
        assert_eq!(Part::parse("x"), None);
    }

    #[test]
    fn a_part_takes_its_own_vehicles_subscribers_and_rate() {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let args = <Wrapper as clap::Parser>::parse_from([
            "bench",
            "--vehicles",
            "1000",
            "--subscribers",
            "100000",
            "--rate",
            "100",
            "--processes",
            "6",
            "--server-pid",
            "1,2",
        ])
        .bench;
        let mine = Part { index: 5, count: 6 }.narrow(&args);
        assert_eq!(
            (
                mine.first_vehicle,
                mine.vehicles,
                mine.subscribers,
                mine.rate
            ),
            (834, 166, 16_666, 16)
        );
        assert_eq!(mine.processes, 1);
        assert!(mine.server_pids.is_empty());
    }

    #[test]
    fn histograms_survive_the_trip_between_processes() {
        let mut h = new_histogram();
        for us in [1, 999, 1_000, 1_234_567, 3_000_000] {
            h.record_n(us, 3).unwrap();
        }
        let mut again = new_histogram();
        merge_into(&mut again, &recorded(&h));
        assert_eq!(again, h);
    }

    #[test]
    fn the_parts_add_up() {
        let part = |subscribers, deliveries, durable, latency_us: u64| {
            let mut h = new_histogram();
            h.record_n(latency_us, deliveries).unwrap();
            Handed {
                report: PartReport {
                    ingest: Some(PartIngest {
                        elapsed_s: 10.0,
                        requests_ok: durable,
                        requests_failed: 1,
                        durable_positions: durable,
                    }),
                    delivery: PartDelivery {
                        subscribers,
                        subscribe_failures: BTreeMap::from([("refused".to_owned(), 1)]),
                        deliveries,
                        expected_deliveries: deliveries,
                        unmatched: 0,
                        closed_early: BTreeMap::new(),
                    },
                    memory: PartMemory {
                        idle_connections: subscribers,
                        bench_rss_kib: Some(1000),
                        bench_peak_rss_kib: Some(2000),
                    },
                },
                delivery_latency_us: recorded(&h),
                request_latency_us: recorded(&h),
            }
        };
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let args = <Wrapper as clap::Parser>::parse_from(["bench"]).bench;
        let memory = Memory {
            server_rss_before_kib: Some(10_000),
            server_rss_after_kib: Some(10_000 + 3 * 400),
            ..Memory::default()
        };
        let combined = Combined::new(
            &args,
            &[part(100, 50, 100, 2_000), part(300, 150, 300, 4_000)],
            memory,
        );
        let t = &combined.total;
        assert_eq!(
            (
                t.delivery.subscribers,
                t.delivery.deliveries,
                t.durable_positions
            ),
            (400, 200, 400)
        );
        assert_eq!(t.delivery.subscribe_failures["refused"], 2);
        assert!((t.durable_positions_per_s - 40.0).abs() < 1e-9);
        let latency = t.delivery_latency_ms.unwrap();
        assert_eq!(latency.samples, 200);
        assert!((latency.p50 - 4.0).abs() < 0.01, "{latency:?}");
        assert_eq!(combined.memory.idle_connections, 400);
        assert_eq!(
            combined.memory.server_rss_per_idle_connection_kib,
            Some(3.0)
        );
        assert_eq!(combined.memory.bench_rss_kib, Some(2000));
        let text = combined.to_string();
        assert!(text.contains("3.00 KiB"), "{text}");
        assert!(text.contains("could not subscribe: refused: 2"), "{text}");
    }
}
