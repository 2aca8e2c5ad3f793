//! Configuration, parsed once at start-up from the command line (`crate::cli`) or the
//! environment: every flag can also come from the environment; secrets are redacted from `Debug`.
use std::{fmt, net::SocketAddr, time::Duration};

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Args)]
pub struct DbConfig {
    /// PostgreSQL (with PostGIS) connection URL.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://waymark:waymark@127.0.0.1:5432/waymark",
        hide_env_values = true
    )]
    pub database_url: String,
    /// Maximum connections in the pool.
    #[arg(long, env = "WAYMARK_DB_POOL", default_value_t = 16)]
    pub db_pool: u32,
}

#[derive(Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub db: DbConfig,
    /// Address to listen on.
    #[arg(long, env = "WAYMARK_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,
    /// Share the address with other `waymark serve` processes on this machine that set this
    /// too (SO_REUSEPORT, Linux only): the kernel spreads new connections over them. Each
    /// process is an instance of its own, so they need `REDIS_URL` to hear each other's events.
    #[arg(long, env = "WAYMARK_REUSE_PORT", default_value_t = false)]
    pub reuse_port: bool,
    /// Redis URL for fan-out across instances; without it this instance fans out on its own. It
    /// may name a Redis Cluster, by one node or as comma-separated seed nodes.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of this deployment's Redis channels, so several can share one Redis.
    #[arg(long, env = "WAYMARK_REDIS_PREFIX", default_value = "waymark")]
    pub redis_prefix: String,
    /// Secret for signing session tokens (at least 32 bytes). Set it in production, the same on
    /// every instance. Without it, a development secret is generated once and kept in the
    /// secret file below.
    #[arg(long, env = "WAYMARK_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Where the development session secret is kept when `WAYMARK_JWT_SECRET` is not set
    /// (created on first start, readable by its owner only).
    #[arg(
        long,
        env = "WAYMARK_SECRET_FILE",
        default_value = ".waymark/jwt-secret"
    )]
    pub secret_file: std::path::PathBuf,
    /// How long a sign-in lasts, in hours.
    #[arg(long, env = "WAYMARK_SESSION_HOURS", default_value_t = 12)]
    pub session_hours: u32,
    /// How long a phone stays signed in after opening a driver's device link, in days.
    #[arg(long, env = "WAYMARK_DEVICE_SESSION_DAYS", default_value_t = 30)]
    pub device_session_days: u32,
    /// The address people reach this server at (e.g. `https://track.example.com`), for links
    /// and QR codes; without it, the scheme and host of the request that asks for one.
    #[arg(long, env = "WAYMARK_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Set the `Secure` flag on the session cookie (serve over HTTPS).
    #[arg(long, env = "WAYMARK_SECURE_COOKIES", default_value_t = false)]
    pub secure_cookies: bool,
    /// Map tile URL template for the pages; empty for no tiles.
    #[arg(
        long,
        env = "WAYMARK_TILE_URL",
        default_value = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
    )]
    pub tile_url: String,
    /// Attribution shown under the map tiles.
    #[arg(
        long,
        env = "WAYMARK_TILE_ATTRIBUTION",
        default_value = "&copy; OpenStreetMap contributors"
    )]
    pub tile_attribution: String,
    /// Directory of the static files (scripts, styles, Leaflet).
    #[arg(long, env = "WAYMARK_STATIC_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/static"))]
    pub static_dir: String,
    /// Extra origins (e.g. `https://dispatch.example.com`) whose pages may open WebSockets, comma
    /// separated. Pages served by Waymark itself are always allowed.
    #[arg(long, env = "WAYMARK_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Seconds a socket in a chat conversation may stay silent (it is pinged every third of
    /// this) before it counts as dead: closed, and gone from the conversation's presence.
    #[arg(long, env = "WAYMARK_PRESENCE_TIMEOUT_S", default_value_t = 12)]
    pub presence_timeout_s: u64,
    /// Seconds a WebSocket write may take before the peer counts as not reading (closed, 4008).
    #[arg(long, env = "WAYMARK_WS_WRITE_TIMEOUT_S", default_value_t = 10)]
    pub ws_write_timeout_s: u64,
    /// Writer connections: while one commits, the next waits for the seq lock with a batch that
    /// keeps growing, so the lock never idles under load.
    #[arg(long, env = "WAYMARK_WRITERS", default_value_t = 2)]
    pub writer_connections: usize,
    /// Most positions one group commit writes.
    #[arg(long, env = "WAYMARK_WRITER_BATCH", default_value_t = 4000)]
    pub writer_batch: usize,
    /// Seconds between runs of the alert clock, which raises `silent` and `late` without traffic.
    #[arg(long, env = "WAYMARK_ALERT_TICK_S", default_value_t = 15)]
    pub alert_tick_s: u64,
    /// Seconds between runs of the trip and stop detector, which brings each vehicle's history
    /// up to date with the fixes stored since; 0 turns it off on this instance.
    #[arg(long, env = "WAYMARK_SEGMENT_TICK_S", default_value_t = 5)]
    pub segment_tick_s: u64,
    /// Sign-in attempts an account may make per minute (10 at once), on each instance.
    #[arg(long, env = "WAYMARK_LOGIN_RATE_PER_ACCOUNT", default_value_t = 5)]
    pub login_rate_per_account: u32,
    /// Sign-in attempts one client address may make per minute (30 at once), on each instance.
    #[arg(long, env = "WAYMARK_LOGIN_RATE_PER_ADDRESS", default_value_t = 30)]
    pub login_rate_per_address: u32,
    /// Ingest requests one vehicle may make per second, sustained, on each instance; 0 for no
    /// limit. A phone catching up after lost signal sends its backlog in a burst (below).
    #[arg(long, env = "WAYMARK_INGEST_RATE", default_value_t = 10.0)]
    pub ingest_rate: f64,
    /// Ingest requests one vehicle may make at once before the rate applies.
    #[arg(long, env = "WAYMARK_INGEST_BURST", default_value_t = 200)]
    pub ingest_burst: u32,
    /// Chat messages and reactions one participant may send per minute (20 at once), on each
    /// instance.
    #[arg(long, env = "WAYMARK_CHAT_RATE_PER_MINUTE", default_value_t = 30)]
    pub chat_rate_per_minute: u32,
    /// Take the client's address from the last `X-Forwarded-For` entry (behind a reverse proxy
    /// that sets it) rather than from the connection.
    #[arg(long, env = "WAYMARK_TRUST_PROXY", default_value_t = false)]
    pub trust_proxy: bool,
    /// Seconds an HTTP request may take before it is answered `503` (WebSockets are not limited).
    #[arg(long, env = "WAYMARK_REQUEST_TIMEOUT_S", default_value_t = 30)]
    pub request_timeout_s: u64,
    /// Months of positions to keep before the current one (at least 1): older monthly partitions
    /// are dropped every six hours. Unset, positions are kept for ever.
    #[arg(long, env = "WAYMARK_RETENTION_MONTHS", value_parser = clap::value_parser!(u32).range(1..))]
    pub retention_months: Option<u32>,
    /// How long shutdown waits for sockets and in-flight writes, in seconds.
    #[arg(long, env = "WAYMARK_SHUTDOWN_GRACE_S", default_value_t = 10)]
    pub shutdown_grace_s: u64,
}

impl ServeConfig {
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_s)
    }
}

impl fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConfig")
            .field("bind", &self.bind)
            .field("reuse_port", &self.reuse_port)
            .field("redis_url", &self.redis_url.as_ref().map(|_| "<set>"))
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("secret_file", &self.secret_file)
            .field("session_hours", &self.session_hours)
            .field("tile_url", &self.tile_url)
            .field("writer_batch", &self.writer_batch)
            .finish_non_exhaustive()
    }
}

// The database URL may carry a password and `user create` takes one: neither ever reaches a log.
impl fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DbConfig")
            .field("database_url", &"<redacted>")
            .field("db_pool", &self.db_pool)
            .finish()
    }
}
