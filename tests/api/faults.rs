//! Infrastructure faults: PostgreSQL stopping in the middle of ingest. The server runs against a
//! PostgreSQL server of the test's own (Debian's binaries, a fresh cluster on a free loopback
//! port), so the test can stop it hard and start it again.
use std::{path::PathBuf, process::Stdio};

use chrono::Utc;
use reqwest::StatusCode;
use tokio::process::Command;
use waymark::{auth::Role, config::DbConfig};

use crate::support::{step, wait_until, TestApp};

/// A PostgreSQL cluster of the test's own, removed when dropped.
struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

/// Where Debian keeps PostgreSQL's server programs: `WAYMARK_PG_BIN`, or the newest
/// `/usr/lib/postgresql/*/bin`.
fn postgres_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("WAYMARK_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server programs are installed (scripts/test installs them)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version with initdb")
}

/// Runs a PostgreSQL program as the `postgres` user when the tests run as root (PostgreSQL
/// refuses to run as root), else as ourselves.
fn pg_command(program: &std::path::Path) -> Command {
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    command.current_dir("/").stdout(Stdio::null());
    command
}

impl PrivatePostgres {
    async fn start() -> PrivatePostgres {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("waymark-pg-{}", waymark::auth::token::generate(16)));
        std::fs::create_dir_all(&dir).unwrap();
        let pg = PrivatePostgres {
            bin: postgres_bin(),
            dir,
            port,
        };
        if running_as_root() {
            // The cluster runs as postgres, which must own its directory.
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(&pg.dir)
                .status()
                .await
                .expect("chown runs");
            assert!(status.success(), "chown the data directory");
        }
        let status = pg_command(&pg.bin.join("initdb"))
            .args(["-A", "trust", "-U", "waymark", "--no-sync", "-D"])
            .arg(pg.dir.join("data"))
            .status()
            .await
            .expect("initdb runs");
        assert!(status.success(), "initdb succeeds");
        pg.run().await;
        pg
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://waymark@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    async fn run(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let status = pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-o", &options, "-l"])
            .arg(self.dir.join("log"))
            .args(["-w", "start"])
            .status()
            .await
            .expect("pg_ctl runs");
        assert!(
            status.success(),
            "PostgreSQL starts (log in {:?})",
            self.dir
        );
    }

    /// Stops the server at once, as a crash or a killed container would: no shutdown checkpoint,
    /// every connection cut.
    async fn stop(&self) {
        let status = pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .status()
            .await
            .expect("pg_ctl runs");
        assert!(status.success(), "PostgreSQL stops");
    }
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    })
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut stop = pg_command(&self.bin.join("pg_ctl")).into_std();
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stderr(Stdio::null());
        let _ = stop.status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Posts fix `i` and says whether it was acknowledged; anything but `200` must be `503`.
async fn post_fix(app: &TestApp, token: &str, i: i64, base: chrono::DateTime<Utc>) -> bool {
    let (status, body) = app.ingest(token, step(i, base)).await;
    match status {
        StatusCode::OK => true,
        StatusCode::SERVICE_UNAVAILABLE => {
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
            false
        }
        other => panic!("fix {i}: expected 200 or 503, got {other} {body}"),
    }
}

#[tokio::test]
async fn stopping_postgres_mid_ingest_answers_503_loses_nothing_acknowledged_and_recovers() {
    let pg = PrivatePostgres::start().await;
    let admin = sqlx::PgPool::connect(&pg.url("postgres")).await.unwrap();
    sqlx::query("CREATE DATABASE waymark")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let db = waymark::db::connect(&DbConfig {
        database_url: pg.url("waymark"),
        db_pool: 8,
    })
    .await
    .unwrap();
    waymark::db::migrate(&db).await.unwrap();
    let app = TestApp::spawn_alone(db.clone()).await;
    let (_, jwt) = app.user("Acme", "admin@acme.test", Role::Admin).await;
    let (vehicle, token) = app.vehicle(&jwt, "Van 1").await;
    let base = Utc::now() - chrono::Duration::minutes(10);

    let mut acknowledged = Vec::new();
    for i in 0..20 {
        assert!(
            post_fix(&app, &token, i, base).await,
            "fix {i} before the fault"
        );
        acknowledged.push(i);
    }

    pg.stop().await;
    // While the database is away nothing is acknowledged, every request answers 503, and the
    // instance reports itself unready.
    for i in 20..25 {
        assert!(
            !post_fix(&app, &token, i, base).await,
            "fix {i} acknowledged without a database"
        );
    }
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Back by itself once the database is: no restart of the server.
    pg.run().await;
    let mut i = 25;
    wait_until("ingest works again", || {
        let app = &app;
        let token = &token;
        let this = i;
        i += 1;
        async move { post_fix(app, token, this, base).await }
    })
    .await;
    acknowledged.push(i - 1);
    // The devices send again what was refused; duplicates are stored once.
    for j in 20..25 {
        assert!(post_fix(&app, &token, j, base).await, "fix {j} sent again");
        acknowledged.push(j);
    }

    let stored: Vec<i64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM recorded_at - $2))::bigint FROM positions
         WHERE vehicle_id = $1 ORDER BY recorded_at",
    )
    .bind(vehicle)
    .bind(base)
    .fetch_all(&db)
    .await
    .unwrap();
    for a in &acknowledged {
        assert!(
            stored.contains(a),
            "acknowledged fix {a} is stored: {stored:?}"
        );
    }
    let unique: std::collections::BTreeSet<i64> = stored.iter().copied().collect();
    assert_eq!(
        unique.len(),
        stored.len(),
        "nothing stored twice: {stored:?}"
    );
    let ready = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let (status, _) = app.get(&jwt, &format!("/api/v1/vehicles/{vehicle}")).await;
    assert_eq!(status, StatusCode::OK);
    app.shutdown().await;
}
