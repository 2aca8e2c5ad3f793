//! The HTML pages: sign-in, the dispatcher's fleet map, a shipment's map, the driver's phone
//! page (and the device link that signs a phone in), and the customer's share view. They are
//! shells: the data comes from the API and the WebSocket.
use askama::Template;
use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
    Router,
};

use crate::{
    auth::{self, CurrentUser, Role, ShareAccess, Viewer},
    fleet::shipments,
    AppState,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(login))
        .route("/dispatch", get(dispatch))
        .route("/driver", get(driver))
        .route("/driver/link/{code}", get(device_link))
        .route("/shipments/{id}", get(shipment))
        .route("/vehicles", get(console::<VehiclesPage>))
        .route("/people", get(console::<PeoplePage>))
        .route("/shipments/new", get(console::<PlanPage>))
        .route("/geofences", get(console::<GeofencesPage>))
        .route("/alerts", get(console::<AlertsPage>))
        .route("/settings", get(console::<SettingsPage>))
        .route("/history", get(console::<HistoryPage>))
        .route("/reports", get(console::<ReportsPage>))
        .route("/t/{token}", get(share))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage;

#[derive(Template)]
#[template(path = "shipment.html")]
struct ShipmentPage {
    shipment_id: String,
    share_token: String,
    tile_url: String,
    tile_attribution: String,
}

fn render(page: impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(format!(
            "<!doctype html><title>Not found</title><p>{what}</p><p><a href=\"/\">Waymark</a></p>"
        )),
    )
        .into_response()
}

/// The signed-in user of a page request, if the session cookie (or header) is valid.
async fn page_user(state: &AppState, headers: &HeaderMap) -> Option<CurrentUser> {
    auth::from_headers(state, headers)
        .await
        .and_then(Result::ok)
}

fn home_of(user: &CurrentUser) -> &'static str {
    if user.role == Role::Driver {
        "/driver"
    } else {
        "/dispatch"
    }
}

async fn login(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match page_user(&state, &headers).await {
        Some(user) => Redirect::to(home_of(&user)).into_response(),
        None => render(LoginPage),
    }
}

async fn dispatch(State(state): State<AppState>, headers: HeaderMap) -> Response {
    console::<DispatchPage>(State(state), headers).await
}

/// What every console page (the fleet map and the pages that manage the organisation) knows
/// of its user and its map. The data comes from the API.
struct Console {
    user_email: String,
    /// `admin` or `dispatcher`: the page hides what only an admin may do (the API refuses it
    /// anyway).
    role: &'static str,
    tile_url: String,
    tile_attribution: String,
}

/// A console page: shown to admins and dispatchers; drivers go to their phone page, and
/// anyone signed out to the sign-in (which comes back here).
trait ConsolePage: Template {
    /// The page's path, for the sign-in to come back to.
    const PATH: &'static str;
    fn new(console: Console) -> Self;
}

macro_rules! console_pages {
    ($($page:ident => $template:literal at $path:literal),* $(,)?) => {$(
        #[derive(Template)]
        #[template(path = $template)]
        struct $page {
            console: Console,
            /// The page's own path, marked in the navigation.
            here: &'static str,
        }

        impl ConsolePage for $page {
            const PATH: &'static str = $path;
            fn new(console: Console) -> Self {
                $page { console, here: $path }
            }
        }
    )*};
}

console_pages! {
    DispatchPage => "dispatch.html" at "/dispatch",
    VehiclesPage => "console/vehicles.html" at "/vehicles",
    PeoplePage => "console/people.html" at "/people",
    PlanPage => "console/plan.html" at "/shipments/new",
    GeofencesPage => "console/geofences.html" at "/geofences",
    AlertsPage => "console/alerts.html" at "/alerts",
    SettingsPage => "console/settings.html" at "/settings",
    HistoryPage => "console/history.html" at "/history",
    ReportsPage => "console/reports.html" at "/reports",
}

async fn console<P: ConsolePage>(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match page_user(&state, &headers).await {
        Some(user) if user.role.dispatches() => render(P::new(Console {
            user_email: user.email,
            role: user.role.as_str(),
            tile_url: state.config.tile_url.clone(),
            tile_attribution: state.config.tile_attribution.clone(),
        })),
        Some(user) => Redirect::to(home_of(&user)).into_response(),
        None => Redirect::to(&format!("/?next={}", P::PATH)).into_response(),
    }
}

#[derive(Template)]
#[template(path = "driver.html")]
struct DriverPage {
    user_id: i64,
    user_email: String,
}

#[derive(Template)]
#[template(path = "device_link.html")]
struct DeviceLinkPage {
    code: String,
}

/// The driver's phone page. Dispatchers go to the fleet map.
async fn driver(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match page_user(&state, &headers).await {
        Some(user) if user.role == Role::Driver => render(DriverPage {
            user_id: user.id,
            user_email: user.email,
        }),
        Some(user) => Redirect::to(home_of(&user)).into_response(),
        None => Redirect::to("/?next=/driver").into_response(),
    }
}

/// The page a device link opens. It only offers the sign-in: the link is used up by the tap
/// (a POST), so a link preview fetching this page does not spend it.
async fn device_link(Path(code): Path<String>) -> Response {
    if code.len() > 128
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return not_found("This link is not a Waymark device link.");
    }
    render(DeviceLinkPage { code })
}

async fn shipment(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<i64>,
) -> Response {
    let Some(user) = page_user(&state, &headers).await else {
        return Redirect::to("/").into_response();
    };
    match shipments::load_visible(&state.db, &Viewer::User(user), id).await {
        Ok(_) => render(ShipmentPage {
            shipment_id: id.to_string(),
            share_token: String::new(),
            tile_url: state.config.tile_url.clone(),
            tile_attribution: state.config.tile_attribution.clone(),
        }),
        Err(_) => not_found("There is no such shipment, or it is not yours to see."),
    }
}

async fn share(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    match ShareAccess::lookup(&state.db, &token).await {
        Ok(access) => render(ShipmentPage {
            shipment_id: access.shipment_id.to_string(),
            share_token: token,
            tile_url: state.config.tile_url.clone(),
            tile_attribution: state.config.tile_attribution.clone(),
        }),
        Err(_) => not_found("This tracking link has expired or was revoked."),
    }
}
