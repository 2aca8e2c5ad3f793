//! Decoding a client's WebSocket text frame: JSON, then a known `type`, then that type's fields.
//! Pure, so that it is tested and fuzzed without a connection; the session acts on the result.
use serde::Deserialize;
use serde_json::Value;

/// A client frame. Unknown types are answered with `unknown_type`.
#[derive(Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Subscribe {
        topic: String,
        since: Option<i64>,
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
    Unsubscribe {
        topic: String,
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
    Ping {
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
    Acknowledge {
        alert_id: i64,
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
    ChatSend {
        topic: String,
        client_id: String,
        body: String,
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
    ChatEdit {
        id: i64,
        body: String,
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
    ChatDelete {
        id: i64,
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
    ChatReact {
        id: i64,
        emoji: String,
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
    ChatRead {
        topic: String,
        seq: i64,
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
    Typing {
        topic: String,
        #[serde(rename = "ref")]
        reference: Option<Value>,
    },
}

/// The client frame types, as the `unknown_type` error lists them.
pub const FRAME_TYPES: &str = "subscribe, unsubscribe, ping, acknowledge, chat_send, chat_edit, \
     chat_delete, chat_react, chat_read or typing";

/// The `type`s of [`ClientFrame`]: a frame of one of these with bad fields is a `bad_frame`.
pub const KNOWN_TYPES: [&str; 10] = [
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
];

/// Why a frame was refused: the error frame's `code` and `message`, and the frame's `ref` to
/// echo (when it was JSON and had one).
#[derive(Debug, PartialEq)]
pub struct FrameError {
    pub code: &'static str,
    pub message: String,
    pub reference: Option<Value>,
}

/// Decodes a client text frame. Not JSON is `bad_frame`; JSON other than an object with a
/// `type` of [`KNOWN_TYPES`] is `unknown_type`; a known type whose fields do not fit is
/// `bad_frame`, with serde's message.
pub fn decode(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|_| FrameError {
        code: "bad_frame",
        message: "a frame must be a JSON object".to_owned(),
        reference: None,
    })?;
    let reference = value.get("ref").cloned();
    let known = value
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| KNOWN_TYPES.contains(&t));
    // Only objects reach serde, which would also read an array as a frame: its first element
    // the type, the rest the fields in order.
    if !known {
        return Err(FrameError {
            code: "unknown_type",
            message: format!("type must be {FRAME_TYPES}"),
            reference,
        });
    }
    serde_json::from_value::<ClientFrame>(value).map_err(|e| FrameError {
        code: "bad_frame",
        message: e.to_string(),
        reference,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_frame_type_decodes() {
        let cases = [
            (
                r#"{"type":"subscribe","topic":"fleet","since":5,"ref":1}"#,
                ClientFrame::Subscribe {
                    topic: "fleet".into(),
                    since: Some(5),
                    reference: Some(json!(1)),
                },
            ),
            (
                r#"{"type":"subscribe","topic":"vehicle:3"}"#,
                ClientFrame::Subscribe {
                    topic: "vehicle:3".into(),
                    since: None,
                    reference: None,
                },
            ),
            (
                r#"{"type":"unsubscribe","topic":"alerts","ref":"u"}"#,
                ClientFrame::Unsubscribe {
                    topic: "alerts".into(),
                    reference: Some(json!("u")),
                },
            ),
            (r#"{"type":"ping"}"#, ClientFrame::Ping { reference: None }),
            (
                r#"{"type":"acknowledge","alert_id":42,"ref":{"n":1}}"#,
                ClientFrame::Acknowledge {
                    alert_id: 42,
                    reference: Some(json!({"n": 1})),
                },
            ),
            (
                r#"{"type":"chat_send","topic":"chat:7","client_id":"c1","body":"hi"}"#,
                ClientFrame::ChatSend {
                    topic: "chat:7".into(),
                    client_id: "c1".into(),
                    body: "hi".into(),
                    reference: None,
                },
            ),
            (
                r#"{"type":"chat_edit","id":9,"body":"hello"}"#,
                ClientFrame::ChatEdit {
                    id: 9,
                    body: "hello".into(),
                    reference: None,
                },
            ),
            (
                r#"{"type":"chat_delete","id":9}"#,
                ClientFrame::ChatDelete {
                    id: 9,
                    reference: None,
                },
            ),
            (
                r#"{"type":"chat_react","id":9,"emoji":"👍"}"#,
                ClientFrame::ChatReact {
                    id: 9,
                    emoji: "👍".into(),
                    reference: None,
                },
            ),
            (
                r#"{"type":"chat_read","topic":"chat:7","seq":12}"#,
                ClientFrame::ChatRead {
                    topic: "chat:7".into(),
                    seq: 12,
                    reference: None,
                },
            ),
            (
                r#"{"type":"typing","topic":"chat:7","ref":[1]}"#,
                ClientFrame::Typing {
                    topic: "chat:7".into(),
                    reference: Some(json!([1])),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(decode(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn the_known_types_are_the_frame_types_listed() {
        let listed: Vec<&str> = FRAME_TYPES
            .split([',', ' '])
            .filter(|w| !w.is_empty() && *w != "or")
            .collect();
        assert_eq!(listed, KNOWN_TYPES);
        for t in KNOWN_TYPES {
            // Each known type reaches its own variant: a bad field is a bad_frame, not unknown
            // (ping has no fields to get wrong).
            let text = json!({"type": t, "id": "x", "topic": 1, "alert_id": "x"}).to_string();
            match decode(&text) {
                Ok(ClientFrame::Ping { reference: None }) => assert_eq!(t, "ping"),
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
        let message = format!("type must be {FRAME_TYPES}");
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
                    message: message.clone(),
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
}
