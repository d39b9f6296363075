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
pub const KEYS: [(&str, &str); 6] = [
    (
        MAX_MESSAGE_BYTES,
        "the largest message (key, value and headers) the topic accepts, in bytes, on every protocol: 1 to 67108864; unset, the brokers' message_bytes_max",
    ),
    (
        MIN_INSYNC_REPLICAS,
        "replicas (the leader included) that must be in sync for an acks=all produce to be written, and hold it before it is answered: 1 to 32; the more of this and the brokers' min_insync_replicas applies",
    ),
    (
        CLEANUP_POLICY,
        "delete (old messages go by retention), compact (each key's latest message is kept for good; older ones are no longer read, and their space returns as the journal's segments go), or compact,delete (both); unset, delete",
    ),
    (
        COMPRESSION_TYPE,
        "how Kafka record batches are stored and served: producer (as the producer compressed them), uncompressed, gzip, snappy, lz4 or zstd (recompressed by the broker); unset, producer",
    ),
    (
        RETENTION_BYTES,
        "the most bytes of records each partition keeps: its oldest records go, whole, beyond it (with cleanup.policy delete or compact,delete), or -1 for no limit; unset, -1",
    ),
    (
        DELETE_RETENTION_MS,
        "how long a compacted topic's tombstone (a key with no value) is still read after it was written, in ms: 0 to 31536000000; unset, 86400000 (a day)",
    ),
];

/// Kafka's `max.message.bytes`.
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// Kafka's `min.insync.replicas`.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
/// Kafka's `cleanup.policy`.
pub const CLEANUP_POLICY: &str = "cleanup.policy";
/// Kafka's `compression.type`.
pub const COMPRESSION_TYPE: &str = "compression.type";

/// How a topic's Kafka record batches are compressed (Kafka's `compression.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TopicCompression {
    /// As the producer compressed them (the default).
    Producer,
    /// Not compressed.
    Uncompressed,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl TopicCompression {
    /// Kafka's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TopicCompression::Producer => "producer",
            TopicCompression::Uncompressed => "uncompressed",
            TopicCompression::Gzip => "gzip",
            TopicCompression::Snappy => "snappy",
            TopicCompression::Lz4 => "lz4",
            TopicCompression::Zstd => "zstd",
        }
    }

    fn parse(text: &str) -> Option<TopicCompression> {
        [
            TopicCompression::Producer,
            TopicCompression::Uncompressed,
            TopicCompression::Gzip,
            TopicCompression::Snappy,
            TopicCompression::Lz4,
            TopicCompression::Zstd,
        ]
        .into_iter()
        .find(|c| c.as_str() == text.trim())
    }
}

/// Kafka's `retention.bytes`.
pub const RETENTION_BYTES: &str = "retention.bytes";
/// Kafka's `delete.retention.ms`.
pub const DELETE_RETENTION_MS: &str = "delete.retention.ms";

/// What happens to a topic's old messages (Kafka's `cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CleanupPolicy {
    /// Retention deletes them (`delete`, the default).
    Delete,
    /// Each key's latest message is kept; older ones are compacted away (`compact`).
    Compact,
    /// Both: compacted, and retention deletes what is older than it (`compact,delete`).
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether the topic is compacted.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// Whether retention deletes the topic's old messages.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    /// Kafka's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CleanupPolicy::Delete => "delete",
            CleanupPolicy::Compact => "compact",
            CleanupPolicy::CompactDelete => "compact,delete",
        }
    }

    fn parse(text: &str) -> Option<CleanupPolicy> {
        let mut parts: Vec<&str> = text.split(',').map(str::trim).collect();
        parts.sort_unstable();
        parts.dedup();
        match parts.as_slice() {
            ["delete"] => Some(CleanupPolicy::Delete),
            ["compact"] => Some(CleanupPolicy::Compact),
            ["compact", "delete"] => Some(CleanupPolicy::CompactDelete),
            _ => None,
        }
    }
}

/// The longest `delete.retention.ms` a topic may set (a year).
pub const DELETE_RETENTION_MS_MAX: u64 = 365 * 24 * 3600 * 1000;

/// A topic's configuration, parsed: each setting `None` when the topic does not set it
/// (the brokers' default applies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicConfig {
    /// `cleanup.policy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_policy: Option<CleanupPolicy>,
    /// `delete.retention.ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_retention_ms: Option<u64>,
    /// `compression.type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<TopicCompression>,
    /// `retention.bytes` per partition (-1: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_bytes: Option<i64>,
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
                CLEANUP_POLICY => {
                    parsed.cleanup_policy = Some(
                        CleanupPolicy::parse(value)
                            .ok_or_else(|| bad("delete, compact, or compact,delete"))?,
                    );
                }
                COMPRESSION_TYPE => {
                    parsed.compression =
                        Some(TopicCompression::parse(value).ok_or_else(|| {
                            bad("producer, uncompressed, gzip, snappy, lz4 or zstd")
                        })?);
                }
                RETENTION_BYTES => {
                    let n: i64 = value
                        .trim()
                        .parse()
                        .map_err(|_| bad("a number of bytes, or -1 for no limit"))?;
                    if n < -1 || n == 0 {
                        return Err(bad("a number of bytes (at least 1), or -1 for no limit"));
                    }
                    parsed.retention_bytes = Some(n);
                }
                DELETE_RETENTION_MS => {
                    let n: u64 = value
                        .trim()
                        .parse()
                        .map_err(|_| bad("a number of milliseconds, 0 to 31536000000"))?;
                    if n > DELETE_RETENTION_MS_MAX {
                        return Err(bad("a number of milliseconds, 0 to 31536000000"));
                    }
                    parsed.delete_retention_ms = Some(n);
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
        let c = TopicConfig::parse(&configs(&[
            ("cleanup.policy", "delete, compact"),
            ("delete.retention.ms", "1000"),
        ]))
        .unwrap();
        assert_eq!(c.cleanup_policy, Some(CleanupPolicy::CompactDelete));
        assert!(c.cleanup_policy.unwrap().compacts() && c.cleanup_policy.unwrap().deletes());
        assert_eq!(c.delete_retention_ms, Some(1000));
        let c = TopicConfig::parse(&configs(&[
            ("retention.bytes", "1000000"),
            ("compression.type", "zstd"),
        ]))
        .unwrap();
        assert_eq!(c.retention_bytes, Some(1_000_000));
        assert_eq!(c.compression, Some(TopicCompression::Zstd));
        for (k, v) in [
            ("max.message.bytes", "0"),
            ("max.message.bytes", "-1"),
            ("max.message.bytes", "2k"),
            ("max.message.bytes", "67108865"),
            ("min.insync.replicas", "0"),
            ("min.insync.replicas", "33"),
            ("retention.bytes", "0"),
            ("retention.bytes", "-2"),
            ("segment.bytes", "1000"),
            ("compression.type", "brotli"),
            ("cleanup.policy", "compacted"),
            ("cleanup.policy", "delete,none"),
            ("delete.retention.ms", "-1"),
        ] {
            let e = TopicConfig::parse(&configs(&[(k, v)])).unwrap_err();
            assert_eq!(e.key, k);
            assert!(e.to_string().contains(k), "{e}");
        }
    }
}
