//! The pages in headless Chromium: sign in, open a shipment, post a position, and see the marker
//! move and the polyline grow; and the driver's phone page sharing through lost signal and a
//! reload, with the phone's location and network emulated through the DevTools protocol.
use std::process::Stdio;

use chrono::{Duration, Utc};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use waymark::auth::Role;

use crate::page::{
    click, depot_fence, dispatcher, fill, in_browser, in_browsers, open, open_fleet_page,
    wait_equal, wait_for_element, Step, LIVE, READY,
};
use crate::support::{find_program, step, wait_for, wait_until, TestApp, PATIENCE};

/// A chromedriver of our own on a free loopback port, killed when dropped.
pub(crate) struct Driver {
    child: Child,
    port: u16,
    /// One browser profile per client, so two clients are two people with their own cookies.
    profiles: std::sync::Mutex<Vec<TempDir>>,
}

pub(crate) use tempdir::TempDir;

mod tempdir {
    /// A throwaway directory (a browser profile, files to upload), removed when dropped.
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new(prefix: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "{prefix}-{}-{}",
                std::process::id(),
                rand_suffix()
            ));
            std::fs::create_dir_all(&dir).expect("a temporary directory");
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

impl Driver {
    pub(crate) async fn start() -> Driver {
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
            profiles: Default::default(),
        };
        let status = format!("http://127.0.0.1:{port}/status");
        wait_until("chromedriver answers", async || {
            reqwest::get(&status)
                .await
                .is_ok_and(|res| res.status().is_success())
        })
        .await;
        driver
    }

    pub(crate) async fn client(&self) -> Client {
        let chromium = find_program(
            "WAYMARK_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        );
        let dir = TempDir::new("waymark-chromium");
        let profile = dir.0.to_string_lossy().into_owned();
        self.profiles.lock().unwrap().push(dir);
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
    pub(crate) async fn stop(mut self) {
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
pub(crate) async fn wait_for_text(browser: &Client, css: &str, expected: &str) {
    let script = format!(
        "const e = document.querySelector({css:?}); return e ? e.textContent.trim() : null;"
    );
    wait_equal(&format!("{css} shows {expected:?}"), expected, async || {
        browser
            .execute(&script, vec![])
            .await
            .expect("the page answers")
    })
    .await
}

#[sqlx::test]
async fn a_posted_position_moves_the_marker_and_grows_the_polyline(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    let shipment = app.shipment(&jwt, "SHP-1", vehicle, None).await;
    let base = Utc::now() - Duration::minutes(2);
    app.ingest(&token, step(0, base)).await;

    in_browser(&app, async |browser| {
        open(browser, &app, "dispatch@acme.test", &format!("/shipments/{shipment}"), LIVE).await?;
        wait_for_text(browser, "#track-points", "1").await;
        wait_for_text(browser, "#status", "in_transit").await;

        let track_path = "const p = document.querySelector('#map path.wm-track'); return p ? p.getAttribute('d') : null;";
        let before = browser.execute(track_path, vec![]).await?;
        assert!(before.as_str().is_some_and(|d| d.starts_with('M')), "the track is drawn: {before}");

        let next = step(1, base);
        let (status, _) = app.ingest(&token, next.clone()).await;
        assert_eq!(status, 200);
        let expected = format!("{:.5}, {:.5}", next["lat"].as_f64().unwrap(), next["lon"].as_f64().unwrap());
        wait_for_text(browser, "#last-position", &expected).await;
        wait_for_text(browser, "#track-points", "2").await;
        // A customer link for this shipment, made from the page.
        click(browser, "#share-button").await?;
        wait_until_page(browser, "the share link shows", "return document.getElementById('share-url').value.includes('/t/');").await;
        // The polyline on the map itself was redrawn with the new vertex.
        let after = browser.execute(track_path, vec![]).await?;
        assert_ne!(after, before, "the drawn track changed");
        Ok(())
    })
    .await;
}

pub(crate) fn url_of(app: &TestApp, path: &str) -> url::Url {
    url::Url::parse(&app.url(path)).unwrap()
}

/// A DevTools protocol command, sent through chromedriver to the current window's page.
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

pub(crate) async fn cdp(browser: &Client, cmd: &'static str, params: Value) {
    browser
        .issue_cmd(Cdp(cmd, params))
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
}

/// Puts the emulated phone at `lat, lon`.
async fn move_phone(browser: &Client, lat: f64, lon: f64) {
    cdp(
        browser,
        "Emulation.setGeolocationOverride",
        json!({"latitude": lat, "longitude": lon, "accuracy": 5}),
    )
    .await;
}

async fn set_offline(browser: &Client, offline: bool) {
    cdp(
        browser,
        "Network.emulateNetworkConditions",
        json!({"offline": offline, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}),
    )
    .await;
}

/// Waits until `script` (a function body) returns true in the page.
pub(crate) async fn wait_until_page(browser: &Client, what: &str, script: &str) {
    wait_for(what, async || match browser.execute(script, vec![]).await {
        Ok(Value::Bool(true)) => Ok(()),
        now => Err(format!("still {now:?}")),
    })
    .await
}

/// The times (ms) of the fixes waiting in the page's IndexedDB queue.
async fn queued_times(browser: &Client, user: i64) -> Vec<i64> {
    let script = format!(
        "const done = arguments[0];
         const open = indexedDB.open('waymark-driver-{user}');
         open.onsuccess = () => {{
           const req = open.result.transaction('fixes').objectStore('fixes').getAllKeys();
           req.onsuccess = () => {{ open.result.close(); done(req.result); }};
         }};"
    );
    let keys = browser.execute_async(&script, vec![]).await.unwrap();
    keys.as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_i64().unwrap())
        .collect()
}

pub(crate) async fn sign_in(browser: &Client, app: &TestApp, email: &str) -> Step {
    browser.goto(&app.url("/")).await?;
    fill(browser, "#email", email).await?;
    fill(browser, "#password", "correct horse").await?;
    click(browser, "#sign-in").await
}

/// Signs in and waits for the page the sign-in lands on.
pub(crate) async fn sign_in_to(
    browser: &Client,
    app: &TestApp,
    email: &str,
    landing: &str,
) -> Step {
    sign_in(browser, app, email).await?;
    browser
        .wait()
        .at_most(PATIENCE)
        .for_url(url_of(app, landing))
        .await
}

/// Waits until the page's live connection is up.
pub(crate) async fn wait_live(browser: &Client) -> Step {
    wait_for_element(browser, LIVE).await?;
    Ok(())
}

#[sqlx::test]
async fn the_driver_page_shares_through_lost_signal_and_a_reload_exactly_once(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (driver_id, _) = app.user("Acme", "anna@acme.test", Role::Driver).await;
    let (vehicle, _) = app.vehicle(&jwt, "Van 1").await;
    let shipment = app.shipment(&jwt, "SHP-7", vehicle, Some(driver_id)).await;
    // A depot around where the phone starts: entering it raises an alert the driver sees.
    depot_fence(&app, &jwt, "Depot").await;
    let stored = || async {
        let rows: Vec<(chrono::DateTime<Utc>, f64)> = sqlx::query_as(
            "SELECT recorded_at, ST_Y(point::geometry) FROM positions WHERE vehicle_id = $1
             ORDER BY recorded_at",
        )
        .bind(vehicle)
        .fetch_all(&app.db)
        .await
        .unwrap();
        rows
    };

    in_browsers(&app, async |[phone, desk]: &[Client; 2]| {
        // The dispatcher watches the shipment.
        open(desk, &app, "dispatch@acme.test", &format!("/shipments/{shipment}"), LIVE).await?;

        // The driver's phone, with location allowed, signs in and lands on its page.
        let origin = app.url("");
        cdp(
            phone,
            "Browser.grantPermissions",
            json!({"origin": origin.trim_end_matches('/'), "permissions": ["geolocation"]}),
        )
        .await;
        cdp(phone, "Network.enable", json!({})).await;
        let (lat0, lon) = (48.1374, 11.5755);
        move_phone(phone, lat0, lon).await;
        sign_in_to(phone, &app, "anna@acme.test", "/driver").await?;
        wait_for_element(phone, READY).await?;
        wait_for_text(phone, "#driver-shipment", "SHP-7").await;
        wait_for_text(phone, "#driver-vehicle", "Van 1").await;
        // The page can open offline once its worker controls it.
        wait_until_page(
            phone,
            "the service worker controls the page",
            "return !!navigator.serviceWorker.controller;",
        )
        .await;

        click(phone, "#share-toggle").await?;
        wait_for_text(phone, "#sharing-state", "On").await;
        wait_for_text(phone, "#share-label", "Stop sharing").await;
        wait_until_page(
            phone,
            "the first fix is sent",
            "return document.getElementById('last-sent').textContent !== '—';",
        )
        .await;
        wait_for_text(phone, "#queue-count", "0").await;
        // Dispatch's alert about this shipment shows on the driver's page too.
        wait_until_page(phone, "the driver sees the depot alert", "const p = document.getElementById('alerts-panel'); return !p.hidden && p.textContent.includes('Entered Depot');").await;
        let online_fixes = stored().await.len();
        assert!(online_fixes >= 1);

        // Signal lost: the phone moves and keeps every fix.
        set_offline(phone, true).await;
        wait_until_page(
            phone,
            "the page sees it is offline",
            "return navigator.onLine === false;",
        )
        .await;
        wait_for_text(phone, "#network-state", "Offline: positions are kept").await;
        let step_deg = 0.00001; // about a metre: the fixes come within moments of each other
        for i in 1..=3 {
            let before = queued_times(phone, driver_id).await.len();
            move_phone(phone, lat0 + step_deg * i as f64, lon).await;
            wait_until_page(
                phone,
                "the fix is queued",
                &format!(
                    "return document.getElementById('queue-count').textContent === '{}';",
                    before + 1
                ),
            )
            .await;
        }

        // A reload with no signal: the page opens from its worker, sharing resumes by itself.
        phone.refresh().await?;
        wait_for_element(phone, READY).await?;
        wait_for_text(phone, "#sharing-state", "On").await;
        wait_for_text(phone, "#driver-shipment", "SHP-7").await;
        let before = queued_times(phone, driver_id).await.len();
        move_phone(phone, lat0 + step_deg * 4.0, lon).await;
        wait_until_page(
            phone,
            "a fix after the reload is queued",
            &format!(
                "return Number(document.getElementById('queue-count').textContent) > {before};"
            ),
        )
        .await;
        let queued = queued_times(phone, driver_id).await;
        assert!(queued.len() >= 4, "{queued:?}");
        assert_eq!(
            stored().await.len(),
            online_fixes,
            "nothing went out while offline"
        );

        // Back online: the queue goes out, oldest first, and empties.
        set_offline(phone, false).await;
        wait_for_text(phone, "#queue-count", "0").await;
        let rows = stored().await;
        assert_eq!(
            rows.len(),
            online_fixes + queued.len(),
            "every queued fix arrived once"
        );
        let times: Vec<i64> = rows.iter().map(|r| r.0.timestamp_millis()).collect();
        for t in &queued {
            assert_eq!(
                times.iter().filter(|s| *s == t).count(),
                1,
                "fix {t} stored once"
            );
        }
        let last_lat = rows.last().unwrap().1;
        assert!(
            (last_lat - (lat0 + step_deg * 4.0)).abs() < 1e-9,
            "the newest fix is last: {last_lat}"
        );

        // The dispatcher's map drew every one of them.
        wait_for_text(desk, "#track-points", &rows.len().to_string()).await;
        let expected = format!("{:.5}, {:.5}", lat0 + step_deg * 4.0, lon);
        wait_for_text(desk, "#last-position", &expected).await;
        // The dispatcher can hand the driver a new phone link from here: a QR code and its URL.
        click(desk, "#phone-link-button").await?;
        wait_until_page(desk, "the phone link's QR code shows", "return !!document.querySelector('#phone-link-qr svg') && document.getElementById('phone-link-url').value.includes('/driver/link/');").await;
        Ok(())
    })
    .await;
}

/// Browsers report what the Content-Security-Policy blocked at once; by the end of a test that
/// used the pages, none must have come.
pub(crate) fn assert_no_csp_violations(app: &TestApp) {
    let reports = app
        .state
        .csp_reports
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        reports, 0,
        "the pages broke the content security policy (see the log)"
    );
}

#[sqlx::test]
async fn an_alert_appears_on_the_fleet_page_and_acknowledging_it_clears_the_counter(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (_, token) = app.vehicle(&jwt, "Van 1").await;
    depot_fence(&app, &jwt, "Depot").await;
    let base = Utc::now() - Duration::minutes(5);
    app.ingest(
        &token,
        json!({"lat": 48.10, "lon": 11.50, "recorded_at": base.to_rfc3339()}),
    )
    .await;

    in_browser(&app, async |browser| {
        open_fleet_page(browser, &app).await?;
        wait_until_page(browser, "the geofence is drawn", "return !!document.querySelector('#map path.wm-geofence');").await;
        wait_for_text(browser, ".alerts__count", "0").await;

        let (status, _) = app
            .ingest(&token, json!({"lat": 48.1374, "lon": 11.5755, "recorded_at": (base + Duration::minutes(4)).to_rfc3339()}))
            .await;
        assert_eq!(status, 200);
        wait_for_text(browser, ".alert[data-rule='geofence_enter'] .alert__title", "Entered Depot").await;
        wait_for_text(browser, ".alerts__count", "1").await;
        wait_until_page(
            browser,
            "the alert names the vehicle",
            "const m = document.querySelector('.alert__meta'); return !!m && m.textContent.endsWith('Van 1');",
        )
        .await;
        click(browser, ".alert__ack").await?;
        wait_for_text(browser, ".alerts__count", "0").await;
        wait_until_page(
            browser,
            "the alert shows as acknowledged",
            "const a = document.querySelector('.alert'); return !!a && a.dataset.acknowledged === 'true' && !a.querySelector('.alert__ack');",
        )
        .await;
        Ok(())
    })
    .await;
    let (_, list) = app.get(&jwt, "/api/v1/alerts").await;
    assert!(list["alerts"][0]["acknowledged_at"].is_string(), "{list}");
}

/// A dispatcher and the driver of one shipment: (dispatcher jwt, driver jwt, shipment).
async fn conversation(app: &TestApp) -> (String, String, i64) {
    let desk = dispatcher(app).await;
    let (driver_id, phone) = app.user("Acme", "anna@acme.test", Role::Driver).await;
    let (vehicle, _) = app.vehicle(&desk, "Van 1").await;
    let shipment = app.shipment(&desk, "SHP-1", vehicle, Some(driver_id)).await;
    (desk, phone, shipment)
}

#[sqlx::test]
async fn a_chat_message_with_markup_renders_as_inert_text_and_the_form_sends(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, phone, shipment) = conversation(&app).await;
    let hostile = "<img src=x onerror=alert(1)>";

    in_browser(&app, async |browser| {
        open(browser, &app, "dispatch@acme.test", &format!("/shipments/{shipment}"), LIVE).await?;
        wait_for_element(browser, "#chat-panel:not([hidden]) .chat__form").await?;
        // Anything the markup ran would call this.
        browser.execute("window.__ran = false; window.alert = () => { window.__ran = true; };", vec![]).await?;

        let (status, _) = app
            .post(&phone, &format!("/api/v1/shipments/{shipment}/chat"), json!({"client_id": "p1", "body": hostile}))
            .await;
        assert_eq!(status, 201);
        wait_for_text(browser, ".chat__message[data-mine='false'] .chat__body", hostile).await;
        let inert = browser
            .execute(
                "return { images: document.querySelectorAll('#chat-panel img').length, \
                   children: document.querySelector('.chat__body').children.length, ran: window.__ran };",
                vec![],
            )
            .await?;
        assert_eq!(inert, json!({"images": 0, "children": 0, "ran": false}), "no element made, nothing ran");
        wait_for_text(browser, ".chat__unread", "0").await;

        fill(browser, ".chat__input", "On my way to gate 4").await?;
        click(browser, ".chat__send").await?;
        wait_for_text(browser, ".chat__message[data-mine='true'] .chat__body", "On my way to gate 4").await;
        Ok(())
    })
    .await;
    let (_, history) = app
        .get(&phone, &format!("/api/v1/shipments/{shipment}/chat"))
        .await;
    assert_eq!(
        history["messages"][1]["body"], "On my way to gate 4",
        "{history}"
    );
    assert_eq!(
        history["reads"][0]["participant"], "user:1",
        "the dispatcher's page marked it read"
    );
}

