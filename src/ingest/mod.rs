//! Where positions come in: the device endpoints (native, and tracker apps' own formats), the
//! plausibility filter, and the group-commit writer that makes them durable and hands them to
//! the hub.
mod attribution;
mod filter;
pub mod openapi;
mod plan;
#[cfg(test)]
mod properties;
pub(crate) mod trackers;
mod writer;

pub use filter::{judge, FilterSettings};
pub use writer::{spawn_writer, WriteError, WriteOutcome, WriterHandle};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, State},
    http::{header, HeaderMap},
    routing::post,
    Json, Router,
};
use chrono::Utc;
use serde_json::{json, Value};

use crate::error::openapi::{
    BadRequest, CommonErrors, Gone, RateLimited, TooLarge, UnsupportedMediaType,
};
use crate::ingest::openapi::{IngestReply, Positions};

use crate::{
    auth::Device,
    error::{AppError, AppResult},
    security::admit_ingest,
    tracking::position::{to_micros, NewPosition},
    AppState,
};

/// Most positions in one request.
pub const MAX_BATCH: usize = 1000;
/// Largest request body, in bytes.
pub const MAX_BODY: usize = 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/positions", post(post_positions))
        .merge(trackers::router())
}

#[utoipa::path(
    post,
    path = "/positions",
    operation_id = "postPositions",
    summary = "Post positions (device)",
    description = "Authenticated with the vehicle's ingest token as `Authorization: Bearer`. A batch with one bad item is rejected whole with `400` naming its `index`. Implausible points (`null_island`, `future`, `clock_ahead`, `outdated`, `inaccurate`, `jump`, by the organisation's filter settings) are stored for audit but never published.",
    tag = "ingest",
    request_body = inline(Positions),
    responses(
        (status = 200, body = IngestReply, description = "Every position is committed to the database."),
        (status = 400, response = BadRequest),
        (status = 410, response = Gone),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = RateLimited),
        CommonErrors,
    ),
    security(("bearer" = [])),
)]
async fn post_positions(
    State(state): State<AppState>,
    device: Device,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Json<Value>> {
    admit_ingest(&state, device.vehicle_id)?;
    let positions = read_native(&headers, body)?;
    let outcome = state.writer.write(device, positions).await?;
    Ok(reply(&outcome))
}

/// The positions of a native-format request body (JSON, at most [`MAX_BODY`] bytes).
pub fn read_native(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> AppResult<Vec<NewPosition>> {
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !json_type {
        return Err(AppError::UnsupportedMediaType(
            "expected Content-Type: application/json",
        ));
    }
    let body =
        body.map_err(|_| AppError::TooLarge(format!("the body is larger than {MAX_BODY} bytes")))?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| AppError::Malformed(format!("the body is not valid JSON: {e}")))?;
    parse_native(value)
}

/// The native endpoints' answer, sent once the positions are committed.
pub fn reply(outcome: &WriteOutcome) -> Json<Value> {
    Json(json!({
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "filtered": outcome.filtered,
        "seqs": outcome.seqs,
    }))
}

/// One position object, or an array of 1 to [`MAX_BATCH`]; any bad item rejects the whole body.
pub fn parse_native(value: Value) -> AppResult<Vec<NewPosition>> {
    let now = to_micros(Utc::now());
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(AppError::validation("", "the batch is empty"));
            }
            if items.len() > MAX_BATCH {
                return Err(AppError::TooLarge(format!(
                    "a batch holds at most {MAX_BATCH} positions, this one {}",
                    items.len()
                )));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| NewPosition::from_json(item, now).map_err(|e| e.at_index(i)))
                .collect()
        }
        other => Ok(vec![NewPosition::from_json(other, now)?]),
    }
}
