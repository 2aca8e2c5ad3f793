//! Defences at the edge: the security headers and Content-Security-Policy every answer carries,
//! refusing cross-site requests that would ride on the session cookie, and rate limits.
mod limit;
pub mod openapi;

pub use limit::{client_ip, Limits, RateLimiter, SharedBuckets};

use std::net::{IpAddr, SocketAddr};

use axum::{
    extract::{ConnectInfo, FromRequestParts, Request, State},
    http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Method},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    config::ServeConfig, error::openapi::BadRequest, error::AppError,
    security::openapi::CspReports, AppState,
};

/// The session cookie's name. It is set by `auth` at sign-in; it is named here because the
/// cross-site guard ([`refuse_cross_site`]) looks for it on every request.
pub const SESSION_COOKIE: &str = "waymark_session";

/// The address a request came from (see [`client_ip`]).
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        Ok(ClientIp(client_ip(
            &parts.headers,
            peer,
            state.config.trust_proxy,
        )))
    }
}

/// One ingest request of `vehicle_id`, or `429` while the vehicle is over its rate.
pub fn admit_ingest(state: &AppState, vehicle_id: i64) -> Result<(), AppError> {
    state
        .limits
        .ingest
        .check(&vehicle_id)
        .map_err(AppError::RateLimited)
}

/// Whether a request's `Origin` (if it has one) is this site (the host it asked for) or one the
/// operator allowed. Browsers send `Origin` with every WebSocket handshake and every cross-site
/// state-changing request; clients that are not browsers send none and carry a token.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let origin = origin.to_str().unwrap_or_default();
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    let origin_host = origin.split_once("://").map(|(_, rest)| rest);
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Refuses a state-changing API request that another site's page made with the user's session
/// cookie (cross-site request forgery). Requests that carry `Authorization` chose their
/// credentials themselves, and a browser never adds that header on another site's behalf.
pub async fn refuse_cross_site(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let unsafe_method = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    let by_cookie = !headers.contains_key(header::AUTHORIZATION)
        && axum_extra::extract::CookieJar::from_headers(headers)
            .get(SESSION_COOKIE)
            .is_some();
    if unsafe_method && by_cookie {
        let fetched_cross_site = headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|site| site == "cross-site" || site == "same-site");
        if fetched_cross_site || !origin_allowed(headers, &state.config.allowed_origins) {
            return AppError::Forbidden("cross-site requests may not use the session cookie")
                .into_response();
        }
    }
    next.run(request).await
}

/// The headers every answer carries, pages and API alike.
pub fn headers(config: &ServeConfig) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = vec![
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_str(&content_security_policy(&config.tile_url))
                .expect("the policy is ASCII"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        // Share links carry their token in the path: other sites (the tile server) get the
        // origin only.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        ),
        (
            HeaderName::from_static("permissions-policy"),
            HeaderValue::from_static("geolocation=(self), camera=(), microphone=(), payment=()"),
        ),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ),
    ];
    if config.secure_cookies {
        headers.push((
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        ));
    }
    headers
}

/// The pages load scripts, styles and fonts from this site only, no inline script or style
/// element, images from here and the tile server, and talk only to this site (HTTP and
/// WebSocket). Violations are reported to `/api/v1/csp-report`.
pub fn content_security_policy(tile_url: &str) -> String {
    let tiles = tile_source(tile_url)
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:{tiles}; \
         connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'; \
         report-uri /api/v1/csp-report"
    )
}

/// The CSP source of a Leaflet tile URL template: its scheme and host, with `{s}` (subdomains)
/// as a wildcard; just the scheme when the host is templated otherwise.
fn tile_source(tile_url: &str) -> Option<String> {
    let (scheme, rest) = tile_url.split_once("://")?;
    if !matches!(scheme, "http" | "https") {
        return None;
    }
    let host = rest.split('/').next().unwrap_or_default();
    let host = host.replace("{s}", "*");
    // CSP allows a wildcard only as the first label.
    let wildcard_ok = match host.strip_prefix("*.") {
        Some(rest) => !rest.contains('*'),
        None => !host.contains('*'),
    };
    if host.is_empty()
        || !wildcard_ok
        || !host.is_ascii()
        || host.contains(['{', '}', ' ', ';', '\''])
    {
        return Some(format!("{scheme}:"));
    }
    Some(format!("{scheme}://{host}"))
}

