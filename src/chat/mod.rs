//! Chat: one conversation per shipment between its driver, the dispatchers and, when the share
//! link allows it, the customer. Messages carry a client-chosen id, so a re-send is stored once;
//! edits, deletions, reactions and read marks each take a seq like every other event.
mod store;

pub use store::{Message, ReadMark};

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, patch, post},
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::{
    auth::{CurrentUser, Role, Viewer},
    error::{ApiJson, ApiPath, ApiQuery, AppError, AppResult},
    shipments,
    tracking::Batch,
    AppState,
};

/// Longest message, in characters.
pub const MAX_BODY_CHARS: usize = 2000;
/// Longest client-chosen message id.
pub const MAX_CLIENT_ID: usize = 64;
/// Most messages one page of history holds.
const MAX_PAGE: i64 = 200;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/shipments/{id}/chat", get(history).post(send))
        .route("/shipments/{id}/chat/read", post(read))
        .route("/chat/{id}", patch(edit).delete(delete))
        .route("/chat/{id}/reactions", post(react))
        .route("/chat/unread", get(unread))
}

/// Who is speaking in a conversation.
#[derive(Debug, Clone)]
pub struct Participant {
    /// `user:<id>` or `customer:<share link label>`: stable across sessions and tabs.
    pub key: String,
    pub user_id: Option<i64>,
    pub name: String,
    /// `admin`, `dispatcher`, `driver` or `customer`.
    pub role: String,
    pub organisation_id: i64,
}

impl Participant {
    /// The viewer as a participant of shipment `id`'s conversation, or `404` (not theirs to
    /// see) / `403` (a share link without chat).
    pub async fn of(db: &PgPool, viewer: &Viewer, shipment_id: i64) -> AppResult<Participant> {
        shipments::load_visible(db, viewer, shipment_id).await?;
        Ok(match viewer {
            Viewer::User(u) => Participant {
                key: format!("user:{}", u.id),
                user_id: Some(u.id),
                name: u.email.clone(),
                role: u.role.as_str().to_owned(),
                organisation_id: u.organisation_id,
            },
            Viewer::Share(s) if s.chat => Participant {
                key: format!("customer:{}", s.label),
                user_id: None,
                name: "Customer".to_owned(),
                role: "customer".to_owned(),
                organisation_id: s.organisation_id,
            },
            Viewer::Share(_) => {
                return Err(AppError::Forbidden("chat is not enabled on this link"));
            }
        })
    }
}

/// Publishes a committed chat seq, so every instance's sequencer moves past it at once.
fn committed(state: &AppState, seq: i64) {
    state.tracking.committed(Batch {
        first: seq,
        last: seq,
        events: Vec::new(),
    });
}

/// A message body as sent: trimmed, not empty, not too long.
fn check_body(body: &str) -> AppResult<&str> {
    let body = body.trim();
    if body.is_empty() {
        return Err(AppError::validation("body", "a message cannot be empty"));
    }
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(AppError::validation(
            "body",
            format!("a message holds at most {MAX_BODY_CHARS} characters"),
        ));
    }
    Ok(body)
}

fn check_client_id(id: &str) -> AppResult<()> {
    let ok = !id.is_empty()
        && id.len() <= MAX_CLIENT_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(AppError::validation(
            "client_id",
            format!("client_id must be 1 to {MAX_CLIENT_ID} letters, digits, - or _"),
        ))
    }
}

