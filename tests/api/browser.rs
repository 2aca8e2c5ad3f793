//! The pages in headless Chromium: sign in, open a shipment, post a position, and see the marker
//! move and the polyline grow.
use std::{process::Stdio, time::Instant};

use chrono::{Duration, Utc};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use waymark::auth::Role;

use crate::support::{step, TestApp, PATIENCE};

/// A chromedriver of our own on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempdir::TempDir,
}

mod tempdir {
    /// A throwaway browser profile directory, removed when dropped.
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new() -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "waymark-chromium-{}-{}",
                std::process::id(),
                rand_suffix()
            ));
            std::fs::create_dir_all(&dir).expect("a temporary profile directory");
            TempDir(dir)
        }
    }
    fn rand_suffix() -> u64 {
        use std::hash::{BuildHasher, Hasher};
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn find_program(env: &str, names: &[&str]) -> String {
    if let Ok(path) = std::env::var(env) {
        return path;
    }
    for name in names {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let candidate = std::path::Path::new(dir).join(name);
            if candidate.is_file() {
                return candidate.to_string_lossy().into_owned();
            }
        }
    }
    panic!("{} not found: install Debian's chromium and chromium-driver (scripts/test does) or set {env}", names[0]);
}

impl Driver {
    async fn start() -> Driver {
        let binary = find_program("WAYMARK_CHROMEDRIVER", &["chromedriver"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(binary)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver {
            child,
            port,
            _profile: tempdir::TempDir::new(),
        };
        // Wait until it answers, bounded.
        let deadline = Instant::now() + PATIENCE;
        let status = format!("http://127.0.0.1:{port}/status");
        loop {
            if let Ok(res) = reqwest::get(&status).await {
                if res.status().is_success() {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        driver
    }

    async fn client(&self) -> Client {
        let chromium = find_program(
            "WAYMARK_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let profile = self._profile.0.to_string_lossy().into_owned();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={profile}"),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a browser session")
    }
}

impl Driver {
    /// Asks chromedriver to quit (which ends its browsers too) and waits for it, bounded.
    async fn stop(mut self) {
        let _ = reqwest::get(format!("http://127.0.0.1:{}/shutdown", self.port)).await;
        if tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Only reached without stop(), e.g. when the test panicked before it.
        let _ = self.child.start_kill();
    }
}

/// Waits until `css`'s text content is `expected`; fails with what it was instead.
async fn wait_for_text(browser: &Client, css: &str, expected: &str) {
    let deadline = Instant::now() + PATIENCE;
    let script = format!(
        "const e = document.querySelector({css:?}); return e ? e.textContent.trim() : null;"
    );
    loop {
        let now = browser
            .execute(&script, vec![])
            .await
            .expect("the page answers");
        if now.as_str() == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{css} shows {now}, expected {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[sqlx::test]
async fn a_posted_position_moves_the_marker_and_grows_the_polyline(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    let shipment = app.shipment(&jwt, "SHP-1", vehicle, None).await;
    let base = Utc::now() - Duration::minutes(2);
    app.ingest(&token, step(0, base)).await;

    let driver = Driver::start().await;
    let browser = driver.client().await;
    let result = async {
        browser.goto(&app.url("/")).await?;
        browser.find(Locator::Css("#email")).await?.send_keys("dispatch@acme.test").await?;
        browser.find(Locator::Css("#password")).await?.send_keys("correct horse").await?;
        browser.find(Locator::Css("#sign-in")).await?.click().await?;
        browser.wait().at_most(PATIENCE).for_url(url_of(&app, "/dispatch")).await?;

        browser.goto(&app.url(&format!("/shipments/{shipment}"))).await?;
        browser.wait().at_most(PATIENCE).for_element(Locator::Css("#conn-status[data-state='live']")).await?;
        wait_for_text(&browser, "#track-points", "1").await;
        wait_for_text(&browser, "#status", "in_transit").await;

        let track_path = "const p = document.querySelector('#map path.wm-track'); return p ? p.getAttribute('d') : null;";
        let before = browser.execute(track_path, vec![]).await?;
        assert!(before.as_str().is_some_and(|d| d.starts_with('M')), "the track is drawn: {before}");

        let next = step(1, base);
        let (status, _) = app.ingest(&token, next.clone()).await;
        assert_eq!(status, 200);
        let expected = format!("{:.5}, {:.5}", next["lat"].as_f64().unwrap(), next["lon"].as_f64().unwrap());
        wait_for_text(&browser, "#last-position", &expected).await;
        wait_for_text(&browser, "#track-points", "2").await;
        // The polyline on the map itself was redrawn with the new vertex.
        let after = browser.execute(track_path, vec![]).await?;
        assert_ne!(after, before, "the drawn track changed");
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    let _ = browser.close().await;
    driver.stop().await;
    result.expect("the browser steps succeed");
}

fn url_of(app: &TestApp, path: &str) -> url::Url {
    url::Url::parse(&app.url(path)).unwrap()
}

/// Waits until `script` (a function body) returns true.
async fn wait_until_true(browser: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = browser
            .execute(script, vec![])
            .await
            .expect("the page answers");
        if now.as_bool() == Some(true) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {now}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[sqlx::test]
async fn an_alert_appears_on_the_fleet_page_and_acknowledging_it_clears_the_counter(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (_, token) = app.vehicle(&jwt, "Van 1").await;
    let (status, _) = app
        .post(
            &jwt,
            "/api/v1/geofences",
            json!({"name": "Depot", "debounce_s": 0,
                   "circle": {"lat": 48.1374, "lon": 11.5755, "radius_m": 100.0}}),
        )
        .await;
    assert_eq!(status, 201);
    let base = Utc::now() - Duration::minutes(5);
    app.ingest(
        &token,
        json!({"lat": 48.10, "lon": 11.50, "recorded_at": base.to_rfc3339()}),
    )
    .await;

    let driver = Driver::start().await;
    let browser = driver.client().await;
    let result = async {
        browser.goto(&app.url("/")).await?;
        browser.find(Locator::Css("#email")).await?.send_keys("dispatch@acme.test").await?;
        browser.find(Locator::Css("#password")).await?.send_keys("correct horse").await?;
        browser.find(Locator::Css("#sign-in")).await?.click().await?;
        browser.wait().at_most(PATIENCE).for_url(url_of(&app, "/dispatch")).await?;
        browser.wait().at_most(PATIENCE).for_element(Locator::Css("#conn-status[data-state='live']")).await?;
        wait_until_true(&browser, "the geofence is drawn", "return !!document.querySelector('#map path.wm-geofence');").await;
        wait_for_text(&browser, ".alerts__count", "0").await;

        let (status, _) = app
            .ingest(&token, json!({"lat": 48.1374, "lon": 11.5755, "recorded_at": (base + Duration::minutes(4)).to_rfc3339()}))
            .await;
        assert_eq!(status, 200);
        wait_for_text(&browser, ".alert[data-rule='geofence_enter'] .alert__title", "Entered Depot").await;
        wait_for_text(&browser, ".alerts__count", "1").await;
        wait_until_true(
            &browser,
            "the alert names the vehicle",
            "const m = document.querySelector('.alert__meta'); return !!m && m.textContent.endsWith('Van 1');",
        )
        .await;
        browser.find(Locator::Css(".alert__ack")).await?.click().await?;
        wait_for_text(&browser, ".alerts__count", "0").await;
        wait_until_true(
            &browser,
            "the alert shows as acknowledged",
            "const a = document.querySelector('.alert'); return !!a && a.dataset.acknowledged === 'true' && !a.querySelector('.alert__ack');",
        )
        .await;
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    let _ = browser.close().await;
    driver.stop().await;
    result.expect("the browser steps succeed");
    let (_, list) = app.get(&jwt, "/api/v1/alerts").await;
    assert!(list["alerts"][0]["acknowledged_at"].is_string(), "{list}");
}
