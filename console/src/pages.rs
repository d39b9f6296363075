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
mod mqtt;
/// The page routes.
mod regions;
mod transactions;

use regions::{change_region, confirm_home, confirm_region, move_home};

pub fn routes() -> axum::Router<App> {
    axum::Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/", get(overview))
        .route("/brokers", get(brokers))
        .route("/topics", get(topics).post(create_topic))
        .route("/topics/{name}", get(topic))
        .route("/topics/{name}/alter", post(alter_topic))
        .route("/topics/{name}/delete", post(delete_topic))
        .route(
            "/regions/{name}/{action}",
            get(confirm_region).post(change_region),
        )
        .route("/messages", get(messages))
        .route("/groups", get(groups))
        .route("/groups/reset", post(reset_group))
        .route("/audit", get(audit))
        .route("/mirrors", get(mirrors))
        .route("/transactions", get(transactions::transactions))
        .route("/mqtt", get(mqtt::mqtt))
        .route("/acls", get(acls::acls).post(acls::add_acl))
        .route("/acls/delete", post(acls::delete_acl))
        .route("/topics/{name}/home", get(confirm_home).post(move_home))
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

/// Whether `next` is a path on this site (where a login may send the browser back to):
/// never `//host` or `/\host`, which browsers read as another site, nor a control
/// character.
fn local_path(next: &str) -> bool {
    let mut chars = next.chars();
    chars.next() == Some('/')
        && !matches!(chars.next(), Some('/' | '\\'))
        && !next.chars().any(|c| c.is_control())
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

// ---- login ----

#[derive(Template)]
#[template(path = "login.html")]
struct Login {
    nav: Nav,
    error: String,
    next: String,
}

#[derive(Deserialize)]
struct Next {
    #[serde(default)]
    next: String,
}

async fn login_page(Query(q): Query<Next>) -> Response {
    render(&Login {
        nav: Nav {
            title: "Log in".into(),
            ..Nav::default()
        },
        error: String::new(),
        next: q.next,
    })
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
    #[serde(default)]
    next: String,
}

async fn login(State(app): State<App>, parts: Parts, Form(f): Form<LoginForm>) -> Response {
    // The client's address when the server knows it (it serves with connect info).
    let client = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    match app.auth.login(&f.name, &f.password, &client).await {
        Ok((id, session)) => {
            app.audit.record(&session, "login", "", "ok");
            let next = if local_path(&f.next) {
                f.next
            } else {
                "/".into()
            };
            (
                [(
                    header::SET_COOKIE,
                    format!("{COOKIE}={id}; {}", app.cookie_attributes()),
                )],
                Redirect::to(&next),
            )
                .into_response()
        }
        Err(crate::auth::Refused::Throttled(wait)) => {
            let secs = wait.as_secs().max(1);
            app.audit.record_as(
                &f.name,
                "",
                "login",
                "",
                &format!("refused: too many failed logins from {client} or for this name; retry in {secs} s"),
            );
            let page = Login {
                nav: Nav {
                    title: "Log in".into(),
                    ..Nav::default()
                },
                error: format!("Too many failed logins: try again in {secs} s."),
                next: f.next,
            };
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, secs.to_string())],
                render(&page),
            )
                .into_response()
        }
        Err(crate::auth::Refused::Wrong) => {
            app.audit
                .record_as(&f.name, "", "login", "", "refused: wrong name or password");
            let page = Login {
                nav: Nav {
                    title: "Log in".into(),
                    ..Nav::default()
                },
                error: "Wrong name or password.".into(),
                next: f.next,
            };
            (StatusCode::UNAUTHORIZED, render(&page)).into_response()
        }
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(app): State<App>,
    me: Me,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = me.check_csrf(&app, &f.csrf, "logout", "") {
        return r.into_response();
    }
    if let Some(id) = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::cookie_value)
    {
        app.auth.logout(id);
    }
    app.audit.record(&me.session, "logout", "", "ok");
    (
        [(
            header::SET_COOKIE,
            format!("{COOKIE}=; {}; Max-Age=0", app.cookie_attributes()),
        )],
        Redirect::to("/login"),
    )
        .into_response()
}

// ---- overview, brokers ----

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    nav: Nav,
    regions: Vec<data::Region>,
    topics: usize,
    notice: String,
    chart: String,
    /// Each mirror link at a glance: (name, up, lag p99).
    links: Vec<(String, bool, String)>,
}

#[derive(Deserialize, Default)]
struct Notice {
    #[serde(default)]
    notice: String,
}

