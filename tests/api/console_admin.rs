//! The console's Settings, People and Alerts pages in headless Chromium, and what a driver sees
//! of the console (nothing): a setting saved on the page takes effect and a refused value shows
//! the API's own message at its field; a driver added and then disabled on the page loses
//! their sign-in and session; several alerts acknowledged at once; every console path sends a
//! driver to their phone page.
use chrono::{Duration, Utc};
use fantoccini::Locator;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::browser::{sign_in_to, url_of, wait_for_text, wait_until_page};
use crate::page::{
    click, confirm, depot_fence, dispatcher, fill, in_browser, open, select, wait_for_element,
};
use crate::support::{wait_for, TestApp, PATIENCE};

#[sqlx::test]
async fn a_setting_saved_on_the_page_takes_effect_and_a_refused_one_shows_why(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let (_, admin) = app.user("Acme", "admin@acme.test", Role::Admin).await;
    let (_, token) = app.vehicle(&admin, "Van 1").await;
    // What the API says of a speed limit out of range (a refused patch changes nothing).
    let (status, refusal) = app
        .patch(
            &admin,
            "/api/v1/settings",
            json!({"alerts": {"speed_limit_mps": 1000}}),
        )
        .await;
    assert_eq!(status, 400);
    let message = refusal["error"]["message"].as_str().unwrap().to_owned();
    assert_eq!(refusal["error"]["field"], "alerts.speed_limit_mps");

    in_browser(&app, async |browser| {
        open(
            browser,
            &app,
            "admin@acme.test",
            "/settings",
            "#settings-form[data-ready='true']",
        )
        .await?;
        wait_until_page(
            browser,
            "each field shows its unit and default",
            "const s = document.querySelector(\"[data-key='filter.max_accuracy_m']\");
             return s.querySelector('.setting__unit').textContent === 'm'
               && s.querySelector('.setting__default').textContent.startsWith('Default 500 m')
               && document.getElementById('setting-filter-max_accuracy_m').value === '500';",
        )
        .await;
        // Another admin changes another key meanwhile: the page sends only what it changed.
        let (status, _) = app
            .patch(
                &admin,
                "/api/v1/settings",
                json!({"alerts": {"silent_min": 30}}),
            )
            .await;
        assert_eq!(status, 200);
        fill(browser, "#setting-filter-max_accuracy_m", "50").await?;
        // Trips and stops, and how reports speak: a number, a time zone typed, a unit chosen.
        fill(browser, "#setting-trips-min_stop_s", "600").await?;
        fill(browser, "#setting-reports-time_zone", "Europe/Berlin").await?;
        select(browser, "#setting-reports-distance_unit", "mi").await?;
        click(browser, "#settings-save").await?;
        wait_for_text(browser, "#settings-status", "Saved.").await;

        fill(browser, "#setting-alerts-speed_limit_mps", "1000").await?;
        wait_for_text(
            browser,
            "[data-key='alerts.speed_limit_mps'] .setting__kmh",
            "= 3600 km/h",
        )
        .await;
        click(browser, "#settings-save").await?;
        wait_for_text(browser, "#setting-alerts-speed_limit_mps-error", &message).await;
        wait_until_page(
            browser,
            "the refused value is still there to correct",
            "const i = document.getElementById('setting-alerts-speed_limit_mps');
             return i.value === '1000' && i.getAttribute('aria-invalid') === 'true';",
        )
        .await;
        Ok(())
    })
    .await;

    let (_, settings) = app.get(&admin, "/api/v1/settings").await;
    assert_eq!(settings["filter"]["max_accuracy_m"], 50.0, "{settings}");
    assert_eq!(settings["trips"]["min_stop_s"], 600, "{settings}");
    assert_eq!(settings["reports"]["time_zone"], "Europe/Berlin");
    assert_eq!(settings["reports"]["distance_unit"], "mi");
    assert_eq!(
        settings["filter"]["max_speed_mps"], 100.0,
        "other keys keep theirs"
    );
    assert_eq!(
        settings["alerts"]["silent_min"], 30,
        "the page sent only the key it changed"
    );
    assert_eq!(
        settings["alerts"]["speed_limit_mps"], 25.0,
        "the refused value changed nothing"
    );
    // A fix less accurate than the new limit is stored, marked, and not published.
    let (status, reply) = app
        .ingest(
            &token,
            json!({"lat": 48.1374, "lon": 11.5755, "accuracy": 80.0}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(reply["filtered"], 1, "{reply}");
}

#[sqlx::test]
async fn a_driver_added_and_disabled_on_the_people_page_is_signed_out_and_refused(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.user("Acme", "admin@acme.test", Role::Admin).await;

    let ben_signs_in = async || {
        app.http
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": "ben@acme.test", "password": "a long password"}))
            .send()
            .await
            .unwrap()
    };

    let session = in_browser(&app, async |browser| {
        open(
            browser,
            &app,
            "admin@acme.test",
            "/people",
            "#people-table[data-ready='true']",
        )
        .await?;
        // A password too short is refused next to its field, and nothing typed is lost.
        fill(browser, "#new-person-email", "ben@acme.test").await?;
        fill(browser, "#new-person-password", "short").await?;
        select(browser, "#new-person-role", "driver").await?;
        click(browser, "#add-person-button").await?;
        wait_for_text(
            browser,
            "#new-person-password-error",
            "At least 8 characters.",
        )
        .await;
        wait_until_page(
            browser,
            "the email stays",
            "return document.getElementById('new-person-email').value === 'ben@acme.test';",
        )
        .await;
        fill(browser, "#new-person-password", "a long password").await?;
        click(browser, "#add-person-button").await?;
        let row = "tr.person-row[data-added='true']";
        wait_for_text(
            browser,
            &format!("{row} .person-row__email"),
            "ben@acme.test",
        )
        .await;

        // The new driver signs in (a phone, say) while the admin looks on.
        let res = ben_signs_in().await;
        assert_eq!(res.status(), 200);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["user"]["role"], "driver");
        let session = body["token"].as_str().unwrap().to_owned();

        click(browser, &format!("{row} [data-action='disable']")).await?;
        confirm(browser).await?;
        wait_for_text(browser, &format!("{row} .person-row__status"), "Disabled").await;
        wait_for_text(browser, &format!("{row} [data-action='disable']"), "Enable").await;
        Ok(session)
    })
    .await;

    let (status, _) = app.get(&session, "/api/v1/auth/me").await;
    assert_eq!(status, 401, "the disabled driver's session ended");
    let res = ben_signs_in().await;
    assert_eq!(res.status(), 401, "a disabled driver cannot sign in");
}

#[sqlx::test]
async fn a_dispatcher_reads_people_and_settings_and_makes_a_phone_link_but_changes_nothing(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    dispatcher(&app).await;
    let (anna, _) = app.user("Acme", "anna@acme.test", Role::Driver).await;

    in_browser(&app, async |browser| {
        open(
            browser,
            &app,
            "dispatch@acme.test",
            "/people",
            "#people-table[data-ready='true']",
        )
        .await?;
        let row = format!("tr.person-row[data-user-id='{anna}']");
        click(browser, &format!("{row} [data-action='phone-link']")).await?;
        wait_until_page(
            browser,
            "the phone link shows with its QR code",
            "return !document.getElementById('phone-link-panel').hidden
               && document.getElementById('phone-link-url').value.includes('/driver/link/')
               && !!document.querySelector('#phone-link-qr svg');",
        )
        .await;
        wait_until_page(
            browser,
            "no admin control is shown",
            "return document.getElementById('add-person-section').hidden
               && !document.querySelector(\"[data-action='disable'], .person-row select\");",
        )
        .await;
        browser.goto(&app.url("/settings")).await?;
        wait_for_element(browser, "#settings-form[data-ready='true']").await?;
        wait_until_page(
            browser,
            "the settings are shown, read only",
            "const inputs = [...document.querySelectorAll('#settings-fields input')];
             return inputs.length > 10 && inputs.every(i => i.disabled)
               && document.getElementById('setting-filter-max_accuracy_m').value === '500'
               && document.getElementById('settings-actions').hidden
               && !document.getElementById('settings-read-only').hidden;",
        )
        .await;
        Ok(())
    })
    .await;
}

/// The ids of the alerts an alerts list holds.
fn alert_ids(list: &Value) -> Vec<i64> {
    list["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_i64().unwrap())
        .collect()
}

#[sqlx::test]
async fn several_alerts_acknowledged_at_once_on_the_alerts_page(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    for name in ["Depot", "Yard", "Gate"] {
        depot_fence(&app, &jwt, name).await;
    }
    let base = Utc::now() - Duration::minutes(5);
    app.ingest(
        &token,
        json!({"lat": 48.10, "lon": 11.50, "recorded_at": base.to_rfc3339()}),
    )
    .await;
    app.ingest(
        &token,
        json!({"lat": 48.1374, "lon": 11.5755, "recorded_at": (base + Duration::minutes(4)).to_rfc3339()}),
    )
    .await;
    let ids: Vec<i64> = wait_for("three alerts are raised", async || {
        let (_, list) = app.get(&jwt, "/api/v1/alerts").await;
        let ids = alert_ids(&list);
        if ids.len() == 3 {
            Ok(ids)
        } else {
            Err(format!("{list}"))
        }
    })
    .await;

    in_browser(&app, async |browser| {
        open(browser, &app, "dispatch@acme.test", "/alerts", "#alerts-table[data-ready='true']").await?;
        wait_for_text(browser, "#alerts-unacknowledged", "3").await;
        wait_until_page(
            browser,
            "each alert links to its vehicle on the fleet map",
            &format!("const links = [...document.querySelectorAll('.alert-row a.button')];
                      return links.length === 3 && links.every(a => a.getAttribute('href') === '/dispatch?vehicle={vehicle}');"),
        )
        .await;
        for id in &ids[..2] {
            click(browser, &format!("tr.alert-row[data-alert-id='{id}'] .alert-row__select")).await?;
        }
        wait_for_text(browser, "#acknowledge-selected", "Acknowledge selected (2)").await;
        click(browser, "#acknowledge-selected").await?;
        for id in &ids[..2] {
            wait_until_page(
                browser,
                "the row shows it acknowledged",
                &format!("return document.querySelector(\"tr.alert-row[data-alert-id='{id}']\").dataset.acknowledged === 'true';"),
            )
            .await;
        }
        wait_for_text(browser, "#alerts-unacknowledged", "1").await;

        // The filter for those not yet acknowledged leaves the third.
        select(browser, "#filter-acknowledged", "false").await?;
        wait_until_page(
            browser,
            "only the unacknowledged alert is listed",
            &format!("const rows = [...document.querySelectorAll('tr.alert-row')]; return rows.length === 1 && rows[0].dataset.alertId === '{}';", ids[2]),
        )
        .await;
        Ok(())
    })
    .await;

    let (_, list) = app.get(&jwt, "/api/v1/alerts?acknowledged=true").await;
    let mut acknowledged = alert_ids(&list);
    acknowledged.sort();
    let mut expected = ids[..2].to_vec();
    expected.sort();
    assert_eq!(acknowledged, expected);
}

#[sqlx::test]
async fn a_driver_is_sent_from_every_console_page_to_their_phone_page(db: PgPool) {
    let app = TestApp::spawn(db).await;
    app.user("Acme", "anna@acme.test", Role::Driver).await;

    in_browser(&app, async |browser| {
        sign_in_to(browser, &app, "anna@acme.test", "/driver").await?;
        for path in [
            "/dispatch",
            "/vehicles",
            "/people",
            "/shipments/new",
            "/geofences",
            "/alerts",
            "/reports",
            "/settings",
            "/history",
        ] {
            browser.goto(&app.url(path)).await?;
            browser
                .wait()
                .at_most(PATIENCE)
                .for_url(url_of(&app, "/driver"))
                .await?;
            let nav = browser.find_all(Locator::Css(".console-nav")).await?;
            assert!(nav.is_empty(), "{path} shows the driver no console");
        }
        Ok(())
    })
    .await;
}