/// Where browsers report what the policy blocked: logged, so a page that breaks under the
/// policy shows up in the logs.
#[utoipa::path(
    post,
    path = "/csp-report",
    operation_id = "cspReport",
    summary = "Where browsers report Content-Security-Policy violations",
    description = "Browsers post here what the policy of Waymark's pages blocked; each report is logged. Anyone may post; the body is read up to 4 KiB and must be a JSON object (a `report-uri` report) or an array of objects (the Reporting API).",
    tag = "meta",
    request_body(
        content(
            (Object = "application/csp-report"),
            (Object = "application/json"),
            (inline(CspReports) = "application/reports+json"),
        ),
    ),
    responses(
        (status = 204, description = "Logged."),
        (status = 400, response = BadRequest),
    ),
    security(),
)]
pub async fn csp_report(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let body = &body[..body.len().min(MAX_CSP_REPORT)];
    let reporting_api = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|t| t.as_bytes().starts_with(b"application/reports+json"));
    if !is_csp_report(body, reporting_api) {
        return AppError::Malformed(
            "a report is a JSON object, or an array of objects (the Reporting API)".into(),
        )
        .into_response();
    }
    let report = String::from_utf8_lossy(body).into_owned();
    tracing::warn!(report = %report, "content security policy violation");
    state
        .csp_reports
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    axum::http::StatusCode::NO_CONTENT.into_response()
}

/// The part of a violation report that is read and logged.
const MAX_CSP_REPORT: usize = 4096;

/// What browsers send: `{"csp-report": {…}}` for `report-uri`, and for the Reporting API
/// (`application/reports+json`) an array of report objects. A report cut at the size limit is
/// still logged.
fn is_csp_report(body: &[u8], reporting_api: bool) -> bool {
    let opening = if reporting_api { b'[' } else { b'{' };
    if body.len() == MAX_CSP_REPORT {
        return body.first() == Some(&opening);
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(_)) => !reporting_api,
        Ok(serde_json::Value::Array(items)) => {
            reporting_api && !items.is_empty() && items.iter().all(|i| i.is_object())
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violation_reports_are_json_objects_or_arrays_of_them() {
        assert!(is_csp_report(b"{\"csp-report\": {}}", false));
        assert!(is_csp_report(b"[{\"type\": \"csp-violation\"}]", true));
        for bad in [&b""[..], b"null", b"[null, null]", b"[]", b"\"x\"", b"{"] {
            assert!(
                !is_csp_report(bad, false),
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert!(
                !is_csp_report(bad, true),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(
            !is_csp_report(b"{}", true),
            "the Reporting API sends arrays"
        );
        assert!(!is_csp_report(b"[{}]", false), "report-uri sends an object");
    }

    #[test]
    fn tile_servers_become_image_sources() {
        assert_eq!(
            tile_source("https://tile.openstreetmap.org/{z}/{x}/{y}.png").as_deref(),
            Some("https://tile.openstreetmap.org")
        );
        assert_eq!(
            tile_source("https://{s}.tile.example.com/{z}/{x}/{y}.png").as_deref(),
            Some("https://*.tile.example.com")
        );
        assert_eq!(
            tile_source("https://tiles-{s}.example.com/x").as_deref(),
            Some("https:")
        );
        assert_eq!(tile_source(""), None);
        assert_eq!(tile_source("javascript://x"), None);
        let policy = content_security_policy("");
        assert!(policy.contains("img-src 'self' data:;"), "{policy}");
        assert!(policy.contains("script-src 'self';"), "{policy}");
    }

    #[test]
    fn only_this_site_or_allowed_origins_pass() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "fleet.test".parse().unwrap());
        assert!(origin_allowed(&h, &[]), "no Origin: not a browser");
        h.insert(header::ORIGIN, "https://fleet.test".parse().unwrap());
        assert!(origin_allowed(&h, &[]));
        h.insert(header::ORIGIN, "https://evil.test".parse().unwrap());
        assert!(!origin_allowed(&h, &[]));
        assert!(origin_allowed(&h, &["https://evil.test".to_owned()]));
        h.insert(header::ORIGIN, "null".parse().unwrap());
        assert!(!origin_allowed(&h, &[]));
    }
}
