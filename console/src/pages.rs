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
mod groups;
mod log_groups;
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
        .route("/topics/{name}/config", post(config_topic))
        .route("/topics/{name}/delete", post(delete_topic))
        .route(
            "/regions/{name}/{action}",
            get(confirm_region).post(change_region),
        )
        .route("/messages", get(messages))
        .route("/messages/produce", post(produce_message))
        .route("/groups", get(groups))
        .route("/groups/reset", post(reset_group))
        .route("/audit", get(audit))
        .route("/mirrors", get(mirrors))
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
    /// Each mirror link at a glance: (name, up and delivering, status, lag p99).
    links: Vec<(String, bool, String, String)>,
    /// What is wrong, each with the page that fixes it.
    findings: Vec<crate::observer::Finding>,
}

#[derive(Deserialize, Default)]
struct Notice {
    #[serde(default)]
    notice: String,
}

async fn overview(State(app): State<App>, me: Me, Query(n): Query<Notice>) -> Response {
    let regions = match data::regions_seen(&app).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let topics = data::topics(&app.control, "").await.map_or(0, |t| t.len());
    let links: Vec<(String, bool, String, String)> = app
        .mirrors
        .now()
        .into_iter()
        .map(|l| {
            (
                format!("{} → {}", l.from, l.to),
                l.up == Some(true) && l.stalled.is_none(),
                l.status(),
                show(&l.lag_p99_ms, " ms"),
            )
        })
        .collect();
    let glance: Vec<(String, bool, String)> = links
        .iter()
        .map(|(name, ok, status, _)| (name.clone(), *ok, status.clone()))
        .collect();
    render(&Overview {
        nav: Nav::of(&me, "Overview"),
        findings: app.observer.findings(&regions, &glance, data::now_ms()),
        regions,
        topics,
        notice: n.notice,
        chart: crate::charts::svg(&app.throughput.rates(), "/s"),
        links,
    })
}

#[derive(Template)]
#[template(path = "brokers.html")]
struct Brokers {
    nav: Nav,
    regions: Vec<data::Region>,
    notice: String,
    chart: String,
    bytes_chart: String,
}

async fn brokers(State(app): State<App>, me: Me, Query(n): Query<Notice>) -> Response {
    match data::regions_seen(&app).await {
        Ok(mut regions) => {
            data::add_broker_reports(&mut regions).await;
            render(&Brokers {
                nav: Nav::of(&me, "Brokers"),
                regions,
                notice: n.notice,
                chart: crate::charts::svg(&app.observer.broker_rates(), "/s"),
                bytes_chart: crate::charts::svg(&app.observer.broker_byte_rates(), " B/s"),
            })
        }
        Err(e) => failed(e),
    }
}

