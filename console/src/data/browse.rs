//! The message browser's reads: one partition or all at once, oldest first from a point or
//! the newest first, filtered by key, value or header (a substring, or a JSON path with an
//! optional value), each value shown as text, pretty JSON or hex. The filter and the views
//! are pure and unit-tested; reading goes through the SDK's consumer.

use std::time::Duration;

use meridian_client::{ConsumerConfig, StartFrom};
use serde::Serialize;

use super::{Failed, From, region_client};

/// Messages one read looks at, at most, to find enough that match a filter.
pub const SCAN_MAX: usize = 5_000;

/// What part of a message a filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Any,
    Key,
    Value,
    Header,
}

impl Field {
    /// `any`, `key`, `value` or `header`.
    pub fn parse(s: &str) -> Result<Field, Failed> {
        match s.trim() {
            "" | "any" => Ok(Field::Any),
            "key" => Ok(Field::Key),
            "value" => Ok(Field::Value),
            "header" => Ok(Field::Header),
            other => Err(Failed(format!(
                "filter on: {other:?} is not any, key, value or header"
            ))),
        }
    }
}

/// Which messages a read keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    All,
    /// The text appears in the field.
    Contains(Field, String),
    /// The value is JSON with something at the path (`$.a.b`, `$.items.0`), equal to the
    /// given value when one is given (`$.a.b=42`; strings compared unquoted).
    JsonPath(Vec<String>, Option<String>),
}

impl Filter {
    /// An empty text: everything; `$.…`: a JSON path on the value; else a substring.
    pub fn parse(field: Field, text: &str) -> Filter {
        let t = text.trim();
        if t.is_empty() {
            return Filter::All;
        }
        if let Some(path) = t.strip_prefix("$.") {
            let (path, want) = match path.split_once('=') {
                Some((p, v)) => (p, Some(v.trim().to_owned())),
                None => (path, None),
            };
            return Filter::JsonPath(
                path.split('.')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.trim().to_owned())
                    .collect(),
                want,
            );
        }
        Filter::Contains(field, t.to_owned())
    }

    /// Whether `m` passes.
    pub fn keeps(&self, m: &Raw) -> bool {
        match self {
            Filter::All => true,
            Filter::Contains(field, text) => {
                let has = |b: &Option<Vec<u8>>| {
                    b.as_deref()
                        .is_some_and(|b| String::from_utf8_lossy(b).contains(text.as_str()))
                };
                let in_headers = || {
                    m.headers
                        .iter()
                        .any(|(k, v)| k.contains(text.as_str()) || has(v))
                };
                match field {
                    Field::Key => has(&m.key),
                    Field::Value => has(&m.value),
                    Field::Header => in_headers(),
                    Field::Any => has(&m.key) || has(&m.value) || in_headers(),
                }
            }
            Filter::JsonPath(path, want) => {
                let Some(v) = m
                    .value
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                else {
                    return false;
                };
                let mut at = &v;
                for step in path {
                    let next = match at {
                        serde_json::Value::Object(o) => o.get(step),
                        serde_json::Value::Array(a) => {
                            step.parse::<usize>().ok().and_then(|i| a.get(i))
                        }
                        _ => None,
                    };
                    match next {
                        Some(n) => at = n,
                        None => return false,
                    }
                }
                match want {
                    None => true,
                    Some(w) => match at {
                        serde_json::Value::String(s) => s == w,
                        other => {
                            serde_json::from_str::<serde_json::Value>(w).is_ok_and(|w| w == *other)
                        }
                    },
                }
            }
        }
    }
}

/// How values are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Text,
    Json,
    Hex,
}

impl View {
    /// `text`, `json` or `hex`.
    pub fn parse(s: &str) -> Result<View, Failed> {
        match s.trim() {
            "" | "text" => Ok(View::Text),
            "json" => Ok(View::Json),
            "hex" => Ok(View::Hex),
            other => Err(Failed(format!("view: {other:?} is not text, json or hex"))),
        }
    }

    /// `bytes` shown this way (JSON that does not parse is shown as text; long values are
    /// cut).
    pub fn show(self, bytes: &[u8]) -> String {
        const MAX: usize = 4_000;
        let shown = match self {
            View::Hex => bytes
                .iter()
                .take(MAX / 3)
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
            View::Json => serde_json::from_slice::<serde_json::Value>(bytes)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| String::from_utf8_lossy(bytes).into_owned()),
            View::Text => String::from_utf8_lossy(bytes).into_owned(),
        };
        if shown.chars().count() > MAX {
            format!("{}…", shown.chars().take(MAX).collect::<String>())
        } else {
            shown
        }
    }
}

/// A message as read, before it is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Raw {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub origin_region: String,
}

/// What the browser asks for.
#[derive(Debug, Clone)]
pub struct Browse {
    pub topic: String,
    pub region: String,
    /// One partition, or every one (`None`).
    pub partition: Option<u32>,
    pub from: From,
    /// The newest `max` first (then `from` is ignored).
    pub newest: bool,
    pub max: usize,
    pub filter: Filter,
}

/// A message as the browser shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub time: String,
    pub key: String,
    pub value: String,
    pub headers: String,
    pub origin_region: String,
}

impl Raw {
    /// Shown with values in `view`.
    pub fn shown(&self, view: View) -> Shown {
        let text = |b: &Option<Vec<u8>>, view: View| match b {
            None => "null".to_owned(),
            Some(b) => view.show(b),
        };
        Shown {
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            time: humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + Duration::from_millis(self.timestamp_ms.max(0) as u64),
            )
            .to_string(),
            key: text(
                &self.key,
                if view == View::Hex {
                    View::Hex
                } else {
                    View::Text
                },
            ),
            value: text(&self.value, view),
            headers: self
                .headers
                .iter()
                // A null header value shows as the bare name, an empty one as `name=`.
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={}", View::Text.show(v)),
                    None => k.clone(),
                })
                .collect::<Vec<_>>()
                .join(", "),
            origin_region: self.origin_region.clone(),
        }
    }
}

