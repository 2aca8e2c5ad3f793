//! The Geofences page in headless Chromium: a polygon drawn with the mouse is saved and a
//! vehicle driven into it raises its enter alert on the page; a self-crossing polygon typed
//! on the keyboard is refused with the API's words on the shape, kept, fixed, moved with the
//! mouse and deleted.
use chrono::{Duration, Utc};
use fantoccini::{
    actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT},
    error::CmdError,
    Client, Locator,
};
use serde_json::{json, Value};
use sqlx::PgPool;
use waymark::auth::Role;

use crate::browser::{
    assert_no_csp_violations, sign_in_to, wait_for_text, wait_live, wait_until_page, Driver,
};
use crate::console_vehicles::confirm;
use crate::support::{wait_for, TestApp, PATIENCE};

/// Clicks the map `dx`, `dy` pixels from its centre, as a mouse does.
pub(crate) async fn click_map(browser: &Client, dx: i64, dy: i64) -> Result<(), CmdError> {
    let map = browser.find(Locator::Css("#map")).await?;
    let mouse = MouseActions::new("mouse".to_owned())
        .then(PointerAction::MoveToElement {
            element: map,
            duration: None,
            x: dx,
            y: dy,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        })
        .then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        });
    browser.perform_actions(mouse).await
}

/// Drags with the mouse from `dx`, `dy` pixels off the map's centre, `by` pixels across, in
/// steps, as a hand does.
async fn drag_map(browser: &Client, (dx, dy): (i64, i64), by: (i64, i64)) -> Result<(), CmdError> {
    let map = browser.find(Locator::Css("#map")).await?;
    let mut mouse = MouseActions::new("mouse".to_owned())
        .then(PointerAction::MoveToElement {
            element: map,
            duration: None,
            x: dx,
            y: dy,
        })
        .then(PointerAction::Down {
            button: MOUSE_BUTTON_LEFT,
        });
    for _ in 0..4 {
        mouse = mouse.then(PointerAction::MoveBy {
            duration: Some(std::time::Duration::from_millis(50)),
            x: by.0 / 4,
            y: by.1 / 4,
        });
    }
    browser
        .perform_actions(mouse.then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        }))
        .await
}

/// Waits until a console editor page has read what it needs from the API.
pub(crate) async fn wait_ready(browser: &Client) -> Result<(), CmdError> {
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css("body[data-ready='true']"))
        .await?;
    Ok(())
}

