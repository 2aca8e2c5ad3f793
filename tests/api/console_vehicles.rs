//! The Vehicles page in headless Chromium: a vehicle added on the page posts with the token the
//! page shows (natively, and with the OsmAnd and OwnTracks settings it gives), and its position
//! appears there; one is renamed, given its own speed limit, and its token rotated and revoked;
//! retiring one on the page refuses its ingest and keeps its history, and a vehicle carrying a
//! shipment is not retired, with the API's reason; vehicles added or renamed elsewhere reach
//! the open list live.
use chrono::{Duration, Utc};
use fantoccini::Client;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::browser::{wait_for_text, wait_live, wait_until_page};
use crate::page::{
    click, confirm, dispatcher, fill, in_browser, open, select, text, wait_for_element, Step,
};
use crate::support::TestApp;

/// Opens the Vehicles page signed in as `email` and waits for its list and live connection.
async fn open_vehicles(browser: &Client, app: &TestApp, email: &str) -> Step {
    open(
        browser,
        app,
        email,
        "/vehicles",
        "#vehicles-table[data-ready='true']",
    )
    .await?;
    wait_live(browser).await
}

/// Opens the vehicle's management row and retires it, confirming when asked.
async fn retire(browser: &Client, vehicle: i64) -> Step {
    click(
        browser,
        &format!("tr.vehicle-row[data-vehicle-id='{vehicle}'] .table__actions .button"),
    )
    .await?;
    click(
        browser,
        &format!("tr.vehicle-detail[data-vehicle-id='{vehicle}'] [data-action='service']"),
    )
    .await?;
    confirm(browser).await
}

