//! What the control plane stores, under `/meridian/` (DESIGN.md, "Control plane store"):
//! typed records stored as JSON, the keys they live at, and the validation every write goes
//! through, with errors that name the field, the value and what would work.

use std::collections::{BTreeMap, BTreeSet};

pub use meridian_proto::settings::{Acks, Strategy, TimestampType};
use serde::{Deserialize, Serialize};

/// The layout version of the records below; written once, checked on start.
pub const SCHEMA_VERSION: u32 = 1;

/// The keys of the store, all under `/meridian/`.
pub mod keys {
    /// The layout version.
    pub const SCHEMA: &str = "/meridian/schema";
    /// The control plane's own leader election.
    pub const LEADER: &str = "/meridian/leader";
    /// The routing epoch, bumped on every routing change.
    pub const ROUTING_EPOCH: &str = "/meridian/routing/epoch";
    /// Every region.
    pub const REGIONS: &str = "/meridian/regions/";
    /// Every topic.
    pub const TOPICS: &str = "/meridian/topics/";
    /// The id the next topic gets (topic ids are never reused).
    pub const TOPIC_IDS: &str = "/meridian/topic-ids";
    /// Ids of deleted topics (their records, still in journals, must never be read as a
    /// new topic's).
    pub const RETIRED: &str = "/meridian/retired/";
    /// Every broker of every region.
    pub const BROKERS: &str = "/meridian/brokers/";

    /// A deleted topic's id.
    pub fn retired(id: u32) -> String {
        format!("{RETIRED}{id}")
    }

    /// A region.
    pub fn region(name: &str) -> String {
        format!("{REGIONS}{name}")
    }

    /// The brokers of a region (prefix).
    pub fn brokers(region: &str) -> String {
        format!("/meridian/brokers/{region}/")
    }

    /// The link from one region's mirrors to another's: who ships it.
    pub fn mirror_link(from: &str, to: &str) -> String {
        format!("/meridian/mirrors/{from}/{to}")
    }

    /// A broker, under its lease.
    pub fn broker(region: &str, id: u32) -> String {
        format!("/meridian/brokers/{region}/{id}")
    }

    /// A topic.
    pub fn topic(name: &str) -> String {
        format!("{TOPICS}{name}")
    }

    /// The log groups of a region (prefix).
    pub fn groups(region: &str) -> String {
        format!("/meridian/groups/{region}/")
    }

    /// A log group of a region.
    pub fn group(region: &str, id: u32) -> String {
        format!("/meridian/groups/{region}/{id}")
    }

    /// A topic's partition → log group assignments in a region (prefix).
    pub fn assignments(region: &str, topic: &str) -> String {
        format!("/meridian/assignments/{region}/{topic}/")
    }

    /// One partition's assignment in a region.
    pub fn assignment(region: &str, topic: &str, partition: u32) -> String {
        format!("/meridian/assignments/{region}/{topic}/{partition}")
    }
}

/// A region: a failure domain with its own brokers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Its name.
    pub name: String,
    /// Whether clients are routed to it.
    pub state: RegionState,
    /// Why it is down, and whether an operator failed it (then only an operator restores
    /// it; a region the control plane marked down rejoins by itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<Down>,
}

/// Which mirror of the origin region ships a link (under its lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorLink {
    /// The holding mirror's id.
    pub holder: String,
    /// Its lease.
    pub lease: i64,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Why a region is down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Down {
    /// Failed by an operator (`meridian region fail`), not by lost leases.
    pub by_operator: bool,
    /// What happened, for people.
    pub reason: String,
    /// Since when (ms since the epoch).
    pub since_ms: i64,
}

/// Whether a region takes traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionState {
    /// Serving.
    Up,
    /// Failed over (all brokers lost their leases, or an operator failed it).
    Down,
}

/// A live broker, registered under its lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    /// Its id within the region.
    pub id: u32,
    /// Its region.
    pub region: String,
    /// Its gRPC API address.
    pub grpc: String,
    /// Its inter-broker replication address.
    pub raft: String,
    /// Its Kafka listener, when it serves one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kafka: String,
    /// Its build's version, as it registered (empty: not reported).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The log groups it leads, with their epochs, as it last reported.
    #[serde(default)]
    pub leading: BTreeMap<u32, u64>,
    /// The version of the last region view it applied.
    #[serde(default)]
    pub applied_version: u64,
}

