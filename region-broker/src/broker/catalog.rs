//! The topic catalog of a broker: names, ids and the log group of each partition.
//!
//! Stored as `topics.json` in the data directory, replaced atomically on every change. It is
//! metadata, not data: the control plane takes it over in a later issue. Topic ids are never
//! reused, so records of a deleted topic can never be mistaken for a new topic's.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use meridian_proto::settings::TimestampType;
use meridian_proto::topic_config::TopicConfig;
use serde::{Deserialize, Serialize};

use crate::log_group::{Acks, Strategy};

/// A topic as the broker knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Its name.
    pub name: String,
    /// Never-reused id stamped on its journal records.
    pub id: u32,
    /// The log group of each partition.
    pub groups: Vec<u32>,
    /// Creation time, ms since the epoch.
    pub created_ms: i64,
    /// How its log groups replicate.
    #[serde(default)]
    pub replication: Strategy,
    /// What a produce naming no acks waits for.
    #[serde(default)]
    pub acks: Acks,
    /// Strictly ordered: the one region accepting writes, its epoch, and whether it is
    /// closed (a home move under way).
    #[serde(default)]
    pub home: Option<Home>,
    /// How a native transaction on its partitions ends when no producer of the group
    /// answers its check-backs; `None`: the broker's `[transactions] default_outcome`.
    #[serde(default)]
    pub txn_default: Option<super::transactions::coordinator::Outcome>,
    /// Which time its messages carry (Kafka's `message.timestamp.type`).
    #[serde(default)]
    pub timestamp_type: TimestampType,
    /// Its own configuration (Kafka's topic configs it sets; the rest are the broker's).
    #[serde(default)]
    pub config: TopicConfig,
    /// How long its messages are kept, in ms (-1: forever); `None`: the broker's
    /// `storage.retention` (a static region's topics, and older catalogs).
    #[serde(default)]
    pub retention_ms: Option<i64>,
}

impl Topic {
    /// The largest message it accepts: its `max.message.bytes`, else the broker's
    /// `broker_default`.
    pub fn message_bytes_max(&self, broker_default: usize) -> usize {
        self.config
            .max_message_bytes
            .map_or(broker_default, |n| n as usize)
    }

    /// How its partitions are compacted (`cleanup.policy` compact or compact,delete);
    /// `None` when they are not.
    pub fn compaction(&self) -> Option<crate::storage::compaction::Compaction> {
        let policy = self.config.cleanup_policy?;
        policy
            .compacts()
            .then(|| crate::storage::compaction::Compaction {
                delete_retention_ms: self.config.delete_retention_ms.map_or(
                    crate::storage::compaction::Compaction::default().delete_retention_ms,
                    |ms| ms as i64,
                ),
            })
    }

    /// The most bytes of records each partition keeps (`retention.bytes`), if limited.
    pub fn retention_bytes(&self) -> Option<u64> {
        self.config
            .retention_bytes
            .filter(|b| *b > 0)
            .map(|b| b as u64)
    }

    /// Whether retention deletes its old messages (every topic but a compact-only one).
    pub fn retention_deletes(&self) -> bool {
        self.config.cleanup_policy.is_none_or(|p| p.deletes())
    }
}

/// The home region of a strictly ordered topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Home {
    /// The region.
    pub region: String,
    /// Moves with every change of home.
    pub epoch: u64,
    /// No region accepts writes (a move under way).
    pub closed: bool,
}

/// A catalog as a snapshot carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogSnapshot {
    /// The id the next topic gets.
    pub next_id: u32,
    /// Every topic.
    pub topics: Vec<Topic>,
    /// Ids of deleted topics.
    pub retired: Vec<u32>,
}

/// All topics of a broker.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Catalog {
    #[serde(skip)]
    path: PathBuf,
    next_id: u32,
    topics: BTreeMap<String, Topic>,
    /// Ids of deleted topics: their records, still in journals, index nowhere.
    #[serde(default)]
    retired: Vec<u32>,
}

impl Catalog {
    /// Loads the catalog of `data_dir`, or an empty one.
    pub fn load(data_dir: &Path) -> io::Result<Catalog> {
        let path = data_dir.join("topics.json");
        let mut catalog: Catalog = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Catalog {
                next_id: 1,
                ..Catalog::default()
            },
            Err(e) => return Err(e),
        };
        catalog.path = path;
        Ok(catalog)
    }

    /// Topics by name.
    pub fn topics(&self) -> impl Iterator<Item = &Topic> {
        self.topics.values()
    }

    /// One topic.
    pub fn get(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// The id the next topic gets.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// Adds a topic and saves.
    pub fn insert(&mut self, topic: Topic) -> io::Result<()> {
        self.next_id = self.next_id.max(topic.id + 1);
        self.topics.insert(topic.name.clone(), topic);
        self.save()
    }

    /// Removes a topic (keeping its id as retired) and saves.
    pub fn remove(&mut self, name: &str) -> io::Result<()> {
        if let Some(t) = self.topics.remove(name) {
            self.retired.push(t.id);
        }
        self.save()
    }

    /// Ids of deleted topics.
    pub fn retired(&self) -> &[u32] {
        &self.retired
    }

    /// Records a deleted topic's id (from a snapshot) and saves.
    pub fn retire(&mut self, id: u32) -> io::Result<()> {
        if !self.retired.contains(&id) {
            self.retired.push(id);
            self.next_id = self.next_id.max(id + 1);
            self.save()?;
        }
        Ok(())
    }

    /// The whole catalog, for a snapshot.
    pub fn snapshot(&self) -> CatalogSnapshot {
        CatalogSnapshot {
            next_id: self.next_id,
            topics: self.topics.values().cloned().collect(),
            retired: self.retired.clone(),
        }
    }

    fn save(&self) -> io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec_pretty(self).map_err(io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(self.path.parent().unwrap_or(Path::new(".")))?.sync_all()
    }
}
