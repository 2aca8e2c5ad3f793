//! Planning and managing shipments in headless Chromium: a shipment planned on the map with a
//! drawn route is stored with that route, and its customer link, made on its page, opens in
//! another browser; revoking the link on the page ends it there.
use fantoccini::Client;
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::browser::{sign_in_to, wait_for_text, wait_live, wait_until_page, TempDir};
use crate::console_geofences::click_map;
use crate::page::{
    assert_same_positions, click, confirm, dispatcher, fill, in_browser, in_browsers, keys,
    lines_to_positions, open, positions, select_label, text, wait_for_element, Step, LIVE, READY,
};
use crate::support::TestApp;

/// Makes a customer link on the shipment page the browser shows; returns its URL.
async fn share_from_page(browser: &Client) -> Step<String> {
    wait_for_element(browser, "#share-section:not([hidden]) #share-button")
        .await?
        .click()
        .await?;
    wait_until_page(
        browser,
        "the share link shows",
        "return document.getElementById('share-url').value.includes('/t/');",
    )
    .await;
    text(browser, "#share-url").await
}

#[sqlx::test]
async fn a_shipment_planned_on_the_map_is_stored_with_its_drawn_route_and_its_link_opens_elsewhere(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (driver_id, _) = app.user("Acme", "anna@acme.test", Role::Driver).await;
    let (vehicle, _) = app.vehicle(&jwt, "Van 1").await;

    in_browsers(&app, async |[desk, customer]: &[Client; 2]| {
        open(desk, &app, "dispatch@acme.test", "/shipments/new", READY).await?;

        fill(desk, "#plan-reference", "PLAN-1").await?;
        // The origin typed, the destination clicked on the map.
        fill(desk, "#plan-origin-coords", "48.13715, 11.57612").await?;
        fill(desk, "#plan-origin-name", "Depot").await?;
        wait_until_page(desk, "the origin is pinned", "return !!document.querySelector('#map .wm-place--origin');").await;
        click(desk, "#plan-destination-pick").await?;
        click_map(desk, 220, 140).await?;
        wait_until_page(
            desk,
            "the destination is pinned and its coordinates written",
            "return !!document.querySelector('#map .wm-place--destination') \
               && document.getElementById('plan-destination-coords').value !== '';",
        )
        .await;
        let destination = lines_to_positions(&text(desk, "#plan-destination-coords").await?)[0];
        assert!(destination.0 > 11.57612 && destination.1 < 48.13715, "right of and below the origin: {destination:?}");

        // The route, point by point with the mouse.
        click(desk, "#route-draw").await?;
        for (dx, dy) in [(-60, -40), (80, -90), (180, 60)] {
            click_map(desk, dx, dy).await?;
        }
        click(desk, "#route-finish").await?;
        wait_for_text(desk, "#route-points", "3").await;
        let drawn = lines_to_positions(&text(desk, "#route-text").await?);
        assert_eq!(drawn.len(), 3);

        select_label(desk, "#plan-vehicle", "Van 1").await?;
        select_label(desk, "#plan-driver", "anna@acme.test").await?;
        // Half past ten on 2 January 2030 on this browser's clock.
        let due = desk
            .execute(
                "document.getElementById('plan-due').value = '2030-01-02T10:30'; \
                 return new Date('2030-01-02T10:30').toISOString();",
                vec![],
            )
            .await?;
        click(desk, "#plan-submit").await?;
        wait_until_page(desk, "the shipment's page opens", "return /^\\/shipments\\/\\d+$/.test(location.pathname);").await;
        wait_live(desk).await?;
        wait_for_text(desk, "#reference", "PLAN-1").await;

        // Stored as planned.
        let (_, list) = app.get(&jwt, "/api/v1/shipments").await;
        let s = list
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["reference"] == "PLAN-1")
            .cloned()
            .expect("the shipment is stored");
        assert_eq!(desk.current_url().await?.path(), format!("/shipments/{}", s["id"]));
        assert_eq!(s["origin"], json!({"lat": 48.13715, "lon": 11.57612, "name": "Depot"}));
        assert_eq!(s["destination"]["name"], Value::Null);
        assert!((s["destination"]["lon"].as_f64().unwrap() - destination.0).abs() < 1e-6, "{s}");
        assert!((s["destination"]["lat"].as_f64().unwrap() - destination.1).abs() < 1e-6, "{s}");
        assert_eq!(s["planned_route"]["type"], "LineString");
        let route = positions(&s["planned_route"]["coordinates"]);
        assert_eq!(route.len(), drawn.len(), "{route:?} vs {drawn:?}");
        assert_same_positions(&route, &drawn);
        assert_eq!(s["vehicle_id"], vehicle);
        assert_eq!(s["driver_id"], driver_id);
        let stored_due = chrono::DateTime::parse_from_rfc3339(s["due_at"].as_str().unwrap()).unwrap();
        let asked_due = chrono::DateTime::parse_from_rfc3339(due.as_str().unwrap()).unwrap();
        assert_eq!(stored_due, asked_due, "the browser's local time, sent with its offset");

        // Its customer link, made on its page, opens in another browser.
        let url = share_from_page(desk).await?;
        customer.goto(&url).await?;
        wait_for_text(customer, "#reference", "PLAN-1").await;
        wait_live(customer).await?;
        let hidden = customer
            .execute("return document.getElementById('manage-section').hidden && document.getElementById('share-section').hidden;", vec![])
            .await?;
        assert_eq!(hidden, json!(true), "a customer sees no management");
        Ok(())
    })
    .await;
}

