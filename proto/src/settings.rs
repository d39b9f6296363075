//! A topic's settings that every process reads the same way: what a produce waits for
//! ([`Acks`]) and how a log group replicates ([`Strategy`]). One home for both, so the
//! control plane, the brokers and the tools cannot drift apart in spelling or default.

use serde::{Deserialize, Serialize};

/// What a produce waits for before it is acknowledged (a topic's default when the
/// request names none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acks {
    /// The leader holds it durably (per its flush policy); replication goes on in the
    /// background, so a leader failure before a quorum holds it may lose it (Kafka's
    /// acks=1). Consumers see it once it is committed.
    Leader,
    /// A quorum of replicas holds it (the default).
    #[default]
    Quorum,
    /// Every replica of the group holds it.
    All,
}

/// An acks spelling that is none of `leader`, `quorum`, `all`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown acks {0:?}: use leader, quorum or all")]
pub struct UnknownAcks(pub String);

impl Acks {
    /// Every level, weakest first.
    pub const ALL: [Acks; 3] = [Acks::Leader, Acks::Quorum, Acks::All];

    /// Parses the user's spelling; empty is the default.
    pub fn parse(text: &str) -> Result<Acks, UnknownAcks> {
        match text {
            "leader" => Ok(Acks::Leader),
            "" | "quorum" => Ok(Acks::Quorum),
            "all" => Ok(Acks::All),
            other => Err(UnknownAcks(other.to_owned())),
        }
    }

    /// The user's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Acks::Leader => "leader",
            Acks::Quorum => "quorum",
            Acks::All => "all",
        }
    }
}

/// Which time a topic's messages carry (Kafka's `message.timestamp.type`): the producer's
/// (`CreateTime`, the default) or the broker's append time (`LogAppendTime`). Searches by
/// time (ListOffsets, `consume --from TIME`) follow it, and Kafka fetches stamp records
/// with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimestampType {
    /// The producer's timestamp.
    #[default]
    CreateTime,
    /// The broker's append time.
    AppendTime,
}

/// A timestamp type spelling that is none of ours or Kafka's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown timestamp type {0:?}: use create-time or append-time (Kafka: CreateTime, LogAppendTime)"
)]
pub struct UnknownTimestampType(pub String);

impl TimestampType {
    /// Parses ours (`create-time`, `append-time`) or Kafka's (`CreateTime`,
    /// `LogAppendTime`); empty is the default.
    pub fn parse(text: &str) -> Result<TimestampType, UnknownTimestampType> {
        match text {
            "" | "create-time" | "CreateTime" => Ok(TimestampType::CreateTime),
            "append-time" | "LogAppendTime" => Ok(TimestampType::AppendTime),
            other => Err(UnknownTimestampType(other.to_owned())),
        }
    }

    /// Our spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "create-time",
            TimestampType::AppendTime => "append-time",
        }
    }

    /// Kafka's spelling (`message.timestamp.type`).
    pub fn kafka_name(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::AppendTime => "LogAppendTime",
        }
    }
}

/// How a log group replicates (a topic's partitions are placed on groups of its strategy).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// openraft over the journal.
    #[default]
    Raft,
    /// A named master; slaves pull by journal position.
    MasterSlave,
}

/// A replication strategy's name that is neither `raft` nor `master-slave`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown replication strategy {0:?}: use raft or master-slave")]
pub struct UnknownStrategy(pub String);

impl Strategy {
    /// Every strategy.
    pub const ALL: [Strategy; 2] = [Strategy::Raft, Strategy::MasterSlave];

    /// Parses the user's spelling; empty is the default.
    pub fn parse(text: &str) -> Result<Strategy, UnknownStrategy> {
        match text {
            "" | "raft" => Ok(Strategy::Raft),
            "master-slave" => Ok(Strategy::MasterSlave),
            other => Err(UnknownStrategy(other.to_owned())),
        }
    }

    /// The user's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Raft => "raft",
            Strategy::MasterSlave => "master-slave",
        }
    }
}

#[cfg(feature = "grpc")]
impl From<Acks> for crate::v1::Acks {
    fn from(acks: Acks) -> Self {
        match acks {
            Acks::Leader => crate::v1::Acks::Leader,
            Acks::Quorum => crate::v1::Acks::Quorum,
            Acks::All => crate::v1::Acks::All,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip_and_empty_is_the_default() {
        for acks in Acks::ALL {
            assert_eq!(Acks::parse(acks.as_str()), Ok(acks));
            // Records one process writes, another reads: serde uses the same spelling.
            let json = format!("\"{}\"", acks.as_str());
            assert_eq!(serde_json::to_string(&acks).unwrap(), json);
            assert_eq!(serde_json::from_str::<Acks>(&json).unwrap(), acks);
        }
        assert_eq!(Acks::parse(""), Ok(Acks::default()));
        assert_eq!(Acks::parse("one"), Err(UnknownAcks("one".into())));
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.as_str()), Ok(s));
            let json = format!("\"{}\"", s.as_str());
            assert_eq!(serde_json::to_string(&s).unwrap(), json);
        }
        assert_eq!(Strategy::parse(""), Ok(Strategy::default()));
        assert_eq!(
            Strategy::parse("paxos"),
            Err(UnknownStrategy("paxos".into()))
        );
    }
}

/// A retention as topics and brokers spell it — a duration (`7d`, `36h`) or `none`
/// (forever) — in Kafka's `retention.ms` (-1: forever).
pub fn retention_ms(text: &str) -> Result<i64, String> {
    match text {
        "none" => Ok(-1),
        t => humantime::parse_duration(t)
            .map(|d| d.as_millis().min(i64::MAX as u128) as i64)
            .map_err(|e| format!("retention {t:?}: {e} (a duration such as 7d, or none)")),
    }
}

/// Kafka's `retention.ms` as topics spell a retention: -1 is `none`, a positive number of
/// milliseconds a duration.
pub fn retention_text(ms: i64) -> Result<String, String> {
    match ms {
        -1 => Ok("none".to_owned()),
        ms if ms > 0 => {
            Ok(humantime::format_duration(std::time::Duration::from_millis(ms as u64)).to_string())
        }
        other => Err(format!(
            "retention.ms = {other}: a positive number of milliseconds, or -1 to keep everything"
        )),
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    #[test]
    fn retentions_go_both_ways() {
        assert_eq!(retention_ms("none"), Ok(-1));
        assert_eq!(retention_ms("7d"), Ok(7 * 24 * 3600 * 1000));
        assert!(retention_ms("soon").is_err());
        assert_eq!(retention_text(-1).as_deref(), Ok("none"));
        assert_eq!(retention_ms(&retention_text(90_000).unwrap()), Ok(90_000));
        assert!(retention_text(0).is_err());
        assert!(retention_text(-5).is_err());
    }
}
