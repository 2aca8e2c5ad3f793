//! Who is in each conversation now, and the typing throttle. Both are ephemeral: they take no
//! seq and are never replayed, since a reconnecting client wants the present, not the past.
//! A participant counts once however many sockets (tabs, devices) they have on the topic.
use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
    time::{Duration, Instant},
};

/// At most one typing frame per participant and conversation is forwarded in this time.
pub const TYPING_EVERY: Duration = Duration::from_secs(2);
/// How long clients show a typing indicator after the last typing frame.
pub const TYPING_SHOWN_FOR: Duration = Duration::from_secs(5);

/// One conversation's participants on this instance: key → (name, sockets).
type Present = BTreeMap<String, (String, usize)>;

#[derive(Default)]
pub struct Presence {
    /// Per shipment, who is here.
    online: Mutex<HashMap<i64, Present>>,
    /// When each (shipment, participant)'s last typing frame was forwarded.
    typing: Mutex<HashMap<(i64, String), Instant>>,
}

impl Presence {
    /// Counts a socket of `key` on the conversation; true if they were not online before.
    pub fn join(&self, shipment: i64, key: &str, name: &str) -> bool {
        let mut online = self.online.lock().expect("presence poisoned");
        let entry = online
            .entry(shipment)
            .or_default()
            .entry(key.to_owned())
            .or_insert_with(|| (name.to_owned(), 0));
        entry.1 += 1;
        entry.1 == 1
    }

    /// Uncounts a socket; their name if it was their last one.
    pub fn leave(&self, shipment: i64, key: &str) -> Option<String> {
        let mut online = self.online.lock().expect("presence poisoned");
        let people = online.get_mut(&shipment)?;
        let entry = people.get_mut(key)?;
        entry.1 -= 1;
        if entry.1 > 0 {
            return None;
        }
        let (name, _) = people.remove(key)?;
        if people.is_empty() {
            online.remove(&shipment);
        }
        self.typing
            .lock()
            .expect("presence poisoned")
            .remove(&(shipment, key.to_owned()));
        Some(name)
    }

    /// Everyone online on this instance: `(shipment, key, name)`.
    pub fn entries(&self) -> Vec<(i64, String, String)> {
        let online = self.online.lock().expect("presence poisoned");
        online
            .iter()
            .flat_map(|(shipment, people)| {
                people
                    .iter()
                    .map(|(k, (name, _))| (*shipment, k.clone(), name.clone()))
            })
            .collect()
    }

    /// Who is online in the conversation on this instance: `(key, name)`, by key.
    pub fn online(&self, shipment: i64) -> Vec<(String, String)> {
        let online = self.online.lock().expect("presence poisoned");
        online.get(&shipment).map_or_else(Vec::new, |people| {
            people
                .iter()
                .map(|(k, (name, _))| (k.clone(), name.clone()))
                .collect()
        })
    }

    /// Whether a typing frame of `key` at `now` is forwarded (the throttle).
    pub fn typing(&self, shipment: i64, key: &str, now: Instant) -> bool {
        let mut typing = self.typing.lock().expect("presence poisoned");
        let k = (shipment, key.to_owned());
        if let Some(last) = typing.get(&k) {
            if now.saturating_duration_since(*last) < TYPING_EVERY {
                return false;
            }
        }
        typing.insert(k, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_participant_with_two_sockets_counts_once_until_both_leave() {
        let p = Presence::default();
        assert!(p.join(1, "user:1", "Ann"));
        assert!(!p.join(1, "user:1", "Ann"), "a second tab changes nothing");
        assert!(p.join(1, "user:2", "Bo"));
        assert_eq!(p.online(1).len(), 2);
        assert_eq!(p.entries().len(), 2);
        assert_eq!(p.leave(1, "user:1"), None);
        assert_eq!(
            p.leave(1, "user:1").as_deref(),
            Some("Ann"),
            "the last tab closed"
        );
        assert_eq!(p.online(1), [("user:2".to_owned(), "Bo".to_owned())]);
        assert!(p.online(2).is_empty(), "conversations are separate");
        assert_eq!(p.leave(2, "user:2"), None);
    }

    #[test]
    fn typing_is_forwarded_at_most_once_per_interval() {
        let p = Presence::default();
        let t0 = Instant::now();
        assert!(p.typing(1, "user:1", t0));
        assert!(!p.typing(1, "user:1", t0 + Duration::from_millis(500)));
        assert!(
            p.typing(1, "user:2", t0 + Duration::from_millis(500)),
            "per participant"
        );
        assert!(!p.typing(1, "user:1", t0 + Duration::from_millis(1999)));
        assert!(p.typing(1, "user:1", t0 + TYPING_EVERY));
        assert!(!p.typing(1, "user:1", t0 + TYPING_EVERY + Duration::from_millis(1)));
    }
}