/// One emoji (a short run of non-ASCII symbols, joiners and variation selectors included).
fn check_emoji(emoji: &str) -> AppResult<()> {
    let ok = !emoji.is_empty()
        && emoji.len() <= 32
        && emoji.chars().count() <= 8
        && emoji
            .chars()
            .all(|c| !c.is_ascii() && !c.is_whitespace() && !c.is_control());
    if ok {
        Ok(())
    } else {
        Err(AppError::validation("emoji", "emoji must be one emoji"))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Messages sent before this seq (the previous page's `next_before`).
    before: Option<i64>,
    /// Every message sent or changed after this seq, oldest change first.
    since: Option<i64>,
    limit: Option<i64>,
}

/// The conversation: the latest messages (or those before a cursor), or everything that changed
/// since a seq; with everyone's read marks and the caller's unread count.
async fn history(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> AppResult<Json<Value>> {
    let me = Participant::of(&state.db, &viewer, id).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::validation("limit", "limit must be 1 to 200"));
    }
    let (messages, next_before) = match (q.since, q.before) {
        (Some(_), Some(_)) => {
            return Err(AppError::validation(
                "since",
                "give since or before, not both",
            ))
        }
        (Some(since), None) => (
            store::changed_since(&state.db, id, since, limit).await?,
            None,
        ),
        (None, before) => {
            let mut page = store::page(&state.db, id, before, limit).await?;
            let next = (page.len() as i64 == limit)
                .then(|| page.last().map(|m| m.seq))
                .flatten();
            page.reverse();
            (page, next)
        }
    };
    let reads = store::reads(&state.db, id).await?;
    let unread = store::unread(&state.db, &[id], &me.key)
        .await?
        .first()
        .map_or(0, |(_, n)| *n);
    Ok(Json(json!({
        "messages": messages,
        "next_before": next_before,
        "reads": reads,
        "unread": unread,
        "me": me.key,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    client_id: String,
    body: String,
}

/// Sends a message: `201` with it when stored, `200` with the stored one for a re-send.
async fn send(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiJson(m): ApiJson<NewMessage>,
) -> AppResult<(StatusCode, Json<Message>)> {
    let me = Participant::of(&state.db, &viewer, id).await?;
    check_client_id(&m.client_id)?;
    let body = check_body(&m.body)?;
    // A re-send is answered with what is stored, and costs nothing against the rate.
    if let Some(stored) = store::by_client_id(&state.db, id, &me.key, &m.client_id).await? {
        return Ok((StatusCode::OK, Json(stored)));
    }
    state
        .limits
        .chat
        .check(&me.key)
        .map_err(AppError::RateLimited)?;
    let sent = store::send(&state.db, me.organisation_id, id, &me, &m.client_id, body).await?;
    if !sent.new {
        return Ok((StatusCode::OK, Json(sent.message)));
    }
    committed(&state, sent.message.seq);
    Ok((StatusCode::CREATED, Json(sent.message)))
}

/// The message `id` if the viewer wrote it (authors change only their own).
async fn own_message(state: &AppState, user: &CurrentUser, id: i64) -> AppResult<Message> {
    let message = store::get(&state.db, user.organisation_id, id).await?;
    let viewer = Viewer::User(user.clone());
    let me = Participant::of(&state.db, &viewer, message.shipment_id).await?;
    if message.author.key != me.key {
        return Err(AppError::Forbidden("only its author changes a message"));
    }
    Ok(message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    body: String,
}

async fn edit(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(e): ApiJson<Edit>,
) -> AppResult<Json<Message>> {
    let body = check_body(&e.body)?;
    own_message(&state, &user, id).await?;
    let message = store::change(&state.db, id, store::Change::Edit(body)).await?;
    committed(&state, message.updated_seq);
    Ok(Json(message))
}

/// Deletes a message: it stays in the conversation, marked deleted, without its text.
async fn delete(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<Message>> {
    own_message(&state, &user, id).await?;
    let message = store::change(&state.db, id, store::Change::Delete).await?;
    committed(&state, message.updated_seq);
    Ok(Json(message))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reaction {
    emoji: String,
}

/// Toggles the caller's reaction on a message of a conversation they take part in.
async fn react(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiJson(r): ApiJson<Reaction>,
) -> AppResult<Json<Message>> {
    check_emoji(&r.emoji)?;
    let message = store::get(&state.db, viewer.organisation_id(), id).await?;
    let me = Participant::of(&state.db, &viewer, message.shipment_id).await?;
    state
        .limits
        .chat
        .check(&me.key)
        .map_err(AppError::RateLimited)?;
    let change = store::Change::React {
        emoji: &r.emoji,
        participant: &me.key,
    };
    let message = store::change(&state.db, id, change).await?;
    committed(&state, message.updated_seq);
    Ok(Json(message))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Read {
    /// The seq of the newest message read.
    seq: i64,
}

/// Marks the conversation read up to a message; the mark never moves back.
async fn read(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiJson(r): ApiJson<Read>,
) -> AppResult<Json<Value>> {
    let me = Participant::of(&state.db, &viewer, id).await?;
    if r.seq < 0 {
        return Err(AppError::validation("seq", "seq must not be negative"));
    }
    if let Some(mark) = store::mark_read(&state.db, id, &me.key, r.seq).await? {
        committed(&state, mark.seq);
    }
    let unread = store::unread(&state.db, &[id], &me.key)
        .await?
        .first()
        .map_or(0, |(_, n)| *n);
    Ok(Json(json!({ "unread": unread })))
}

/// Unread counts of the caller's conversations: a dispatcher's are the organisation's active
/// shipments, a driver's those assigned to them.
async fn unread(State(state): State<AppState>, user: CurrentUser) -> AppResult<Json<Value>> {
    let driver = (user.role == Role::Driver).then_some(user.id);
    let shipments: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM shipments WHERE organisation_id = $1
           AND ($2::bigint IS NULL OR driver_id = $2)
           AND status NOT IN ('delivered', 'cancelled')",
    )
    .bind(user.organisation_id)
    .bind(driver)
    .fetch_all(&state.db)
    .await?;
    let counts = store::unread(&state.db, &shipments, &format!("user:{}", user.id)).await?;
    let counts: Vec<Value> = counts
        .into_iter()
        .map(|(shipment_id, unread)| json!({"shipment_id": shipment_id, "unread": unread}))
        .collect();
    Ok(Json(json!({ "conversations": counts })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_ids_and_emoji_are_checked() {
        assert_eq!(check_body("  hi  ").unwrap(), "hi");
        assert!(check_body("   ").is_err());
        assert!(check_body(&"x".repeat(MAX_BODY_CHARS + 1)).is_err());
        assert!(
            check_body(&"é".repeat(MAX_BODY_CHARS)).is_ok(),
            "characters, not bytes"
        );
        assert!(check_client_id("m-1_a").is_ok());
        for bad in ["", "a b", "<x>", &"a".repeat(65)] {
            assert!(check_client_id(bad).is_err(), "{bad}");
        }
        for ok in ["👍", "❤️", "👩‍🚒", "🇩🇪"] {
            assert!(check_emoji(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", ":)", "👍 ", "<b>"] {
            assert!(check_emoji(bad).is_err(), "{bad}");
        }
    }
}
