//! Chat storage: the rows only. Every change is stored with the seq its event transaction
//! (`tracking::EventTx`) handed out, under the `event_seq` row lock held to commit, exactly as
//! the position writer does, so chat events follow commit order with everything else and `since`
//! can resume a conversation.
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde_json::{
    value::{to_raw_value, RawValue},
    Value,
};
use sqlx::{PgConnection, PgPool};

use super::Participant;
use crate::{
    error::{AppError, AppResult},
    tracking::{Event, EventData, EventSource, TopicKey, Window},
};

/// A message as the API returns and publishes it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[schema(as = ChatMessage)]
pub struct Message {
    pub id: i64,
    pub shipment_id: i64,
    pub client_id: String,
    #[sqlx(flatten)]
    #[schema(inline)]
    pub author: Author,
    /// Plain text; `null` once deleted.
    #[schema(required = true)]
    pub body: Option<String>,
    pub deleted: bool,
    /// Emoji → the participants who reacted with it.
    #[schema(value_type = std::collections::BTreeMap<String, Vec<String>>)]
    pub reactions: Value,
    /// When it was sent, and its latest change, as event sequence numbers.
    pub seq: i64,
    pub updated_seq: i64,
    pub created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub edited_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Author {
    /// `user:<id>` or `customer:<link>`
    #[sqlx(rename = "author_key")]
    #[serde(rename = "key")]
    pub key: String,
    #[sqlx(rename = "author_name")]
    #[serde(rename = "name")]
    pub name: String,
    #[sqlx(rename = "author_role")]
    #[serde(rename = "role")]
    #[schema(value_type = crate::chat::openapi::ChatRole)]
    pub role: String,
}

const MESSAGE_COLUMNS: &str = "id, shipment_id, client_id, author_key, author_name, author_role, \
     body, deleted_at IS NOT NULL AS deleted, reactions, seq, updated_seq, created_at, edited_at";

/// Where a participant has read up to in one conversation.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct ReadMark {
    #[serde(skip)]
    pub shipment_id: i64,
    pub participant: String,
    pub read_seq: i64,
    pub seq: i64,
}

/// A message's latest change, published on its conversation at its `updated_seq`.
impl EventData for Message {
    fn kind(&self) -> &'static str {
        "chat"
    }

    fn keys(&self) -> Vec<TopicKey> {
        vec![TopicKey::Chat(self.shipment_id)]
    }

    fn data(&self) -> serde_json::Result<Box<RawValue>> {
        to_raw_value(self)
    }
}

/// A `chat_read` event's `data`.
#[derive(Serialize)]
struct ReadData<'a> {
    participant: &'a str,
    read_seq: i64,
}

/// A participant's read mark moved: published on the conversation.
impl EventData for ReadMark {
    fn kind(&self) -> &'static str {
        "chat_read"
    }

    fn keys(&self) -> Vec<TopicKey> {
        vec![TopicKey::Chat(self.shipment_id)]
    }

    fn data(&self) -> serde_json::Result<Box<RawValue>> {
        to_raw_value(&ReadData {
            participant: &self.participant,
            read_seq: self.read_seq,
        })
    }
}

/// Chat read back: each message changed in the window as it is now, at its latest change, and
/// each read mark moved in it.
pub struct ChatEvents;

impl EventSource for ChatEvents {
    fn events<'a>(
        &'a self,
        db: &'a PgPool,
        window: Window<'a>,
    ) -> BoxFuture<'a, sqlx::Result<Vec<Event>>> {
        Box::pin(async move {
            let shipments = window.ids(TopicKey::chat);
            if shipments.is_empty() {
                return Ok(Vec::new());
            }
            let messages: Vec<Message> = sqlx::query_as(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM chat_messages
                 WHERE shipment_id = ANY($1) AND updated_seq > $2 AND updated_seq <= $3
                 ORDER BY updated_seq LIMIT $4"
            ))
            .bind(&shipments)
            .bind(window.after)
            .bind(window.through)
            .bind(window.limit)
            .fetch_all(db)
            .await?;
            let marks: Vec<ReadMark> = sqlx::query_as(
                "SELECT shipment_id, participant, read_seq, seq FROM chat_reads
                 WHERE shipment_id = ANY($1) AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
            )
            .bind(&shipments)
            .bind(window.after)
            .bind(window.through)
            .bind(window.limit)
            .fetch_all(db)
            .await?;
            let messages = messages.into_iter().map(|m| Event::new(m.updated_seq, m));
            let marks = marks.into_iter().map(|m| Event::new(m.seq, m));
            Ok(messages.chain(marks).collect())
        })
    }
}