/// A topic as an operator defines it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topic {
    /// Its name.
    pub name: String,
    /// Never-reused id its records carry (0 until the control plane assigns one).
    #[serde(default)]
    pub id: u32,
    /// Creation time, ms since the epoch.
    #[serde(default)]
    pub created_ms: i64,
    /// Partitions, in every region it spans.
    pub partitions: u32,
    /// How its log groups replicate.
    pub replication: Strategy,
    /// Replicas of each of its log groups.
    pub replication_factor: u32,
    /// The regions it spans (mirrored active-active between them).
    pub regions: Vec<String>,
    /// With strict ordering, the one region that accepts writes.
    pub home: Option<String>,
    /// Moves with every change of home (1 at creation of a strictly ordered topic).
    #[serde(default)]
    pub home_epoch: u64,
    /// A home move under way: no region accepts writes.
    #[serde(default)]
    pub home_closed: bool,
    /// How long messages are kept, humantime (`7d`), or `none`.
    pub retention: String,
    /// What a produce naming no acks waits for.
    #[serde(default)]
    pub acks: Acks,
    /// How a native transaction on it ends when its check-backs go unanswered: `commit`,
    /// `rollback`, or empty for the brokers' `[transactions] default_outcome` (then not
    /// stored: a control plane from before it reads the record).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub txn_default: String,
    /// Which time its messages carry (not stored when the default, create time).
    #[serde(default, skip_serializing_if = "is_create_time")]
    pub timestamp_type: TimestampType,
    /// Its own configuration under Kafka's names (`meridian_proto::topic_config`); a key
    /// left out takes the brokers' default. Not stored when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub configs: BTreeMap<String, String>,
    /// Regions of `regions` it joined after its creation (`topic alter --regions`): its log
    /// groups there hold it alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub joined: Vec<String>,
    /// Regions it was removed from: its id is retired there (their brokers dropped it), so
    /// it never returns to one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left: Vec<String>,
}

fn is_create_time(t: &TimestampType) -> bool {
    *t == TimestampType::CreateTime
}

/// A log group of a region: its strategy and replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Its id within the region.
    pub id: u32,
    /// How it replicates.
    pub strategy: Strategy,
    /// The brokers holding a replica; the first is the preferred leader (a master-slave
    /// group's master).
    pub replicas: Vec<u32>,
    /// How many times the replicas changed since creation (0: the first replica
    /// initializes the group's raft membership).
    #[serde(default)]
    pub changes: u32,
    /// A replacement under way: `(dead broker, new broker)`; the new broker is already a
    /// replica here, the dead one leaves once raft has changed the membership.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacing: Option<(u32, u32)>,
    /// Placed by an operator (`MoveReplica`): the balancing moves other groups' replicas,
    /// never this one's (a lost replica is still replaced).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pinned: bool,
    /// The one topic it holds (`None`: shared by any topics): a topic that joins a region
    /// after its creation gets groups of its own there, which the mirrors catch up apart
    /// from the topics they already ship (see `Topic::joined`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<u32>,
}

/// Limits a topic must respect.
pub const PARTITIONS_MAX: u32 = 1024;

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field} = {value}: {why}")]
pub struct Invalid {
    /// The field.
    pub field: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong and what would work.
    pub why: String,
}

fn invalid(field: &'static str, value: impl ToString, why: impl Into<String>) -> Invalid {
    Invalid {
        field,
        value: value.to_string(),
        why: why.into(),
    }
}

/// Names of topics and regions: 1 to 249 characters of letters, digits, `.`, `_`, `-`
/// (Kafka's rule, so every topic is also a valid Kafka topic).
pub fn validate_name(field: &'static str, name: &str) -> Result<(), Invalid> {
    if name.is_empty() || name.len() > 249 {
        return Err(invalid(
            field,
            format!("{name:?}"),
            "must be 1 to 249 characters",
        ));
    }
    if name == "." || name == ".." {
        return Err(invalid(field, format!("{name:?}"), "must not be . or .."));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(
            field,
            format!("{name:?}"),
            format!("{c:?} is not allowed: use letters, digits, '.', '_' and '-'"),
        ));
    }
    Ok(())
}