/// Bytes for people: 1.5 GiB, 320 KiB, 12 B.
/// (Templates pass arguments by reference.)
pub fn bytes(n: impl std::borrow::Borrow<u64>) -> String {
    let n = *n.borrow();
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// A count for people: 1,234,567.
pub fn count(n: impl std::borrow::Borrow<u64>) -> String {
    let n = *n.borrow();
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// How long ago a time (ms since the epoch) was, for people.
pub fn ago(then_ms: impl std::borrow::Borrow<i64>) -> String {
    crate::observer::ago(data::now_ms(), *then_ms.borrow())
}

// ---- topics ----

#[derive(Template)]
#[template(path = "topics.html")]
struct Topics {
    nav: Nav,
    q: String,
    rows: Vec<TopicRow>,
    sort: String,
    page: usize,
    pages: usize,
    error: String,
    notice: String,
    form: data::NewTopic,
}

/// A topic as the list shows it, with its throughput and size now (every region).
struct TopicRow {
    t: data::Topic,
    rate: f64,
    bytes_rate: f64,
    size: u64,
}

/// Rows a page of the topics list shows.
const TOPIC_ROWS: usize = 50;

#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    q: String,
    #[serde(default)]
    notice: String,
    /// `name`, `rate` (busiest first) or `size` (largest first).
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: usize,
}

/// The list's rows, sorted and cut to `page` (from 1); also how many pages there are.
fn topic_page(
    app: &crate::Console,
    topics: Vec<data::Topic>,
    sort: &str,
    page: usize,
) -> (Vec<TopicRow>, usize) {
    let now = app.observer.topics_now();
    let mut rows: Vec<TopicRow> = topics
        .into_iter()
        .map(|t| {
            let (rate, bytes_rate, size) = now.get(&t.name).copied().unwrap_or_default();
            TopicRow {
                t,
                rate,
                bytes_rate,
                size,
            }
        })
        .collect();
    match sort {
        "rate" => rows.sort_by(|a, b| b.rate.total_cmp(&a.rate).then(a.t.name.cmp(&b.t.name))),
        "size" => rows.sort_by(|a, b| b.size.cmp(&a.size).then(a.t.name.cmp(&b.t.name))),
        _ => rows.sort_by(|a, b| a.t.name.cmp(&b.t.name)),
    }
    let pages = rows.len().div_ceil(TOPIC_ROWS).max(1);
    let page = page.clamp(1, pages);
    let rows = rows
        .into_iter()
        .skip((page - 1) * TOPIC_ROWS)
        .take(TOPIC_ROWS)
        .collect();
    (rows, pages)
}

async fn topics(State(app): State<App>, me: Me, Query(s): Query<Search>) -> Response {
    match data::topics(&app.control, &s.q).await {
        Ok(topics) => {
            let (rows, pages) = topic_page(&app, topics, &s.sort, s.page.max(1));
            render(&Topics {
                nav: Nav::of(&me, "Topics"),
                q: s.q,
                rows,
                page: s.page.clamp(1, pages),
                pages,
                sort: s.sort,
                error: String::new(),
                notice: s.notice,
                form: data::NewTopic::default(),
            })
        }
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
            let (rows, pages) = topic_page(&app, topics, "", 1);
            let page = Topics {
                nav: Nav::of(&me, "Topics"),
                q: String::new(),
                rows,
                sort: String::new(),
                page: 1,
                pages,
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
    /// Messages and bytes per second appended in each region.
    messages_chart: String,
    bytes_chart: String,
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
            messages_chart: crate::charts::svg(&app.observer.topic_rates(&name), "/s"),
            bytes_chart: crate::charts::svg(&app.observer.topic_byte_rates(&name), " B/s"),
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
struct ConfigForm {
    #[serde(default)]
    csrf: String,
    /// `KEY=VALUE` to set.
    #[serde(default)]
    set: String,
    /// A key to remove (back to the default).
    #[serde(default)]
    delete: String,
}

/// Sets or removes one topic config (Kafka's names; the control plane checks the value).
async fn config_topic(
    State(app): State<App>,
    me: Me,
    Path(name): Path<String>,
    Form(f): Form<ConfigForm>,
) -> Response {
    if let Err(r) = me.permit(&app, &f.csrf, Role::Operator, "configure topic", &name) {
        return r.into_response();
    }
    let (set, delete) = match (f.set.trim(), f.delete.trim()) {
        ("", "") => {
            return failed(Failed(
                "nothing to change: give KEY=VALUE, or a key to remove".into(),
            ));
        }
        (set, "") => match set.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                (Some((k.trim().to_owned(), v.trim().to_owned())), None)
            }
            _ => {
                return failed(Failed(format!(
                    "{set:?}: write KEY=VALUE, such as max.message.bytes=2000000"
                )));
            }
        },
        (_, key) => (None, Some(key.to_owned())),
    };
    let what = set
        .as_ref()
        .map(|(k, v)| format!("{k}={v}"))
        .or_else(|| delete.as_ref().map(|k| format!("{k} removed")))
        .unwrap_or_default();
    match data::alter_topic_config(&app.control, &name, set, delete).await {
        Ok(_) => {
            app.audit.record(
                &me.session,
                "configure topic",
                &name,
                &format!("ok: {what}"),
            );
            Redirect::to(&format!(
                "/topics/{}?notice={}",
                url_encode(&name),
                url_encode(&format!("Configuration changed: {what}."))
            ))
            .into_response()
        }
        Err(e) => {
            app.audit.record(
                &me.session,
                "configure topic",
                &name,
                &format!("failed: {e}"),
            );
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
    q: MessagesQuery,
    region: String,
    messages: Vec<data::browse::Shown>,
    /// Links to the pages before and after this one (empty: none).
    older: String,
    newer: String,
    error: String,
    notice: String,
}

/// The query of the message browser (also the API's).
#[derive(Deserialize, Default, Clone)]
pub struct MessagesQuery {
    #[serde(default)]
    pub topic: String,
    #[serde(default)]
    pub region: String,
    /// A partition, or empty / `all`: every partition at once.
    #[serde(default)]
    pub partition: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub max: String,
    /// `newest` first, or `oldest` first (from `from`).
    #[serde(default)]
    pub order: String,
    /// What the filter looks at: any, key, value or header.
    #[serde(default)]
    pub on: String,
    /// A substring, or a JSON path on the value (`$.a.b` or `$.a.b=v`).
    #[serde(default)]
    pub filter: String,
    /// text, json or hex.
    #[serde(default)]
    pub view: String,
    #[serde(default)]
    pub notice: String,
}

impl MessagesQuery {
    fn browse(&self, regions: &[String]) -> Result<data::browse::Browse, Failed> {
        use data::browse::{Browse, Field, Filter};
        let partition = match self.partition.trim() {
            "" | "all" => None,
            p => Some(p.parse().map_err(|_| {
                Failed(format!("partition: {p:?} is not a partition number or all"))
            })?),
        };
        let max: usize = match self.max.trim() {
            "" => 50,
            m => m
                .parse::<usize>()
                .map_err(|_| Failed(format!("max: {m:?} is not a count")))?
                .clamp(1, 1000),
        };
        Ok(Browse {
            topic: self.topic.clone(),
            region: self.region_or_first(regions),
            partition,
            from: data::From::parse(&self.from)?,
            newest: self.order == "newest",
            max,
            filter: Filter::parse(Field::parse(&self.on)?, &self.filter),
        })
    }

    fn region_or_first(&self, regions: &[String]) -> String {
        if self.region.is_empty() {
            regions.first().cloned().unwrap_or_default()
        } else {
            self.region.clone()
        }
    }

    /// This query as a URL of the browser, with `from` and `order` replaced.
    fn url(&self, from: &str, order: &str) -> String {
        let pairs = [
            ("topic", self.topic.as_str()),
            ("region", self.region.as_str()),
            ("partition", self.partition.as_str()),
            ("from", from),
            ("max", self.max.as_str()),
            ("order", order),
            ("on", self.on.as_str()),
            ("filter", self.filter.as_str()),
            ("view", self.view.as_str()),
        ];
        let query: Vec<String> = pairs
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| format!("{k}={}", query_encode(v)))
            .collect();
        format!("/messages?{}", query.join("&"))
    }
}

/// Percent-encodes a query value (`/` included).
fn query_encode(s: &str) -> String {
    url_encode(s).replace('/', "%2F")
}

/// Reads what a message query asks; the region defaults to the first one listed.
pub async fn read_messages(
    app: &crate::Console,
    q: &MessagesQuery,
    regions: &[String],
) -> Result<Vec<data::browse::Shown>, Failed> {
    let view = data::browse::View::parse(&q.view)?;
    let b = q.browse(regions)?;
    Ok(data::browse::browse(&app.control, &b)
        .await?
        .iter()
        .map(|m| m.shown(view))
        .collect())
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
    // Paging: one partition by offset, all of them by time (oldest first).
    let single = q.partition.trim().parse::<u32>().is_ok();
    let max = q.max.trim().parse::<u64>().unwrap_or(50).clamp(1, 1000);
    let (older, newer) = match (messages.first(), messages.last(), q.order == "newest") {
        (Some(_), Some(last), true) if single => (
            q.url(&last.offset.saturating_sub(max).to_string(), "oldest"),
            String::new(),
        ),
        (Some(first), Some(last), false) if single => (
            if first.offset > 0 {
                q.url(&first.offset.saturating_sub(max).to_string(), "oldest")
            } else {
                String::new()
            },
            q.url(&(last.offset + 1).to_string(), "oldest"),
        ),
        (Some(_), Some(last), false) => (
            String::new(),
            q.url(
                &humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_millis(last.timestamp_ms.max(0) as u64 + 1),
                )
                .to_string(),
                "oldest",
            ),
        ),
        _ => (String::new(), String::new()),
    };
    render(&Messages {
        nav: Nav::of(&me, "Messages"),
        region: q.region_or_first(&regions),
        regions,
        notice: q.notice.clone(),
        q,
        messages,
        older,
        newer,
        error,
    })
}

#[derive(Deserialize)]
struct ProduceForm {
    #[serde(default)]
    csrf: String,
    topic: String,
    region: String,
    #[serde(default)]
    partition: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    /// `name=value` pairs, comma separated.
    #[serde(default)]
    headers: String,
}

/// The operators' produce form: one message, answered with where it was written.
async fn produce_message(State(app): State<App>, me: Me, Form(f): Form<ProduceForm>) -> Response {
    let target = format!("{} in {}", f.topic, f.region);
    if let Err(r) = me.permit(&app, &f.csrf, Role::Operator, "produce message", &target) {
        return r.into_response();
    }
    let outcome = async {
        let partition = match f.partition.trim() {
            "" | "all" => None,
            p => Some(
                p.parse::<u32>()
                    .map_err(|_| Failed(format!("partition: {p:?} is not a partition number")))?,
            ),
        };
        let mut headers = Vec::new();
        for pair in f
            .headers
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                Failed(format!(
                    "header {pair:?}: write name=value, comma separated"
                ))
            })?;
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        data::produce_one(
            &app.control,
            &f.topic,
            &f.region,
            partition,
            Some(f.key.as_str()).filter(|k| !k.is_empty()),
            &f.value,
            &headers,
        )
        .await
    }
    .await;
    match outcome {
        Ok((partition, offset)) => {
            app.audit.record(
                &me.session,
                "produce message",
                &target,
                &format!("ok: partition {partition} offset {offset}"),
            );
            let q = MessagesQuery {
                topic: f.topic.clone(),
                region: f.region.clone(),
                partition: partition.to_string(),
                order: "newest".into(),
                notice: format!("Produced to partition {partition} at offset {offset}."),
                ..MessagesQuery::default()
            };
            let url = format!("{}&notice={}", q.url("", "newest"), query_encode(&q.notice));
            Redirect::to(&url).into_response()
        }
        Err(e) => {
            app.audit.record(
                &me.session,
                "produce message",
                &target,
                &format!("failed: {e}"),
            );
            failed(e)
        }
    }
}

// ---- consumer groups ----

#[derive(Deserialize, Default)]
struct GroupQuery {
    /// `lag` (most behind first) or `name`.
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: usize,
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
    let listed = match data::regions_seen(&app).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let (rows, pages) = groups::page_of(
        groups::all_groups(&app, &listed).await,
        &q.sort,
        q.page.max(1),
    );
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
    render(&groups::Groups {
        nav: Nav::of(&me, "Consumer groups"),
        rows,
        sort: q.sort,
        page: q.page.max(1),
        pages,
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
    let listed = data::regions_seen(&app).await.unwrap_or_default();
    let (rows, pages) = groups::page_of(groups::all_groups(&app, &listed).await, "", 1);
    render(&groups::Groups {
        nav: Nav::of(&me, "Consumer groups"),
        rows,
        sort: String::new(),
        page: 1,
        pages,
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

    #[test]
    fn numbers_read_as_people_write_them() {
        assert_eq!(super::bytes(12u64), "12 B");
        assert_eq!(super::bytes(1536u64), "1.5 KiB");
        assert_eq!(super::bytes(300u64 << 20), "300 MiB");
        assert_eq!(super::count(1_234_567u64), "1,234,567");
        assert_eq!(super::count(999u64), "999");
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
