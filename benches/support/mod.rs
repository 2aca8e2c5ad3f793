//! What the benches that run a server of their own share: a database of their own on the
//! `DATABASE_URL`'s server, the server in-process on a loopback port, signing in and creating
//! vehicles through the API, and headless Chromium through chromedriver.
// Each bench uses a part of this.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::Parser;
use fantoccini::{Client, ClientBuilder};
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::{json, Value};
use sqlx::{postgres::PgPoolOptions, PgPool};
use tokio::{process::Command, sync::oneshot};
use waymark::{
    cli::{Cli, Command as ServerCommand},
    AppState,
};

/// The `DATABASE_URL` with its database replaced by `name`.
pub fn database_url(name: &str) -> anyhow::Result<String> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL")?;
    let mut url = url::Url::parse(&url)?;
    url.set_path(name);
    Ok(url.into())
}

/// Runs `sql` on the `DATABASE_URL`'s own database (to create and drop others).
async fn on_server(sql: &str) -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL")?;
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;
    sqlx::query(sql).execute(&admin).await?;
    admin.close().await;
    Ok(())
}

/// A new, empty, migrated database named `name` (dropped first if it exists).
pub async fn fresh_database(name: &str) -> anyhow::Result<PgPool> {
    let db = empty_database(name).await?;
    waymark::db::migrate(&db).await?;
    Ok(db)
}

/// The database `name`, made anew with no tables.
pub async fn empty_database(name: &str) -> anyhow::Result<PgPool> {
    drop_database(name).await?;
    on_server(&format!("CREATE DATABASE {name}")).await?;
    connect(name).await
}

/// The database `name`, which exists.
pub async fn connect(name: &str) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(32)
        .connect(&database_url(name)?)
        .await?)
}

/// Leaves no database `name` behind.
pub async fn drop_database(name: &str) -> anyhow::Result<()> {
    on_server(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await
}

/// The server on a loopback port of its own, as `waymark serve` with these flags: no tiles, no
/// Redis, no ingest limit (the benches post from one address), unless `extra` says otherwise.
pub struct Server {
    pub addr: SocketAddr,
    pub base: String,
    pub state: AppState,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(db: PgPool, extra: &[&str]) -> anyhow::Result<Server> {
        let defaults = [
            ("--jwt-secret", "waymark-bench-secret-waymark-bench-secret"),
            ("--tile-url", ""),
            ("--ingest-rate", "0"),
            ("--redis-url", ""),
        ];
        let mut args: Vec<String> = vec!["waymark".into(), "serve".into()];
        for (flag, value) in defaults {
            if !extra.contains(&flag) {
                args.extend([flag.to_owned(), value.to_owned()]);
            }
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let ServerCommand::Serve(config) = Cli::parse_from(args).command else {
            unreachable!("the arguments name `serve`")
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = AppState::new(db, *config).await?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(waymark::serve(listener, state.clone(), async move {
            let _ = stopped.await;
        }));
        Ok(Server {
            addr,
            base: format!("http://{addr}"),
            state,
            stop,
            task,
        })
    }

    /// Stops the server the way SIGTERM does and waits for it to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Signs in through the API; the session's JWT.
pub async fn sign_in(
    http: &reqwest::Client,
    base: &str,
    email: &str,
    password: &str,
) -> anyhow::Result<String> {
    let reply: Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(reply["token"].as_str().context("a token")?.to_owned())
}

/// Creates `n` vehicles through the API, `concurrency` at once; their ingest tokens, in order.
pub async fn create_vehicles(
    http: &reqwest::Client,
    base: &str,
    jwt: &str,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    stream::iter(0..n)
        .map(|i| async move {
            let reply: Value = http
                .post(format!("{base}/api/v1/vehicles"))
                .bearer_auth(jwt)
                .json(&json!({"name": format!("Truck {:04}", i + 1)}))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let token = reply["ingest_token"].as_str().context("an ingest token")?;
            anyhow::Ok(token.to_owned())
        })
        .buffered(concurrency)
        .try_collect()
        .await
}

/// A DevTools protocol command through chromedriver, to the current window's page.
#[derive(Debug)]
struct Cdp(&'static str, Value);

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        let body = json!({"cmd": self.0, "params": self.1});
        (axum::http::Method::POST, Some(body.to_string()))
    }
}

pub async fn cdp(browser: &Client, cmd: &'static str, params: Value) -> anyhow::Result<Value> {
    browser
        .issue_cmd(Cdp(cmd, params))
        .await
        .with_context(|| cmd.to_owned())
}

/// chromedriver on a free loopback port, and one headless Chromium through it.
pub struct Chromedriver {
    child: tokio::process::Child,
    port: u16,
    profile: std::path::PathBuf,
}

impl Chromedriver {
    pub async fn start() -> anyhow::Result<Chromedriver> {
        let binary = std::env::var("WAYMARK_CHROMEDRIVER").unwrap_or("chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("chromedriver starts")?;
        let profile =
            std::env::temp_dir().join(format!("waymark-bench-chromium-{}", std::process::id()));
        let status = format!("http://127.0.0.1:{port}/status");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reqwest::get(&status)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            if Instant::now() > deadline {
                bail!("chromedriver did not answer");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Chromedriver {
            child,
            port,
            profile,
        })
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        let chromium = std::env::var("WAYMARK_CHROMIUM").unwrap_or("chromium".into());
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-sync",
                    "--disable-component-update", "--window-size=1280,900",
                    format!("--user-data-dir={}", self.profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        Ok(
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{}", self.port))
                .await?,
        )
    }

    pub async fn stop(mut self) {
        let _ = reqwest::get(format!("http://127.0.0.1:{}/shutdown", self.port)).await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// 1234567 as "1 234 567", as the docs write numbers.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}
