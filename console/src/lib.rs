//! Meridian's web console: server-rendered pages (askama templates, no build step) and a
//! JSON API under `/api/` over the control plane's admin API and the brokers, for SREs.
//!
//! - [`auth`]: users from the configuration file, roles, sessions, CSRF tokens;
//! - [`data`]: what the pages and the API show, read from the control plane and brokers;
//! - [`pages`]: the HTML pages and their forms; [`api`]: the same as JSON;
//! - [`audit`]: every action, allowed or refused, as a JSON line;
//! - [`charts`]: append rates over time, sampled in the background, drawn as SVG;
//! - [`mirrors`]: the links between regions, from the mirrors' metrics;
//! - [`observer`]: brokers seen, their reports (disk, offsets, consumer groups' commits),
//!   throughput per topic and broker, lag over time, and the health summary's findings;
//! - [`throttle`]: failed logins per client address and per name, as decisions.
//!
//! Every change is a POST carrying the session's CSRF token; the server checks the role
//! of the session for each one (a viewer's POST is refused whatever page sent it).

pub mod api;
pub mod audit;
pub mod auth;
pub mod charts;
pub mod config;
pub mod data;
pub mod https;
pub mod mirrors;
pub mod observer;
pub mod pages;
pub mod throttle;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::auth::{Auth, Role, Session};

/// What every request handler shares.
#[derive(Debug)]
pub struct Console {
    /// Control-plane addresses, comma-separated.
    pub control: String,
    /// Users and sessions.
    pub auth: Auth,
    /// The audit log.
    pub audit: audit::Audit,
    /// The mirror links, from the mirrors' metrics.
    pub mirrors: mirrors::Mirrors,
    /// Brokers seen, their reports, and what follows from them.
    pub observer: observer::Observer,
    /// Rendered Prometheus metrics of this process, when installed.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Served over HTTPS: session cookies are `Secure` and browsers are told to keep to
    /// HTTPS (HSTS).
    pub https: bool,
}

impl Console {
    /// The attributes of the session cookie.
    pub(crate) fn cookie_attributes(&self) -> &'static str {
        if self.https {
            "HttpOnly; Secure; SameSite=Strict; Path=/"
        } else {
            "HttpOnly; SameSite=Strict; Path=/"
        }
    }
}

/// Shared state of the router.
pub type App = Arc<Console>;

/// The console's routes.
pub fn router(app: App) -> Router {
    Router::new()
        .merge(pages::routes())
        .nest("/api", api::routes())
        .route("/metrics", axum::routing::get(metrics))
        .route("/static/live.js", axum::routing::get(live_js))
        // As every daemon's operational endpoint: alive, and ready once it serves.
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route("/readyz", axum::routing::get(|| async { "ready\n" }))
        .layer(axum::middleware::map_response_with_state(
            app.clone(),
            security_headers,
        ))
        .with_state(app)
}

/// The usual security headers on every answer: no framing, no type sniffing, the referrer
/// only to the console itself, and a policy allowing only the console's own resources (the
/// one script is its own `/static/live.js`; no inline script; styles may be inline); over
/// HTTPS, HSTS.
async fn security_headers(
    axum::extract::State(app): axum::extract::State<App>,
    mut r: Response,
) -> Response {
    use axum::http::HeaderValue;
    let h = r.headers_mut();
    if app.https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    r
}

/// The script keeping pages live (see the file); compiled in, so the console is one file.
async fn live_js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("../static/live.js"),
    )
        .into_response()
}

async fn metrics(axum::extract::State(app): axum::extract::State<App>) -> Response {
    match &app.metrics {
        Some(h) => h.render().into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not installed").into_response(),
    }
}

/// The logged-in user of a page request; without a session the browser goes to the login
/// page.
#[derive(Debug, Clone)]
pub struct Me {
    /// The session.
    pub session: Session,
}

impl Me {
    /// Refuses (403, and an audit line) unless the user holds `role` or a higher one.
    pub fn require(
        &self,
        app: &Console,
        role: Role,
        action: &str,
        target: &str,
    ) -> Result<(), Refused> {
        if self.session.role >= role {
            return Ok(());
        }
        app.audit
            .record(&self.session, action, target, "refused: role");
        Err(Refused(format!(
            "{} is a {}: {action} needs the {} role",
            self.session.user,
            self.session.role.as_str(),
            role.as_str()
        )))
    }

    /// What every change checks first: the form's CSRF token, then the role.
    pub fn permit(
        &self,
        app: &Console,
        token: &str,
        role: Role,
        action: &str,
        target: &str,
    ) -> Result<(), Refused> {
        self.check_csrf(app, token, action, target)?;
        self.require(app, role, action, target)
    }

    /// Refuses a form whose CSRF token is not the session's.
    pub fn check_csrf(
        &self,
        app: &Console,
        token: &str,
        action: &str,
        target: &str,
    ) -> Result<(), Refused> {
        if auth::same_token(token, &self.session.csrf) {
            return Ok(());
        }
        app.audit
            .record(&self.session, action, target, "refused: bad CSRF token");
        Err(Refused(
            "the form's security token does not match this session: reload the page and try again"
                .into(),
        ))
    }
}

/// An action refused for the user's role or a bad token (403).
#[derive(Debug)]
pub struct Refused(pub String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (
            StatusCode::FORBIDDEN,
            pages::error_page("Not allowed", &self.0),
        )
            .into_response()
    }
}

fn session_of(parts: &Parts, app: &Console) -> Option<Session> {
    let cookies = parts.headers.get_all(header::COOKIE);
    cookies
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| auth::cookie_value(v).and_then(|id| app.auth.session(id)))
}

impl FromRequestParts<App> for Me {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        match session_of(parts, app) {
            Some(session) => Ok(Me { session }),
            None => {
                let back = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                let to = format!("/login?next={}", pages::url_encode(back));
                Err(Redirect::to(&to).into_response())
            }
        }
    }
}

/// The logged-in user of an API request: 401 without a session.
#[derive(Debug, Clone)]
pub struct ApiUser(pub Session);

impl FromRequestParts<App> for ApiUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        session_of(parts, app).map(ApiUser).ok_or_else(|| {
            (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({
                    "error": "log in first: POST /login with name and password sets the session cookie"
                })),
            )
                .into_response()
        })
    }
}