#[sqlx::test]
async fn a_refused_plan_shows_the_reason_at_its_field_and_keeps_what_was_typed(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (vehicle, _) = app.vehicle(&jwt, "Van 1").await;
    app.shipment(&jwt, "SHP-1", vehicle, None).await;

    in_browser(&app, async |browser| {
        open(browser, &app, "dispatch@acme.test", "/shipments/new", READY).await?;
        fill(browser, "#plan-reference", "SHP-1").await?;
        fill(browser, "#plan-origin-coords", "48.1, 11.5").await?;
        fill(browser, "#plan-destination-coords", "48.2, 11.6").await?;
        fill(browser, "#route-text", "48.1, 11.5\n95, 11.6").await?;
        click(browser, "#plan-submit").await?;
        // A route the page cannot read is refused before it is sent.
        wait_for_text(
            browser,
            "[data-field='planned_route'] .field-error",
            "line 2: latitude must be -90..90 and longitude -180..180",
        )
        .await;

        fill(browser, "#route-text", "48.1, 11.5\n48.2, 11.6").await?;
        click(browser, "#plan-submit").await?;
        // The API's refusal (a taken reference: a conflict) next to the field it is about.
        wait_for_text(
            browser,
            "[data-field='reference'] .field-error",
            "a shipment with this reference exists",
        )
        .await;
        assert_eq!(text(browser, "#plan-reference").await?, "SHP-1");
        assert_eq!(
            text(browser, "#plan-destination-coords").await?,
            "48.2, 11.6"
        );
        assert_eq!(
            text(browser, "#route-text").await?,
            "48.1, 11.5\n48.2, 11.6"
        );
        assert_eq!(browser.current_url().await?.path(), "/shipments/new");
        Ok(())
    })
    .await;
}

