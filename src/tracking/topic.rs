//! Topic names as clients write them, and the organisation-scoped keys the hub files them under.
use std::fmt;

/// A topic as a client names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Fleet,
    Alerts,
    Vehicle(i64),
    Shipment(i64),
    /// A shipment's conversation.
    Chat(i64),
}

/// A topic resolved for one organisation: what the hub is keyed by. `fleet` (or `alerts`) of two
/// organisations are two keys, so nothing crosses tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Fleet {
        organisation_id: i64,
    },
    Alerts {
        organisation_id: i64,
    },
    Vehicle(i64),
    Shipment(i64),
    /// A shipment's conversation.
    Chat(i64),
}

impl Topic {
    pub fn parse(name: &str) -> Option<Topic> {
        match name {
            "fleet" => return Some(Topic::Fleet),
            "alerts" => return Some(Topic::Alerts),
            _ => {}
        }
        let (kind, id) = name.split_once(':')?;
        let id: i64 = id.parse().ok().filter(|id| *id > 0)?;
        match kind {
            "vehicle" => Some(Topic::Vehicle(id)),
            "shipment" => Some(Topic::Shipment(id)),
            "chat" => Some(Topic::Chat(id)),
            _ => None,
        }
    }

    pub fn key(self, organisation_id: i64) -> TopicKey {
        match self {
            Topic::Fleet => TopicKey::Fleet { organisation_id },
            Topic::Alerts => TopicKey::Alerts { organisation_id },
            Topic::Vehicle(id) => TopicKey::Vehicle(id),
            Topic::Shipment(id) => TopicKey::Shipment(id),
            Topic::Chat(id) => TopicKey::Chat(id),
        }
    }
}

/// Written as its name, as clients write it.
impl serde::Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl TopicKey {
    /// The organisation of a `fleet` key.
    pub fn fleet(self) -> Option<i64> {
        match self {
            TopicKey::Fleet { organisation_id } => Some(organisation_id),
            _ => None,
        }
    }

    /// The organisation of an `alerts` key.
    pub fn alerts(self) -> Option<i64> {
        match self {
            TopicKey::Alerts { organisation_id } => Some(organisation_id),
            _ => None,
        }
    }

    /// The vehicle of a `vehicle:{id}` key.
    pub fn vehicle(self) -> Option<i64> {
        match self {
            TopicKey::Vehicle(id) => Some(id),
            _ => None,
        }
    }

    /// The shipment of a `shipment:{id}` key.
    pub fn shipment(self) -> Option<i64> {
        match self {
            TopicKey::Shipment(id) => Some(id),
            _ => None,
        }
    }

    /// The conversation (its shipment) of a `chat:{id}` key.
    pub fn chat(self) -> Option<i64> {
        match self {
            TopicKey::Chat(id) => Some(id),
            _ => None,
        }
    }

    /// The name subscribers of this key used, which every event frame carries.
    pub fn topic(self) -> Topic {
        match self {
            TopicKey::Fleet { .. } => Topic::Fleet,
            TopicKey::Alerts { .. } => Topic::Alerts,
            TopicKey::Vehicle(id) => Topic::Vehicle(id),
            TopicKey::Shipment(id) => Topic::Shipment(id),
            TopicKey::Chat(id) => Topic::Chat(id),
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Fleet => f.write_str("fleet"),
            Topic::Alerts => f.write_str("alerts"),
            Topic::Vehicle(id) => write!(f, "vehicle:{id}"),
            Topic::Shipment(id) => write!(f, "shipment:{id}"),
            Topic::Chat(id) => write!(f, "chat:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_topic_names() {
        for name in ["fleet", "alerts", "vehicle:12", "shipment:7", "chat:7"] {
            assert_eq!(Topic::parse(name).unwrap().to_string(), name);
        }
        for bad in [
            "",
            "fleet:1",
            "vehicle:",
            "vehicle:x",
            "vehicle:-1",
            "vehicle:0",
            "truck:1",
            "alerts:1",
            "chat:",
            "chat:0",
        ] {
            assert_eq!(Topic::parse(bad), None, "{bad}");
        }
    }
}
