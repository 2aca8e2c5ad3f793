//! The README's `curl` ping, run as written: sign in as the demo user, create a vehicle, post a
//! position. Only the address is pointed at the test server.
use reqwest::StatusCode;
use sqlx::PgPool;
use waymark::auth::{create_user, Role};

use crate::support::TestApp;

/// The shell block between the README's `curl-ping` markers.
fn readme_ping() -> String {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("<!-- curl-ping -->")
        .expect("the README marks its curl ping");
    let block = &readme[start..];
    let body_start = block
        .find("```sh\n")
        .expect("a sh code block follows the marker")
        + "```sh\n".len();
    let body_end = block[body_start..]
        .find("```")
        .expect("the code block ends");
    block[body_start..body_start + body_end].to_owned()
}

#[sqlx::test]
async fn the_readme_curl_ping_creates_and_moves_a_vehicle(db: PgPool) {
    let app = TestApp::spawn(db).await;
    create_user(
        &app.db,
        "Demo Logistics",
        "demo@waymark.local",
        "demo-password",
        Role::Admin,
    )
    .await
    .unwrap();
    let (_, jwt) = app
        .user("Demo Logistics", "watcher@waymark.local", Role::Dispatcher)
        .await;
    let script = readme_ping().replace("http://127.0.0.1:8080", &app.url(""));
    assert!(script.contains("curl"), "{script}");
    let out = tokio::process::Command::new("bash")
        .arg("-euc")
        .arg(&script)
        .output()
        .await
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("curl prints the JSON reply");
    assert_eq!(reply["accepted"], 1, "{reply}");
    let (status, vehicles) = app.get(&jwt, "/api/v1/vehicles").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(vehicles[0]["name"], "My test van");
    assert_eq!(vehicles[0]["last_position"]["lat"], 48.1374, "{vehicles}");
}
