//! Per-organisation settings: one JSON document with a section per capability (`filter` for the
//! position filter, `alerts` for the alert rules), and a vehicle's own overrides of the alert
//! rules. Dispatchers read the settings in force; admins change them with a patch whose keys
//! replace the current values, section by section. Each section's type belongs to its capability;
//! ingest and the alert clock read their sections straight from the row they already load.
pub mod openapi;

use axum::{extract::State, routing::get, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::PgPool;

use crate::{
    alerts::AlertSettings,
    auth::{CurrentUser, Role},
    db::stored_or_default,
    error::openapi::{
        BadRequest, CommonErrors, Forbidden, Id, NotFound, TooLarge, UnsupportedMediaType,
    },
    error::{ApiJson, ApiPath, AppError, AppResult},
    history::{segmenter, ReportSettings, TripSettings},
    ingest::FilterSettings,
    settings::openapi::{SettingsPatch, VehicleAlertSettings},
    AppState,
};

/// Every section, each with its defaults for keys an organisation never set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    #[schema(required = true)]
    pub filter: FilterSettings,
    #[schema(required = true)]
    pub alerts: AlertSettings,
    #[schema(required = true)]
    pub trips: TripSettings,
    #[schema(required = true)]
    pub reports: ReportSettings,
}

impl Settings {
    fn validate(&self) -> AppResult<()> {
        self.filter.validate()?;
        self.alerts.validate()?;
        self.trips.validate()?;
        self.reports.validate()
    }

    /// `patch`'s keys, section by section, over these settings; unknown sections or keys and
    /// values out of range are refused, naming the field.
    pub fn patched(&self, patch: Value) -> AppResult<Settings> {
        let Value::Object(sections) = patch else {
            return Err(AppError::validation("", "settings must be a JSON object"));
        };
        let mut merged = serde_json::to_value(self).expect("settings serialise");
        for (name, section) in sections {
            let Some(current) = merged.get_mut(&name) else {
                return Err(AppError::validation(
                    name,
                    "there is no such settings section",
                ));
            };
            let (Value::Object(current), Value::Object(keys)) = (current, section) else {
                return Err(AppError::validation(
                    name,
                    "a settings section must be an object",
                ));
            };
            for (key, value) in keys {
                if !current.contains_key(&key) {
                    return Err(AppError::validation(
                        format!("{name}.{key}"),
                        format!("{name} has no setting {key}"),
                    ));
                }
                current.insert(key, value);
            }
        }
        // A value of the wrong type (a negative count, a fraction, text) fails here, before the
        // range checks: it is refused naming its key and what the key accepts, as they do.
        let settings: Settings = serde_path_to_error::deserialize(merged).map_err(|e| {
            let path = e.path().to_string();
            match Settings::accepted(&path) {
                Some(accepted) => AppError::validation(&path, format!("{path} {accepted}")),
                None => AppError::validation(&path, format!("{path}: {}", e.into_inner())),
            }
        })?;
        settings.validate()?;
        Ok(settings)
    }

    /// What the setting at `path` (`section.key`) accepts; none for an unknown one.
    fn accepted(path: &str) -> Option<&'static str> {
        match path.split_once('.')? {
            ("filter", key) => FilterSettings::accepted(key),
            ("alerts", key) => AlertSettings::accepted(key),
            ("trips", key) => TripSettings::accepted(key),
            ("reports", key) => ReportSettings::accepted(key),
            _ => None,
        }
    }
}

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/settings", get(show).patch(change))
        .route(
            "/vehicles/{id}/alert-settings",
            get(show_vehicle_settings).put(set_vehicle_settings),
        )
}

/// The settings in force for an organisation.
pub async fn load(db: &PgPool, organisation_id: i64) -> AppResult<Settings> {
    let stored = sqlx::query_scalar!(
        "SELECT settings FROM organisations WHERE id = $1",
        organisation_id
    )
    .fetch_optional(db)
    .await?
    .ok_or(AppError::NotFound("organisation"))?;
    serde_json::from_value(stored).map_err(|e| anyhow::anyhow!("stored settings: {e}").into())
}

