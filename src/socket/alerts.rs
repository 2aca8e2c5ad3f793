//! Alert frames: a dispatcher acknowledges an alert.
use serde_json::Value;

use super::{
    frame::{Acknowledge, ServerFrame},
    Session,
};
use crate::{alerts, auth::Viewer};

impl Acknowledge {
    /// Acknowledges the alert; the change reaches every subscriber of `alerts` as an event, and
    /// this connection also gets the reply.
    pub(super) async fn apply(self, s: &Session, r: &Option<Value>) {
        let Viewer::User(user) = &s.viewer else {
            let refusal = ServerFrame::error("forbidden", "share links cannot acknowledge alerts");
            s.reply(r, refusal);
            return;
        };
        match alerts::acknowledge(&s.state.db, &s.state.tracking, user, self.alert_id).await {
            Ok(alert) => s.reply(r, ServerFrame::Acknowledged { alert }),
            Err(e) => s.reply(r, ServerFrame::from(e)),
        }
    }
}