/// Orders what was read (newest first, or oldest first; by offset within a partition)
/// and keeps the first `max`.
pub fn arrange(mut found: Vec<Raw>, newest: bool, max: usize) -> Vec<Raw> {
    found.sort_by_key(|m| (m.timestamp_ms, m.partition, m.offset));
    if newest {
        found.reverse();
    }
    found.truncate(max);
    found
}

/// Reads what `b` asks: up to `max` messages that pass its filter, looking at
/// [`SCAN_MAX`] at most per partition.
pub async fn browse(addrs: &str, b: &Browse) -> Result<Vec<Raw>, Failed> {
    let client = region_client(addrs, &b.topic, &b.region).await?;
    let info = client
        .describe_topic(&b.topic)
        .await
        .map_err(|e| Failed::of(&format!("describing {} in {}", b.topic, b.region), e))?;
    let scan = if b.filter == Filter::All {
        b.max
    } else {
        (b.max * 20).min(SCAN_MAX)
    };
    let mut found = Vec::new();
    for p in &info.partitions {
        // A partition whose leader does not answer cannot be read now either.
        if b.partition.is_some_and(|want| want != p.partition) || p.offsets_unknown {
            continue;
        }
        let start = if b.newest {
            StartFrom::Offset(
                p.latest_offset
                    .saturating_sub(scan as u64)
                    .max(p.earliest_offset),
            )
        } else {
            match b.from {
                From::Beginning => StartFrom::Beginning,
                From::Offset(o) => StartFrom::Offset(o),
                From::Time(t) => StartFrom::Time(t),
            }
        };
        let mut consumer = client.consumer(ConsumerConfig {
            group: None,
            start,
            ..ConsumerConfig::default()
        });
        consumer
            .assign(&b.topic, &[p.partition])
            .await
            .map_err(|e| Failed::of(&format!("reading {}/{}", b.topic, p.partition), e))?;
        let mut read = 0;
        let mut kept = 0;
        while read < scan && (b.newest || kept < b.max) {
            let got = consumer
                .poll(Duration::from_millis(200))
                .await
                .map_err(|e| Failed::of(&format!("reading {}/{}", b.topic, p.partition), e))?;
            if got.is_empty() {
                break;
            }
            for m in got {
                read += 1;
                let raw = Raw {
                    partition: m.partition,
                    offset: m.offset,
                    timestamp_ms: m.timestamp_ms,
                    key: m.key.as_deref().map(<[u8]>::to_vec),
                    value: m.value.as_deref().map(<[u8]>::to_vec),
                    headers: m
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_deref().map(<[u8]>::to_vec)))
                        .collect(),
                    origin_region: m.origin_region.clone(),
                };
                if b.filter.keeps(&raw) {
                    kept += 1;
                    found.push(raw);
                }
                if read >= scan {
                    break;
                }
            }
        }
    }
    Ok(arrange(found, b.newest, b.max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(key: &str, value: &str, headers: &[(&str, Option<&str>)]) -> Raw {
        Raw {
            key: Some(key.into()),
            value: Some(value.into()),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).into(), v.map(Into::into)))
                .collect(),
            ..Raw::default()
        }
    }

    #[test]
    fn filters_look_where_they_are_told() {
        let m = raw(
            "customer-7",
            r#"{"order":{"id":42,"state":"paid"},"items":[{"sku":"a"}]}"#,
            &[("trace", Some("abc")), ("flag", None)],
        );
        let keeps = |field, text: &str| Filter::parse(field, text).keeps(&m);
        assert!(keeps(Field::Any, ""));
        assert!(keeps(Field::Key, "customer"));
        assert!(!keeps(Field::Value, "customer"));
        assert!(keeps(Field::Header, "abc"));
        assert!(keeps(Field::Header, "flag"));
        assert!(keeps(Field::Any, "paid"));
        assert!(keeps(Field::Value, "$.order.id=42"));
        assert!(keeps(Field::Value, "$.order.state=paid"));
        assert!(!keeps(Field::Value, "$.order.state=open"));
        assert!(keeps(Field::Value, "$.items.0.sku"));
        assert!(!keeps(Field::Value, "$.items.1"));
        assert!(!Filter::parse(Field::Value, "$.a").keeps(&raw("k", "not json", &[])));
    }

    #[test]
    fn views_and_order() {
        assert_eq!(View::Hex.show(b"Hi"), "48 69");
        assert_eq!(View::Json.show(br#"{"a":1}"#), "{\n  \"a\": 1\n}");
        assert_eq!(View::Json.show(b"plain"), "plain");
        let at = |p, o, t| Raw {
            partition: p,
            offset: o,
            timestamp_ms: t,
            ..Raw::default()
        };
        let found = vec![at(0, 5, 30), at(1, 2, 10), at(0, 4, 20)];
        let newest: Vec<u64> = arrange(found.clone(), true, 2)
            .iter()
            .map(|m| m.offset)
            .collect();
        assert_eq!(newest, [5, 4]);
        let oldest: Vec<u64> = arrange(found, false, 3).iter().map(|m| m.offset).collect();
        assert_eq!(oldest, [2, 4, 5]);
        let m = raw("k", "v", &[]);
        assert_eq!(Raw { value: None, ..m }.shown(View::Text).value, "null");
    }
}