async fn overview(State(app): State<App>, me: Me, Query(n): Query<Notice>) -> Response {
    let regions = match data::regions(&app.control).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let topics = data::topics(&app.control, "").await.map_or(0, |t| t.len());
    render(&Overview {
        nav: Nav::of(&me, "Overview"),
        regions,
        topics,
        notice: n.notice,
        chart: crate::charts::svg(&app.throughput.rates(), "/s"),
        links: app
            .mirrors
            .now()
            .into_iter()
            .map(|l| {
                (
                    format!("{} → {}", l.from, l.to),
                    l.up == Some(true) && l.stalled.is_none(),
                    show(&l.lag_p99_ms, " ms"),
                )
            })
            .collect(),
    })
}

#[derive(Template)]
#[template(path = "brokers.html")]
struct Brokers {
    nav: Nav,
    regions: Vec<data::Region>,
}

async fn brokers(State(app): State<App>, me: Me) -> Response {
    match data::regions(&app.control).await {
        Ok(mut regions) => {
            data::add_broker_reports(&mut regions).await;
            render(&Brokers {
                nav: Nav::of(&me, "Brokers"),
                regions,
            })
        }
        Err(e) => failed(e),
    }
}

// ---- topics ----

#[derive(Template)]
#[template(path = "topics.html")]
struct Topics {
    nav: Nav,
    q: String,
    topics: Vec<data::Topic>,
    error: String,
    notice: String,
    form: data::NewTopic,
}

#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    q: String,
    #[serde(default)]
    notice: String,
}