#[sqlx::test]
async fn a_vehicle_added_on_the_page_posts_with_the_token_it_shows_and_appears_there(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;

    let (token, setups) = in_browser(&app, async |browser| {
        open_vehicles(browser, &app, "dispatch@acme.test").await?;
        fill(browser, "#new-vehicle-name", "Van 7").await?;
        select(browser, "#new-vehicle-tracker", "osmand").await?;
        click(browser, "#add-vehicle-button").await?;
        wait_for_element(browser, "#token-panel:not([hidden]) #token-value").await?;
        let token = text(browser, "#token-value").await?;
        // What each app is told, and what its QR code holds.
        let setups = browser
            .execute(
                "return Object.fromEntries([...document.querySelectorAll('.token__app')].map(a => [a.dataset.app,
                   {text: a.querySelector('textarea').value, qr: a.querySelector('svg') ? a.querySelector('svg').dataset.qr : null,
                    modules: a.querySelectorAll('svg path').length}]));",
                vec![],
            )
            .await?;

        let fix = json!({"lat": 48.1374, "lon": 11.5755, "recorded_at": (Utc::now() - Duration::seconds(5)).to_rfc3339()});
        let (status, reply) = app.ingest(&token, fix).await;
        assert_eq!(status, 200, "the token the page showed posts: {reply}");
        assert_eq!(reply["accepted"], 1, "{reply}");
        wait_for_text(browser, "tr.vehicle-row .vehicle-row__where", "48.13740, 11.57550").await;
        wait_until_page(
            browser,
            "the row names the vehicle and its position's time",
            "const r = document.querySelector('tr.vehicle-row'); return r.querySelector('.vehicle-row__name').textContent === 'Van 7'
               && !!r.querySelector('.vehicle-row__last').dataset.recordedAt;",
        )
        .await;
        Ok((token, setups))
    })
    .await;
    let origin = app.url("");
    // Chosen as the OsmAnd app's vehicle: its speeds are read as m/s.
    let (_, vehicles) = app.get(&jwt, "/api/v1/vehicles").await;
    assert_eq!(vehicles[0]["speed_unit"], "mps", "{vehicles}");
    let osmand = setups["osmand"]["text"].as_str().unwrap();
    assert!(
        osmand.starts_with(&format!(
            "{origin}/api/v1/osmand?deviceid={token}&lat={{0}}&lon={{1}}&timestamp={{2}}"
        )),
        "{osmand}"
    );
    assert_eq!(
        setups["osmand"]["qr"].as_str(),
        Some(osmand),
        "OsmAnd's QR holds the address to paste"
    );
    let traccar = setups["traccar"]["qr"].as_str().unwrap();
    let server = url::form_urlencoded::byte_serialize(format!("{origin}/api/v1/osmand").as_bytes())
        .collect::<String>();
    assert_eq!(
        traccar,
        format!("org.traccar.client://config?url={server}&id={token}")
    );
    let owntracks = setups["owntracks"]["qr"].as_str().unwrap();
    let inline = owntracks
        .strip_prefix("owntracks:///config?inline=")
        .expect(owntracks);
    let inline: String = url::form_urlencoded::parse(format!("v={inline}").as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    use base64::Engine;
    let config: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(inline)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(config["_type"], "configuration");
    assert_eq!(config["mode"], 3, "HTTP mode");
    assert_eq!(config["url"], format!("{origin}/api/v1/owntracks"));
    assert_eq!(config["password"], token.as_str());
    for app_name in ["osmand", "traccar", "owntracks"] {
        assert_eq!(
            setups[app_name]["modules"], 1,
            "{app_name} has a drawn QR code"
        );
    }
    assert!(setups["api"]["text"]
        .as_str()
        .unwrap()
        .contains(&format!("Authorization: Bearer {token}")));

    // The settings work as given: OsmAnd's address with its placeholders filled in as the app
    // fills them (epoch ms, accuracy in metres, speed in m/s), and OwnTracks' configuration.
    let now = Utc::now();
    let filled = [
        ("{0}", "48.1380"),
        ("{1}", "11.5760"),
        ("{2}", &now.timestamp_millis().to_string()),
        ("{3}", "7.5"),
        ("{4}", "520"),
        ("{5}", "10"),
        ("{6}", "90"),
    ]
    .iter()
    .fold(osmand.to_owned(), |url, (from, to)| url.replace(from, to));
    let res = app.http.get(filled).send().await.unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let res = app
        .http
        .post(config["url"].as_str().unwrap())
        .basic_auth(
            config["username"].as_str().unwrap(),
            config["password"].as_str(),
        )
        .json(&json!({"_type": "location", "lat": 48.1390, "lon": 11.5770, "tst": now.timestamp() + 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "OwnTracks as configured posts");
    let vehicle = vehicles[0]["id"].as_i64().unwrap();
    let (_, log) = app
        .get(&jwt, &format!("/api/v1/vehicles/{vehicle}/positions"))
        .await;
    let rows = log["positions"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{log}");
    let from_osmand = rows
        .iter()
        .find(|p| p["lat"] == 48.138)
        .expect("OsmAnd's fix");
    assert_eq!(from_osmand["accuracy"], 7.5, "{from_osmand}");
    assert_eq!(
        from_osmand["speed"], 10.0,
        "m/s, as the OsmAnd app sends: {from_osmand}"
    );
    assert!(from_osmand["filter_reason"].is_null(), "{from_osmand}");
}

#[sqlx::test]
async fn a_vehicle_retired_on_the_page_is_refused_ingest_and_keeps_its_history(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (vehicle, token) = app.vehicle(&jwt, "Old van").await;
    let (busy_vehicle, _) = app.vehicle(&jwt, "Busy van").await;
    app.shipment(&jwt, "SHP-42", busy_vehicle, None).await;
    let at = Utc::now() - Duration::minutes(1);
    let (status, _) = app
        .ingest(
            &token,
            json!({"lat": 48.1374, "lon": 11.5755, "recorded_at": at.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, 200);

    in_browser(&app, async |browser| {
        open_vehicles(browser, &app, "dispatch@acme.test").await?;
        // The vehicle with a shipment: the API's refusal is shown where the button is.
        let busy_row = format!("tr.vehicle-row[data-vehicle-id='{busy_vehicle}']");
        let busy_manage = format!("tr.vehicle-detail[data-vehicle-id='{busy_vehicle}']");
        retire(browser, busy_vehicle).await?;
        wait_until_page(
            browser,
            "the refusal names the shipment",
            &format!("const e = document.querySelector(\"{busy_manage} [data-group='service'] .form-error\"); return !!e && !e.hidden && e.textContent.includes('SHP-42');"),
        )
        .await;
        wait_for_text(browser, &format!("{busy_row} .vehicle-row__status"), "In service").await;

        let row = format!("tr.vehicle-row[data-vehicle-id='{vehicle}']");
        let manage = format!("tr.vehicle-detail[data-vehicle-id='{vehicle}']");
        retire(browser, vehicle).await?;
        wait_for_text(browser, &format!("{row} .vehicle-row__status"), "Retired").await;
        wait_for_text(browser, &format!("{manage} [data-action='service']"), "Reinstate").await;

        // Changes made elsewhere (another dispatcher, the API) reach the open list.
        let (status, _) = app
            .patch(&jwt, &format!("/api/v1/vehicles/{busy_vehicle}"), json!({"name": "Busy van 2"}))
            .await;
        assert_eq!(status, 200);
        wait_for_text(browser, &format!("{busy_row} .vehicle-row__name"), "Busy van 2").await;
        let (added, _) = app.vehicle(&jwt, "New van").await;
        wait_for_text(
            browser,
            &format!("tr.vehicle-row[data-vehicle-id='{added}'] .vehicle-row__name"),
            "New van",
        )
        .await;

        // The list of retired vehicles holds it; the default list does not.
        select(browser, "#status-filter", "retired").await?;
        wait_until_page(
            browser,
            "only the retired vehicle is listed",
            &format!("const rows = [...document.querySelectorAll('tr.vehicle-row')]; return rows.length === 1 && rows[0].dataset.vehicleId === '{vehicle}';"),
        )
        .await;
        Ok(())
    })
    .await;

    let (_, busy) = app
        .get(&jwt, &format!("/api/v1/vehicles/{busy_vehicle}"))
        .await;
    assert_eq!(busy["status"], "active", "{busy}");
    let (status, reply) = app
        .ingest(&token, json!({"lat": 48.1375, "lon": 11.5756}))
        .await;
    assert_eq!(status, 410, "{reply}");
    assert_eq!(reply["error"]["code"], "vehicle_retired");
    let (status, log) = app
        .get(&jwt, &format!("/api/v1/vehicles/{vehicle}/positions"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        log["positions"].as_array().map(Vec::len),
        Some(1),
        "its history stays: {log}"
    );
    let (_, listed) = app.get(&jwt, "/api/v1/vehicles").await;
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["id"] != vehicle),
        "{listed}"
    );
}

#[sqlx::test]
async fn a_vehicle_managed_on_the_page_is_renamed_rotated_revoked_and_given_its_own_limit(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let (_, admin) = app.user("Acme", "admin@acme.test", Role::Admin).await;
    let (vehicle, old_token) = app.vehicle(&admin, "Van 1").await;

    in_browser(&app, async |browser| {
        open_vehicles(browser, &app, "admin@acme.test").await?;
        let row = format!("tr.vehicle-row[data-vehicle-id='{vehicle}']");
        let manage = format!("tr.vehicle-detail[data-vehicle-id='{vehicle}']");
        click(browser, &format!("{row} .table__actions .button")).await?;

        // Name and speed unit, in one save.
        fill(browser, &format!("#vehicle-{vehicle}-name"), "Van 1 (OsmAnd)").await?;
        select(browser, &format!("#vehicle-{vehicle}-unit"), "mps").await?;
        click(browser, &format!("{manage} form[data-form='details'] button[type='submit']")).await?;
        wait_for_text(browser, &format!("{row} .vehicle-row__name"), "Van 1 (OsmAnd)").await;
        wait_for_text(browser, &format!("{row} .vehicle-row__unit"), "m/s").await;

        // Its own speed limit, beside the organisation's.
        wait_for_element(browser, &format!("#vehicle-{vehicle}-alerts-speed_limit_mps-own"))
            .await?
            .click()
            .await?;
        fill(browser, &format!("#vehicle-{vehicle}-alerts-speed_limit_mps"), "15").await?;
        click(browser, &format!("{manage} form[data-form='alerts'] button[type='submit']")).await?;
        wait_for_text(browser, &format!("{manage} form[data-form='alerts'] [role='status']"), "Saved.").await;

        // Rotating shows the new token once, for the OsmAnd app first.
        click(browser, &format!("{manage} [data-action='rotate']")).await?;
        confirm(browser).await?;
        wait_until_page(
            browser,
            "a new token is shown",
            &format!(
                "const t = document.getElementById('token-value');
                 return !!t && t.value.length > 20 && t.value !== '{old_token}'
                   && document.querySelector('.token__app').dataset.app === 'osmand';"
            ),
        )
        .await;
        let new_token = text(browser, "#token-value").await?;

        let fix = || json!({"lat": 48.1374, "lon": 11.5755});
        let (status, _) = app.ingest(&old_token, fix()).await;
        assert_eq!(status, 401, "the rotated token stops working");
        let (status, _) = app.ingest(&new_token, fix()).await;
        assert_eq!(status, 200, "the token the page showed works");
        let (_, v) = app.get(&admin, &format!("/api/v1/vehicles/{vehicle}")).await;
        assert_eq!(
            (v["name"].as_str(), v["speed_unit"].as_str()),
            (Some("Van 1 (OsmAnd)"), Some("mps")),
            "{v}"
        );
        let (_, own) = app.get(&admin, &format!("/api/v1/vehicles/{vehicle}/alert-settings")).await;
        let overrides = own["overrides"].as_object().unwrap();
        assert_eq!(overrides.len(), 1, "only the key ticked: {own}");
        assert_eq!(overrides["speed_limit_mps"].as_f64(), Some(15.0), "{own}");

        // Revoking locks the device out.
        click(browser, "#token-done").await?;
        click(browser, &format!("{manage} [data-action='revoke']")).await?;
        confirm(browser).await?;
        wait_until_page(
            browser,
            "the page says the token is revoked",
            &format!("const e = document.querySelector(\"{manage} .manage__done\"); return !!e && !e.hidden;"),
        )
        .await;
        let (status, _) = app.ingest(&new_token, fix()).await;
        assert_eq!(status, 401, "a revoked token is refused");
        Ok(())
    })
    .await;
}