/// What a send did: the message, and whether this call stored it (or a re-send found it).
pub struct Sent {
    pub message: Message,
    pub new: bool,
}

/// Stores a message as event `seq`; none if this author already sent one with this client id.
pub async fn send(
    conn: &mut PgConnection,
    seq: i64,
    shipment_id: i64,
    author: &Participant,
    client_id: &str,
    body: &str,
) -> sqlx::Result<Option<Message>> {
    sqlx::query_as(&format!(
        "INSERT INTO chat_messages (organisation_id, shipment_id, author_key, author_id,
             author_name, author_role, client_id, body, seq, updated_seq)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         ON CONFLICT ON CONSTRAINT chat_messages_client_key DO NOTHING
         RETURNING {MESSAGE_COLUMNS}"
    ))
    .bind(author.organisation_id)
    .bind(shipment_id)
    .bind(&author.key)
    .bind(author.user_id)
    .bind(&author.name)
    .bind(&author.role)
    .bind(client_id)
    .bind(body)
    .bind(seq)
    .fetch_optional(conn)
    .await
}

/// The message this author sent with this client id, if any.
pub async fn by_client_id(
    db: &PgPool,
    shipment_id: i64,
    author_key: &str,
    client_id: &str,
) -> sqlx::Result<Option<Message>> {
    sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM chat_messages
         WHERE shipment_id = $1 AND author_key = $2 AND client_id = $3"
    ))
    .bind(shipment_id)
    .bind(author_key)
    .bind(client_id)
    .fetch_optional(db)
    .await
}

/// One message of the caller's organisation.
pub async fn get(db: &PgPool, organisation_id: i64, id: i64) -> AppResult<Message> {
    sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM chat_messages WHERE id = $1 AND organisation_id = $2"
    ))
    .bind(id)
    .bind(organisation_id)
    .fetch_optional(db)
    .await?
    .ok_or(AppError::NotFound("message"))
}

/// A change to one message, each taking a new seq.
pub enum Change<'a> {
    Edit(&'a str),
    Delete,
    /// Adds the participant's reaction, or takes it back if it is there.
    React {
        emoji: &'a str,
        participant: &'a str,
    },
}

/// Applies `change` to message `id` (which must not be deleted) as event `seq`, and returns the
/// message as it is now.
pub async fn change(
    conn: &mut PgConnection,
    seq: i64,
    id: i64,
    change: Change<'_>,
) -> AppResult<Message> {
    let sql = match change {
        Change::Edit(_) => "body = $3, edited_at = now()",
        Change::Delete => "body = NULL, deleted_at = now(), reactions = '{}'",
        Change::React { .. } => {
            "reactions = CASE
                 WHEN COALESCE(reactions->$3, '[]') ? $4 THEN
                     CASE WHEN jsonb_array_length(reactions->$3) = 1 THEN reactions - $3
                          ELSE jsonb_set(reactions, ARRAY[$3], (reactions->$3) - $4) END
                 ELSE jsonb_set(reactions, ARRAY[$3], COALESCE(reactions->$3, '[]') || to_jsonb($4::text))
             END"
        }
    };
    let query = format!(
        "UPDATE chat_messages SET {sql}, updated_seq = $2
         WHERE id = $1 AND deleted_at IS NULL RETURNING {MESSAGE_COLUMNS}"
    );
    let mut q = sqlx::query_as(&query).bind(id).bind(seq);
    q = match change {
        Change::Edit(body) => q.bind(body.to_owned()),
        Change::Delete => q,
        Change::React { emoji, participant } => {
            q.bind(emoji.to_owned()).bind(participant.to_owned())
        }
    };
    let message: Option<Message> = q.fetch_optional(conn).await?;
    message.ok_or_else(|| AppError::Conflict("the message was deleted".into()))
}

