//! The dispatcher's fleet page under a real fleet: a server of its own (on a fresh database,
//! dropped at the end; loopback only) with `--vehicles` vehicles (5 000), each posting one
//! position a second through `POST /api/v1/positions`, and the page in headless Chromium. It
//! reports how long the page takes from sign-in until every vehicle is listed, the share of the
//! page's main thread that is busy while the positions flow (DevTools `Performance.getMetrics`:
//! `TaskDuration` over wall time), and how late positions reach the screen: from a position's
//! `recorded_at` to the animation frame after the page handled its WebSocket frame (sampled, one
//! frame in ten). The page asks for frames ready together as one array message (`?batch=true`);
//! `--one-per-message` takes that off, for comparison.
//!
//! `cargo bench --bench fleet_page [-- --vehicles N --seconds S --batch B --one-per-message]`; results in
//! docs/BENCHMARKS.md. Needs `DATABASE_URL` (a role that may create databases), chromedriver and
//! Chromium (`WAYMARK_CHROMEDRIVER`, `WAYMARK_CHROMIUM`). Every phase is bounded in time.
mod support;

use std::{
    f64::consts::PI,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use chrono::{SecondsFormat, Utc};
use clap::Parser;
use fantoccini::{Client, Locator};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use waymark::auth::{create_user, Role};

use support::{cdp, create_vehicles, sign_in, Chromedriver, Server};

const DATABASE: &str = "waymark_fleet_page_bench";
const EMAIL: &str = "fleet-bench@waymark.local";
const PASSWORD: &str = "fleet-bench-password";
/// Vehicles created at once while setting up.
const SETUP_CONCURRENCY: usize = 32;
/// Requests in flight while posting positions; each worker owns its vehicles, so a vehicle's
/// positions leave one after another and its `recorded_at` only grows.
const WORKERS: usize = 256;
/// Vehicles drive circles of this radius (m) in this many seconds: always moving, never fast.
const CIRCLE_M: f64 = 80.0;
const LAP_S: f64 = 120.0;
/// Every vehicle has posted before the browser opens.
const WARM_UP: Duration = Duration::from_secs(3);
/// The page gets this long to list the fleet before the bench gives up.
const LIST_LIMIT: Duration = Duration::from_secs(180);
/// One WebSocket frame in this many is timed to the screen.
const SAMPLE_EVERY: u32 = 10;

/// Instruments the page's WebSocket before any script of the page runs: for one position frame
/// in `SAMPLE_EVERY` it notes how late the frame arrived, and, in the next animation frame (the
/// one that shows what the page made of it, since the page handles the frame before that frame's
/// callbacks run), how late it reached the screen. A message may hold one frame or, with
/// `?batch=true`, a JSON array of frames; frames are found by their opening `{"type":"` (the
/// server writes `type` first) rather than by parsing, so the bench adds no parse of its own.
/// With `__ONE_PER_MESSAGE__` the page's `batch=true` is taken off the URL.
const INSTRUMENT: &str = r#"
(() => {
  const every = __SAMPLE_EVERY__;
  const onePerMessage = __ONE_PER_MESSAGE__;
  const bench = { received: [], drawn: [], held: [], frames: 0, messages: 0 };
  window.__fleetBench = bench;
  const sample = (frame, at) => {
    if (!frame.startsWith('{"type":"position"') || frame.includes('"late":true')) return;
    const m = /"recorded_at":"([^"]+)"/.exec(frame);
    if (!m) return;
    const t = Date.parse(m[1]);
    bench.received.push(performance.timeOrigin + at - t);
    requestAnimationFrame(() => {
      const now = performance.now();
      bench.drawn.push(performance.timeOrigin + now - t);
      bench.held.push(now - at);
    });
  };
  const Native = window.WebSocket;
  window.WebSocket = class extends Native {
    constructor(url, ...rest) {
      super(onePerMessage ? String(url).replace(/([?&])batch=true&?/, '$1').replace(/[?&]$/, '') : url, ...rest);
      this.addEventListener('message', (ev) => {
        if (typeof ev.data !== 'string') return;
        bench.messages += 1;
        const data = ev.data;
        const at = performance.now();
        if (!data.startsWith('[')) {
          bench.frames += 1;
          if (bench.frames % every === 0) sample(data, at);
          return;
        }
        let start = data.indexOf('{"type":"', 1);
        while (start !== -1) {
          const next = data.indexOf(',{"type":"', start + 1);
          bench.frames += 1;
          if (bench.frames % every === 0) sample(data.slice(start, next === -1 ? -1 : next), at);
          start = next === -1 ? -1 : next + 1;
        }
      });
    }
  };
})();
"#;

