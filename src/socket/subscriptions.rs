//! Subscribing and unsubscribing: authorising a topic, its snapshot and the events missed since
//! `since`, going live, and ending subscriptions a driver may no longer see.
use serde_json::Value;

use super::{
    frame::{ServerFrame, Snapshot, Subscribe, TopicState, Unsubscribe},
    Flow, Session, TOO_SLOW,
};
use crate::{
    alerts,
    auth::Viewer,
    chat,
    error::AppError,
    fleet::shipments,
    fleet::vehicles::{self, VehicleStatus},
    tracking::{read_seq, Published, Topic, TopicKey},
};

/// Alerts in the `alerts` topic's snapshot.
const SNAPSHOT_ALERTS: i64 = 50;
/// Most topics one connection may hold.
const MAX_SUBSCRIPTIONS: usize = 200;

/// A topic's snapshot, and with `since` the events missed since then (none when too many were).
type CaughtUp = (Snapshot, Option<Vec<Published>>);

impl Subscribe {
    /// Subscribes: `subscribed` with the snapshot, then any missed events, then live ones.
    pub(super) async fn apply(self, s: &mut Session, r: &Option<Value>) -> Flow {
        let topic = match self.check() {
            Ok(topic) => topic,
            Err((code, message)) => {
                s.reply(r, ServerFrame::error(code, message));
                return Flow::Continue;
            }
        };
        let key = topic.key(s.viewer.organisation_id());
        s.drop_subscription(key).await;
        if s.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            let refusal =
                ServerFrame::error("too_many_subscriptions", "unsubscribe from something first");
            s.reply(r, refusal);
            return Flow::Continue;
        }
        // Authorise before registering: a refused topic never sees an event. Whether it exists
        // is not told.
        let participant = match s.authorize(topic).await {
            Ok(participant) => participant,
            Err(e) if refused(&e) => {
                let e = AppError::Forbidden("you may not subscribe to this topic");
                s.reply(r, ServerFrame::from(e));
                return Flow::Continue;
            }
            Err(e) => {
                s.reply(r, ServerFrame::from(e));
                return Flow::Continue;
            }
        };
        let sub = s
            .state
            .tracking
            .subscribe(key, s.id, s.outbox.clone())
            .await;
        let caught_up = match s.catch_up(topic, key, self.since).await {
            Ok(caught_up) => caught_up,
            Err(e) => {
                s.state.tracking.unsubscribe(&sub).await;
                s.reply(r, ServerFrame::from(e));
                return Flow::Continue;
            }
        };
        let floor = s.send_catch_up(topic, caught_up, self.since, r);
        if !sub.go_live(floor) {
            s.state.tracking.unsubscribe(&sub).await;
            return TOO_SLOW;
        }
        s.subscriptions.insert(key, sub);
        if let (Topic::Chat(id), Some(p)) = (topic, participant) {
            s.join_chat(id, &p).await;
            s.conversations.insert(id, p);
        }
        Flow::Continue
    }

    /// The topic, or why a frame that names none or resumes from before the start is refused
    /// (`code`, `message`).
    fn check(&self) -> Result<Topic, (&'static str, &'static str)> {
        let topic = Topic::parse(&self.topic).ok_or((
            "bad_topic",
            "topics are fleet, alerts, vehicle:{id}, shipment:{id} and chat:{id}",
        ))?;
        if self.since.is_some_and(|s| s < 0) {
            return Err(("bad_frame", "since must not be negative"));
        }
        Ok(topic)
    }
}

impl Unsubscribe {
    pub(super) async fn apply(self, s: &mut Session, r: &Option<Value>) {
        let Some(topic) = Topic::parse(&self.topic) else {
            s.reply(r, ServerFrame::error("bad_topic", "no such topic"));
            return;
        };
        s.drop_subscription(topic.key(s.viewer.organisation_id()))
            .await;
        let (reason, message) = (None, None);
        s.reply(
            r,
            ServerFrame::Unsubscribed {
                topic,
                reason,
                message,
            },
        );
    }
}

impl Session {
    /// Removes the subscription of `key`, if any, leaving its conversation's presence.
    pub(super) async fn drop_subscription(&mut self, key: TopicKey) {
        let Some(sub) = self.subscriptions.remove(&key) else {
            return;
        };
        self.state.tracking.unsubscribe(&sub).await;
        if let TopicKey::Chat(id) = key {
            if let Some(me) = self.conversations.remove(&id) {
                self.leave_chat(id, &me).await;
            }
        }
    }

