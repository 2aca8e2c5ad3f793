//! The WebSocket protocol's frames, both ways. Client frames are decoded here: JSON, then a known
//! `type`, then that type's fields; pure, so that it is tested and fuzzed without a connection.
//! Server frames are typed here, so each has one shape wherever it is sent. Both travel in an
//! [`Envelope`] that carries the `ref` a client gave and its reply echoes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use strum::VariantNames;

use crate::{
    alerts::Alert,
    auth::{CurrentUser, Role},
    chat,
    error::AppError,
    fleet::shipments::Shipment,
    fleet::vehicles::Vehicle,
    tracking::{Topic, TYPING_SHOWN_FOR},
};

/// A frame and the `ref` that ties a reply to the client frame it answers.
#[derive(Debug, PartialEq, Serialize)]
pub struct Envelope<F> {
    #[serde(flatten)]
    pub frame: F,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<Value>,
}

/// A client frame. Unknown types are answered with `unknown_type`.
#[derive(Debug, PartialEq, Deserialize, VariantNames)]
#[serde(tag = "type", rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ClientFrame {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Ping,
    Acknowledge(Acknowledge),
    ChatSend(ChatSend),
    ChatEdit(ChatEdit),
    ChatDelete(ChatDelete),
    ChatReact(ChatReact),
    ChatRead(ChatRead),
    Typing(Typing),
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct Subscribe {
    pub topic: String,
    pub since: Option<i64>,
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct Unsubscribe {
    pub topic: String,
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct Acknowledge {
    pub alert_id: i64,
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct ChatSend {
    pub topic: String,
    pub client_id: String,
    pub body: String,
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct ChatEdit {
    pub id: i64,
    pub body: String,
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct ChatDelete {
    pub id: i64,
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct ChatReact {
    pub id: i64,
    pub emoji: String,
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct ChatRead {
    pub topic: String,
    pub seq: i64,
}

#[derive(Debug, PartialEq, Deserialize)]
pub struct Typing {
    pub topic: String,
}

/// The `type`s of [`ClientFrame`], in its order: a frame of one of these with bad fields is a
/// `bad_frame`, of any other an `unknown_type`. Derived from the enum (strum spells the variants as
/// serde does; a test holds the two together), so the list cannot drift from it.
pub fn frame_types() -> &'static [&'static str] {
    ClientFrame::VARIANTS
}

/// The `unknown_type` error's message: "type must be subscribe, …, chat_read or typing".
fn unknown_type_message() -> String {
    let types = frame_types();
    match types.split_last() {
        Some((last, [])) => format!("type must be {last}"),
        Some((last, rest)) => format!("type must be {} or {last}", rest.join(", ")),
        None => "type must be given".to_owned(),
    }
}

/// Why a frame was refused: the error frame's `code` and `message`, and the frame's `ref` to
/// echo (when it was JSON and had one).
#[derive(Debug, PartialEq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
    pub reference: Option<Value>,
}

/// Decodes a client text frame. Not JSON is `bad_frame`; JSON other than an object with a
/// `type` of [`frame_types`] is `unknown_type`; a known type whose fields do not fit is
/// `bad_frame`, with serde's message. A `ref` of `null` is no `ref` on a frame that decodes.
pub fn decode(text: &str) -> Result<Envelope<ClientFrame>, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|_| FrameError {
        code: "bad_frame",
        message: "a frame must be a JSON object".to_owned(),
        reference: None,
    })?;
    let reference = value.get("ref").cloned();
    let known = value
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| frame_types().contains(&t));
    // Only objects reach serde, which would also read an array as a frame: its first element
    // the type, the rest the fields in order.
    if !known {
        return Err(FrameError {
            code: "unknown_type",
            message: unknown_type_message(),
            reference,
        });
    }
    match serde_json::from_value::<ClientFrame>(value) {
        Ok(frame) => Ok(Envelope {
            frame,
            reference: reference.filter(|r| !r.is_null()),
        }),
        Err(e) => Err(FrameError {
            code: "bad_frame",
            message: e.to_string(),
            reference,
        }),
    }
}

/// A frame the server sends. Events of a topic (`position`, `alert`, `chat`, `chat_read`) are
/// not here: [`super::frames`] builds them once when committed, and they go out as the same bytes
/// to everyone.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// Sent once on connect; `user` is `null` for a share link.
    Hello {
        server_time: DateTime<Utc>,
        user: Option<Me>,
    },
    Pong {
        server_time: DateTime<Utc>,
    },
    Subscribed {
        topic: Topic,
        snapshot: Snapshot,
    },
    /// The reply to `unsubscribe`; with a `reason`, the server ended the subscription.
    Unsubscribed {
        topic: Topic,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<&'static str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<&'static str>,
    },
    Acknowledged {
        alert: Alert,
    },
    ChatAck {
        message: chat::Message,
    },
    /// `topic` as the client wrote it.
    ChatUnread {
        topic: String,
        unread: i64,
    },
    Presence {
        topic: Topic,
        online: Vec<Online>,
    },
    Typing {
        topic: Topic,
        participant: String,
        name: String,
        expires_in_ms: u64,
    },
    Error {
        code: &'static str,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        field: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
}

/// Who a `hello` greets.
#[derive(Serialize)]
pub struct Me {
    pub id: i64,
    pub role: Role,
    pub organisation_id: i64,
}

impl From<&CurrentUser> for Me {
    fn from(u: &CurrentUser) -> Self {
        Me {
            id: u.id,
            role: u.role,
            organisation_id: u.organisation_id,
        }
    }
}

/// Someone on a conversation, as `presence` lists them.
#[derive(Serialize)]
pub struct Online {
    pub participant: String,
    pub name: String,
}

/// What a topic is now, at `seq`: no later event undercuts it, so it is the resume point.
#[derive(Serialize)]
pub struct Snapshot {
    pub seq: i64,
    #[serde(flatten)]
    pub state: TopicState,
}

/// A topic's part of its snapshot.
#[derive(Serialize)]
#[serde(untagged)]
pub enum TopicState {
    Fleet {
        vehicles: Vec<Vehicle>,
    },
    Alerts {
        alerts: Vec<Alert>,
        unacknowledged: i64,
    },
    Vehicle {
        vehicle: Vehicle,
    },
    Shipment {
        shipment: Box<Shipment>,
    },
    Chat(chat::View),
}

impl ServerFrame {
    /// A refusal of the protocol's own (`bad_topic`, `too_many_subscriptions`, …).
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            code,
            message: message.into(),
            field: None,
            retry_after_ms: None,
        }
    }

    /// The `presence` frame of conversation `shipment`: `online` is `(participant, name)`.
    pub fn presence(shipment: i64, online: Vec<(String, String)>) -> Self {
        ServerFrame::Presence {
            topic: Topic::Chat(shipment),
            online: online
                .into_iter()
                .map(|(participant, name)| Online { participant, name })
                .collect(),
        }
    }

    /// The `typing` frame the others on conversation `shipment` get.
    pub fn typing(shipment: i64, participant: &str, name: &str) -> Self {
        ServerFrame::Typing {
            topic: Topic::Chat(shipment),
            participant: participant.to_owned(),
            name: name.to_owned(),
            expires_in_ms: TYPING_SHOWN_FOR.as_millis() as u64,
        }
    }

    /// The frame as it goes out, with no `ref`.
    pub fn text(self) -> String {
        Envelope {
            frame: self,
            reference: None,
        }
        .text()
    }
}