impl Topic {
    /// Checks the topic against the regions that exist and the live brokers of each
    /// (`brokers(region)`).
    pub fn validate(
        &self,
        regions: &BTreeSet<String>,
        brokers: impl Fn(&str) -> usize,
    ) -> Result<(), Invalid> {
        validate_name("name", &self.name)?;
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            return Err(invalid(
                "partitions",
                self.partitions,
                format!("must be 1 to {PARTITIONS_MAX}"),
            ));
        }
        if self.regions.is_empty() {
            return Err(invalid(
                "regions",
                "[]",
                "a topic spans at least one region",
            ));
        }
        let mut seen = BTreeSet::new();
        for r in &self.regions {
            if !seen.insert(r) {
                return Err(invalid("regions", r, "is named twice"));
            }
            if !regions.contains(r) {
                return Err(invalid(
                    "regions",
                    r,
                    format!(
                        "no such region; the regions are {}",
                        regions.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        if self.replication_factor == 0 {
            return Err(invalid("replication_factor", 0, "must be at least 1"));
        }
        if self.replication == Strategy::MasterSlave && self.regions.len() > 1 {
            return Err(invalid(
                "regions",
                self.regions.join(","),
                "a master-slave topic lives in one region: mirrors carry raft log groups only, \
                 so its messages would never reach the others. Name one region (--regions R), \
                 or replicate it by raft to span regions",
            ));
        }
        if self.replication == Strategy::MasterSlave && self.replication_factor < 2 {
            return Err(invalid(
                "replication_factor",
                self.replication_factor,
                "master-slave needs a master and at least one slave: use 2 or more",
            ));
        }
        for r in &self.regions {
            let live = brokers(r);
            if self.replication_factor as usize > live {
                return Err(invalid(
                    "replication_factor",
                    self.replication_factor,
                    format!("region {r} has {live} live broker(s): lower it or add brokers"),
                ));
            }
        }
        if let Some(home) = &self.home
            && !self.regions.contains(home)
        {
            return Err(invalid(
                "home",
                home,
                "the home region of a strictly ordered topic must be one of its regions",
            ));
        }
        validate_retention(&self.retention)?;
        meridian_proto::topic_config::TopicConfig::parse(&self.configs)
            .map_err(|e| invalid("configs", format!("{} = {:?}", e.key, e.value), e.why))?;
        if !matches!(self.txn_default.as_str(), "" | "commit" | "rollback") {
            return Err(invalid(
                "txn_default",
                format!("{:?}", self.txn_default),
                "use commit or rollback (or leave it out for the brokers' default)",
            ));
        }
        Ok(())
    }
}

/// A topic's retention: a duration (`7d`, `12h`) or `none`.
pub fn validate_retention(retention: &str) -> Result<(), Invalid> {
    if retention != "none" && humantime::parse_duration(retention).is_err() {
        return Err(invalid(
            "retention",
            format!("{retention:?}"),
            "use a duration like 7d, 12h or 30m, or none",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> Topic {
        Topic {
            name: "orders".into(),
            id: 1,
            created_ms: 0,
            partitions: 3,
            replication: Strategy::Raft,
            replication_factor: 3,
            regions: vec!["eu".into(), "us".into()],
            home: None,
            home_epoch: 0,
            home_closed: false,
            retention: "7d".into(),
            acks: Acks::Quorum,
            txn_default: String::new(),
            timestamp_type: TimestampType::CreateTime,
            configs: BTreeMap::new(),
            joined: Vec::new(),
            left: Vec::new(),
        }
    }

    fn regions() -> BTreeSet<String> {
        ["eu", "us"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_good_topic_passes_and_each_bad_field_is_named() {
        topic().validate(&regions(), |_| 3).unwrap();
        let check = |t: Topic, field: &str, says: &str| {
            let e = t
                .validate(&regions(), |r| if r == "us" { 2 } else { 3 })
                .unwrap_err();
            assert_eq!(e.field, field, "{e}");
            assert!(e.to_string().contains(says), "{e}");
        };
        check(
            Topic {
                name: "bad/name".into(),
                ..topic()
            },
            "name",
            "'/' is not allowed",
        );
        check(
            Topic {
                partitions: 0,
                ..topic()
            },
            "partitions",
            "1 to 1024",
        );
        check(
            Topic {
                regions: vec!["mars".into()],
                ..topic()
            },
            "regions",
            "no such region",
        );
        check(
            Topic {
                regions: vec!["eu".into(), "eu".into()],
                ..topic()
            },
            "regions",
            "twice",
        );
        check(
            topic(),
            "replication_factor",
            "region us has 2 live broker(s)",
        );
        check(
            Topic {
                replication: Strategy::MasterSlave,
                replication_factor: 1,
                regions: vec!["eu".into()],
                ..topic()
            },
            "replication_factor",
            "master-slave",
        );
        check(
            Topic {
                replication: Strategy::MasterSlave,
                ..topic()
            },
            "regions",
            "never reach the others",
        );
        check(
            Topic {
                home: Some("ap".into()),
                regions: vec!["eu".into()],
                replication_factor: 1,
                ..topic()
            },
            "home",
            "one of its regions",
        );
        check(
            Topic {
                retention: "forever".into(),
                replication_factor: 1,
                ..topic()
            },
            "retention",
            "7d",
        );
    }

    #[test]
    fn records_round_trip_as_json_and_refuse_unknown_fields() {
        let t = topic();
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Topic>(&text).unwrap(), t);
        let e = serde_json::from_str::<Topic>(&text.replace("\"name\"", "\"nmae\"")).unwrap_err();
        assert!(e.to_string().contains("nmae"), "{e}");
        assert_eq!(
            keys::assignment("eu", "orders", 2),
            "/meridian/assignments/eu/orders/2"
        );
    }
}
