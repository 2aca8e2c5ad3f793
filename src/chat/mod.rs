//! Chat: one conversation per shipment between its driver, the dispatchers and, when the share
//! link allows it, the customer. Messages carry a client-chosen id, so a re-send is stored once;
//! edits, deletions, reactions and read marks each take a seq like every other event.
pub mod openapi;
mod store;

pub use store::{Author, ChatEvents, Message, ReadMark, Sent};

use axum::{
    extract::State,
    http::StatusCode,
    routing::{get, patch, post},
    Json, Router,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;
use utoipa::{IntoParams, ToSchema};

use crate::{
    auth::{CurrentUser, Role, Viewer},
    chat::openapi::{Unread, UnreadConversations},
    error::openapi::{
        BadRequest, CommonErrors, Conflict, Forbidden, Id, NotFound, RateLimited, TooLarge,
        UnsupportedMediaType,
    },
    error::{ApiJson, ApiPath, ApiQuery, AppError, AppResult},
    fleet::shipments,
    tracking::{Event, EventTx},
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

/// Commits `tx` with its one chat `event`, runs `stored` (so that a WebSocket sender's
/// acknowledgement comes before the event), and publishes the event, on every instance.
async fn commit(
    state: &AppState,
    mut tx: EventTx,
    event: Event,
    stored: impl FnOnce(),
) -> AppResult<()> {
    tx.push(event);
    let committed = tx.commit().await?;
    stored();
    committed.publish(&state.tracking);
    Ok(())
}

/// A message body as sent: trimmed, not empty, not too long.
fn check_body(body: &str) -> AppResult<&str> {
    let body = body.trim();
    if body.is_empty() {
        return Err(AppError::validation("body", "a message cannot be empty"));
    }
    if body.contains('\0') {
        return Err(AppError::validation(
            "body",
            "a message may not contain the NUL character",
        ));
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

/// Messages in a conversation's first view (the `chat:{id}` snapshot, or a history page without
/// a cursor).
pub const LATEST: i64 = 50;

/// A page of history, oldest first, with the cursor to the page before it (none at the start).
async fn latest(
    db: &PgPool,
    shipment_id: i64,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<(Vec<Message>, Option<i64>)> {
    let mut page = store::page(db, shipment_id, before, limit).await?;
    let next = (page.len() as i64 == limit)
        .then(|| page.last().map(|m| m.seq))
        .flatten();
    page.reverse();
    Ok((page, next))
}

/// The participant's unread count in one conversation.
async fn unread_in(db: &PgPool, shipment_id: i64, participant: &str) -> sqlx::Result<i64> {
    Ok(store::unread(db, &[shipment_id], participant)
        .await?
        .first()
        .map_or(0, |(_, n)| *n))
}

/// A view of the conversation: `messages` with everyone's read marks and the caller's unread
/// count.
#[derive(Debug, Serialize, ToSchema)]
pub struct View {
    pub messages: Vec<Message>,
    /// The cursor to the page before `messages`, none at the start.
    pub next_before: Option<i64>,
    pub reads: Vec<ReadMark>,
    pub unread: i64,
    /// The caller's participant key.
    pub me: String,
}

async fn view(
    db: &PgPool,
    me: &Participant,
    shipment_id: i64,
    messages: Vec<Message>,
    next_before: Option<i64>,
) -> AppResult<View> {
    Ok(View {
        messages,
        next_before,
        reads: store::reads(db, shipment_id).await?,
        unread: unread_in(db, shipment_id, &me.key).await?,
        me: me.key.clone(),
    })
}

/// The `chat:{id}` topic's snapshot: the latest messages, the read marks, the unread count.
pub async fn snapshot(db: &PgPool, viewer: &Viewer, shipment_id: i64) -> AppResult<View> {
    let me = Participant::of(db, viewer, shipment_id).await?;
    let (messages, next_before) = latest(db, shipment_id, None, LATEST).await?;
    view(db, &me, shipment_id, messages, next_before).await
}

/// Sends a message as the viewer and publishes it; a re-send with a client id this author used
/// already stores nothing and returns the stored message (`new: false`). `stored` runs between
/// storing and publishing, so a WebSocket sender's acknowledgement comes before the event.
pub async fn send_message(
    state: &AppState,
    viewer: &Viewer,
    shipment_id: i64,
    client_id: &str,
    body: &str,
    stored: impl FnOnce(&Message),
) -> AppResult<Sent> {
    let me = Participant::of(&state.db, viewer, shipment_id).await?;
    check_client_id(client_id)?;
    let body = check_body(body)?;
    // A re-send is answered with what is stored, and costs nothing against the rate.
    if let Some(message) = store::by_client_id(&state.db, shipment_id, &me.key, client_id).await? {
        stored(&message);
        return Ok(Sent {
            message,
            new: false,
        });
    }
    state
        .limits
        .chat
        .check(&me.key)
        .map_err(AppError::RateLimited)?;
    let mut tx = EventTx::begin(&state.db).await?;
    let seq = tx.next_seq();
    let Some(message) = store::send(&mut tx, seq, shipment_id, &me, client_id, body).await? else {
        // The same re-send raced this one and won: give back its message.
        tx.rollback().await?;
        let message = store::by_client_id(&state.db, shipment_id, &me.key, client_id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("a conflicting chat message vanished"))?;
        stored(&message);
        return Ok(Sent {
            message,
            new: false,
        });
    };
    commit(
        state,
        tx,
        Event::new(message.updated_seq, message.clone()),
        || stored(&message),
    )
    .await?;
    Ok(Sent { message, new: true })
}

/// The message `id` and the viewer as a participant of its conversation. One in a conversation
/// the viewer may not see is answered as one that does not exist, so ids cannot be probed.
async fn visible_message(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
) -> AppResult<(Message, Participant)> {
    let message = store::get(&state.db, viewer.organisation_id(), id).await?;
    match Participant::of(&state.db, viewer, message.shipment_id).await {
        Ok(me) => Ok((message, me)),
        Err(AppError::NotFound(_) | AppError::Forbidden(_)) => Err(AppError::NotFound("message")),
        Err(e) => Err(e),
    }
}

/// The message `id` if the viewer wrote it (authors change only their own).
async fn own_message(state: &AppState, viewer: &Viewer, id: i64) -> AppResult<Message> {
    let (message, me) = visible_message(state, viewer, id).await?;
    if message.author.key != me.key {
        return Err(AppError::Forbidden("only its author changes a message"));
    }
    Ok(message)
}

/// Stores a change to message `id`, runs `stored` (as [`send_message`] does), and publishes it.
async fn apply(
    state: &AppState,
    id: i64,
    change: store::Change<'_>,
    stored: impl FnOnce(&Message),
) -> AppResult<Message> {
    let mut tx = EventTx::begin(&state.db).await?;
    let seq = tx.next_seq();
    let message = store::change(&mut tx, seq, id, change).await?;
    commit(
        state,
        tx,
        Event::new(message.updated_seq, message.clone()),
        || stored(&message),
    )
    .await?;
    Ok(message)
}

/// Edits the viewer's own message and publishes the change.
pub async fn edit_message(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
    body: &str,
    stored: impl FnOnce(&Message),
) -> AppResult<Message> {
    let body = check_body(body)?;
    own_message(state, viewer, id).await?;
    apply(state, id, store::Change::Edit(body), stored).await
}

/// Deletes the viewer's own message: it stays in the conversation, marked deleted, without its
/// text.
pub async fn delete_message(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
    stored: impl FnOnce(&Message),
) -> AppResult<Message> {
    own_message(state, viewer, id).await?;
    apply(state, id, store::Change::Delete, stored).await
}

/// Toggles the viewer's reaction on a message of a conversation they take part in.
pub async fn react_message(
    state: &AppState,
    viewer: &Viewer,
    id: i64,
    emoji: &str,
    stored: impl FnOnce(&Message),
) -> AppResult<Message> {
    check_emoji(emoji)?;
    let (_, me) = visible_message(state, viewer, id).await?;
    state
        .limits
        .chat
        .check(&me.key)
        .map_err(AppError::RateLimited)?;
    let change = store::Change::React {
        emoji,
        participant: &me.key,
    };
    apply(state, id, change, stored).await
}

/// Moves the viewer's read mark up to `seq` (never back) and publishes the move; returns their
/// unread count, also given to `stored` before the move is published.
pub async fn mark_read(
    state: &AppState,
    viewer: &Viewer,
    shipment_id: i64,
    seq: i64,
    stored: impl FnOnce(i64),
) -> AppResult<i64> {
    let me = Participant::of(&state.db, viewer, shipment_id).await?;
    if seq < 0 {
        return Err(AppError::validation("seq", "seq must not be negative"));
    }
    let mut tx = EventTx::begin(&state.db).await?;
    let event_seq = tx.next_seq();
    let committed = match store::mark_read(&mut tx, event_seq, shipment_id, &me.key, seq).await? {
        Some(mark) => {
            tx.push(Event::new(mark.seq, mark));
            Some(tx.commit().await?)
        }
        None => {
            // Nothing moved: give the seq back rather than leave a hole for every tab's repeat.
            tx.rollback().await?;
            None
        }
    };
    let unread = unread_in(&state.db, shipment_id, &me.key).await?;
    stored(unread);
    if let Some(committed) = committed {
        committed.publish(&state.tracking);
    }
    Ok(unread)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// Messages sent before this seq (the previous page's `next_before`).
    before: Option<i64>,
    /// Every message sent or changed after this seq, oldest change first.
    since: Option<i64>,
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<i64>,
    /// A share link's token, which the [`Viewer`] extractor reads (the `share` security scheme).
    #[serde(rename = "share")]
    #[param(ignore)]
    _share: Option<serde::de::IgnoredAny>,
}

/// The conversation: the latest messages (or those before a cursor), or everything that changed
/// since a seq; with everyone's read marks and the caller's unread count.
#[utoipa::path(
    get,
    path = "/shipments/{id}/chat",
    operation_id = "chatHistory",
    summary = "A shipment's conversation: latest page, older pages, or what changed since a seq",
    description = "The shipment's dispatchers and its driver, or the customer with a share link made with `{\"chat\": true}` (`?share=`). A share link without chat gets `403`; a link of another shipment, or a shipment the caller may not see, `404`. Give `since` or `before`, not both.",
    tag = "chat",
    params(Id, HistoryQuery),
    responses(
        (status = 200, body = inline(View), description = "Messages oldest first, with read marks and the caller's unread count."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = []), ("share" = [])),
)]
async fn history(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> AppResult<Json<View>> {
    let me = Participant::of(&state.db, &viewer, id).await?;
    let limit = q.limit.unwrap_or(LATEST);
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
        (None, before) => latest(&state.db, id, before, limit).await?,
    };
    Ok(Json(view(&state.db, &me, id, messages, next_before).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    client_id: String,
    #[schema(min_length = 1, max_length = 2000)]
    body: String,
}

/// Sends a message: `201` with it when stored, `200` with the stored one for a re-send.
#[utoipa::path(
    post,
    path = "/shipments/{id}/chat",
    operation_id = "chatSend",
    summary = "Send a message",
    tag = "chat",
    params(Id),
    request_body = inline(NewMessage),
    responses(
        (status = 201, body = Message, description = "Stored."),
        (status = 200, body = Message, description = "A re-send: the message stored before."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = RateLimited),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = []), ("share" = [])),
)]
async fn send(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiJson(m): ApiJson<NewMessage>,
) -> AppResult<(StatusCode, Json<Message>)> {
    let sent = send_message(&state, &viewer, id, &m.client_id, &m.body, |_| {}).await?;
    let status = if sent.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(sent.message)))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Edit {
    #[schema(min_length = 1, max_length = 2000)]
    body: String,
}

#[utoipa::path(
    patch,
    path = "/chat/{id}",
    operation_id = "chatEdit",
    summary = "Edit one's own message",
    description = "Its author only (`403`); `409` once deleted. A message in a conversation the caller may not see answers `404` exactly as an id that does not exist.",
    tag = "chat",
    params(Id),
    request_body = inline(Edit),
    responses(
        (status = 200, body = Message, description = "Edited."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 415, response = UnsupportedMediaType),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = []), ("share" = [])),
)]
async fn edit(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiJson(e): ApiJson<Edit>,
) -> AppResult<Json<Message>> {
    Ok(Json(
        edit_message(&state, &viewer, id, &e.body, |_| {}).await?,
    ))
}