impl Envelope<ServerFrame> {
    pub fn text(&self) -> String {
        serde_json::to_string(self).expect("server frames serialise")
    }
}

/// Refuses a frame with the error the HTTP API would answer: its code and message, the `field`
/// it names, and when to retry if rate limited. Internal causes are logged here, once, and the
/// client is told to try again.
impl From<AppError> for ServerFrame {
    fn from(e: AppError) -> Self {
        let message = match &e {
            AppError::Database(_) | AppError::Internal(_) | AppError::Unavailable(_) => {
                tracing::error!(error = %e, "handling a WebSocket frame");
                "try again".to_owned()
            }
            _ => e.to_string(),
        };
        let retry_after_ms = match &e {
            AppError::RateLimited(wait) => Some(wait.as_millis() as u64),
            _ => None,
        };
        ServerFrame::Error {
            code: e.code(),
            message,
            field: e.field().map(str::to_owned),
            retry_after_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with(frame: ClientFrame, reference: Option<Value>) -> Envelope<ClientFrame> {
        Envelope { frame, reference }
    }

    #[test]
    fn every_frame_type_decodes() {
        let cases = [
            (
                r#"{"type":"subscribe","topic":"fleet","since":5,"ref":1}"#,
                with(
                    ClientFrame::Subscribe(Subscribe {
                        topic: "fleet".into(),
                        since: Some(5),
                    }),
                    Some(json!(1)),
                ),
            ),
            (
                r#"{"type":"subscribe","topic":"vehicle:3"}"#,
                with(
                    ClientFrame::Subscribe(Subscribe {
                        topic: "vehicle:3".into(),
                        since: None,
                    }),
                    None,
                ),
            ),
            (
                r#"{"type":"unsubscribe","topic":"alerts","ref":"u"}"#,
                with(
                    ClientFrame::Unsubscribe(Unsubscribe {
                        topic: "alerts".into(),
                    }),
                    Some(json!("u")),
                ),
            ),
            (r#"{"type":"ping"}"#, with(ClientFrame::Ping, None)),
            (
                r#"{"type":"ping","ref":null}"#,
                with(ClientFrame::Ping, None),
            ),
            (
                r#"{"type":"acknowledge","alert_id":42,"ref":{"n":1}}"#,
                with(
                    ClientFrame::Acknowledge(Acknowledge { alert_id: 42 }),
                    Some(json!({"n": 1})),
                ),
            ),
            (
                r#"{"type":"chat_send","topic":"chat:7","client_id":"c1","body":"hi"}"#,
                with(
                    ClientFrame::ChatSend(ChatSend {
                        topic: "chat:7".into(),
                        client_id: "c1".into(),
                        body: "hi".into(),
                    }),
                    None,
                ),
            ),
            (
                r#"{"type":"chat_edit","id":9,"body":"hello"}"#,
                with(
                    ClientFrame::ChatEdit(ChatEdit {
                        id: 9,
                        body: "hello".into(),
                    }),
                    None,
                ),
            ),
            (
                r#"{"type":"chat_delete","id":9}"#,
                with(ClientFrame::ChatDelete(ChatDelete { id: 9 }), None),
            ),
            (
                r#"{"type":"chat_react","id":9,"emoji":"👍"}"#,
                with(
                    ClientFrame::ChatReact(ChatReact {
                        id: 9,
                        emoji: "👍".into(),
                    }),
                    None,
                ),
            ),
            (
                r#"{"type":"chat_read","topic":"chat:7","seq":12}"#,
                with(
                    ClientFrame::ChatRead(ChatRead {
                        topic: "chat:7".into(),
                        seq: 12,
                    }),
                    None,
                ),
            ),
            (
                r#"{"type":"typing","topic":"chat:7","ref":[1]}"#,
                with(
                    ClientFrame::Typing(Typing {
                        topic: "chat:7".into(),
                    }),
                    Some(json!([1])),
                ),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(decode(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn the_frame_types_are_the_variants_in_order() {
        assert_eq!(
            frame_types(),
            [
                "subscribe",
                "unsubscribe",
                "ping",
                "acknowledge",
                "chat_send",
                "chat_edit",
                "chat_delete",
                "chat_react",
                "chat_read",
                "typing",
            ]
        );
        for t in frame_types() {
            // Each known type reaches its own variant: a bad field is a bad_frame, not unknown
            // (ping has no fields to get wrong).
            let text = json!({"type": t, "id": "x", "topic": 1, "alert_id": "x"}).to_string();
            match decode(&text) {
                Ok(Envelope {
                    frame: ClientFrame::Ping,
                    reference: None,
                }) => assert_eq!(*t, "ping"),
                other => assert_eq!(other.unwrap_err().code, "bad_frame", "{t}"),
            }
        }
    }

    #[test]
    fn text_that_is_not_json_is_a_bad_frame_without_ref() {
        for text in ["", "ping", "{", r#"{"type":"ping","ref":1"#, "\u{0}"] {
            assert_eq!(
                decode(text),
                Err(FrameError {
                    code: "bad_frame",
                    message: "a frame must be a JSON object".into(),
                    reference: None,
                }),
                "{text:?}"
            );
        }
    }

    #[test]
    fn unknown_or_missing_types_are_unknown_type_and_echo_ref() {
        let message = "type must be subscribe, unsubscribe, ping, acknowledge, chat_send, \
                       chat_edit, chat_delete, chat_react, chat_read or typing";
        let cases = [
            (r#"{"type":"pong","ref":3}"#, Some(json!(3))),
            (r#"{"type":"Subscribe","topic":"fleet"}"#, None),
            (r#"{"type":5,"ref":"r"}"#, Some(json!("r"))),
            (r#"{"ref":null}"#, Some(Value::Null)),
            ("[]", None),
            // serde alone would decode these as chat_delete and ping.
            (r#"["chat_delete",7,7]"#, None),
            (r#"["ping",{"n":1}]"#, None),
            (r#""ping""#, None),
            ("17", None),
        ];
        for (text, reference) in cases {
            assert_eq!(
                decode(text),
                Err(FrameError {
                    code: "unknown_type",
                    message: message.to_owned(),
                    reference,
                }),
                "{text}"
            );
        }
    }

    #[test]
    fn a_known_type_with_bad_fields_is_a_bad_frame_with_serdes_message_and_ref() {
        let cases = [
            (
                r#"{"type":"subscribe","ref":"a"}"#,
                "missing field `topic`",
                Some(json!("a")),
            ),
            (
                r#"{"type":"subscribe","topic":"fleet","since":"1","ref":2}"#,
                "invalid type: string \"1\", expected i64",
                Some(json!(2)),
            ),
            (
                r#"{"type":"acknowledge","alert_id":1.5}"#,
                "invalid type: floating point `1.5`, expected i64",
                None,
            ),
            (
                r#"{"type":"chat_send","topic":"chat:1","client_id":"c","body":null,"ref":[0]}"#,
                "invalid type: null, expected a string",
                Some(json!([0])),
            ),
        ];
        for (text, message, reference) in cases {
            let err = decode(text).unwrap_err();
            assert_eq!(err.code, "bad_frame", "{text}");
            assert_eq!(err.message, message, "{text}");
            assert_eq!(err.reference, reference, "{text}");
        }
    }

    fn sent(frame: ServerFrame, reference: Option<Value>) -> Value {
        serde_json::from_str(&Envelope { frame, reference }.text()).unwrap()
    }

    #[test]
    fn server_frames_have_the_documented_shapes() {
        let t = "2026-01-02T03:04:05Z".parse::<DateTime<Utc>>().unwrap();
        let cases = [
            (
                sent(
                    ServerFrame::Hello {
                        server_time: t,
                        user: Some(Me {
                            id: 1,
                            role: Role::Driver,
                            organisation_id: 2,
                        }),
                    },
                    None,
                ),
                json!({"type": "hello", "server_time": t, "user": {"id": 1, "role": "driver", "organisation_id": 2}}),
            ),
            (
                sent(
                    ServerFrame::Hello {
                        server_time: t,
                        user: None,
                    },
                    None,
                ),
                json!({"type": "hello", "server_time": t, "user": null}),
            ),
            (
                sent(ServerFrame::Pong { server_time: t }, Some(json!("x"))),
                json!({"type": "pong", "server_time": t, "ref": "x"}),
            ),
            (
                sent(
                    ServerFrame::Subscribed {
                        topic: Topic::Chat(7),
                        snapshot: Snapshot {
                            seq: 40,
                            state: TopicState::Fleet { vehicles: vec![] },
                        },
                    },
                    Some(json!(1)),
                ),
                json!({"type": "subscribed", "topic": "chat:7", "snapshot": {"seq": 40, "vehicles": []}, "ref": 1}),
            ),
            (
                sent(
                    ServerFrame::Subscribed {
                        topic: Topic::Alerts,
                        snapshot: Snapshot {
                            seq: 3,
                            state: TopicState::Alerts {
                                alerts: vec![],
                                unacknowledged: 2,
                            },
                        },
                    },
                    None,
                ),
                json!({"type": "subscribed", "topic": "alerts", "snapshot": {"seq": 3, "alerts": [], "unacknowledged": 2}}),
            ),
            (
                sent(
                    ServerFrame::Subscribed {
                        topic: Topic::Chat(7),
                        snapshot: Snapshot {
                            seq: 5,
                            state: TopicState::Chat(chat::View {
                                messages: vec![],
                                next_before: None,
                                reads: vec![],
                                unread: 0,
                                me: "user:1".into(),
                            }),
                        },
                    },
                    None,
                ),
                json!({"type": "subscribed", "topic": "chat:7", "snapshot": {
                    "seq": 5, "messages": [], "next_before": null, "reads": [], "unread": 0, "me": "user:1",
                }}),
            ),
            (
                sent(
                    ServerFrame::Unsubscribed {
                        topic: Topic::Vehicle(3),
                        reason: None,
                        message: None,
                    },
                    Some(json!("u")),
                ),
                json!({"type": "unsubscribed", "topic": "vehicle:3", "ref": "u"}),
            ),
            (
                sent(
                    ServerFrame::Unsubscribed {
                        topic: Topic::Shipment(4),
                        reason: Some("forbidden"),
                        message: Some("you may no longer see this topic"),
                    },
                    None,
                ),
                json!({"type": "unsubscribed", "topic": "shipment:4", "reason": "forbidden", "message": "you may no longer see this topic"}),
            ),
            (
                sent(
                    ServerFrame::ChatUnread {
                        topic: "chat:9".into(),
                        unread: 2,
                    },
                    Some(json!({"n": 1})),
                ),
                json!({"type": "chat_unread", "topic": "chat:9", "unread": 2, "ref": {"n": 1}}),
            ),
            (
                sent(
                    ServerFrame::presence(9, vec![("user:1".into(), "Ann".into())]),
                    None,
                ),
                json!({"type": "presence", "topic": "chat:9", "online": [{"participant": "user:1", "name": "Ann"}]}),
            ),
            (
                sent(ServerFrame::typing(9, "user:1", "Ann"), None),
                json!({"type": "typing", "topic": "chat:9", "participant": "user:1", "name": "Ann", "expires_in_ms": 5000}),
            ),
            (
                sent(
                    ServerFrame::error("bad_topic", "no such topic"),
                    Some(Value::Null),
                ),
                json!({"type": "error", "code": "bad_topic", "message": "no such topic", "ref": null}),
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

    #[test]
    fn an_app_error_refuses_a_frame_as_the_api_would() {
        let cases = [
            (
                AppError::validation("body", "body must not be empty"),
                json!({"type": "error", "code": "validation", "message": "body must not be empty", "field": "body", "ref": 1}),
            ),
            (
                AppError::RateLimited(std::time::Duration::from_millis(1500)),
                json!({"type": "error", "code": "rate_limited", "message": "too many requests; retry after 2 s", "retry_after_ms": 1500, "ref": 1}),
            ),
            (
                AppError::NotFound("message"),
                json!({"type": "error", "code": "not_found", "message": "message not found", "ref": 1}),
            ),
            (
                AppError::Internal(anyhow::anyhow!("secret cause")),
                json!({"type": "error", "code": "internal", "message": "try again", "ref": 1}),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(sent(ServerFrame::from(e), Some(json!(1))), want);
        }
    }
}
