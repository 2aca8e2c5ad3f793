//! Where positions go out: the hub that fans committed events out to subscriptions, the bounded
//! per-connection outbox, and the WebSocket session that speaks the protocol in docs/API.md.
mod hub;
mod outbox;
mod replay;
mod session;
mod topic;

pub use hub::{Delivery, Hub, Subscription};
pub use outbox::{Outbox, OutboxClosed};
pub use replay::read_seq;
pub use session::router;
pub use topic::{Topic, TopicKey};