#[utoipa::path(
    delete,
    path = "/chat/{id}",
    operation_id = "chatDelete",
    summary = "Delete one's own message (it stays, marked deleted)",
    description = "Its author only (`403`). A message in a conversation the caller may not see answers `404` exactly as an id that does not exist.",
    tag = "chat",
    params(Id),
    responses(
        (status = 200, body = Message, description = "Deleted."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = []), ("share" = [])),
)]
async fn delete(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<Message>> {
    Ok(Json(delete_message(&state, &viewer, id, |_| {}).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Reaction {
    #[schema(min_length = 1, max_length = 32)]
    emoji: String,
}

#[utoipa::path(
    post,
    path = "/chat/{id}/reactions",
    operation_id = "chatReact",
    summary = "Toggle the caller's reaction",
    description = "A message in a conversation the caller may not see answers `404` exactly as an id that does not exist.",
    tag = "chat",
    params(Id),
    request_body = inline(Reaction),
    responses(
        (status = 200, body = Message, description = "The message with its reactions now."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 415, response = UnsupportedMediaType),
        (status = 429, response = RateLimited),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = []), ("share" = [])),
)]
async fn react(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiJson(r): ApiJson<Reaction>,
) -> AppResult<Json<Message>> {
    Ok(Json(
        react_message(&state, &viewer, id, &r.emoji, |_| {}).await?,
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct Read {
    /// The seq of the newest message read.
    #[schema(minimum = 0)]
    seq: i64,
}

/// Marks the conversation read up to a message; the mark never moves back.
#[utoipa::path(
    post,
    path = "/shipments/{id}/chat/read",
    operation_id = "chatRead",
    summary = "Mark the conversation read up to a message",
    tag = "chat",
    params(Id),
    request_body = inline(Read),
    responses(
        (status = 200, body = inline(Unread), description = "The caller's unread count now."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 415, response = UnsupportedMediaType),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = []), ("share" = [])),
)]
async fn read(
    State(state): State<AppState>,
    viewer: Viewer,
    ApiPath(id): ApiPath<i64>,
    ApiJson(r): ApiJson<Read>,
) -> AppResult<Json<Value>> {
    let unread = mark_read(&state, &viewer, id, r.seq, |_| {}).await?;
    Ok(Json(json!({ "unread": unread })))
}

/// Unread counts of the caller's conversations: a dispatcher's are the organisation's active
/// shipments, a driver's those assigned to them.
#[utoipa::path(
    get,
    path = "/chat/unread",
    operation_id = "chatUnread",
    summary = "Unread counts of the caller's conversations",
    tag = "chat",
    responses(
        (status = 200, body = inline(UnreadConversations), description = "One entry per conversation with unread messages."),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn unread(State(state): State<AppState>, user: CurrentUser) -> AppResult<Json<Value>> {
    let driver = (user.role == Role::Driver).then_some(user.id);
    let shipments = sqlx::query_scalar!(
        "SELECT id FROM shipments WHERE organisation_id = $1
           AND ($2::bigint IS NULL OR driver_id = $2)
           AND status NOT IN ('delivered', 'cancelled')",
        user.organisation_id,
        driver
    )
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
