//! Schemas of the chat replies the handlers build as JSON values, and of authors' roles.
//!
//! These types are never built: they exist only for their schemas.
#![expect(dead_code, reason = "schema-only types are never built")]

use utoipa::ToSchema;

/// The caller's unread count in one conversation, after marking it read.
#[derive(ToSchema)]
pub struct Unread {
    unread: i64,
}

/// The caller's conversations with unread messages.
#[derive(ToSchema)]
pub struct UnreadConversations {
    conversations: Vec<UnreadConversation>,
}

#[derive(ToSchema)]
struct UnreadConversation {
    shipment_id: i64,
    unread: i64,
}

/// Who wrote a chat message, as a role in the conversation.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum ChatRole {
    Admin,
    Dispatcher,
    Driver,
    Customer,
}
