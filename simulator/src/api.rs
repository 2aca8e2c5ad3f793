//! A typed client for the parts of Waymark's HTTP API that the simulator uses, with errors
//! sorted into "retry later" and "give up".

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize, Serializer};

use crate::geo::LatLon;
use crate::run::protocol::{Auth, SpeedUnit, WireRequest};

/// Whole-request limit: a request the server has not answered by then is treated like a
/// network failure and retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Waymark's own ingest endpoint, relative to the base URL.
pub const NATIVE_INGEST: &str = "api/v1/positions";

/// The most positions `POST /positions` takes in one body.
pub const MAX_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot reach the server: {0}")]
    Network(String),
    #[error("server answered {status}: {code}: {message}")]
    Status {
        status: StatusCode,
        code: String,
        message: String,
        field: Option<String>,
        index: Option<usize>,
    },
    #[error("unexpected reply: {0}")]
    Decode(String),
}

impl ApiError {
    /// True for failures that may go away by themselves: the server is down, restarting,
    /// overloaded or cannot reach its database.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Network(_) => true,
            Self::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
            Self::Decode(_) => false,
        }
    }

    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    fn network(e: &reqwest::Error) -> Self {
        // reqwest's top-level message is generic ("error sending request"); the cause says why.
        let mut text = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        Self::Network(text)
    }
}

/// Email and password for `POST /auth/login`; the password never appears in `Debug`.
#[derive(Clone)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A cheap-to-clone handle: one connection pool, and the dispatcher's session, renewed by
/// signing in again when the server stops accepting it.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    credentials: Arc<Credentials>,
    jwt: Arc<Mutex<Option<String>>>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base.as_str())
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Vehicle {
    pub id: i64,
    pub name: String,
    /// The unit of `speed` in OsmAnd-protocol requests.
    pub speed_unit: SpeedUnit,
    #[serde(default)]
    pub last_position: Option<StoredPosition>,
}

