//! The message browser (every partition, newest first or from a point, filtered, paged)
//! and the operators' produce form.

#[allow(clippy::wildcard_imports)]
use super::*;

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

pub(super) async fn messages(
    State(app): State<App>,
    me: Me,
    Query(q): Query<MessagesQuery>,
) -> Response {
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
pub(super) struct ProduceForm {
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
pub(super) async fn produce_message(
    State(app): State<App>,
    me: Me,
    Form(f): Form<ProduceForm>,
) -> Response {
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
    let outcome = outcome.map(|(partition, offset)| {
        let q = MessagesQuery {
            topic: f.topic.clone(),
            region: f.region.clone(),
            partition: partition.to_string(),
            order: "newest".into(),
            notice: format!("Produced to partition {partition} at offset {offset}."),
            ..MessagesQuery::default()
        };
        Done {
            to: format!("{}&notice={}", q.url("", "newest"), query_encode(&q.notice)),
            detail: Some(format!("partition {partition} offset {offset}")),
        }
    });
    audited(&app, &me, "produce message", &target, outcome)
}