#[derive(Parser, Debug)]
#[command(about = "The fleet page under a real fleet")]
struct Options {
    /// Vehicles, each posting one position a second.
    #[arg(long, default_value_t = 5000)]
    vehicles: usize,
    /// How long the main thread and the updates are measured, once the fleet is listed.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Each vehicle posts every N seconds the N positions of those seconds, in one request:
    /// the same positions per second with N times fewer requests, for when the server cannot
    /// take one request per position.
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Open the page's WebSocket without `?batch=true`: one frame per message, as before the
    /// page asked for arrays.
    #[arg(long)]
    one_per_message: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let n = options.vehicles;
    let db = support::fresh_database(DATABASE).await?;
    let server = Server::start(db.clone(), &[]).await?;
    let base = server.base.clone();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(WORKERS)
        .build()?;

    create_user(&db, "Fleet Bench", EMAIL, PASSWORD, Role::Dispatcher).await?;
    let jwt = sign_in(&http, &base, EMAIL, PASSWORD).await?;
    let started = Instant::now();
    let tokens = create_vehicles(&http, &base, &jwt, n, SETUP_CONCURRENCY).await?;
    println!(
        "set up {n} vehicles in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let load = Load::start(http.clone(), base.clone(), tokens, options.batch.max(1));
    tokio::time::sleep(WARM_UP).await;

    let driver = Chromedriver::start().await?;
    let browser = driver.client().await?;
    let result = measure(&browser, &base, &load, &options).await;
    let _ = browser.close().await;
    driver.stop().await;
    let posted = load.stop().await;
    server.stop().await;
    db.close().await;
    support::drop_database(DATABASE).await?;
    let report = result?;
    report.print(n, &options, &posted);
    Ok(())
}

/// The fleet posting: vehicle `i` posts at `i / n` of every second.
struct Load {
    cancel: CancellationToken,
    workers: tokio::task::JoinSet<()>,
    stats: Arc<LoadStats>,
}

#[derive(Default)]
struct LoadStats {
    accepted: AtomicU64,
    failed: AtomicU64,
    /// Sum of how far behind schedule requests left, in µs.
    behind_us: AtomicU64,
}

struct Posted {
    accepted: u64,
    failed: u64,
    mean_behind_ms: f64,
}

impl Load {
    fn start(http: reqwest::Client, base: String, tokens: Vec<String>, batch: u64) -> Load {
        let cancel = CancellationToken::new();
        let stats = Arc::new(LoadStats::default());
        let n = tokens.len();
        let tokens = Arc::new(tokens);
        let start = tokio::time::Instant::now();
        let mut workers = tokio::task::JoinSet::new();
        for w in 0..WORKERS.min(n) {
            let (http, base, tokens, stats, cancel) = (
                http.clone(),
                base.clone(),
                tokens.clone(),
                stats.clone(),
                cancel.clone(),
            );
            workers.spawn(async move {
                let url = format!("{base}/api/v1/positions");
                for round in 0u64.. {
                    for i in (w..n).step_by(WORKERS) {
                        let due = start
                            + Duration::from_secs(round * batch)
                            + Duration::from_secs_f64(i as f64 / n as f64);
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep_until(due) => {}
                        }
                        let behind = tokio::time::Instant::now().saturating_duration_since(due);
                        stats
                            .behind_us
                            .fetch_add(behind.as_micros() as u64, Ordering::Relaxed);
                        let ok = http
                            .post(&url)
                            .bearer_auth(&tokens[i])
                            .json(&positions(i, n, batch))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        let counter = if ok { &stats.accepted } else { &stats.failed };
                        counter.fetch_add(batch, Ordering::Relaxed);
                    }
                }
            });
        }
        Load {
            cancel,
            workers,
            stats,
        }
    }

