//! The HTML pages. Reads are GETs any logged-in user may make; every change is a POST
//! that checks the session's CSRF token and role before anything else, and is audited.

use askama::Template;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::auth::{COOKIE, Role};
use crate::data::{self, Failed};
use crate::{App, Me, Refused};

mod acls;
mod audit;
mod groups;
mod log_groups;
mod login;
mod messages;
mod mirrors;
mod mqtt;
mod overview;
mod regions;
mod topics;
mod transactions;

pub use messages::{MessagesQuery, read_messages};
use regions::{change_region, confirm_home, confirm_region, move_home};

/// The page routes.
pub fn routes() -> axum::Router<App> {
    axum::Router::new()
        .route("/login", get(login::login_page).post(login::login))
        .route("/logout", post(login::logout))
        .route("/", get(overview::overview))
        .route("/brokers", get(overview::brokers))
        .route("/topics", get(topics::topics).post(topics::create_topic))
        .route("/topics/{name}", get(topics::topic))
        .route("/topics/{name}/alter", post(topics::alter_topic))
        .route("/topics/{name}/config", post(topics::config_topic))
        .route("/topics/{name}/delete", post(topics::delete_topic))
        .route(
            "/regions/{name}/{action}",
            get(confirm_region).post(change_region),
        )
        .route("/messages", get(messages::messages))
        .route("/messages/produce", post(messages::produce_message))
        .route("/groups", get(groups::groups))
        .route("/groups/reset", post(groups::reset_group))
        .route("/audit", get(audit::audit))
        .route("/mirrors", get(mirrors::mirrors))
        .route("/transactions", get(transactions::transactions))
        .route("/mqtt", get(mqtt::mqtt))
        .route("/acls", get(acls::acls).post(acls::add_acl))
        .route("/acls/delete", post(acls::delete_acl))
        .route("/topics/{name}/home", get(confirm_home).post(move_home))
        .route(
            "/log-groups/{region}/{group}/{action}",
            get(log_groups::confirm_group_action).post(log_groups::group_action),
        )
        .route("/groups/{name}", get(groups::group_page))
}

/// What the page header shows.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    pub title: String,
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    pub can_operate: bool,
    pub is_admin: bool,
}

impl Nav {
    fn of(me: &Me, title: &str) -> Nav {
        Nav {
            title: title.to_owned(),
            user: me.session.user.clone(),
            role: me.session.role.as_str(),
            csrf: me.session.csrf.clone(),
            can_operate: me.session.role >= Role::Operator,
            is_admin: me.session.role >= Role::Admin,
        }
    }
}

fn render(t: &impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "rendering the page failed",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    nav: Nav,
    heading: &'a str,
    message: &'a str,
}

/// A page saying what went wrong.
pub fn error_page(heading: &str, message: &str) -> Html<String> {
    let page = ErrorPage {
        nav: Nav {
            title: heading.to_owned(),
            ..Nav::default()
        },
        heading,
        message,
    };
    Html(page.render().unwrap_or_else(|_| message.to_owned()))
}

fn failed(e: Failed) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        error_page("The platform refused", &e.0),
    )
        .into_response()
}

/// A change the console carried out: where the browser goes next, and what the audit log
/// records beyond "ok".
struct Done {
    to: String,
    detail: Option<String>,
}

impl Done {
    /// On to `path` with `notice` shown at the top.
    fn notice(path: &str, notice: &str) -> Done {
        Done {
            to: format!("{path}?notice={}", url_encode(notice)),
            detail: None,
        }
    }

    /// The audit log records `detail` with the "ok".
    fn detail(self, detail: String) -> Done {
        Done {
            detail: Some(detail),
            ..self
        }
    }
}

/// Answers a change (`what` of `target`) the way every change is answered: audited as done
/// and the browser sent on, or audited as failed with the platform's refusal shown.
fn audited(
    app: &App,
    me: &Me,
    what: &str,
    target: &str,
    outcome: Result<Done, Failed>,
) -> Response {
    match outcome {
        Ok(done) => {
            let recorded = done.detail.map_or("ok".to_owned(), |d| format!("ok: {d}"));
            app.audit.record(&me.session, what, target, &recorded);
            Redirect::to(&done.to).into_response()
        }
        Err(e) => {
            app.audit
                .record(&me.session, what, target, &format!("failed: {e}"));
            failed(e)
        }
    }
}

/// Percent-encodes a URL component.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Deserialize, Default)]
struct Notice {
    #[serde(default)]
    notice: String,
}

/// Bytes for people: 1.5 GiB, 320 KiB, 12 B. (Templates pass arguments by reference.)
pub fn bytes(n: impl std::borrow::Borrow<u64>) -> String {
    meridian_proto::human::bytes(*n.borrow())
}

/// A count for people: 1,234,567.
pub fn count(n: impl std::borrow::Borrow<u64>) -> String {
    meridian_proto::human::count(*n.borrow())
}

/// How long ago a time (ms since the epoch) was, for people.
pub fn ago(then_ms: impl std::borrow::Borrow<i64>) -> String {
    crate::observer::ago(data::now_ms(), *then_ms.borrow())
}

// ---- failover ----

#[derive(Template)]
#[template(path = "confirm.html")]
struct Confirm {
    nav: Nav,
    heading: String,
    cost: Vec<String>,
    action: String,
    button: String,
    back: String,
}

impl From<Failed> for Refused {
    fn from(e: Failed) -> Refused {
        Refused(e.0)
    }
}
/// Shows an optional number with a unit, or a dash.
pub fn show(v: &Option<f64>, unit: &str) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.0}{unit}"))
}