async fn topics(State(app): State<App>, me: Me, Query(s): Query<Search>) -> Response {
    match data::topics(&app.control, &s.q).await {
        Ok(topics) => render(&Topics {
            nav: Nav::of(&me, "Topics"),
            q: s.q,
            topics,
            error: String::new(),
            notice: s.notice,
            form: data::NewTopic::default(),
        }),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    topic: data::NewTopic,
}

async fn create_topic(State(app): State<App>, me: Me, Form(f): Form<CreateForm>) -> Response {
    let name = f.topic.name.clone();
    if let Err(r) = me.permit(&app, &f.csrf, Role::Operator, "create topic", &name) {
        return r.into_response();
    }
    match data::create_topic(&app.control, &f.topic).await {
        Ok(t) => {
            app.audit.record(&me.session, "create topic", &name, "ok");
            Redirect::to(&format!(
                "/topics?notice={}",
                url_encode(&format!(
                    "Created topic {} with {} partitions.",
                    t.name, t.partitions
                ))
            ))
            .into_response()
        }
        Err(e) => {
            app.audit
                .record(&me.session, "create topic", &name, &format!("failed: {e}"));
            let topics = data::topics(&app.control, "").await.unwrap_or_default();
            let page = Topics {
                nav: Nav::of(&me, "Topics"),
                q: String::new(),
                topics,
                error: e.0,
                notice: String::new(),
                form: f.topic,
            };
            (StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "topic.html")]
struct TopicPage {
    nav: Nav,
    d: data::TopicDetail,
    notice: String,
    error: String,
}

async fn topic(
    State(app): State<App>,
    me: Me,
    Path(name): Path<String>,
    Query(n): Query<Notice>,
) -> Response {
    match data::topic(&app.control, &name).await {
        Ok(d) => render(&TopicPage {
            nav: Nav::of(&me, &format!("Topic {name}")),
            d,
            notice: n.notice,
            error: String::new(),
        }),
        Err(e) => failed(e),
    }
}

#[derive(Deserialize)]
struct AlterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    partitions: String,
    #[serde(default)]
    retention: String,
}

async fn alter_topic(
    State(app): State<App>,
    me: Me,
    Path(name): Path<String>,
    Form(f): Form<AlterForm>,
) -> Response {
    if let Err(r) = me.permit(&app, &f.csrf, Role::Operator, "alter topic", &name) {
        return r.into_response();
    }
    let partitions = match f.partitions.trim() {
        "" => None,
        p => match p.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                return failed(Failed(format!("partitions: {p:?} is not a whole number")));
            }
        },
    };
    let retention = Some(f.retention.trim().to_owned()).filter(|r| !r.is_empty());
    match data::alter_topic(&app.control, &name, partitions, retention).await {
        Ok(t) => {
            app.audit.record(&me.session, "alter topic", &name, "ok");
            Redirect::to(&format!(
                "/topics/{}?notice={}",
                url_encode(&name),
                url_encode(&format!(
                    "Altered: {} partitions, retention {}.",
                    t.partitions, t.retention
                ))
            ))
            .into_response()
        }
        Err(e) => {
            app.audit
                .record(&me.session, "alter topic", &name, &format!("failed: {e}"));
            failed(e)
        }
    }
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

async fn delete_topic(
    State(app): State<App>,
    me: Me,
    Path(name): Path<String>,
    Form(f): Form<DeleteForm>,
) -> Response {
    if let Err(r) = me.permit(&app, &f.csrf, Role::Admin, "delete topic", &name) {
        return r.into_response();
    }
    if f.confirm.trim() != name {
        app.audit.record(
            &me.session,
            "delete topic",
            &name,
            "refused: the confirmation does not name the topic",
        );
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            error_page(
                "Not deleted",
                &format!("Type the topic's name ({name}) in the confirmation box to delete it."),
            ),
        )
            .into_response();
    }
    match data::delete_topic(&app.control, &name).await {
        Ok(()) => {
            app.audit.record(&me.session, "delete topic", &name, "ok");
            Redirect::to(&format!(
                "/topics?notice={}",
                url_encode(&format!("Deleted topic {name}."))
            ))
            .into_response()
        }
        Err(e) => {
            app.audit
                .record(&me.session, "delete topic", &name, &format!("failed: {e}"));
            failed(e)
        }
    }
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

// ---- messages ----

#[derive(Template)]
#[template(path = "messages.html")]
struct Messages {
    nav: Nav,
    regions: Vec<String>,
    topic: String,
    region: String,
    partition: String,
    from: String,
    max: String,
    messages: Vec<data::Message>,
    error: String,
}

/// The query of the message browser (also the API's).
#[derive(Deserialize, Default)]
pub struct MessagesQuery {
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub region: String,
    #[serde(default)]
    pub partition: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub max: String,
}

/// Reads what a message query asks; the region defaults to the first one listed.
pub async fn read_messages(
    app: &crate::Console,
    q: &MessagesQuery,
    regions: &[String],
) -> Result<Vec<data::Message>, Failed> {
    let partition: u32 = match q.partition.trim() {
        "" => 0,
        p => p
            .parse()
            .map_err(|_| Failed(format!("partition: {p:?} is not a partition number")))?,
    };
    let max: usize = match q.max.trim() {
        "" => 50,
        m => m
            .parse::<usize>()
            .map_err(|_| Failed(format!("max: {m:?} is not a count")))?
            .clamp(1, 1000),
    };
    let region = if q.region.is_empty() {
        regions.first().cloned().unwrap_or_default()
    } else {
        q.region.clone()
    };
    let from = data::From::parse(&q.from)?;
    data::messages(&app.control, &q.topic, &region, partition, from, max).await
}

async fn messages(State(app): State<App>, me: Me, Query(q): Query<MessagesQuery>) -> Response {
    let regions: Vec<String> = match data::regions(&app.control).await {
        Ok(r) => r.into_iter().map(|r| r.name).collect(),
        Err(e) => return failed(e),
    };
    let (messages, error) = if q.topic.is_empty() {
        (Vec::new(), String::new())
    } else {
        match read_messages(&app, &q, &regions).await {
            Ok(m) => (m, String::new()),
            Err(e) => (Vec::new(), e.0),
        }
    };
    let region = if q.region.is_empty() {
        regions.first().cloned().unwrap_or_default()
    } else {
        q.region.clone()
    };
    render(&Messages {
        nav: Nav::of(&me, "Messages"),
        regions,
        region,
        partition: if q.partition.is_empty() {
            "0".into()
        } else {
            q.partition
        },
        from: q.from,
        max: if q.max.is_empty() { "50".into() } else { q.max },
        topic: q.topic,
        messages,
        error,
    })
}

// ---- consumer groups ----

#[derive(Template)]
#[template(path = "groups.html")]
struct Groups {
    nav: Nav,
    /// The Kafka groups coordinated in every region.
    kafka: Vec<data::KafkaGroup>,
    regions: Vec<String>,
    group: String,
    topic: String,
    region: String,
    partitions: Vec<data::GroupPartition>,
    preview: bool,
    applied: bool,
    to: String,
    notice: String,
    error: String,
}

#[derive(Deserialize, Default)]
struct GroupQuery {
    #[serde(default)]
    group: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    notice: String,
}

async fn groups(State(app): State<App>, me: Me, Query(q): Query<GroupQuery>) -> Response {
    let listed = match data::regions(&app.control).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let kafka = data::kafka_groups(&listed).await;
    let regions: Vec<String> = listed.into_iter().map(|r| r.name).collect();
    let region = if q.region.is_empty() {
        regions.first().cloned().unwrap_or_default()
    } else {
        q.region.clone()
    };
    let (partitions, error) = if q.group.is_empty() || q.topic.is_empty() {
        (Vec::new(), String::new())
    } else {
        match data::group(&app.control, &q.group, &q.topic, &region, None).await {
            Ok(p) => (p, String::new()),
            Err(e) => (Vec::new(), e.0),
        }
    };
    render(&Groups {
        nav: Nav::of(&me, "Consumer groups"),
        kafka,
        regions,
        group: q.group,
        topic: q.topic,
        region,
        partitions,
        preview: false,
        applied: false,
        to: String::new(),
        notice: q.notice,
        error,
    })
}

#[derive(Deserialize)]
struct ResetForm {
    #[serde(default)]
    csrf: String,
    group: String,
    topic: String,
    region: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    dry_run: String,
}

async fn reset_group(State(app): State<App>, me: Me, Form(f): Form<ResetForm>) -> Response {
    let target = format!("{} on {} in {}", f.group, f.topic, f.region);
    let dry_run = f.dry_run == "yes";
    let action = if dry_run {
        "preview group reset"
    } else {
        "reset group"
    };
    if let Err(r) = me.permit(&app, &f.csrf, Role::Operator, action, &target) {
        return r.into_response();
    }
    let outcome = match data::parse_reset(&f.to) {
        Ok(to) if dry_run => {
            data::group(&app.control, &f.group, &f.topic, &f.region, Some(&to)).await
        }
        Ok(to) => match data::reset_group(&app.control, &f.group, &f.topic, &f.region, &to).await {
            // Show where the group stands now.
            Ok(_) => data::group(&app.control, &f.group, &f.topic, &f.region, None).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let (partitions, error, notice) = match outcome {
        Ok(p) => {
            if !dry_run {
                app.audit
                    .record(&me.session, action, &target, &format!("ok: to {}", f.to));
            }
            let notice = if dry_run {
                "Preview: nothing changed yet. Untick “preview only” and reset again to apply."
                    .to_owned()
            } else {
                format!("Reset {} to {}.", f.group, f.to)
            };
            (p, String::new(), notice)
        }
        Err(e) => {
            app.audit
                .record(&me.session, action, &target, &format!("failed: {e}"));
            (Vec::new(), e.0, String::new())
        }
    };
    let listed = data::regions(&app.control).await.unwrap_or_default();
    render(&Groups {
        nav: Nav::of(&me, "Consumer groups"),
        kafka: data::kafka_groups(&listed).await,
        regions: listed.into_iter().map(|r| r.name).collect(),
        group: f.group,
        topic: f.topic,
        region: f.region,
        preview: dry_run,
        applied: !dry_run,
        partitions,
        to: f.to,
        notice,
        error,
    })
}

// ---- audit ----

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    path: String,
    lines: Vec<(String, String, String, String, String, String)>,
}

async fn audit(State(app): State<App>, me: Me) -> Response {
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let lines = app
        .audit
        .tail(200)
        .iter()
        .map(|v| {
            let ms = v["time_ms"].as_u64().unwrap_or(0);
            let time = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string();
            (
                time,
                field(v, "user"),
                field(v, "role"),
                field(v, "action"),
                field(v, "target"),
                field(v, "outcome"),
            )
        })
        .collect();
    render(&AuditPage {
        nav: Nav::of(&me, "Audit log"),
        path: app.audit.path().display().to_string(),
        lines,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_login_returns_only_to_a_path_of_this_site() {
        for ok in ["/", "/topics?q=a", "/topics/orders"] {
            assert!(super::local_path(ok), "{ok}");
        }
        for bad in [
            "",
            "https://evil.example",
            "//evil.example",
            "/\\evil.example",
            "/a\nb",
            "topics",
        ] {
            assert!(!super::local_path(bad), "{bad}");
        }
        assert_eq!(super::url_encode("/topics?q=a b"), "/topics%3Fq%3Da%20b");
    }
}

impl From<Failed> for Refused {
    fn from(e: Failed) -> Refused {
        Refused(e.0)
    }
}

// ---- mirror links ----

#[derive(Template)]
#[template(path = "mirrors.html")]
struct MirrorsPage {
    nav: Nav,
    configured: bool,
    links: Vec<LinkRow>,
    chart: String,
}

/// A link as the page shows it.
struct LinkRow {
    name: String,
    /// Up and delivering, down, or no answer (None); `status` says which, and why.
    up: Option<bool>,
    status: String,
    rate: String,
    p50: String,
    p99: String,
    unacked: String,
}

async fn mirrors(State(app): State<App>, me: Me) -> Response {
    let links = app
        .mirrors
        .now()
        .into_iter()
        .map(|l| LinkRow {
            name: format!("{} → {}", l.from, l.to),
            up: l.up.filter(|_| l.stalled.is_none()),
            status: l.status(),
            rate: show(&l.messages_per_second, ""),
            p50: show(&l.lag_p50_ms, " ms"),
            p99: show(&l.lag_p99_ms, " ms"),
            unacked: l
                .unacked_batches
                .map_or("–".to_owned(), |n| format!("{n} batches")),
        })
        .collect();
    render(&MirrorsPage {
        nav: Nav::of(&me, "Mirror links"),
        configured: app.mirrors.configured(),
        links,
        chart: crate::charts::svg(&app.mirrors.lag_p99(), " ms"),
    })
}

/// Shows an optional number with a unit, or a dash.
pub fn show(v: &Option<f64>, unit: &str) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.0}{unit}"))
}
