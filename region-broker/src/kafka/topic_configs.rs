//! Kafka topic configs as Meridian's topic settings: what CreateTopics, AlterConfigs and
//! IncrementalAlterConfigs carry, turned into the control plane's `retention` and
//! `timestamp_type` and the topic's own configuration (`meridian_proto::topic_config`),
//! or refused with the key named (INVALID_CONFIG). Pure: entries in, settings out.

use std::collections::BTreeMap;

use meridian_proto::settings::TimestampType;
use meridian_proto::topic_config::{KEYS, TopicConfig};

/// Kafka's INVALID_CONFIG.
pub(super) const INVALID_CONFIG: i16 = 40;

/// What a set of Kafka config entries asks of a topic.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Settings {
    /// `retention.ms` as the control plane spells retention (`7d`, `none`).
    pub(super) retention: Option<String>,
    /// `message.timestamp.type` as the control plane spells it.
    pub(super) timestamp_type: Option<String>,
    /// Topic configs to set.
    pub(super) set: BTreeMap<String, String>,
    /// Topic configs to remove (back to the brokers' default).
    pub(super) delete: Vec<String>,
}

impl Settings {
    /// Whether it asks for nothing.
    pub(super) fn is_empty(&self) -> bool {
        *self == Settings::default()
    }
}

/// The settings `entries` ask for (a `None` value: back to the default); an entry that is
/// not a topic config this platform enforces, or a value it cannot take, is refused.
pub(super) fn settings(entries: Vec<(String, Option<String>)>) -> Result<Settings, (i16, String)> {
    let mut out = Settings::default();
    for (key, value) in entries {
        match key.as_str() {
            "retention.ms" => out.retention = Some(retention(value.as_deref())?),
            "message.timestamp.type" => {
                let t = TimestampType::parse(value.as_deref().unwrap_or_default())
                    .map_err(|e| (INVALID_CONFIG, e.to_string()))?;
                out.timestamp_type = Some(t.as_str().to_owned());
            }
            k if KEYS.iter().any(|(known, _)| *known == k) => match value {
                Some(v) => {
                    out.set.insert(key, v);
                }
                None => out.delete.push(key),
            },
            _ => {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                return Err((
                    INVALID_CONFIG,
                    format!(
                        "{key} is not a topic config this platform enforces: it takes retention.ms, message.timestamp.type and {}",
                        known.join(", ")
                    ),
                ));
            }
        }
    }
    TopicConfig::parse(&out.set).map_err(|e| (INVALID_CONFIG, e.to_string()))?;
    Ok(out)
}

/// `retention.ms` as the control plane's retention: a duration, `none` for -1, the
/// default (7 days) for no value.
fn retention(value: Option<&str>) -> Result<String, (i16, String)> {
    let Some(value) = value else {
        return Ok("7d".to_owned());
    };
    value
        .parse::<i64>()
        .map_err(|_| {
            format!("retention.ms = {value:?}: a number of milliseconds, or -1 to keep everything")
        })
        .and_then(meridian_proto::settings::retention_text)
        .map_err(|e| (INVALID_CONFIG, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn kafka_configs_become_topic_settings_and_the_rest_is_refused_by_name() {
        let s = settings(entries(&[
            ("retention.ms", Some("3600000")),
            ("message.timestamp.type", Some("LogAppendTime")),
            ("max.message.bytes", Some("2000")),
        ]))
        .unwrap();
        assert_eq!(s.retention.as_deref(), Some("1h"));
        assert_eq!(s.timestamp_type.as_deref(), Some("append-time"));
        assert_eq!(s.set["max.message.bytes"], "2000");
        // No value: back to the default.
        let s = settings(entries(&[
            ("max.message.bytes", None),
            ("retention.ms", None),
        ]))
        .unwrap();
        assert_eq!(s.delete, ["max.message.bytes"]);
        assert_eq!(s.retention.as_deref(), Some("7d"));
        assert_eq!(
            settings(entries(&[("retention.ms", Some("-1"))]))
                .unwrap()
                .retention
                .as_deref(),
            Some("none")
        );
        assert!(settings(Vec::new()).unwrap().is_empty());
        for (k, v) in [
            ("max.message.bytes", "lots"),
            ("retention.ms", "0"),
            ("cleanup.policy", "compacted"),
            ("message.timestamp.type", "Whenever"),
        ] {
            let (code, message) = settings(entries(&[(k, Some(v))])).unwrap_err();
            assert_eq!(code, INVALID_CONFIG);
            assert!(message.contains(k) || message.contains(v), "{message}");
        }
    }
}
