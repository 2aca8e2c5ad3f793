//! The fleet page (`/dispatch`) in headless Chromium against a real server: vehicles posted
//! through the API appear in the list and on the map (read from what the map says it drew, on
//! `#map`'s data attributes), search and the status filters narrow the list, close vehicles
//! cluster when zoomed out, the deep link selects a vehicle, and follow keeps it centred.
use chrono::{Duration, Utc};
use fantoccini::{key::Key, Client};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::browser::{sign_in_to, url_of, wait_for_text, wait_live, wait_until_page};
use crate::page::{click, dispatcher, fill, in_browser, keys, open_fleet_page, wait_equal};
use crate::support::TestApp;

/// A position `secs` seconds ago at `lat, lon`.
fn fix(lat: f64, lon: f64, secs: i64, speed: f64) -> Value {
    json!({
        "lat": lat, "lon": lon, "speed": speed, "heading": 90.0,
        "recorded_at": (Utc::now() - Duration::seconds(secs)).to_rfc3339(),
    })
}

/// The names the vehicle list shows, in order.
async fn listed(browser: &Client) -> Vec<String> {
    let names = browser
        .execute(
            "return [...document.querySelectorAll('#vehicle-list [data-vehicle-id]')]
               .sort((a, b) => a.getBoundingClientRect().top - b.getBoundingClientRect().top)
               .map((r) => r.querySelector('.vehicle__name').textContent);",
            vec![],
        )
        .await
        .expect("the page answers");
    serde_json::from_value(names).unwrap()
}

async fn wait_listed(browser: &Client, expected: &[&str]) {
    let what = format!("the list shows {expected:?}");
    wait_equal(&what, expected, async || listed(browser).await).await
}

/// One of `#map`'s data attributes, as the map last drew.
async fn drawn(browser: &Client, key: &str) -> String {
    let script = format!("return document.getElementById('map').dataset.{key} || '';");
    let value = browser
        .execute(&script, vec![])
        .await
        .expect("the page answers");
    value.as_str().unwrap_or_default().to_owned()
}

async fn wait_drawn(browser: &Client, key: &str, expected: &str) {
    let what = format!("the map's {key} is {expected:?}");
    wait_equal(&what, expected, async || drawn(browser, key).await).await
}

/// Waits until the map draws the selected vehicle in its middle (within a pixel or two).
async fn wait_selected_centred(browser: &Client) {
    wait_until_page(
        browser,
        "the selected vehicle is drawn in the middle of the map",
        "const m = document.getElementById('map');
         if (m.dataset.selectedX === undefined || m.dataset.selectedX === '') return false;
         const dx = Number(m.dataset.selectedX) - m.clientWidth / 2;
         const dy = Number(m.dataset.selectedY) - m.clientHeight / 2;
         return Math.abs(dx) <= 2 && Math.abs(dy) <= 2;",
    )
    .await
}