#[sqlx::test]
async fn revoking_a_share_link_on_the_shipment_page_ends_it_for_the_customer(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (vehicle, _) = app.vehicle(&jwt, "Van 1").await;
    let shipment = app.shipment(&jwt, "SHP-1", vehicle, None).await;

    in_browsers(&app, async |[desk, customer]: &[Client; 2]| {
        open(
            desk,
            &app,
            "dispatch@acme.test",
            &format!("/shipments/{shipment}"),
            LIVE,
        )
        .await?;
        let url = share_from_page(desk).await?;
        customer.goto(&url).await?;
        wait_for_text(customer, "#reference", "SHP-1").await;
        wait_live(customer).await?;

        // The page lists the link, and revokes it after asking.
        wait_for_element(desk, ".share-link[data-state='active'] .share-link__revoke")
            .await?
            .click()
            .await?;
        confirm(desk).await?;
        wait_for_element(desk, ".share-link[data-state='revoked']").await?;
        wait_for_text(desk, "#share-count", "0").await;

        // The customer's open page loses access at once.
        wait_for_element(customer, "body.is-expired").await?;
        let token = url.rsplit('/').next().unwrap();
        let page = app
            .http
            .get(app.url(&format!("/t/{token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(page.status(), 404, "the link's page is gone");
        let api = app
            .http
            .get(app.url(&format!("/api/v1/shipments/{shipment}?share={token}")))
            .send()
            .await
            .unwrap();
        assert_eq!(api.status(), 401, "the API no longer takes the link");
        Ok(())
    })
    .await;
}

#[sqlx::test]
async fn a_dispatcher_reassigns_and_cancels_a_shipment_on_its_page_and_its_driver_sees_no_controls(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (anna, _) = app.user("Acme", "anna@acme.test", Role::Driver).await;
    let (ben, _) = app.user("Acme", "ben@acme.test", Role::Driver).await;
    let (van1, _) = app.vehicle(&jwt, "Van 1").await;
    let (van2, _) = app.vehicle(&jwt, "Van 2").await;
    let shipment = app.shipment(&jwt, "SHP-1", van1, Some(anna)).await;
    let stored = async || {
        app.get(&jwt, &format!("/api/v1/shipments/{shipment}"))
            .await
            .1
    };

    in_browsers(&app, async |[desk, phone]: &[Client; 2]| {
        open(desk, &app, "dispatch@acme.test", &format!("/shipments/{shipment}"), LIVE).await?;
        wait_until_page(
            desk,
            "the assignment shows",
            &format!(
                "return !document.getElementById('manage-section').hidden \
                   && document.getElementById('assign-vehicle').value === '{van1}' \
                   && document.getElementById('assign-driver').value === '{anna}';"
            ),
        )
        .await;
        select_label(desk, "#assign-vehicle", "Van 2").await?;
        select_label(desk, "#assign-driver", "ben@acme.test").await?;
        click(desk, "#assign-save").await?;
        wait_for_text(desk, "#manage-notice", "Reassigned.").await;
        let s = stored().await;
        assert_eq!((s["vehicle_id"].as_i64(), s["driver_id"].as_i64()), (Some(van2), Some(ben)), "{s}");

        // Its driver opens the same page: no management there.
        sign_in_to(phone, &app, "ben@acme.test", "/driver").await?;
        phone.goto(&app.url(&format!("/shipments/{shipment}"))).await?;
        wait_for_text(phone, "#reference", "SHP-1").await;
        wait_for_text(phone, "#back-link", "← Driver").await;
        let hidden = phone
            .execute("return document.getElementById('manage-section').hidden && document.getElementById('share-section').hidden;", vec![])
            .await?;
        assert_eq!(hidden, json!(true), "a driver sees no management");

        // Cancelling asks first; keeping it changes nothing.
        click(desk, "#cancel-shipment").await?;
        wait_for_element(desk, "#confirm-dialog[open] #confirm-cancel")
            .await?
            .click()
            .await?;
        wait_until_page(desk, "the dialog closes", "return !document.getElementById('confirm-dialog').open;").await;
        assert_eq!(stored().await["status"], "planned");
        click(desk, "#cancel-shipment").await?;
        confirm(desk).await?;
        wait_for_text(desk, "#status", "cancelled").await;
        wait_until_page(
            desk,
            "an ended shipment offers no status change",
            "return document.getElementById('manage-status').hidden && !document.getElementById('manage-final').hidden;",
        )
        .await;
        assert_eq!(stored().await["status"], "cancelled");
        Ok(())
    })
    .await;
}

#[sqlx::test]
async fn a_route_is_imported_from_gpx_geojson_or_an_earlier_shipments_track(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    app.shipment(&jwt, "SHP-0", vehicle, None).await;
    // The earlier trip: three fixes about 220 m apart, half a minute apart.
    let now = chrono::Utc::now();
    let fixes = [(48.1000, 11.5000), (48.1020, 11.5000), (48.1040, 11.5000)];
    for (i, (lat, lon)) in fixes.iter().enumerate() {
        let at = now - chrono::Duration::seconds(90 - 30 * i as i64);
        let (status, _) = app
            .ingest(
                &token,
                json!({"lat": lat, "lon": lon, "recorded_at": at.to_rfc3339()}),
            )
            .await;
        assert_eq!(status, 200);
    }
    let dir = TempDir::new("waymark-plan");
    let gpx = dir.0.join("route.gpx");
    std::fs::write(
        &gpx,
        r#"<?xml version="1.0"?><gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
<trk><trkseg><trkpt lat="48.2" lon="11.4"/><trkpt lat="48.21" lon="11.41"/><trkpt lat="48.22" lon="11.42"/><trkpt lat="48.23" lon="11.43"/></trkseg></trk></gpx>"#,
    )
    .unwrap();
    let geojson = dir.0.join("route.geojson");
    std::fs::write(
        &geojson,
        json!({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
               "geometry": {"type": "MultiLineString", "coordinates": [[[11.6, 48.3], [11.61, 48.31]], [[11.62, 48.32]]]}}]})
        .to_string(),
    )
    .unwrap();

    in_browser(&app, async |browser| {
        open(browser, &app, "dispatch@acme.test", "/shipments/new", READY).await?;

        keys(browser, "#route-file", &gpx.to_string_lossy()).await?;
        wait_for_text(browser, "#route-points", "4").await;
        assert_eq!(
            text(browser, "#route-text").await?,
            "48.2, 11.4\n48.21, 11.41\n48.22, 11.42\n48.23, 11.43"
        );

        keys(browser, "#route-file", &geojson.to_string_lossy()).await?;
        wait_for_text(browser, "#route-points", "3").await;
        assert_eq!(
            text(browser, "#route-text").await?,
            "48.3, 11.6\n48.31, 11.61\n48.32, 11.62"
        );

        select_label(browser, "#route-shipment", "SHP-0 (In transit)").await?;
        fill(browser, "#route-simplify", "0").await?;
        click(browser, "#route-from-track").await?;
        // Its fixes, in order, as recorded.
        wait_until_page(
            browser,
            "the earlier shipment's track is the route",
            "const text = document.getElementById('route-text').value; \
             const error = document.querySelector(\"[data-field='planned_route'] .field-error\").textContent; \
             if (error) throw new Error(error); \
             return text === '48.1, 11.5\\n48.102, 11.5\\n48.104, 11.5';",
        )
        .await;
        Ok(())
    })
    .await;
}
