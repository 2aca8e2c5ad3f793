//! What the browser tests do on a page, said once: run steps in fresh browsers that are always
//! closed again, click, fill, select and read by CSS selector, open a console page signed in,
//! answer the confirmation dialog; and the fixtures the pages are tried with.
use fantoccini::{elements::Element, error::CmdError, Client, Locator};
use serde_json::{json, Value};
use waymark::auth::Role;

use crate::browser::{assert_no_csp_violations, sign_in_to, Driver};
use crate::support::{wait_for, TestApp, PATIENCE};

/// What a step in a browser gives: its value, or the WebDriver command that failed.
pub(crate) type Step<T = ()> = Result<T, CmdError>;

/// Shown once a page's live connection is up.
pub(crate) const LIVE: &str = "#conn-status[data-state='live']";
/// Shown once a page has read what it needs from the API.
pub(crate) const READY: &str = "body[data-ready='true']";

/// Runs `steps` in a browser of its own; see [`in_browsers`].
pub(crate) async fn in_browser<T>(app: &TestApp, steps: impl AsyncFnOnce(&Client) -> Step<T>) -> T {
    in_browsers(app, async |[browser]: &[Client; 1]| steps(browser).await).await
}

/// Starts chromedriver and `N` browsers (each its own person, with their own cookies), runs
/// `steps` with them, and closes them and stops the driver whether the steps succeeded or not
/// (an assertion that panics among them leaves chromedriver to `Driver`'s drop); then fails if
/// a step failed or a page broke the Content-Security-Policy. Returns what the steps gave.
pub(crate) async fn in_browsers<const N: usize, T>(
    app: &TestApp,
    steps: impl AsyncFnOnce(&[Client; N]) -> Step<T>,
) -> T {
    let driver = Driver::start().await;
    let mut browsers = Vec::with_capacity(N);
    for _ in 0..N {
        browsers.push(driver.client().await);
    }
    let browsers: [Client; N] = browsers.try_into().unwrap_or_else(|_| unreachable!());
    let result = steps(&browsers).await;
    for browser in browsers {
        let _ = browser.close().await;
    }
    driver.stop().await;
    let value = result.expect("the browser steps succeed");
    assert_no_csp_violations(app);
    value
}

/// Waits until `read` (what the page shows, say) gives `expected`; fails with what it gave
/// instead.
pub(crate) async fn wait_equal<T: PartialEq<E> + std::fmt::Debug, E>(
    what: &str,
    expected: E,
    mut read: impl AsyncFnMut() -> T,
) {
    wait_for(what, async || {
        let now = read().await;
        if now == expected {
            Ok(())
        } else {
            Err(format!("it is {now:?}"))
        }
    })
    .await
}

/// Waits until the page shows an element `css`.
pub(crate) async fn wait_for_element(browser: &Client, css: &str) -> Step<Element> {
    browser
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
}

pub(crate) async fn click(browser: &Client, css: &str) -> Step {
    browser.find(Locator::Css(css)).await?.click().await
}

/// Replaces what the input `css` holds with `text`, typed.
pub(crate) async fn fill(browser: &Client, css: &str, text: &str) -> Step {
    let input = browser.find(Locator::Css(css)).await?;
    input.clear().await?;
    if text.is_empty() {
        return Ok(());
    }
    input.send_keys(text).await
}

/// Sends `keys` to the element `css` with nothing cleared first: a file to a file input, or
/// keys such as Enter.
pub(crate) async fn keys(browser: &Client, css: &str, keys: &str) -> Step {
    browser.find(Locator::Css(css)).await?.send_keys(keys).await
}

/// Chooses the option whose value is `value` in the select `css`.
pub(crate) async fn select(browser: &Client, css: &str, value: &str) -> Step {
    browser
        .find(Locator::Css(css))
        .await?
        .select_by_value(value)
        .await
}

/// Chooses the option labelled `label` in the select `css`.
pub(crate) async fn select_label(browser: &Client, css: &str, label: &str) -> Step {
    browser
        .find(Locator::Css(css))
        .await?
        .select_by_label(label)
        .await
}

/// The value of the form control `css`, or the text of any other element, trimmed.
pub(crate) async fn text(browser: &Client, css: &str) -> Step<String> {
    let script = format!(
        "const e = document.querySelector({css:?}); return (e.value ?? e.textContent).trim();"
    );
    Ok(browser
        .execute(&script, vec![])
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Signs a console user (dispatcher or admin) in, opens `path` and waits for `ready` there.
pub(crate) async fn open(
    browser: &Client,
    app: &TestApp,
    email: &str,
    path: &str,
    ready: &str,
) -> Step {
    sign_in_to(browser, app, email, "/dispatch").await?;
    browser.goto(&app.url(path)).await?;
    wait_for_element(browser, ready).await?;
    Ok(())
}

/// Signs the dispatcher in and waits until the fleet page they land on is live.
pub(crate) async fn open_fleet_page(browser: &Client, app: &TestApp) -> Step {
    sign_in_to(browser, app, "dispatch@acme.test", "/dispatch").await?;
    wait_for_element(browser, LIVE).await?;
    Ok(())
}

/// Clicks the confirmation dialog's confirm button once the dialog is open.
pub(crate) async fn confirm(browser: &Client) -> Step {
    wait_for_element(browser, "#confirm-dialog[open] #confirm-ok")
        .await?
        .click()
        .await
}

/// Acme's dispatcher, who signs in as dispatch@acme.test; returns their token.
pub(crate) async fn dispatcher(app: &TestApp) -> String {
    app.user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await
        .1
}

/// A circular geofence called `name`, 100 m around the depot at 48.1374, 11.5755, that raises
/// its alerts at once (no debounce).
pub(crate) async fn depot_fence(app: &TestApp, jwt: &str, name: &str) {
    let (status, fence) = app
        .post(
            jwt,
            "/api/v1/geofences",
            json!({"name": name, "debounce_s": 0,
                   "circle": {"lat": 48.1374, "lon": 11.5755, "radius_m": 100.0}}),
        )
        .await;
    assert_eq!(status, 201, "{fence}");
}

/// The "lat, lon" lines a page's shape or route field holds, as GeoJSON [lon, lat] positions.
pub(crate) fn lines_to_positions(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .map(|l| {
            let (lat, lon) = l.split_once(',').expect("lat, lon");
            (lon.trim().parse().unwrap(), lat.trim().parse().unwrap())
        })
        .collect()
}

/// A GeoJSON array of [lon, lat] positions.
pub(crate) fn positions(coordinates: &Value) -> Vec<(f64, f64)> {
    coordinates
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

/// Fails unless the positions stored are, to a micro-degree, the ones the page showed.
pub(crate) fn assert_same_positions(stored: &[(f64, f64)], shown: &[(f64, f64)]) {
    for (a, b) in stored.iter().zip(shown) {
        assert!(
            (a.0 - b.0).abs() < 1e-6 && (a.1 - b.1).abs() < 1e-6,
            "{stored:?} is what the page showed, {shown:?}"
        );
    }
}