/// The value of the form control `css`.
pub(crate) async fn value_of(browser: &Client, css: &str) -> Result<String, CmdError> {
    let script = format!("return document.querySelector({css:?}).value;");
    Ok(browser
        .execute(&script, vec![])
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[sqlx::test]
async fn a_polygon_drawn_with_the_mouse_is_saved_and_a_vehicle_driven_into_it_raises_enter_on_the_page(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (_, token) = app.vehicle(&jwt, "Van 1").await;
    // The vehicle's first fix: with no geofence yet, the page's map opens where the fleet is.
    let start = (48.10, 11.50);
    let base = Utc::now() - Duration::minutes(5);
    let (status, _) = app
        .ingest(
            &token,
            json!({"lat": start.0, "lon": start.1, "recorded_at": base.to_rfc3339()}),
        )
        .await;
    assert_eq!(status, 200);

    let driver = Driver::start().await;
    let browser = driver.client().await;
    let result = async {
        sign_in_to(&browser, &app, "dispatch@acme.test", "/dispatch").await?;
        browser.goto(&app.url("/geofences")).await?;
        wait_ready(&browser).await?;
        wait_live(&browser).await?;

        // A square east of the vehicle, corner by corner, closed on its first corner.
        browser
            .find(Locator::Css("#draw-polygon"))
            .await?
            .click()
            .await?;
        for (dx, dy) in [
            (150, -100),
            (350, -100),
            (350, 100),
            (150, 100),
            (150, -100),
        ] {
            click_map(&browser, dx, dy).await?;
        }
        wait_until_page(
            &browser,
            "the drawn polygon is closed and editable",
            "return document.querySelectorAll('#map path.wm-geofence--editing').length === 1 \
               && document.getElementById('draw-actions').hidden;",
        )
        .await;
        let text = value_of(&browser, "#geofence-shape").await?;
        assert_eq!(text.lines().count(), 4, "one line a corner: {text}");

        browser
            .find(Locator::Css("#geofence-name"))
            .await?
            .send_keys("Yard")
            .await?;
        browser
            .find(Locator::Css("#geofence-save"))
            .await?
            .click()
            .await?;
        wait_for_text(&browser, "#geofence-saved", "Saved Yard.").await;
        wait_for_text(&browser, "#geofence-list .editor-item__name", "Yard").await;

        // Stored as drawn: a closed ring of the four corners, east of the vehicle.
        let (_, fences) = app.get(&jwt, "/api/v1/geofences").await;
        let fences = fences.as_array().expect("a list").clone();
        assert_eq!(fences.len(), 1, "{fences:?}");
        assert_eq!(fences[0]["name"], "Yard");
        assert_eq!(fences[0]["circle"], Value::Null);
        let ring: Vec<(f64, f64)> = fences[0]["area"]["coordinates"][0]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
            .collect();
        assert_eq!(ring.len(), 5, "{ring:?}");
        assert_eq!(ring[0], ring[4], "closed");
        let typed: Vec<(f64, f64)> = text
            .lines()
            .map(|l| {
                let (lat, lon) = l.split_once(',').unwrap();
                (lon.trim().parse().unwrap(), lat.trim().parse().unwrap())
            })
            .collect();
        for (stored, shown) in ring.iter().zip(&typed) {
            assert!(
                (stored.0 - shown.0).abs() < 1e-6 && (stored.1 - shown.1).abs() < 1e-6,
                "{ring:?} is what the page showed, {typed:?}"
            );
        }
        let centre = (
            ring[..4].iter().map(|p| p.1).sum::<f64>() / 4.0,
            ring[..4].iter().map(|p| p.0).sum::<f64>() / 4.0,
        );
        assert!(
            ring[..4].iter().all(|p| p.0 > start.1),
            "drawn right of the vehicle: {ring:?}"
        );

        // Into the square, and seen there again after the organisation's 30 s debounce.
        for s in [60, 100] {
            let (status, body) = app
                .ingest(
                    &token,
                    json!({"lat": centre.0, "lon": centre.1,
                           "recorded_at": (base + Duration::seconds(s)).to_rfc3339()}),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["filtered"], 0, "{body}");
        }
        wait_for_text(
            &browser,
            ".alert[data-rule='geofence_enter'] .alert__title",
            "Entered Yard",
        )
        .await;
        Ok::<_, CmdError>(())
    }
    .await;
    let _ = browser.close().await;
    driver.stop().await;
    result.expect("the browser steps succeed");
    assert_no_csp_violations(&app);
}

#[sqlx::test]
async fn a_typed_self_crossing_polygon_is_refused_on_the_shape_then_fixed_moved_and_deleted(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    // A bow tie: its second and fourth edges cross.
    let bow_tie = "48.10, 11.50\n48.11, 11.52\n48.10, 11.52\n48.11, 11.50";

    let driver = Driver::start().await;
    let browser = driver.client().await;
    let result = async {
        sign_in_to(&browser, &app, "dispatch@acme.test", "/dispatch").await?;
        browser.goto(&app.url("/geofences")).await?;
        wait_ready(&browser).await?;

        // Typed, not drawn: the keyboard's way to give a shape.
        browser.find(Locator::Css("#geofence-shape")).await?.send_keys(bow_tie).await?;
        browser.find(Locator::Css("#geofence-name")).await?.send_keys("Gate").await?;
        browser.find(Locator::Css("#geofence-debounce")).await?.send_keys("0").await?;
        browser.find(Locator::Css("#geofence-save")).await?.click().await?;

        // The API's own words, next to the field and on the shape itself.
        wait_until_page(
            &browser,
            "the refusal shows next to the shape field and on the shape",
            "const field = document.getElementById('geofence-shape-error'); \
             const tip = document.querySelector('.leaflet-tooltip.wm-tooltip--error'); \
             return !field.hidden && !!tip \
               && field.textContent.startsWith('area is not a valid polygon: self-intersection at [11.51') \
               && tip.textContent === field.textContent;",
        )
        .await;
        let kept = browser
            .execute(
                "return { shapes: document.querySelectorAll('#map path.wm-geofence--editing').length, \
                   name: document.getElementById('geofence-name').value, \
                   debounce: document.getElementById('geofence-debounce').value, \
                   invalid: document.getElementById('geofence-shape').getAttribute('aria-invalid') };",
                vec![],
            )
            .await?;
        assert_eq!(
            kept,
            json!({"shapes": 1, "name": "Gate", "debounce": "0", "invalid": "true"})
        );
        assert_eq!(value_of(&browser, "#geofence-shape").await?, bow_tie);
        let (_, fences) = app.get(&jwt, "/api/v1/geofences").await;
        assert_eq!(fences, json!([]), "nothing stored");

        // Fixed (the last two corners swapped), it saves.
        let shape = browser.find(Locator::Css("#geofence-shape")).await?;
        shape.clear().await?;
        shape
            .send_keys("48.10, 11.50\n48.11, 11.50\n48.11, 11.52\n48.10, 11.52")
            .await?;
        browser.find(Locator::Css("#geofence-save")).await?.click().await?;
        wait_for_text(&browser, "#geofence-saved", "Saved Gate.").await;
        wait_until_page(
            &browser,
            "the error is gone from the shape",
            "return !document.querySelector('.wm-tooltip--error') \
               && document.getElementById('geofence-shape-error').hidden;",
        )
        .await;
        let (_, fences) = app.get(&jwt, "/api/v1/geofences").await;
        assert_eq!(fences[0]["name"], "Gate", "{fences}");
        assert_eq!(fences[0]["debounce_s"], 0, "{fences}");
        let west = |fences: &Value| {
            fences[0]["area"]["coordinates"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p[0].as_f64().unwrap())
                .fold(f64::INFINITY, f64::min)
        };
        assert_eq!(west(&fences), 11.50);

        // Moved east with the mouse, whole, and saved again.
        browser.find(Locator::Css("#shape-move")).await?.click().await?;
        drag_map(&browser, (0, 0), (120, 0)).await?;
        wait_until_page(
            &browser,
            "the shape's text follows the move",
            "return !document.getElementById('geofence-shape').value.startsWith('48.1, 11.5\\n');",
        )
        .await;
        browser.find(Locator::Css("#geofence-save")).await?.click().await?;
        wait_for("the moved shape is stored", async || {
            let (_, fences) = app.get(&jwt, "/api/v1/geofences").await;
            let now = west(&fences);
            if now > 11.5001 { Ok(()) } else { Err(format!("its west edge is at {now}")) }
        })
        .await;

        // Deleting asks first.
        browser.find(Locator::Css("#geofence-delete")).await?.click().await?;
        confirm(&browser).await?;
        wait_for_text(&browser, "#geofence-saved", "Deleted Gate.").await;
        wait_for_text(&browser, "#geofence-count", "0").await;
        Ok::<_, CmdError>(())
    }
    .await;
    let _ = browser.close().await;
    driver.stop().await;
    result.expect("the browser steps succeed");
    let (_, fences) = app.get(&jwt, "/api/v1/geofences").await;
    assert_eq!(fences, json!([]), "deleted");
    assert_no_csp_violations(&app);
}