    /// Whether this connection may see `topic` now; for a conversation, who it is in it.
    async fn authorize(&self, topic: Topic) -> Result<Option<chat::Participant>, AppError> {
        let db = &self.state.db;
        match topic {
            Topic::Fleet | Topic::Alerts => self.viewer.dispatcher().map(|_| None),
            Topic::Vehicle(id) => vehicles::authorize(db, &self.viewer, id)
                .await
                .map(|()| None),
            Topic::Shipment(id) => shipments::load_visible(db, &self.viewer, id)
                .await
                .map(|_| None),
            Topic::Chat(id) => chat::Participant::of(db, &self.viewer, id).await.map(Some),
        }
    }

    /// Drops the subscriptions a driver may no longer see (the shipment given to someone else,
    /// its vehicle changed, the trip over), telling the client `unsubscribed` with a `reason`.
    /// What dispatchers and share links see does not hang on assignments.
    pub(super) async fn recheck_subscriptions(&mut self) {
        if !matches!(&self.viewer, Viewer::User(u) if !u.role.dispatches()) {
            return;
        }
        let keys: Vec<TopicKey> = self.subscriptions.keys().copied().collect();
        for key in keys {
            let topic = key.topic();
            match self.authorize(topic).await {
                Ok(_) => {}
                Err(e) if refused(&e) => {
                    self.drop_subscription(key).await;
                    self.send(ServerFrame::Unsubscribed {
                        topic,
                        reason: Some("forbidden"),
                        message: Some("you may no longer see this topic"),
                    });
                }
                // Kept: a database outage must not end every driver's subscriptions.
                Err(e) => tracing::warn!(error = %e, "re-checking a subscription"),
            }
        }
    }

    /// The snapshot (whose `seq` no later event undercuts) and, with `since`, the missed events.
    async fn catch_up(
        &self,
        topic: Topic,
        key: TopicKey,
        since: Option<i64>,
    ) -> Result<CaughtUp, AppError> {
        let db = &self.state.db;
        let seq = read_seq(db).await?;
        let org = self.viewer.organisation_id();
        let state = match topic {
            Topic::Fleet => TopicState::Fleet {
                vehicles: vehicles::list(db, org, Some(VehicleStatus::Active)).await?,
            },
            Topic::Alerts => TopicState::Alerts {
                alerts: alerts::recent(db, org, SNAPSHOT_ALERTS).await?,
                unacknowledged: alerts::unacknowledged(db, org, None).await?,
            },
            Topic::Vehicle(id) => TopicState::Vehicle {
                vehicle: vehicles::get_visible(db, &self.viewer, id).await?,
            },
            Topic::Shipment(id) => TopicState::Shipment {
                shipment: Box::new(shipments::load_visible(db, &self.viewer, id).await?),
            },
            Topic::Chat(id) => TopicState::Chat(chat::snapshot(db, &self.viewer, id).await?),
        };
        let replay = match since {
            Some(since) => {
                let replay = &self.state.tracking.replay;
                replay
                    .since(db, key, since, self.viewer.driver_id())
                    .await?
            }
            None => None,
        };
        Ok((Snapshot { seq, state }, replay))
    }

    /// Sends `subscribed` and the missed events; the seq the subscription goes live after.
    fn send_catch_up(
        &self,
        topic: Topic,
        (snapshot, replay): CaughtUp,
        since: Option<i64>,
        r: &Option<Value>,
    ) -> i64 {
        let mut floor = snapshot.seq;
        self.reply(r, ServerFrame::Subscribed { topic, snapshot });
        match (since, replay) {
            (Some(since), Some(events)) => {
                floor = since;
                for event in events {
                    self.outbox.push(event.frame, None);
                    floor = floor.max(event.seq);
                }
            }
            (Some(_), None) => self.send(ServerFrame::error(
                "since_too_old",
                "too many missed events; the snapshot is current",
            )),
            (None, _) => {}
        }
        floor
    }
}

/// Whether `e` says the caller may not see something (rather than that something failed).
fn refused(e: &AppError) -> bool {
    matches!(
        e,
        AppError::Forbidden(_) | AppError::NotFound(_) | AppError::Unauthorized(_)
    )
}