/// The settings in force for an organisation, read on `conn` (a transaction of the caller's).
pub async fn load_in(
    conn: &mut sqlx::PgConnection,
    organisation_id: i64,
) -> sqlx::Result<Settings> {
    let stored: Option<Value> =
        sqlx::query_scalar("SELECT settings FROM organisations WHERE id = $1")
            .bind(organisation_id)
            .fetch_optional(conn)
            .await?;
    Ok(stored_or_default(organisation_id, "settings", stored))
}

#[utoipa::path(
    get,
    path = "/settings",
    operation_id = "getSettings",
    summary = "The organisation's settings in force (dispatcher)",
    tag = "settings",
    responses(
        (status = 200, body = Settings, description = "Every section, defaults filled in."),
        (status = 403, response = Forbidden),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn show(State(state): State<AppState>, user: CurrentUser) -> AppResult<Json<Settings>> {
    user.require_dispatcher()?;
    Ok(Json(load(&state.db, user.organisation_id).await?))
}

#[utoipa::path(
    patch,
    path = "/settings",
    operation_id = "changeSettings",
    summary = "Change settings (admin)",
    description = "The keys given replace the current values, section by section; the rest keep theirs. Unknown sections or keys, and values out of range or of the wrong type (a negative or fractional count, text for a number), are refused with `400` naming the key (e.g. `filter.max_accuracy_m`) and saying what it accepts.",
    tag = "settings",
    request_body = inline(SettingsPatch),
    responses(
        (status = 200, body = Settings, description = "The settings now in force."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        CommonErrors,
    ),
    security(("bearer" = []), ("cookie" = [])),
)]
async fn change(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiJson(patch): ApiJson<Value>,
) -> AppResult<Json<Settings>> {
    if user.role != Role::Admin {
        return Err(AppError::Forbidden("only an admin changes the settings"));
    }
    // Read and write in one transaction, the row locked, so two admins' patches both apply.
    let mut tx = state.db.begin().await?;
    let stored = sqlx::query_scalar!(
        "SELECT settings FROM organisations WHERE id = $1 FOR UPDATE",
        user.organisation_id
    )
    .fetch_one(&mut *tx)
    .await?;
    let current: Settings =
        serde_json::from_value(stored).map_err(|e| anyhow::anyhow!("stored settings: {e}"))?;
    let settings = current.patched(patch)?;
    sqlx::query!(
        "UPDATE organisations SET settings = $2 WHERE id = $1",
        user.organisation_id,
        serde_json::to_value(&settings).expect("settings serialise")
    )
    .execute(&mut *tx)
    .await?;
    let redetect = settings.trips != current.trips;
    if redetect {
        segmenter::mark_organisation(&mut tx, user.organisation_id).await?;
    }
    tx.commit().await?;
    if redetect {
        state.segmenter.now();
    }
    tracing::info!(
        organisation_id = user.organisation_id,
        user_id = user.id,
        "settings changed"
    );
    Ok(Json(settings))
}

/// A vehicle's own alert settings: the keys it sets otherwise, and what is in force for it.
async fn vehicle_settings(db: &PgPool, organisation_id: i64, id: i64) -> AppResult<Value> {
    let row = sqlx::query!(
        "SELECT v.alert_overrides, COALESCE(o.settings->'alerts', '{}') || v.alert_overrides AS merged
         FROM vehicles v JOIN organisations o ON o.id = v.organisation_id
         WHERE v.id = $1 AND v.organisation_id = $2",
        id,
        organisation_id
    )
    .fetch_optional(db)
    .await?
    .ok_or(AppError::NotFound("vehicle"))?;
    let effective: AlertSettings = stored_or_default(id, "alert settings", row.merged);
    Ok(json!({"overrides": row.alert_overrides, "effective": effective}))
}