#[sqlx::test]
async fn a_posted_vehicle_appears_in_the_list_and_on_the_map_and_leaves_when_retired(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (first, token) = app.vehicle(&jwt, "Van 1").await;
    app.ingest(&token, fix(48.137, 11.575, 5, 8.0)).await;

    in_browser(&app, async |browser| {
        open_fleet_page(browser, &app).await?;
        wait_listed(browser, &["Van 1"]).await;
        wait_for_text(browser, "#vehicle-count", "1").await;
        wait_drawn(browser, "drawnVehicles", "1").await;

        // A vehicle created after the page loaded arrives as a `vehicle` event, named, before
        // its first position.
        let (second, token) = app.vehicle(&jwt, "Van 2").await;
        wait_listed(browser, &["Van 1", "Van 2"]).await;
        wait_for_text(browser, "#vehicle-count", "2").await;
        let (status, _) = app.ingest(&token, fix(48.139, 11.577, 0, 8.0)).await;
        assert_eq!(status, 200);
        wait_drawn(browser, "drawnVehicles", "2").await;

        // Renamed and retired through the API: the open page follows at once (its own re-read of
        // the vehicles list is minutes away).
        let (status, _) = app
            .patch(&jwt, &format!("/api/v1/vehicles/{second}"), json!({"name": "Van 2b"}))
            .await;
        assert_eq!(status, 200);
        let (status, _) = app
            .patch(&jwt, &format!("/api/v1/vehicles/{first}"), json!({"status": "retired"}))
            .await;
        assert_eq!(status, 200);
        wait_listed(browser, &["Van 2b"]).await;
        wait_for_text(browser, "#vehicle-count", "1").await;
        wait_drawn(browser, "drawnVehicles", "1").await;

        // Selecting one highlights it on the map.
        click(browser, &format!("#vehicle-list [data-vehicle-id='{second}']")).await?;
        wait_drawn(browser, "selectedVehicle", &second.to_string()).await;
        wait_until_page(
            browser,
            "only the clicked row is selected",
            &format!(
                "return document.querySelector(\"[data-vehicle-id='{second}']\").getAttribute('aria-selected') === 'true'
                   && document.querySelectorAll(\"#vehicle-list [aria-selected='true']\").length === 1;"
            ),
        )
        .await;
        Ok(())
    })
    .await;
}

#[sqlx::test]
async fn search_and_the_status_filters_narrow_the_vehicle_list(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (_, moving) = app.vehicle(&jwt, "Moving van").await;
    app.ingest(&moving, fix(48.137, 11.575, 5, 12.0)).await;
    let (stopped_id, stopped) = app.vehicle(&jwt, "Parked truck").await;
    app.ingest(&stopped, fix(48.140, 11.580, 5, 0.0)).await;
    app.shipment(&jwt, "SHP-4242", stopped_id, None).await;
    let (_, silent) = app.vehicle(&jwt, "Quiet van").await;
    app.ingest(&silent, fix(48.130, 11.560, 600, 0.0)).await;
    app.vehicle(&jwt, "New van").await;

    in_browser(&app, async |browser| {
        open_fleet_page(browser, &app).await?;
        wait_listed(
            browser,
            &["Moving van", "New van", "Parked truck", "Quiet van"],
        )
        .await;
        for (key, n) in [
            ("all", "4"),
            ("moving", "1"),
            ("stopped", "1"),
            ("silent", "1"),
            ("none", "1"),
            ("shipment", "1"),
        ] {
            wait_for_text(browser, &format!("[data-count='{key}']"), n).await;
        }

        // Text search: by name, then by shipment reference.
        fill(browser, "#vehicle-search", "van").await?;
        wait_listed(browser, &["Moving van", "New van", "Quiet van"]).await;
        wait_for_text(browser, "[data-count='stopped']", "0").await;
        fill(browser, "#vehicle-search", "shp-42").await?;
        wait_listed(browser, &["Parked truck"]).await;
        fill(browser, "#vehicle-search", "").await?;
        wait_listed(
            browser,
            &["Moving van", "New van", "Parked truck", "Quiet van"],
        )
        .await;

        // Status.
        for (status, expected) in [
            ("moving", "Moving van"),
            ("stopped", "Parked truck"),
            ("silent", "Quiet van"),
            ("none", "New van"),
        ] {
            click(browser, &format!("label.chip[data-activity='{status}']")).await?;
            wait_listed(browser, &[expected]).await;
        }
        click(browser, "label.chip:has(input[value='all'])").await?;
        click(browser, "label.fleet-filter__shipment").await?;
        wait_listed(browser, &["Parked truck"]).await;
        wait_for_text(browser, "#vehicle-shown", "1 of 4 shown").await;
        click(browser, "label.fleet-filter__shipment").await?;
        wait_listed(
            browser,
            &["Moving van", "New van", "Parked truck", "Quiet van"],
        )
        .await;

        // The list works from the keyboard: arrows move the selection.
        keys(browser, "#vehicle-list", &Key::Down.to_string()).await?;
        keys(browser, "#vehicle-list", &Key::Down.to_string()).await?;
        wait_until_page(
            browser,
            "the second row is selected from the keyboard",
            "const l = document.getElementById('vehicle-list');
             const row = document.getElementById(l.getAttribute('aria-activedescendant'));
             return !!row && row.getAttribute('aria-selected') === 'true'
               && row.querySelector('.vehicle__name').textContent === 'New van';",
        )
        .await;
        Ok(())
    })
    .await;
}

#[sqlx::test]
async fn close_vehicles_cluster_when_zoomed_out_and_zooming_in_shows_each(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    // 30 vans 60 m apart, six by five, around one depot.
    for i in 0..30 {
        let (_, token) = app.vehicle(&jwt, &format!("Van {i:02}")).await;
        let (row, column) = ((i / 6) as f64 - 2.0, (i % 6) as f64 - 2.5);
        let (status, _) = app
            .ingest(
                &token,
                fix(48.137 + row * 0.00054, 11.575 + column * 0.0008, 5, 0.0),
            )
            .await;
        assert_eq!(status, 200);
    }

    in_browser(&app, async |browser| {
        open_fleet_page(browser, &app).await?;
        wait_for_text(browser, "#vehicle-count", "30").await;
        // Fitted to the fleet, close in: every van on its own.
        wait_drawn(browser, "drawnVehicles", "30").await;
        assert_eq!(drawn(browser, "drawnClusters").await, "0");
        let zoom: i64 = drawn(browser, "zoom").await.parse().unwrap();

        // Zoomed out, the depot is one cluster.
        for z in (zoom - 4..zoom).rev() {
            click(browser, ".leaflet-control-zoom-out").await?;
            wait_drawn(browser, "zoom", &z.to_string()).await;
        }
        wait_drawn(browser, "drawnClusters", "1").await;
        wait_drawn(browser, "drawnVehicles", "0").await;

        // Clicking the cluster (in the middle of the map, where the fleet is) zooms into it...
        click(browser, "#map").await?;
        wait_until_page(
            browser,
            "the map zooms into the cluster",
            &format!(
                "return Number(document.getElementById('map').dataset.zoom) > {};",
                zoom - 4
            ),
        )
        .await;
        // ...and further in, every van is drawn on its own again.
        while drawn(browser, "zoom").await.parse::<i64>().unwrap() < zoom {
            let z: i64 = drawn(browser, "zoom").await.parse().unwrap();
            click(browser, ".leaflet-control-zoom-in").await?;
            wait_drawn(browser, "zoom", &(z + 1).to_string()).await;
        }
        wait_drawn(browser, "drawnVehicles", "30").await;
        wait_drawn(browser, "drawnClusters", "0").await;
        Ok(())
    })
    .await;
}

#[sqlx::test]
async fn the_deep_link_selects_the_vehicle_and_pans_to_it(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (_, munich) = app.vehicle(&jwt, "Munich van").await;
    app.ingest(&munich, fix(48.137, 11.575, 5, 0.0)).await;
    let (hamburg_id, hamburg) = app.vehicle(&jwt, "Hamburg van").await;
    app.ingest(&hamburg, fix(53.551, 9.993, 5, 0.0)).await;

    in_browser(&app, async |browser| {
        sign_in_to(browser, &app, "dispatch@acme.test", "/dispatch").await?;
        browser
            .goto(url_of(&app, &format!("/dispatch?vehicle={hamburg_id}")).as_str())
            .await?;
        wait_live(browser).await?;
        wait_drawn(browser, "selectedVehicle", &hamburg_id.to_string()).await;
        wait_selected_centred(browser).await;
        wait_until_page(
            browser,
            "its row is selected",
            &format!(
                "const r = document.querySelector(\"#vehicle-list [data-vehicle-id='{hamburg_id}']\");
                 return !!r && r.getAttribute('aria-selected') === 'true';"
            ),
        )
        .await;
        wait_for_text(browser, "#follow", "Follow Hamburg van").await;
        Ok(())
    })
    .await;
}

#[sqlx::test]
async fn follow_keeps_the_selected_vehicle_centred_as_it_moves(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (van, token) = app.vehicle(&jwt, "Van 1").await;
    app.ingest(&token, fix(48.137, 11.575, 10, 0.0)).await;
    let (_, other) = app.vehicle(&jwt, "Van 2").await;
    app.ingest(&other, fix(48.150, 11.600, 10, 0.0)).await;

    in_browser(&app, async |browser| {
        open_fleet_page(browser, &app).await?;
        click(browser, &format!("#vehicle-list [data-vehicle-id='{van}']")).await?;
        wait_drawn(browser, "selectedVehicle", &van.to_string()).await;
        click(browser, "#follow").await?;
        wait_until_page(
            browser,
            "follow is on",
            "return document.getElementById('follow').getAttribute('aria-pressed') === 'true';",
        )
        .await;
        wait_selected_centred(browser).await;

        // 400 m east, at 36 km/h: the map moves with it.
        let (status, _) = app.ingest(&token, fix(48.137, 11.5804, 0, 10.0)).await;
        assert_eq!(status, 200);
        wait_for_text(
            browser,
            &format!("#vehicle-list [data-vehicle-id='{van}'] .vehicle__speed"),
            "36 km/h",
        )
        .await;
        wait_selected_centred(browser).await;
        Ok(())
    })
    .await;
}
