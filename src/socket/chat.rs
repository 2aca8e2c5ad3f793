//! Chat frames: sending, editing, deleting, reacting to and reading messages, and typing. Each
//! is acknowledged to the sender before its event is published to the conversation.
use serde_json::Value;

use axum::extract::ws::Utf8Bytes;

use super::{
    frame::{ChatDelete, ChatEdit, ChatReact, ChatRead, ChatSend, ServerFrame, Typing},
    Session,
};
use crate::{
    chat::{self, Message},
    tracking::{Topic, TopicKey},
};

impl ChatSend {
    pub(super) async fn apply(self, s: &Session, r: &Option<Value>) {
        let Some(shipment) = s.chat_topic(&self.topic, r) else {
            return;
        };
        let ack = |m: &Message| s.chat_ack(r, m);
        let sent = chat::send_message(
            &s.state,
            &s.viewer,
            shipment,
            &self.client_id,
            &self.body,
            ack,
        )
        .await;
        s.refuse(r, sent);
    }
}

impl ChatEdit {
    pub(super) async fn apply(self, s: &Session, r: &Option<Value>) {
        let ack = |m: &Message| s.chat_ack(r, m);
        let changed = chat::edit_message(&s.state, &s.viewer, self.id, &self.body, ack).await;
        s.refuse(r, changed);
    }
}

impl ChatDelete {
    pub(super) async fn apply(self, s: &Session, r: &Option<Value>) {
        let ack = |m: &Message| s.chat_ack(r, m);
        let changed = chat::delete_message(&s.state, &s.viewer, self.id, ack).await;
        s.refuse(r, changed);
    }
}

impl ChatReact {
    /// Toggles the caller's reaction.
    pub(super) async fn apply(self, s: &Session, r: &Option<Value>) {
        let ack = |m: &Message| s.chat_ack(r, m);
        let changed = chat::react_message(&s.state, &s.viewer, self.id, &self.emoji, ack).await;
        s.refuse(r, changed);
    }
}

impl ChatRead {
    /// Moves the caller's read mark; the reply is their unread count.
    pub(super) async fn apply(self, s: &Session, r: &Option<Value>) {
        let Some(shipment) = s.chat_topic(&self.topic, r) else {
            return;
        };
        let topic = self.topic;
        let ack = |unread: i64| s.reply(r, ServerFrame::ChatUnread { topic, unread });
        let read = chat::mark_read(&s.state, &s.viewer, shipment, self.seq, ack).await;
        s.refuse(r, read);
    }
}

impl Typing {
    /// Forwards "typing" to the others in a conversation this connection has joined.
    pub(super) async fn apply(self, s: &Session, r: &Option<Value>) {
        let Some(id) = s.chat_topic(&self.topic, r) else {
            return;
        };
        let Some(me) = s.conversations.get(&id) else {
            let refusal = ServerFrame::error("forbidden", "subscribe to the chat topic first");
            s.reply(r, refusal);
            return;
        };
        let tracking = &s.state.tracking;
        if tracking.typing_due(id, &me.key) {
            let frame = ServerFrame::typing(id, &me.key, &me.name).text();
            tracking.ephemeral(id, frame, Some(s.id)).await;
        }
    }
}

impl Session {
    /// Counts this connection into conversation `shipment` as `me`. Everyone hears of a
    /// participant coming online; this connection always gets who is there.
    pub(super) async fn join_chat(&self, shipment: i64, me: &chat::Participant) {
        let tracking = &self.state.tracking;
        let (came_online, online) = tracking.join_chat(shipment, &me.key, &me.name).await;
        let frame = ServerFrame::presence(shipment, online).text();
        if came_online {
            tracking.ephemeral(shipment, frame, None).await;
        } else {
            let key = TopicKey::Chat(shipment);
            tracking.hub.send_to(key, self.id, Utf8Bytes::from(frame));
        }
    }

    /// Uncounts this connection from conversation `shipment`; everyone hears if it was the
    /// participant's last.
    pub(super) async fn leave_chat(&self, shipment: i64, me: &chat::Participant) {
        let tracking = &self.state.tracking;
        if let Some(online) = tracking.leave_chat(shipment, &me.key).await {
            let frame = ServerFrame::presence(shipment, online).text();
            tracking.ephemeral(shipment, frame, None).await;
        }
    }

    /// The shipment of a `chat:{id}` topic, or none (and the client told).
    fn chat_topic(&self, name: &str, r: &Option<Value>) -> Option<i64> {
        match Topic::parse(name) {
            Some(Topic::Chat(id)) => Some(id),
            _ => {
                self.reply(
                    r,
                    ServerFrame::error("bad_topic", "chat topics are chat:{id}"),
                );
                None
            }
        }
    }

    /// Acknowledges a chat frame: the message as it is after the change.
    fn chat_ack(&self, r: &Option<Value>, message: &Message) {
        let message = message.clone();
        self.reply(r, ServerFrame::ChatAck { message });
    }
}