/// A page of the conversation, newest first: messages sent before seq `before` (or the latest).
pub async fn page(
    db: &PgPool,
    shipment_id: i64,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<Message>> {
    sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM chat_messages
         WHERE shipment_id = $1 AND ($2::bigint IS NULL OR seq < $2)
         ORDER BY seq DESC LIMIT $3"
    ))
    .bind(shipment_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Every message sent or changed after seq `since`, in the order of their latest seq.
pub async fn changed_since(
    db: &PgPool,
    shipment_id: i64,
    since: i64,
    limit: i64,
) -> sqlx::Result<Vec<Message>> {
    sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM chat_messages
         WHERE shipment_id = $1 AND updated_seq > $2 ORDER BY updated_seq LIMIT $3"
    ))
    .bind(shipment_id)
    .bind(since)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Moves `participant`'s read mark up to `read_seq` (never back) as event `seq`; none if it was
/// there already.
pub async fn mark_read(
    conn: &mut PgConnection,
    seq: i64,
    shipment_id: i64,
    participant: &str,
    read_seq: i64,
) -> sqlx::Result<Option<ReadMark>> {
    sqlx::query_as(
        "INSERT INTO chat_reads (shipment_id, participant, read_seq, seq) VALUES ($1, $2, $3, $4)
         ON CONFLICT (shipment_id, participant) DO UPDATE
             SET read_seq = EXCLUDED.read_seq, seq = EXCLUDED.seq, updated_at = now()
             WHERE chat_reads.read_seq < EXCLUDED.read_seq
         RETURNING shipment_id, participant, read_seq, seq",
    )
    .bind(shipment_id)
    .bind(participant)
    .bind(read_seq)
    .bind(seq)
    .fetch_optional(conn)
    .await
}

/// Everyone's read marks in one conversation.
pub async fn reads(db: &PgPool, shipment_id: i64) -> sqlx::Result<Vec<ReadMark>> {
    sqlx::query_as(
        "SELECT shipment_id, participant, read_seq, seq FROM chat_reads WHERE shipment_id = $1
         ORDER BY participant",
    )
    .bind(shipment_id)
    .fetch_all(db)
    .await
}

/// Messages from others after the participant's read mark, per conversation among `shipments`.
pub async fn unread(
    db: &PgPool,
    shipments: &[i64],
    participant: &str,
) -> sqlx::Result<Vec<(i64, i64)>> {
    sqlx::query_as(
        "SELECT m.shipment_id, count(*) FROM chat_messages m
         LEFT JOIN chat_reads r ON r.shipment_id = m.shipment_id AND r.participant = $2
         WHERE m.shipment_id = ANY($1) AND m.author_key <> $2 AND m.deleted_at IS NULL
           AND m.seq > COALESCE(r.read_seq, 0)
         GROUP BY m.shipment_id ORDER BY m.shipment_id",
    )
    .bind(shipments)
    .bind(participant)
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};
    use serde_json::json;

    use super::*;
    use crate::tracking::{frames, Published};

    fn at() -> DateTime<Utc> {
        "2026-01-02T03:04:05Z".parse().unwrap()
    }

    fn texts(published: &[Published]) -> Vec<String> {
        published.iter().map(|p| p.frame.to_string()).collect()
    }

    #[test]
    fn chat_frames_go_on_the_conversation_at_the_latest_change() {
        let message = Message {
            id: 1,
            shipment_id: 9,
            client_id: "c1".into(),
            author: Author {
                key: "user:1".into(),
                name: "Ann".into(),
                role: "dispatcher".into(),
            },
            body: Some("hi \"there\"".into()),
            deleted: false,
            reactions: json!({}),
            seq: 10,
            updated_seq: 12,
            created_at: at(),
            edited_at: Some(at()),
        };
        let data = serde_json::to_string(&message).unwrap();
        let published = frames(&Event::new(12, message), |_| true);
        assert_eq!(
            texts(&published),
            [format!(
                r#"{{"type":"chat","topic":"chat:9","seq":12,"data":{data}}}"#
            )]
        );
        let mark = ReadMark {
            shipment_id: 9,
            participant: "user:1".into(),
            read_seq: 12,
            seq: 13,
        };
        assert_eq!(
            texts(&frames(&Event::new(13, mark), |_| true)),
            [
                r#"{"type":"chat_read","topic":"chat:9","seq":13,"data":{"participant":"user:1","read_seq":12}}"#
            ]
        );
    }
}