#[utoipa::path(
    get,
    path = "/vehicles/{id}/alert-settings",
    operation_id = "getVehicleAlertSettings",
    summary = "A vehicle's own alert settings",
    description = "Dispatchers and admins.",
    tag = "alerts",
    params(Id),
    responses(
        (status = 200, body = VehicleAlertSettings, description = "Its overrides and the settings in force for it."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        CommonErrors,
    ),
)]
async fn show_vehicle_settings(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
) -> AppResult<Json<Value>> {
    user.require_dispatcher()?;
    Ok(Json(
        vehicle_settings(&state.db, user.organisation_id, id).await?,
    ))
}

/// Replaces the vehicle's overrides: an object of `alerts` settings keys (`{}` for none). Each
/// key and value is checked as the organisation's settings are.
#[utoipa::path(
    put,
    path = "/vehicles/{id}/alert-settings",
    operation_id = "setVehicleAlertSettings",
    summary = "Replace a vehicle's alert settings overrides",
    description = "Admins. An object of `alerts` settings keys (`{}` for none), each checked as the organisation's are (`400` naming the key, e.g. `alerts.off_route_s`, and saying what it accepts).",
    tag = "alerts",
    params(Id),
    request_body = AlertSettings,
    responses(
        (status = 200, body = VehicleAlertSettings, description = "Its overrides and the settings in force for it."),
        (status = 400, response = BadRequest),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 415, response = UnsupportedMediaType),
        CommonErrors,
    ),
)]
async fn set_vehicle_settings(
    State(state): State<AppState>,
    user: CurrentUser,
    ApiPath(id): ApiPath<i64>,
    ApiJson(overrides): ApiJson<Value>,
) -> AppResult<Json<Value>> {
    if user.role != Role::Admin {
        return Err(AppError::Forbidden("only an admin changes the settings"));
    }
    if !overrides.is_object() {
        return Err(AppError::validation(
            "",
            "the overrides must be a JSON object",
        ));
    }
    Settings::default().patched(json!({ "alerts": overrides }))?;
    let done = sqlx::query!(
        "UPDATE vehicles SET alert_overrides = $3 WHERE id = $1 AND organisation_id = $2",
        id,
        user.organisation_id,
        &overrides
    )
    .execute(&state.db)
    .await?;
    if done.rows_affected() == 0 {
        return Err(AppError::NotFound("vehicle"));
    }
    Ok(Json(
        vehicle_settings(&state.db, user.organisation_id, id).await?,
    ))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_patch_replaces_only_the_keys_it_names() {
        let s = Settings::default()
            .patched(json!({"filter": {"max_accuracy_m": 50.0, "max_age_h": null}}))
            .unwrap();
        assert_eq!(s.filter.max_accuracy_m, Some(50.0));
        assert_eq!(s.filter.max_age_h, None);
        assert_eq!(
            s.filter.max_speed_mps,
            FilterSettings::default().max_speed_mps
        );
    }

    #[test]
    fn a_patch_with_unknown_keys_or_bad_values_names_the_field() {
        let s = Settings::default();
        let field = |patch| s.patched(patch).unwrap_err().field().map(str::to_owned);
        assert_eq!(field(json!({"nope": {}})).as_deref(), Some("nope"));
        assert_eq!(
            field(json!({"filter": {"max_sped_mps": 3}})).as_deref(),
            Some("filter.max_sped_mps")
        );
        assert_eq!(
            field(json!({"filter": {"max_speed_mps": -3}})).as_deref(),
            Some("filter.max_speed_mps")
        );
        assert_eq!(field(json!({"filter": 3})).as_deref(), Some("filter"));
        assert_eq!(
            field(json!({"alerts": {"off_route_s": -1}})).as_deref(),
            Some("alerts.off_route_s")
        );
    }

    #[test]
    fn every_setting_says_what_it_accepts() {
        let all = serde_json::to_value(Settings::default()).unwrap();
        for (section, keys) in all.as_object().unwrap() {
            for key in keys.as_object().unwrap().keys() {
                let path = format!("{section}.{key}");
                assert!(Settings::accepted(&path).is_some(), "{path}");
            }
        }
    }
}
