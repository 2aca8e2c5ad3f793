//! The Geofences page in headless Chromium: a polygon drawn with the mouse is saved and a
//! vehicle driven into it raises its enter alert on the page; a self-crossing polygon typed
//! on the keyboard is refused with the API's words on the shape, kept, fixed, moved with the
//! mouse and deleted.
use chrono::{Duration, Utc};
use fantoccini::{
    actions::{InputSource, MouseActions, PointerAction, MOUSE_BUTTON_LEFT},
    Client, Locator,
};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::browser::{wait_for_text, wait_live, wait_until_page};
use crate::page::{
    assert_same_positions, click, confirm, dispatcher, fill, in_browser, lines_to_positions, open,
    positions, text, Step, READY,
};
use crate::support::{wait_for, TestApp};

/// Presses the mouse button `dx`, `dy` pixels from the map's centre, moves it `by` pixels
/// across in `steps` steps, as a hand does, and lets go.
async fn drag_map(browser: &Client, (dx, dy): (i64, i64), by: (i64, i64), steps: i64) -> Step {
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
    for _ in 0..steps {
        mouse = mouse.then(PointerAction::MoveBy {
            duration: Some(std::time::Duration::from_millis(50)),
            x: by.0 / steps,
            y: by.1 / steps,
        });
    }
    browser
        .perform_actions(mouse.then(PointerAction::Up {
            button: MOUSE_BUTTON_LEFT,
        }))
        .await
}

/// Clicks the map `dx`, `dy` pixels from its centre, as a mouse does.
pub(crate) async fn click_map(browser: &Client, dx: i64, dy: i64) -> Step {
    drag_map(browser, (dx, dy), (0, 0), 0).await
}

#[sqlx::test]
async fn a_polygon_drawn_with_the_mouse_is_saved_and_a_vehicle_driven_into_it_raises_enter_on_the_page(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
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

    in_browser(&app, async |browser| {
        open(browser, &app, "dispatch@acme.test", "/geofences", READY).await?;
        wait_live(browser).await?;

        // A square east of the vehicle, corner by corner, closed on its first corner.
        click(browser, "#draw-polygon").await?;
        for (dx, dy) in [
            (150, -100),
            (350, -100),
            (350, 100),
            (150, 100),
            (150, -100),
        ] {
            click_map(browser, dx, dy).await?;
        }
        wait_until_page(
            browser,
            "the drawn polygon is closed and editable",
            "return document.querySelectorAll('#map path.wm-geofence--editing').length === 1 \
               && document.getElementById('draw-actions').hidden;",
        )
        .await;
        let shape = text(browser, "#geofence-shape").await?;
        assert_eq!(shape.lines().count(), 4, "one line a corner: {shape}");

        fill(browser, "#geofence-name", "Yard").await?;
        click(browser, "#geofence-save").await?;
        wait_for_text(browser, "#geofence-saved", "Saved Yard.").await;
        wait_for_text(browser, "#geofence-list .editor-item__name", "Yard").await;

        // Stored as drawn: a closed ring of the four corners, east of the vehicle.
        let (_, fences) = app.get(&jwt, "/api/v1/geofences").await;
        let fences = fences.as_array().expect("a list").clone();
        assert_eq!(fences.len(), 1, "{fences:?}");
        assert_eq!(fences[0]["name"], "Yard");
        assert_eq!(fences[0]["circle"], Value::Null);
        let ring = positions(&fences[0]["area"]["coordinates"][0]);
        assert_eq!(ring.len(), 5, "{ring:?}");
        assert_eq!(ring[0], ring[4], "closed");
        assert_same_positions(&ring, &lines_to_positions(&shape));
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
            browser,
            ".alert[data-rule='geofence_enter'] .alert__title",
            "Entered Yard",
        )
        .await;
        Ok(())
    })
    .await;
}

#[sqlx::test]
async fn a_typed_self_crossing_polygon_is_refused_on_the_shape_then_fixed_moved_and_deleted(
    db: PgPool,
) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    // A bow tie: its second and fourth edges cross.
    let bow_tie = "48.10, 11.50\n48.11, 11.52\n48.10, 11.52\n48.11, 11.50";

    in_browser(&app, async |browser| {
        open(browser, &app, "dispatch@acme.test", "/geofences", READY).await?;

        // Typed, not drawn: the keyboard's way to give a shape.
        fill(browser, "#geofence-shape", bow_tie).await?;
        fill(browser, "#geofence-name", "Gate").await?;
        fill(browser, "#geofence-debounce", "0").await?;
        click(browser, "#geofence-save").await?;

        // The API's own words, next to the field and on the shape itself.
        wait_until_page(
            browser,
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
        assert_eq!(text(browser, "#geofence-shape").await?, bow_tie);
        let (_, fences) = app.get(&jwt, "/api/v1/geofences").await;
        assert_eq!(fences, json!([]), "nothing stored");

        // Fixed (the last two corners swapped), it saves.
        fill(
            browser,
            "#geofence-shape",
            "48.10, 11.50\n48.11, 11.50\n48.11, 11.52\n48.10, 11.52",
        )
        .await?;
        click(browser, "#geofence-save").await?;
        wait_for_text(browser, "#geofence-saved", "Saved Gate.").await;
        wait_until_page(
            browser,
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
        click(browser, "#shape-move").await?;
        drag_map(browser, (0, 0), (120, 0), 4).await?;
        wait_until_page(
            browser,
            "the shape's text follows the move",
            "return !document.getElementById('geofence-shape').value.startsWith('48.1, 11.5\\n');",
        )
        .await;
        click(browser, "#geofence-save").await?;
        wait_for("the moved shape is stored", async || {
            let (_, fences) = app.get(&jwt, "/api/v1/geofences").await;
            let now = west(&fences);
            if now > 11.5001 { Ok(()) } else { Err(format!("its west edge is at {now}")) }
        })
        .await;

        // Deleting asks first.
        click(browser, "#geofence-delete").await?;
        confirm(browser).await?;
        wait_for_text(browser, "#geofence-saved", "Deleted Gate.").await;
        wait_for_text(browser, "#geofence-count", "0").await;
        Ok(())
    })
    .await;
    let (_, fences) = app.get(&jwt, "/api/v1/geofences").await;
    assert_eq!(fences, json!([]), "deleted");
}