    fn accepted(&self) -> u64 {
        self.stats.accepted.load(Ordering::Relaxed)
    }

    async fn stop(mut self) -> Posted {
        self.cancel.cancel();
        while self.workers.join_next().await.is_some() {}
        let accepted = self.stats.accepted.load(Ordering::Relaxed);
        let failed = self.stats.failed.load(Ordering::Relaxed);
        let behind = self.stats.behind_us.load(Ordering::Relaxed) as f64;
        Posted {
            accepted,
            failed,
            mean_behind_ms: behind / 1000.0 / (accepted + failed).max(1) as f64,
        }
    }
}

/// Vehicle `i` of `n` over the last `batch` seconds, one position a second, the last now.
fn positions(i: usize, n: usize, batch: u64) -> Value {
    let now = Utc::now();
    if batch == 1 {
        return position(i, n, now);
    }
    let list = (0..batch)
        .rev()
        .map(|back| position(i, n, now - chrono::Duration::seconds(back as i64)))
        .collect();
    Value::Array(list)
}

/// Where vehicle `i` of `n` is at `now`: on its own circle, on a grid across Munich.
fn position(i: usize, n: usize, now: chrono::DateTime<Utc>) -> Value {
    let t = now.timestamp_millis() as f64 / 1000.0;
    let (row, column) = ((i / 100) as f64, (i % 100) as f64);
    let (lat0, lon0) = (48.05 + row * 0.004, 11.30 + column * 0.006);
    let angle = 2.0 * PI * (t / LAP_S + i as f64 / n as f64);
    let dlat = CIRCLE_M / 111_320.0;
    let dlon = dlat / lat0.to_radians().cos();
    // Anticlockwise on the circle: the heading is the tangent, in degrees clockwise from north.
    let heading = (360.0 - angle.to_degrees() % 360.0) % 360.0;
    json!({
        "lat": lat0 + dlat * angle.sin(),
        "lon": lon0 + dlon * angle.cos(),
        "recorded_at": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        "speed": 2.0 * PI * CIRCLE_M / LAP_S,
        "heading": heading,
        "accuracy": 5.0,
    })
}

struct Report {
    listed_after: Duration,
    window: f64,
    busy: f64,
    script: f64,
    layout: f64,
    style: f64,
    accepted_per_s: f64,
    frames_per_s: f64,
    messages_per_s: f64,
    received: Vec<f64>,
    drawn: Vec<f64>,
    held: Vec<f64>,
}

