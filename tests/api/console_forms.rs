//! The form helpers the console's pages share (`static/js/forms.js`), seen on the shipment
//! page: a conflict the API names no field for is shown at the field it is about, keeping the
//! choice made, and the confirmation dialog works from the keyboard alone.
use fantoccini::Client;
use sqlx::PgPool;

use crate::browser::{wait_for_text, wait_until_page};
use crate::page::{
    click, dispatcher, in_browser, keys, open, select_label, wait_for_element, Step, LIVE,
};
use crate::support::TestApp;

const ENTER: &str = "\u{e007}";
const ESCAPE: &str = "\u{e00c}";
const TAB: &str = "\u{e004}";

/// The `id` of the element that has the focus.
async fn focused(browser: &Client) -> Step<String> {
    Ok(browser
        .active_element()
        .await?
        .attr("id")
        .await?
        .unwrap_or_default())
}

/// Presses `key` on the element that has the focus.
async fn press(browser: &Client, key: &str) -> Step {
    browser.active_element().await?.send_keys(key).await
}

#[sqlx::test]
async fn a_conflict_shows_at_its_field_and_the_confirmation_works_from_the_keyboard(db: PgPool) {
    let app = TestApp::spawn(db).await;
    let jwt = dispatcher(&app).await;
    let (van1, _) = app.vehicle(&jwt, "Van 1").await;
    let (van2, _) = app.vehicle(&jwt, "Van 2").await;
    app.shipment(&jwt, "SHP-1", van1, None).await;
    let shipment = app.shipment(&jwt, "SHP-2", van2, None).await;
    let stored = async || {
        app.get(&jwt, &format!("/api/v1/shipments/{shipment}"))
            .await
            .1
    };

    in_browser(&app, async |desk| {
        open(desk, &app, "dispatch@acme.test", &format!("/shipments/{shipment}"), LIVE).await?;
        wait_until_page(
            desk,
            "the assignment shows",
            &format!("return document.getElementById('assign-vehicle').value === '{van2}';"),
        )
        .await;

        // Van 1 carries SHP-1: the API's 409 names no field, its words say which one.
        select_label(desk, "#assign-vehicle", "Van 1").await?;
        click(desk, "#assign-save").await?;
        wait_for_text(
            desk,
            "[data-field='vehicle_id'] .field-error",
            "this vehicle already has an active shipment",
        )
        .await;
        let shown = desk
            .execute(
                "const select = document.getElementById('assign-vehicle'); \
                 const error = document.querySelector(\"[data-field='vehicle_id'] .field-error\"); \
                 return [select.value, select.getAttribute('aria-invalid'), document.activeElement === select, \
                         (select.getAttribute('aria-describedby') || '').split(' ').includes(error.id), \
                         document.querySelector('#assign-form [data-form-error]').hidden];",
                vec![],
            )
            .await?;
        assert_eq!(
            shown,
            serde_json::json!([van1.to_string(), "true", true, true, true]),
            "the refusal is at the vehicle, which keeps the choice and has the focus"
        );
        assert_eq!(stored().await["vehicle_id"].as_i64(), Some(van2));

        // Asked from the keyboard: the dialog opens on its safe button, Escape keeps the
        // shipment and gives the focus back.
        keys(desk, "#cancel-shipment", ENTER).await?;
        wait_for_element(desk, "#confirm-dialog[open]").await?;
        assert_eq!(focused(desk).await?, "confirm-cancel");
        wait_for_text(desk, "#confirm-cancel", "Keep shipment").await;
        wait_for_text(desk, "#confirm-ok", "Cancel shipment").await;
        press(desk, ESCAPE).await?;
        wait_until_page(desk, "the dialog closes", "return !document.getElementById('confirm-dialog').open;").await;
        assert_eq!(focused(desk).await?, "cancel-shipment");
        assert_eq!(stored().await["status"], "planned");

        // Tab to the confirming button and press Enter: the shipment is cancelled.
        press(desk, ENTER).await?;
        wait_for_element(desk, "#confirm-dialog[open]").await?;
        press(desk, TAB).await?;
        assert_eq!(focused(desk).await?, "confirm-ok");
        press(desk, ENTER).await?;
        wait_for_text(desk, "#status", "cancelled").await;
        assert_eq!(stored().await["status"], "cancelled");
        Ok(())
    })
    .await;
}