/// The fields of a stored position that the simulator reads back.
#[derive(Debug, Clone, Deserialize)]
pub struct StoredPosition {
    pub lat: f64,
    pub lon: f64,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
struct CreatedVehicle {
    vehicle: Vehicle,
    ingest_token: String,
}

#[derive(Deserialize)]
struct IngestToken {
    ingest_token: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Shipment {
    pub id: i64,
    pub reference: String,
    pub status: String,
    #[serde(default)]
    pub vehicle_id: Option<i64>,
    #[serde(default)]
    pub last_position: Option<StoredPosition>,
}

impl Shipment {
    /// `planned` or `in_transit`: the one shipment a vehicle's positions attach to.
    pub fn is_active(&self) -> bool {
        matches!(self.status.as_str(), "planned" | "in_transit")
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Place {
    pub lat: f64,
    pub lon: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Place {
    pub fn new(point: LatLon, name: Option<String>) -> Self {
        Self {
            lat: point.lat,
            lon: point.lon,
            name,
        }
    }
}

/// A GeoJSON LineString geometry.
#[derive(Debug, Clone, Serialize)]
pub struct LineString {
    #[serde(rename = "type")]
    kind: &'static str,
    coordinates: Vec<[f64; 2]>,
}

impl LineString {
    pub fn new(points: &[LatLon]) -> Self {
        Self {
            kind: "LineString",
            coordinates: points.iter().map(|p| p.to_geojson()).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NewShipment {
    pub reference: String,
    pub origin: Place,
    pub destination: Place,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned_route: Option<LineString>,
    pub vehicle_id: i64,
}

/// A position as a device posts it.
#[derive(Debug, Clone, Serialize)]
pub struct NewPosition {
    pub lat: f64,
    pub lon: f64,
    #[serde(serialize_with = "rfc3339_millis")]
    pub recorded_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speed: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heading: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub altitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery: Option<f64>,
}

fn rfc3339_millis<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// The JSON body for `POST /positions`: a lone object for one position, an array for more.
pub fn positions_body(positions: &[NewPosition]) -> Result<Vec<u8>, serde_json::Error> {
    match positions {
        [one] => serde_json::to_vec(one),
        many => serde_json::to_vec(many),
    }
}

/// What the server says once a `POST /positions` is committed.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct IngestReply {
    #[serde(default)]
    pub accepted: u64,
    #[serde(default)]
    pub duplicates: u64,
    #[serde(default)]
    pub filtered: u64,
}

/// A `POST /positions` reply in full: the counts, and the seq of each item in order (a
/// duplicate's is the stored copy's).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct IngestAck {
    pub accepted: u64,
    pub duplicates: u64,
    pub filtered: u64,
    pub seqs: Vec<i64>,
}

/// One row of a vehicle's audit log (`GET /vehicles/{id}/positions`).
#[derive(Debug, Clone, Deserialize)]
pub struct LoggedPosition {
    pub seq: i64,
    pub lat: f64,
    pub lon: f64,
    pub recorded_at: DateTime<Utc>,
    #[serde(default)]
    pub shipment_id: Option<i64>,
    pub late: bool,
    /// Why the filter marked it, or `None` for a good fix.
    #[serde(default)]
    pub filter_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogPage {
    pub positions: Vec<LoggedPosition>,
    /// Where the next page starts; `None` on the last.
    pub next: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Alert {
    pub id: i64,
    pub rule: String,
    #[serde(default)]
    pub geofence_id: Option<i64>,
}

#[derive(Deserialize)]
struct AlertPage {
    alerts: Vec<Alert>,
}

#[derive(Deserialize)]
struct Created {
    id: i64,
}

#[derive(Deserialize)]
struct LoginReply {
    token: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    index: Option<usize>,
}

impl Api {
    pub fn new(base: &Url, credentials: Credentials) -> anyhow::Result<Self> {
        let base = normalise_base(base)?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("waymark-sim/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base,
            credentials: Arc::new(credentials),
            jwt: Arc::new(Mutex::new(None)),
        })
    }

    /// The same client and session for another instance of the same deployment (they share
    /// the signing key, so the session is valid there too).
    pub fn at(&self, base: &Url) -> anyhow::Result<Self> {
        Ok(Self {
            http: self.http.clone(),
            base: normalise_base(base)?,
            credentials: Arc::clone(&self.credentials),
            jwt: Arc::clone(&self.jwt),
        })
    }

    /// The server's base URL, used to keep tokens of different servers apart.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The WebSocket URL authenticated with the current session, as browsers do.
    pub fn websocket_url(&self) -> anyhow::Result<Url> {
        let mut url = self.url("api/v1/ws")?;
        url.set_scheme("ws")
            .map_err(|()| anyhow::anyhow!("cannot make a ws:// URL from {}", self.base))?;
        let jwt = self
            .current_jwt()
            .ok_or_else(|| anyhow::anyhow!("sign in before opening a WebSocket"))?;
        url.query_pairs_mut().append_pair("token", &jwt);
        Ok(url)
    }

    /// Signs in and keeps the session for later dispatcher calls.
    pub async fn login(&self) -> Result<(), ApiError> {
        let body = serde_json::json!({
            "email": self.credentials.email,
            "password": self.credentials.password,
        });
        let body = serde_json::to_vec(&body).map_err(|e| ApiError::Decode(e.to_string()))?;
        let reply: LoginReply = self
            .send(Method::POST, "api/v1/auth/login", None, Some(body))
            .await?;
        *self.jwt.lock().unwrap_or_else(PoisonError::into_inner) = Some(reply.token);
        Ok(())
    }

    pub async fn list_vehicles(&self) -> Result<Vec<Vehicle>, ApiError> {
        self.dispatcher(Method::GET, "api/v1/vehicles", None).await
    }

    /// Creates a vehicle; the reply carries its ingest token, shown only this once.
    pub async fn create_vehicle(&self, name: &str) -> Result<(Vehicle, String), ApiError> {
        self.create_vehicle_with_unit(name, None).await
    }

    /// Creates a vehicle whose OsmAnd-protocol speeds are in `speed_unit` (the server's
    /// default, knots, when `None`).
    pub async fn create_vehicle_with_unit(
        &self,
        name: &str,
        speed_unit: Option<&str>,
    ) -> Result<(Vehicle, String), ApiError> {
        let body = match speed_unit {
            Some(unit) => serde_json::json!({ "name": name, "speed_unit": unit }),
            None => serde_json::json!({ "name": name }),
        };
        let body = encode(&body)?;
        let created: CreatedVehicle = self
            .dispatcher(Method::POST, "api/v1/vehicles", Some(body))
            .await?;
        Ok((created.vehicle, created.ingest_token))
    }

    /// Issues a new ingest token for a vehicle; the old one stops working.
    pub async fn rotate_token(&self, vehicle_id: i64) -> Result<String, ApiError> {
        let path = format!("api/v1/vehicles/{vehicle_id}/token");
        let reply: IngestToken = self.dispatcher(Method::POST, &path, None).await?;
        Ok(reply.ingest_token)
    }

    pub async fn list_shipments(&self) -> Result<Vec<Shipment>, ApiError> {
        self.dispatcher(Method::GET, "api/v1/shipments", None).await
    }

    pub async fn create_shipment(&self, shipment: &NewShipment) -> Result<Shipment, ApiError> {
        let body = encode(shipment)?;
        self.dispatcher(Method::POST, "api/v1/shipments", Some(body))
            .await
    }

    pub async fn set_shipment_status(&self, id: i64, status: &str) -> Result<Shipment, ApiError> {
        let body = encode(&serde_json::json!({ "status": status }))?;
        let path = format!("api/v1/shipments/{id}");
        self.dispatcher(Method::PATCH, &path, Some(body)).await
    }

    pub async fn get_vehicle(&self, id: i64) -> Result<Vehicle, ApiError> {
        self.dispatcher(Method::GET, &format!("api/v1/vehicles/{id}"), None)
            .await
    }

    pub async fn get_shipment(&self, id: i64) -> Result<Shipment, ApiError> {
        self.dispatcher(Method::GET, &format!("api/v1/shipments/{id}"), None)
            .await
    }

    /// One page of a vehicle's audit log: every stored row in time order, marked ones too,
    /// after `after` (the previous page's `next`).
    pub async fn positions_log(
        &self,
        vehicle_id: i64,
        after: Option<DateTime<Utc>>,
    ) -> Result<LogPage, ApiError> {
        let mut path = format!("api/v1/vehicles/{vehicle_id}/positions?limit=5000");
        if let Some(after) = after {
            path.push_str("&after=");
            path.push_str(&after.to_rfc3339_opts(SecondsFormat::Micros, true));
        }
        self.dispatcher(Method::GET, &path, None).await
    }

    /// A shipment's drawn track as the server sends it: `format` is `geojson` or `gpx`.
    pub async fn track(&self, shipment_id: i64, format: &str) -> Result<String, ApiError> {
        let path = format!("api/v1/shipments/{shipment_id}/track?format={format}");
        let bytes = self.dispatcher_raw(Method::GET, &path, None).await?;
        String::from_utf8(bytes).map_err(|e| ApiError::Decode(e.to_string()))
    }

    /// Creates a circular geofence that applies to `vehicle_ids` only; answers its id.
    pub async fn create_circle_geofence(
        &self,
        name: &str,
        centre: LatLon,
        radius_m: f64,
        vehicle_ids: &[i64],
    ) -> Result<i64, ApiError> {
        let body = encode(&serde_json::json!({
            "name": name,
            "circle": {"lat": centre.lat, "lon": centre.lon, "radius_m": radius_m},
            "vehicle_ids": vehicle_ids,
        }))?;
        let created: Created = self
            .dispatcher(Method::POST, "api/v1/geofences", Some(body))
            .await?;
        Ok(created.id)
    }

    /// The newest 500 alerts of a vehicle.
    pub async fn vehicle_alerts(&self, vehicle_id: i64) -> Result<Vec<Alert>, ApiError> {
        let path = format!("api/v1/alerts?vehicle_id={vehicle_id}&limit=500");
        let page: AlertPage = self.dispatcher(Method::GET, &path, None).await?;
        Ok(page.alerts)
    }

    /// Posts positions as a device, answering what the server acknowledged, seqs included.
    pub async fn ingest(
        &self,
        ingest_token: &str,
        positions: &[NewPosition],
    ) -> Result<IngestAck, ApiError> {
        let body = positions_body(positions).map_err(|e| ApiError::Decode(e.to_string()))?;
        self.send(Method::POST, NATIVE_INGEST, Some(ingest_token), Some(body))
            .await
    }

    /// Posts an already encoded position body (see [`positions_body`]) as a device.
    pub async fn post_positions(
        &self,
        ingest_token: &str,
        body: Vec<u8>,
    ) -> Result<IngestReply, ApiError> {
        self.send(Method::POST, NATIVE_INGEST, Some(ingest_token), Some(body))
            .await
    }

    /// Sends a device request in any protocol (see [`WireRequest`]). Only the native endpoint
    /// answers with counts; the tracker endpoints answer as the apps expect (an empty body or
    /// `[]`), which is read as nothing filtered.
    pub async fn deliver(&self, wire: &WireRequest) -> Result<IngestReply, ApiError> {
        let mut url = self.url(wire.path)?;
        url.set_query(wire.query.as_deref());
        let mut request = self.http.request(wire.method.clone(), url);
        for (name, value) in &wire.headers {
            request = request.header(*name, value);
        }
        request = match &wire.auth {
            Auth::None => request,
            Auth::Bearer(token) => request.header(AUTHORIZATION, bearer(token)?),
            Auth::Basic { user, password } => request.basic_auth(user, Some(password)),
        };
        if let Some((content_type, body)) = &wire.body {
            request = request
                .header(CONTENT_TYPE, *content_type)
                .body(body.clone());
        }
        let bytes = Self::execute(request).await?;
        if wire.path == NATIVE_INGEST {
            serde_json::from_slice(&bytes).map_err(|e| ApiError::Decode(e.to_string()))
        } else {
            Ok(IngestReply::default())
        }
    }

    fn current_jwt(&self) -> Option<String> {
        self.jwt
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A call with the dispatcher's session, its JSON reply decoded.
    async fn dispatcher<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ApiError> {
        decode(&self.dispatcher_raw(method, path, body).await?)
    }

    /// A call with the dispatcher's session, its reply as sent; an expired session is renewed
    /// once.
    async fn dispatcher_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, ApiError> {
        let jwt = match self.current_jwt() {
            Some(jwt) => jwt,
            None => {
                self.login().await?;
                self.current_jwt().unwrap_or_default()
            }
        };
        match self
            .send_raw(method.clone(), path, Some(&jwt), body.clone())
            .await
        {
            Err(e) if e.status() == Some(StatusCode::UNAUTHORIZED) => {
                tracing::debug!("session refused, signing in again");
                self.login().await?;
                let jwt = self.current_jwt().unwrap_or_default();
                self.send_raw(method, path, Some(&jwt), body).await
            }
            other => other,
        }
    }

    fn url(&self, path: &str) -> Result<Url, ApiError> {
        self.base
            .join(path)
            .map_err(|e| ApiError::Decode(format!("bad path {path}: {e}")))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        bearer_token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<T, ApiError> {
        decode(&self.send_raw(method, path, bearer_token, body).await?)
    }

    async fn send_raw(
        &self,
        method: Method,
        path: &str,
        bearer_token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, ApiError> {
        let mut request = self.http.request(method, self.url(path)?);
        if let Some(token) = bearer_token {
            request = request.header(AUTHORIZATION, bearer(token)?);
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                .body(body);
        }
        Self::execute(request).await
    }

    /// The body of a 2xx reply, or the server's error.
    async fn execute(request: reqwest::RequestBuilder) -> Result<Vec<u8>, ApiError> {
        let response = request.send().await.map_err(|e| ApiError::network(&e))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| ApiError::network(&e))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { error }) => ApiError::Status {
                status,
                code: error.code,
                message: error.message,
                field: error.field,
                index: error.index,
            },
            Err(_) => ApiError::Status {
                status,
                code: "unknown".into(),
                message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                field: None,
                index: None,
            },
        })
    }
}

/// An `Authorization: Bearer` value, kept out of logs.
fn bearer(token: &str) -> Result<HeaderValue, ApiError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ApiError::Decode("the token is not a valid header value".into()))?;
    value.set_sensitive(true);
    Ok(value)
}

fn normalise_base(base: &Url) -> anyhow::Result<Url> {
    anyhow::ensure!(
        base.scheme() == "http",
        "the server URL must start with http:// (this build speaks plain HTTP only): {base}"
    );
    let mut base = base.clone();
    // Url::join drops the last path segment unless the base ends with a slash, which would
    // lose a path prefix such as http://host/waymark.
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok(base)
}

/// A JSON reply; a 204 has no body, and callers that expect one get a decode error.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.is_empty() { b"null" } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| ApiError::Decode(e.to_string()))
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(value).map_err(|e| ApiError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(ms: i64) -> NewPosition {
        NewPosition {
            lat: 48.1,
            lon: 11.5,
            recorded_at: DateTime::from_timestamp_millis(ms).unwrap_or_default(),
            accuracy: Some(5.0),
            speed: None,
            heading: Some(90.0),
            altitude: None,
            battery: None,
        }
    }

    #[test]
    fn one_position_is_posted_as_an_object_and_several_as_an_array() {
        let one: serde_json::Value =
            serde_json::from_slice(&positions_body(&[position(1_700_000_000_250)]).unwrap())
                .unwrap();
        assert_eq!(one["recorded_at"], "2023-11-14T22:13:20.250Z");
        assert_eq!(one["accuracy"], 5.0);
        assert!(one.get("speed").is_none(), "absent fields are left out");

        let two: serde_json::Value = serde_json::from_slice(
            &positions_body(&[position(1_700_000_000_000), position(1_700_000_001_000)]).unwrap(),
        )
        .unwrap();
        assert_eq!(two.as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn only_transient_failures_are_retried() {
        let status = |s: u16| ApiError::Status {
            status: StatusCode::from_u16(s).unwrap(),
            code: String::new(),
            message: String::new(),
            field: None,
            index: None,
        };
        assert!(ApiError::Network("refused".into()).is_retryable());
        assert!(status(503).is_retryable());
        assert!(status(500).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(401).is_retryable());
        assert!(!status(409).is_retryable());
        assert!(!ApiError::Decode("x".into()).is_retryable());
    }

    #[test]
    fn base_urls_keep_their_path_prefix_and_the_websocket_carries_the_session() {
        let creds = || Credentials {
            email: "a@b".into(),
            password: "secret".into(),
        };
        let api = Api::new(
            &Url::parse("http://127.0.0.1:8080/waymark").unwrap(),
            creds(),
        )
        .unwrap();
        assert_eq!(
            api.url("api/v1/vehicles").unwrap().as_str(),
            "http://127.0.0.1:8080/waymark/api/v1/vehicles"
        );
        assert!(api.websocket_url().is_err(), "no session yet");
        *api.jwt.lock().unwrap() = Some("a.b.c".into());
        assert_eq!(
            api.websocket_url().unwrap().as_str(),
            "ws://127.0.0.1:8080/waymark/api/v1/ws?token=a.b.c"
        );
        let other = api
            .at(&Url::parse("http://127.0.0.1:8081").unwrap())
            .unwrap();
        assert_eq!(
            other.websocket_url().unwrap().as_str(),
            "ws://127.0.0.1:8081/api/v1/ws?token=a.b.c",
            "another instance shares the session"
        );
        assert!(api
            .at(&Url::parse("https://example.test").unwrap())
            .is_err());
        assert!(!format!("{:?}", creds()).contains("secret"));
        assert!(Api::new(&Url::parse("https://example.test").unwrap(), creds()).is_err());
    }
}