#[sqlx::test]
async fn the_fleet_page_counts_unread_messages_per_shipment_live(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (desk, phone, shipment) = conversation(&app).await;
    let count = format!(".shipment[data-shipment-id='{shipment}'] .shipment__unread");

    in_browser(&app, async |browser| {
        open_fleet_page(browser, &app).await?;
        wait_for_text(browser, &count, "0").await;
        for (i, body) in ["Stuck at the gate", "Still here"].iter().enumerate() {
            let (status, m) = app
                .post(
                    &phone,
                    &format!("/api/v1/shipments/{shipment}/chat"),
                    json!({"client_id": format!("p{i}"), "body": body}),
                )
                .await;
            assert_eq!(status, 201);
            wait_for_text(browser, &count, &(i + 1).to_string()).await;
            if i == 1 {
                // Read elsewhere (the shipment page, another tab): the count here follows.
                let (status, _) = app
                    .post(
                        &desk,
                        &format!("/api/v1/shipments/{shipment}/chat/read"),
                        json!({"seq": m["seq"]}),
                    )
                    .await;
                assert_eq!(status, 200);
            }
        }
        wait_for_text(browser, &count, "0").await;
        wait_until_page(
            browser,
            "a zero count is hidden",
            &format!("return document.querySelector(\"{count}\").hidden;"),
        )
        .await;
        Ok(())
    })
    .await;
}
