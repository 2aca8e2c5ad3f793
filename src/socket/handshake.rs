//! The WebSocket opening handshake (RFC 6455 §4.2). It is done here rather than by axum's
//! `WebSocketUpgrade` because that one builds the connection itself, and [`wire`] must sit
//! under the protocol. The checks, their order and their messages are axum's, so a request
//! that is not a WebSocket upgrade gets the same 400 as before.
use std::future::Future;

use axum::{
    body::Body,
    extract::FromRequestParts,
    http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, Method, StatusCode},
    response::Response,
};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{Role, WebSocketConfig},
    },
    WebSocketStream,
};
use tokio_util::task::TaskTracker;

use super::wire::{self, Coalesce};
use crate::error::AppError;

/// A request to open a WebSocket, checked; [`Handshake::accept`] answers it.
pub struct Handshake {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

impl<S: Send + Sync> FromRequestParts<S> for Handshake {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let refuse =
            |why: &str| AppError::Malformed(format!("this endpoint speaks WebSocket only: {why}"));
        if parts.method != Method::GET {
            return Err(refuse("Request method must be `GET`"));
        }
        if !header_contains(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(refuse("Connection header did not include 'upgrade'"));
        }
        if !header_is(&parts.headers, header::UPGRADE, "websocket") {
            return Err(refuse("`Upgrade` header did not include 'websocket'"));
        }
        let key = parts
            .headers
            .get(header::SEC_WEBSOCKET_KEY)
            .ok_or_else(|| refuse("`Sec-WebSocket-Key` header missing"))?
            .clone();
        if !header_is(&parts.headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(refuse(
                "`Sec-WebSocket-Version` header did not include '13'",
            ));
        }
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or_else(|| {
            refuse("WebSocket request couldn't be upgraded since no upgrade state was present")
        })?;
        Ok(Handshake { key, on_upgrade })
    }
}

impl Handshake {
    /// Answers `101 Switching Protocols` and, on `tracker`, runs `session` on the connection
    /// once the client has the answer.
    pub fn accept<F, Fut>(
        self,
        config: WebSocketConfig,
        tracker: &TaskTracker,
        session: F,
    ) -> Response
    where
        F: FnOnce(wire::Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = HeaderValue::try_from(derive_accept_key(self.key.as_bytes()))
            .expect("base64 is a valid header value");
        let on_upgrade = self.on_upgrade;
        tracker.spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "websocket upgrade failed");
                    return;
                }
            };
            let io = Coalesce::new(TokioIo::new(upgraded));
            session(WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await).await;
        });
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        response
    }
}

/// Whether header `name` is `value`, ignoring ASCII case.
fn header_is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether header `name` contains `value` (lower case), ignoring ASCII case: `Connection` may
/// list several options (`keep-alive, Upgrade`).
fn header_contains(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.to_ascii_lowercase().contains(value))
}