async fn measure(
    browser: &Client,
    base: &str,
    load: &Load,
    options: &Options,
) -> anyhow::Result<Report> {
    let n = options.vehicles;
    let script = INSTRUMENT
        .replace("__SAMPLE_EVERY__", &SAMPLE_EVERY.to_string())
        .replace("__ONE_PER_MESSAGE__", &options.one_per_message.to_string());
    cdp(
        browser,
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": script}),
    )
    .await?;
    cdp(browser, "Performance.enable", json!({})).await?;

    browser.goto(&format!("{base}/")).await?;
    browser
        .find(Locator::Css("#email"))
        .await?
        .send_keys(EMAIL)
        .await?;
    browser
        .find(Locator::Css("#password"))
        .await?
        .send_keys(PASSWORD)
        .await?;
    let signed_in = Instant::now();
    browser
        .find(Locator::Css("#sign-in"))
        .await?
        .click()
        .await?;
    let listed = format!(
        "const c = document.getElementById('vehicle-count');
         return !!c && c.textContent.trim() === '{n}'
           && !!document.querySelector('#vehicle-list [data-vehicle-id]');"
    );
    loop {
        if matches!(
            browser.execute(&listed, vec![]).await,
            Ok(Value::Bool(true))
        ) {
            break;
        }
        if signed_in.elapsed() > LIST_LIMIT {
            bail!("the page did not list {n} vehicles within {LIST_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed_after = signed_in.elapsed();

    // Measure once the page has settled on the fleet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    browser
        .execute(
            "const b = window.__fleetBench; b.received = []; b.drawn = []; b.held = []; b.frames = 0; b.messages = 0;",
            vec![],
        )
        .await?;
    let before = metrics(browser).await?;
    let accepted_before = load.accepted();
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    let after = metrics(browser).await?;
    let accepted_after = load.accepted();
    let sampled = browser
        .execute(
            "const b = window.__fleetBench; return { received: b.received, drawn: b.drawn, held: b.held, frames: b.frames, messages: b.messages };",
            vec![],
        )
        .await?;
    let window = after.get("Timestamp") - before.get("Timestamp");
    let share = |name: &str| (after.get(name) - before.get(name)) / window;
    let numbers = |key: &str| -> Vec<f64> {
        sampled[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    Ok(Report {
        listed_after,
        window,
        busy: share("TaskDuration"),
        script: share("ScriptDuration"),
        layout: share("LayoutDuration"),
        style: share("RecalcStyleDuration"),
        accepted_per_s: (accepted_after - accepted_before) as f64 / window,
        frames_per_s: sampled["frames"].as_f64().unwrap_or(0.0) / window,
        messages_per_s: sampled["messages"].as_f64().unwrap_or(0.0) / window,
        received: numbers("received"),
        drawn: numbers("drawn"),
        held: numbers("held"),
    })
}

struct Metrics(Vec<(String, f64)>);

impl Metrics {
    fn get(&self, name: &str) -> f64 {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0.0, |(_, v)| *v)
    }
}

async fn metrics(browser: &Client) -> anyhow::Result<Metrics> {
    let reply = cdp(browser, "Performance.getMetrics", json!({})).await?;
    let list = reply["metrics"].as_array().context("metrics")?;
    Ok(Metrics(
        list.iter()
            .filter_map(|m| Some((m["name"].as_str()?.to_owned(), m["value"].as_f64()?)))
            .collect(),
    ))
}

impl Report {
    fn print(&self, n: usize, options: &Options, posted: &Posted) {
        let pct = |mut v: Vec<f64>| -> String {
            if v.is_empty() {
                return "no samples".into();
            }
            v.sort_by(f64::total_cmp);
            let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
            let over = v.iter().filter(|&&x| x > 1000.0).count();
            format!(
                "p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {} of {} over 1 s",
                at(0.5),
                at(0.9),
                at(0.99),
                at(1.0),
                over,
                v.len()
            )
        };
        println!(
            "fleet page, {n} vehicles, one position a second each, {} per request, {}",
            options.batch.max(1),
            if options.one_per_message {
                "one frame per message"
            } else {
                "frames ready together in one message"
            }
        );
        println!(
            "  sign-in to all listed:        {:.1} s",
            self.listed_after.as_secs_f64()
        );
        println!(
            "  over {:.0} s of updates:       {:.0} positions/s accepted by the server, {:.0} frames/s reached the page in {:.0} messages/s",
            self.window, self.accepted_per_s, self.frames_per_s, self.messages_per_s
        );
        println!(
            "  main thread busy:             {:.0} % (script {:.0} %, style {:.0} %, layout {:.0} %)",
            self.busy * 100.0,
            self.script * 100.0,
            self.style * 100.0,
            self.layout * 100.0
        );
        println!(
            "  recorded_at to page:          {}",
            pct(self.received.clone())
        );
        println!(
            "  recorded_at to screen:        {}",
            pct(self.drawn.clone())
        );
        println!("  page to screen:               {}", pct(self.held.clone()));
        println!(
            "  posts: {} accepted, {} failed, left on average {:.0} ms behind schedule",
            posted.accepted, posted.failed, posted.mean_behind_ms
        );
    }
}
