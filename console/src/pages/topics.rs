//! Topics: the list (throughput and size, sorted and paged), creating, altering,
//! configuring and deleting one, and a topic's own page.

#[allow(clippy::wildcard_imports)]
use super::*;

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
pub(super) struct Search {
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

pub(super) async fn topics(State(app): State<App>, me: Me, Query(s): Query<Search>) -> Response {
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
pub(super) struct CreateForm {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    topic: data::NewTopic,
}

pub(super) async fn create_topic(
    State(app): State<App>,
    me: Me,
    Form(f): Form<CreateForm>,
) -> Response {
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

pub(super) async fn topic(
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
pub(super) struct AlterForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    partitions: String,
    #[serde(default)]
    retention: String,
}

pub(super) async fn alter_topic(
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
    let outcome = data::alter_topic(&app.control, &name, partitions, retention)
        .await
        .map(|t| {
            Done::notice(
                &format!("/topics/{}", url_encode(&name)),
                &format!(
                    "Altered: {} partitions, retention {}.",
                    t.partitions, t.retention
                ),
            )
        });
    audited(&app, &me, "alter topic", &name, outcome)
}

#[derive(Deserialize)]
pub(super) struct ConfigForm {
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
pub(super) async fn config_topic(
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
    let outcome = data::alter_topic_config(&app.control, &name, set, delete)
        .await
        .map(|_| {
            Done::notice(
                &format!("/topics/{}", url_encode(&name)),
                &format!("Configuration changed: {what}."),
            )
            .detail(what.clone())
        });
    audited(&app, &me, "configure topic", &name, outcome)
}

#[derive(Deserialize)]
pub(super) struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

pub(super) async fn delete_topic(
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
    let outcome = data::delete_topic(&app.control, &name)
        .await
        .map(|()| Done::notice("/topics", &format!("Deleted topic {name}.")));
    audited(&app, &me, "delete topic", &name, outcome)
}
