//! The history page (`/history`) in headless Chromium against a real server, on delivery days
//! posted through the ingest API: the deep link draws the day's tracks and lists its trips and
//! stops (a stop clicked in the list and on the map tells its times), zooming in asks for finer
//! tracks, and the replay plays, pauses, honours its speed, seeks from the slider and jumps to a
//! stop clicked on the timeline; several vehicles show together, and the form and the address
//! follow each other. What the page drew and where the replay stands are read from its
//! elements' data attributes.
use chrono::Duration;
use fantoccini::Client;
use serde_json::Value;
use sqlx::PgPool;

use crate::browser::{wait_for_text, wait_until_page};
use crate::history_api::{param, post_day, three_hours_ago};
use crate::page::{click, open, select, Step, READY};
use crate::support::{fleet, wait_for, Fleet, TestApp};

/// A data attribute of `#id`, as a number.
async fn data(browser: &Client, id: &str, key: &str) -> Step<f64> {
    let script = format!("return Number(document.getElementById({id:?}).dataset.{key});");
    Ok(browser
        .execute(&script, vec![])
        .await?
        .as_f64()
        .unwrap_or(f64::NAN))
}

/// The replay clock, in ms since the epoch.
async fn replay_t(browser: &Client) -> Step<i64> {
    Ok(data(browser, "timeline", "t").await? as i64)
}

/// Where the replay has the (first) vehicle.
async fn replay_place(browser: &Client) -> Step<(f64, f64)> {
    Ok((
        data(browser, "map", "replayLat").await?,
        data(browser, "map", "replayLon").await?,
    ))
}

fn metres(a: (f64, f64), b: (f64, f64)) -> f64 {
    let dlat = (b.0 - a.0) * 111_195.0;
    let dlon = (b.1 - a.1) * 111_195.0 * a.0.to_radians().cos();
    (dlat * dlat + dlon * dlon).sqrt()
}

/// The replay clock after the page has drawn `frames` more animation frames.
async fn t_after_frames(browser: &Client, frames: u32) -> Step<i64> {
    let script = format!(
        "const done = arguments[0];
         let left = {frames};
         const next = () => (--left > 0 ? requestAnimationFrame(next)
           : done(Number(document.getElementById('timeline').dataset.t)));
         requestAnimationFrame(next);"
    );
    Ok(browser
        .execute_async(&script, vec![])
        .await?
        .as_i64()
        .unwrap())
}

#[sqlx::test]
async fn a_day_is_drawn_listed_and_replayed(db: PgPool) {
    let Fleet {
        app,
        vehicle,
        token,
        ..
    } = fleet(TestApp::spawn(db).await).await;
    let day = post_day(&app, &token, three_hours_ago()).await;
    let from = day.start - Duration::minutes(1);
    let to = day.end + Duration::minutes(1);
    let path = format!(
        "/history?vehicle={vehicle}&from={}&to={}",
        param(from),
        param(to)
    );

    in_browser_steps(&app, &path, async |browser| {
        // Drawn: the tracks on the canvas, the stop pinned, the list beside the map.
        wait_until_page(
            browser,
            "the tracks are drawn",
            "return performance.getEntriesByName('history-drawn').length > 0
               && Number(document.getElementById('map').dataset.drawnPaths) > 0;",
        )
        .await;
        assert!(data(browser, "map", "drawnVertices").await? > 50.0);
        assert_eq!(data(browser, "map", "drawnStops").await?, 1.0);
        wait_for_text(browser, "#segment-count", "3").await;
        let kinds = browser
            .execute(
                "return [...document.querySelectorAll('#segment-list .history-segment')]
                   .map((b) => b.dataset.kind);",
                vec![],
            )
            .await?;
        assert_eq!(kinds, serde_json::json!(["trip", "stop", "trip"]));

        // Played at ×60, the clock covers five minutes of the day in five seconds: at the ×10
        // it starts with, that would take half a minute, longer than a wait lasts.
        assert_eq!(replay_t(browser).await?, from.timestamp_millis());
        let start_place = replay_place(browser).await?;
        let start_label = browser
            .find(fantoccini::Locator::Css("#replay-time"))
            .await?
            .text()
            .await?;
        select(browser, "#replay-speed", "60").await?;
        click(browser, "#replay-play").await?;
        let five_minutes_in = (from + Duration::minutes(5)).timestamp_millis();
        wait_for("the replay clock passes five minutes in", async || {
            let t = replay_t(browser).await.unwrap();
            if t >= five_minutes_in {
                Ok(())
            } else {
                Err(format!("it is at {t}"))
            }
        })
        .await;
        let moved = metres(start_place, replay_place(browser).await?);
        assert!(moved > 500.0, "the marker moved {moved} m along the drive");
        let label = browser
            .find(fantoccini::Locator::Css("#replay-time"))
            .await?
            .text()
            .await?;
        assert_ne!(label, start_label, "the time shown moves on");

        // Paused, it stays where it is, frame after frame.
        click(browser, "#replay-play").await?;
        wait_until_page(
            browser,
            "the replay pauses",
            "return document.getElementById('timeline').dataset.playing === 'false';",
        )
        .await;
        let paused = replay_t(browser).await?;
        assert_eq!(t_after_frames(browser, 20).await?, paused);

        // The slider seeks.
        browser
            .execute(
                "const s = document.getElementById('replay-slider');
                 s.value = '600';
                 s.dispatchEvent(new Event('input', { bubbles: true }));",
                vec![],
            )
            .await?;
        assert_eq!(
            replay_t(browser).await?,
            (from + Duration::seconds(600)).timestamp_millis()
        );

        // A stop clicked on the timeline: the clock jumps to its arrival, the vehicle to its place.
        let stop_t: Value = browser
            .execute(
                "return Number(document.querySelector('.timeline__event--stop').dataset.t);",
                vec![],
            )
            .await?;
        click(browser, ".timeline__event--stop").await?;
        assert_eq!(Value::from(replay_t(browser).await?), stop_t);
        let at_stop = metres(day.parked, replay_place(browser).await?);
        assert!(
            at_stop < 100.0,
            "the vehicle is {at_stop} m from where it parked"
        );

        // A stop in the list: the map goes to it, and the stop on the map tells its times.
        click(browser, "#segment-list .history-segment[data-kind='stop']").await?;
        click(browser, "#map").await?;
        wait_until_page(
            browser,
            "the stop's popup tells when it arrived, left and how long it stayed",
            "const p = document.querySelector('.leaflet-popup-content');
             return !!p && ['Arrived', 'Left', 'Stayed 4'].every((s) => p.textContent.includes(s));",
        )
        .await;

        // Zoomed to the stop, and a level further in, the page asks for finer tracks each time.
        let tolerance = wait_for("tracks as fine as the stop's zoom", async || {
            let now = data(browser, "map", "tolerance").await.unwrap();
            if now <= 2.0 {
                Ok(now)
            } else {
                Err(format!("the tolerance is {now} m"))
            }
        })
        .await;
        click(browser, ".leaflet-control-zoom-in").await?;
        wait_for("a finer track is drawn", async || {
            let now = data(browser, "map", "tolerance").await.unwrap();
            if now < tolerance {
                Ok(())
            } else {
                Err(format!("the tolerance is {now} m"))
            }
        })
        .await;
        Ok(())
    })
    .await;
}

