//! The documented nginx front (docs/OPERATIONS.md), run for real in front of the server: HTTPS
//! and `wss://` with a certificate of the test's own, `Host` and `X-Forwarded-*` passed through,
//! and plain HTTP sent to HTTPS. Only addresses, names and certificate paths are changed.
use std::{path::PathBuf, process::Stdio, sync::Arc};

use chrono::Utc;
use futures_util::{SinkExt, StreamExt};
use reqwest::{header, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::process::{Child, Command};
use tokio_tungstenite::{
    tungstenite::{client::IntoClientRequest, Message},
    Connector,
};
use waymark::auth::Role;

use crate::support::{find_program, step, wait_for, TestApp, PATIENCE};

/// The nginx block between the operations guide's `nginx-config` marker and the block's end.
fn documented_config() -> String {
    let doc = include_str!("../../docs/OPERATIONS.md");
    let start = doc
        .find("<!-- nginx-config -->")
        .expect("the guide marks its nginx config");
    let block = &doc[start..];
    let body = block.find("```nginx\n").expect("an nginx block follows") + "```nginx\n".len();
    let end = block[body..].find("```").expect("the block ends");
    block[body..body + end].to_owned()
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nginx {
    child: Child,
    dir: PathBuf,
    https: u16,
    http: u16,
    cert_pem: String,
}

impl Nginx {
    /// The documented configuration, pointed at `upstream`, on two free loopback ports.
    async fn start(upstream: std::net::SocketAddr) -> Nginx {
        let dir = std::env::temp_dir().join(format!(
            "waymark-nginx-{}",
            waymark::auth::token::generate(16)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        let (https, http) = (free_port(), free_port());

        let mut site = String::new();
        let mut upstream_done = false;
        for line in documented_config().lines() {
            let trimmed = line.trim_start();
            let line = if trimmed.starts_with("server 127.0.0.1:") {
                // The documented instances become the one under test.
                if upstream_done {
                    continue;
                }
                upstream_done = true;
                format!("    server {upstream};")
            } else if trimmed.starts_with("listen 443") {
                format!("    listen 127.0.0.1:{https} ssl http2;")
            } else if trimmed.starts_with("listen 80") {
                format!("    listen 127.0.0.1:{http};")
            } else if trimmed.starts_with("server_name") {
                "    server_name localhost;".to_owned()
            } else if trimmed.starts_with("ssl_certificate_key") {
                format!("    ssl_certificate_key {}/key.pem;", dir.display())
            } else if trimmed.starts_with("ssl_certificate") {
                format!("    ssl_certificate {}/cert.pem;", dir.display())
            } else {
                line.to_owned()
            };
            site.push_str(&line);
            site.push('\n');
        }
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\nworker_processes 1;\nuser root;\npid {d}/nginx.pid;\n\
             error_log {d}/error.log warn;\nevents {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n\
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n\
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n{site}}}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let binary = find_program("WAYMARK_NGINX", &["nginx"]);
        let child = Command::new(binary)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("nginx starts");
        let nginx = Nginx {
            child,
            dir,
            https,
            http,
            cert_pem: cert.pem(),
        };
        // Ready once both ports accept.
        for port in [https, http] {
            wait_for(&format!("nginx listens on {port}"), async || {
                match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    Ok(_) => Ok(()),
                    Err(_) => {
                        Err(std::fs::read_to_string(nginx.dir.join("error.log"))
                            .unwrap_or_default())
                    }
                }
            })
            .await;
        }
        nginx
    }

    fn origin(&self) -> String {
        format!("https://localhost:{}", self.https)
    }

    /// A client that trusts this test's certificate and follows no redirects.
    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(self.cert_pem.as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    fn tls(&self) -> Connector {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_pemfile_certs(&self.cert_pem) {
            roots.add(cert).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        Connector::Rustls(Arc::new(config))
    }
}

/// The DER certificates in a PEM text.
fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .map(|c| c.unwrap())
        .collect()
}

impl Nginx {
    /// Asks the master to shut down with its workers (SIGTERM; a SIGKILL would orphan the
    /// workers) and waits for it, bounded.
    async fn stop(mut self) {
        self.terminate();
        if tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
    }

    fn terminate(&self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Only reached without stop(), e.g. when the test failed: still take the workers down.
        self.terminate();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[sqlx::test]
async fn the_documented_nginx_front_serves_https_and_wss(db: PgPool) {
    let app = TestApp::spawn_with(db, None, &["--trust-proxy"]).await;
    let (_, jwt) = app
        .user("Acme", "dispatch@acme.test", Role::Dispatcher)
        .await;
    let (driver, _) = app.user("Acme", "anna@acme.test", Role::Driver).await;
    let (_, token) = app.vehicle(&jwt, "Van 1").await;
    let nginx = Nginx::start(app.addr).await;
    let https = nginx.http();
    let base = nginx.origin();

    let res = https.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = https.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "metrics are not public"
    );

    // Host and the scheme reach the server: a device link carries the public https address.
    let res = https
        .post(format!("{base}/api/v1/users/{driver}/device-link"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let link: Value = res.json().await.unwrap();
    let url = link["url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{base}/driver/link/")), "{url}");

    // A browser on the https page opens wss:// (Origin checked against the passed-on Host) and
    // sees a position posted through the proxy.
    let mut request = format!("wss://localhost:{}/api/v1/ws?token={jwt}", nginx.https)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert(header::ORIGIN, base.parse().unwrap());
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(nginx.tls()))
            .await
            .expect("wss through nginx");
    let hello = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("a frame in time")
        .expect("open")
        .expect("readable");
    let hello: Value = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert_eq!(hello["type"], "hello");
    ws.send(Message::Text(
        json!({"type": "subscribe", "topic": "fleet"})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    // Subscribed before the position is posted: one committed earlier is in the snapshot, not
    // an event.
    let subscribed = loop {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("readable");
        if let Message::Text(text) = msg {
            break serde_json::from_str::<Value>(&text).unwrap();
        }
    };
    assert_eq!(subscribed["type"], "subscribed", "{subscribed}");
    let posted = step(0, Utc::now() - chrono::Duration::seconds(5));
    let res = https
        .post(format!("{base}/api/v1/positions"))
        .bearer_auth(&token)
        .json(&posted)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let event = wait_for("a position over wss", async || {
        let msg = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match msg {
            Message::Text(text) => match serde_json::from_str::<Value>(&text).unwrap() {
                frame if frame["type"] == "position" => Ok(frame),
                frame => Err(format!("got {frame}")),
            },
            other => Err(format!("got {other:?}")),
        }
    })
    .await;
    assert_eq!(event["data"]["lat"], posted["lat"]);

    // Plain HTTP goes to HTTPS.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = plain
        .get(format!("http://localhost:{}/dispatch", nginx.http))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::MOVED_PERMANENTLY);
    let location = res.headers()[header::LOCATION].to_str().unwrap();
    assert!(location.starts_with("https://localhost"), "{location}");
    nginx.stop().await;
}
