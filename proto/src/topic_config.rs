//! A topic's own configuration under Kafka's names (`max.message.bytes`, ...): the
//! settings a topic may set beyond its placement, one table of what each key means and
//! takes, shared by the control plane (which keeps them as text in the topic record),
//! the brokers (which enforce them on every protocol) and the Kafka listener (CreateTopics
//! configs, DescribeConfigs, AlterConfigs). A key not in [`KEYS`] is refused with its name:
//! nothing is accepted that is not enforced.
//!
//! `retention.ms` and `message.timestamp.type` are topic settings of their own (the
//! control plane's `retention` and `timestamp_type`, older than this table); the Kafka
//! listener maps them, and they are not kept here.

use std::collections::BTreeMap;

/// The largest `max.message.bytes` a topic may set: a broker's batch limit bounds what
/// one request carries anyway.
pub const MAX_MESSAGE_BYTES_MAX: u32 = 64 << 20;

/// The keys a topic's configuration may hold, with what each takes (as Kafka documents
/// them).
pub const KEYS: [(&str, &str); 2] = [
    (
        MAX_MESSAGE_BYTES,
        "the largest message (key, value and headers) the topic accepts, in bytes, on every protocol: 1 to 67108864; unset, the brokers' message_bytes_max",
    ),
    (
        MIN_INSYNC_REPLICAS,
        "replicas (the leader included) that must be in sync for an acks=all produce to be written, and hold it before it is answered: 1 to 32; the more of this and the brokers' min_insync_replicas applies",
    ),
];

/// Kafka's `max.message.bytes`.
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// Kafka's `min.insync.replicas`.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";

/// A topic's configuration, parsed: each setting `None` when the topic does not set it
/// (the brokers' default applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicConfig {
    /// `max.message.bytes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_message_bytes: Option<u32>,
    /// `min.insync.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_insync_replicas: Option<u32>,
}

/// A key or value a topic's configuration cannot take, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("topic config {key} = {value:?}: {why}")]
pub struct ConfigError {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: String,
    /// What is wrong, and what it takes.
    pub why: String,
}

impl TopicConfig {
    /// Parses a topic's configuration as text (Kafka's names and spellings); the first
    /// key or value that is not one names itself.
    pub fn parse(configs: &BTreeMap<String, String>) -> Result<TopicConfig, ConfigError> {
        let mut parsed = TopicConfig::default();
        for (key, value) in configs {
            let bad = |why: &str| ConfigError {
                key: key.clone(),
                value: value.clone(),
                why: why.to_owned(),
            };
            match key.as_str() {
                MAX_MESSAGE_BYTES => {
                    let n: u32 = value
                        .trim()
                        .parse()
                        .map_err(|_| bad("a number of bytes, 1 to 67108864"))?;
                    if n == 0 || n > MAX_MESSAGE_BYTES_MAX {
                        return Err(bad("a number of bytes, 1 to 67108864"));
                    }
                    parsed.max_message_bytes = Some(n);
                }
                MIN_INSYNC_REPLICAS => {
                    let n: u32 = value
                        .trim()
                        .parse()
                        .map_err(|_| bad("a number of replicas, 1 to 32"))?;
                    if !(1..=32).contains(&n) {
                        return Err(bad("a number of replicas, 1 to 32"));
                    }
                    parsed.min_insync_replicas = Some(n);
                }
                _ => {
                    let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                    return Err(bad(&format!(
                        "not a topic config this platform enforces (it takes {}, and retention.ms and message.timestamp.type)",
                        known.join(", ")
                    )));
                }
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn known_keys_parse_and_anything_else_is_refused_by_name() {
        assert_eq!(
            TopicConfig::parse(&configs(&[])).unwrap(),
            TopicConfig::default()
        );
        let c = TopicConfig::parse(&configs(&[
            ("max.message.bytes", "2000"),
            ("min.insync.replicas", "2"),
        ]))
        .unwrap();
        assert_eq!(c.max_message_bytes, Some(2000));
        assert_eq!(c.min_insync_replicas, Some(2));
        for (k, v) in [
            ("max.message.bytes", "0"),
            ("max.message.bytes", "-1"),
            ("max.message.bytes", "2k"),
            ("max.message.bytes", "67108865"),
            ("min.insync.replicas", "0"),
            ("min.insync.replicas", "33"),
            ("retention.bytes", "1000"),
            ("cleanup.policy", "compact"),
        ] {
            let e = TopicConfig::parse(&configs(&[(k, v)])).unwrap_err();
            assert_eq!(e.key, k);
            assert!(e.to_string().contains(k), "{e}");
        }
    }
}