/// Opens `path` as Acme's dispatcher once the page is ready, and runs `steps` there.
async fn in_browser_steps(app: &TestApp, path: &str, steps: impl AsyncFnOnce(&Client) -> Step) {
    crate::page::in_browser(app, async |browser| {
        open(browser, app, "dispatch@acme.test", path, READY).await?;
        steps(browser).await
    })
    .await
}

#[sqlx::test]
async fn several_vehicles_are_shown_together_and_the_address_says_which(db: PgPool) {
    let Fleet {
        app,
        dispatcher,
        vehicle,
        token,
    } = fleet(TestApp::spawn(db).await).await;
    let (second, second_token) = app.vehicle(&dispatcher, "Van 2").await;
    let day = post_day(&app, &token, three_hours_ago()).await;
    post_day(
        &app,
        &second_token,
        three_hours_ago() + Duration::minutes(10),
    )
    .await;
    let from = day.start - Duration::minutes(1);
    let to = day.end + Duration::minutes(15);
    let path = format!(
        "/history?vehicle={vehicle},{second}&from={}&to={}",
        param(from),
        param(to)
    );

    in_browser_steps(&app, &path, async |browser| {
        wait_for_text(browser, "#segment-count", "6").await;
        assert_eq!(data(browser, "map", "drawnStops").await?, 2.0);
        let headings = browser
            .execute(
                "return [...document.querySelectorAll('.history-list__vehicle')].map((h) => h.textContent);",
                vec![],
            )
            .await?;
        assert_eq!(headings, serde_json::json!(["Van 1", "Van 2"]));

        // Van 2 alone, from the form: the list and the address follow.
        browser
            .execute(
                &format!(
                    "for (const o of document.getElementById('history-vehicles').options)
                       o.selected = o.value === '{second}';"
                ),
                vec![],
            )
            .await?;
        click(browser, "#history-show").await?;
        wait_for_text(browser, "#segment-count", "3").await;
        wait_until_page(
            browser,
            "the address names Van 2 alone",
            &format!(
                "return new URLSearchParams(location.search).get('vehicle') === '{second}';"
            ),
        )
        .await;
        let shown_from = browser
            .execute(
                "return Date.parse(new URLSearchParams(location.search).get('from'));",
                vec![],
            )
            .await?;
        assert_eq!(shown_from, Value::from(from.timestamp_millis()));
        assert_eq!(data(browser, "map", "drawnStops").await?, 1.0);
        Ok(())
    })
    .await;
}
