//! Who may see a shipment: the one rule that the API, the pages, the sockets and chat all apply.
use sqlx::PgPool;

use super::{with_last_positions, Shipment, ShipmentRow, ShipmentStatus, SHIPMENT_SELECT};
use crate::{
    auth::Viewer,
    error::{AppError, AppResult},
};

/// The shipment if `viewer` may see it: dispatchers see their organisation's, a driver the ones
/// assigned to them, a share link its own. Anything else is `not_found`.
pub async fn load_visible(db: &PgPool, viewer: &Viewer, id: i64) -> AppResult<Shipment> {
    let row: ShipmentRow = sqlx::query_as(&format!("{SHIPMENT_SELECT} WHERE id = $2"))
        .bind(ShipmentStatus::ACTIVE)
        .bind(id)
        .fetch_optional(db)
        .await?
        .ok_or(AppError::NotFound("shipment"))?;
    let visible = row.organisation_id == viewer.organisation_id()
        && match viewer {
            Viewer::User(u) if u.role.dispatches() => true,
            Viewer::User(u) => row.driver_id == Some(u.id),
            Viewer::Share(s) => s.shipment_id == row.id,
        };
    if !visible {
        return Err(AppError::NotFound("shipment"));
    }
    let mut shipments = with_last_positions(db, vec![row]).await?;
    Ok(shipments.remove(0))
}
