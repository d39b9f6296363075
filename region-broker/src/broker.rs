//! The broker core: topics and their partitions on a set of log groups, produce, fetch,
//! offsets. Protocol adapters (gRPC today; Kafka and MQTT later) call into this and map
//! [`BrokerError`] to their own error codes.

mod catalog;
mod managed;
mod mirror;
mod replicated;

pub use mirror::{LocalBatch, MirrorAppended};
pub use replicated::LogGroupState;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::batch::{self, Message};
use meridian_proto::names;

pub use catalog::{Catalog, Strategy, Topic};

use crate::config::Config;
use crate::storage::{AppendError, LogGroup, PartitionKey, ReadError};

/// Limits on header names and counts, beyond the byte limits of the config.
const HEADERS_MAX: usize = 1024;
const HEADER_NAME_BYTES_MAX: usize = 1024;

/// One broker's topics and log groups.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    /// The log groups this broker hosts, by id: all of `0..log_groups` standing alone or
    /// in a statically configured region; those the control plane assigns it when managed.
    groups: RwLock<BTreeMap<u32, Arc<LogGroup>>>,
    /// How log groups are opened (kept to open more later).
    group_config: crate::storage::GroupConfig,
    catalog: RwLock<Catalog>,
    /// In a region: the raft of each raft-replicated log group hosted here.
    rafts: RwLock<BTreeMap<u32, crate::replication::transport::GroupRaft>>,
    /// Makes the groups' commits durable together (fsync policy, several groups).
    sync: Option<Arc<crate::storage::SyncBatcher>>,
    /// The master-slave log groups hosted here, by id.
    master_slave: RwLock<BTreeMap<u32, Arc<crate::replication::master_slave::MasterSlaveGroup>>>,
    /// What replication needs to start more groups; set once replication runs.
    replication: std::sync::OnceLock<replicated::Replication>,
    /// The region's brokers (id → addresses): from `replication.peers`, or from the
    /// control plane's view when managed.
    directory: RwLock<BTreeMap<u32, crate::config::Peer>>,
    /// Managed: the control plane's view (leaders of groups not hosted here, version).
    view: RwLock<managed::ViewState>,
    /// The Kafka listener's group coordinator, once it serves.
    kafka_groups: std::sync::OnceLock<Arc<crate::kafka::groups::Coordinator>>,
    /// Serializes catalog changes proposed by this broker.
    catalog_writes: tokio::sync::Mutex<()>,
    /// Serializes the mirrored appends of one origin to one group (log group, origin
    /// region, origin group).
    #[allow(clippy::type_complexity)]
    mirror_locks: std::sync::Mutex<HashMap<(u32, String, u32), Arc<tokio::sync::Mutex<()>>>>,
}

/// Why a request failed; each adapter maps these to its protocol's codes.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// A name or value in the request is not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// A write of a strictly ordered topic outside its open home region.
    #[error("{0}")]
    NotHome(String),
    /// The topic does not exist.
    #[error("unknown topic {0:?}: create it first (meridian topic create {0})")]
    UnknownTopic(String),
    /// The topic exists but not the partition.
    #[error("topic {topic:?} has partitions 0..{partitions}; there is no partition {partition}")]
    UnknownPartition {
        /// Topic name.
        topic: String,
        /// Partition asked for.
        partition: u32,
        /// Partitions the topic has.
        partitions: u32,
    },
    /// Creating a topic that exists.
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// A message or batch over the configured limit.
    #[error("{what} is {size} bytes; the limit is {limit} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A fetch or seek outside the retained offsets.
    #[error(
        "offset {offset} is out of range for {topic}/{partition}: valid offsets are {earliest}..={latest}"
    )]
    OffsetOutOfRange {
        /// Topic name.
        topic: String,
        /// Partition.
        partition: u32,
        /// Offset asked for.
        offset: u64,
        /// First retained offset.
        earliest: u64,
        /// Log end offset.
        latest: u64,
    },
    /// This broker does not lead the log group; retry at the leader.
    #[error("this broker does not lead log group {group} (epoch {epoch}); {}", match (leader_id, leader) {
        (Some(id), Some(addr)) => format!("broker {id} at {addr} does: retry there"),
        _ => "no leader is known yet: retry shortly".to_owned(),
    })]
    NotLeader {
        /// The log group.
        group: u32,
        /// The group's leadership epoch as this broker knows it.
        epoch: u64,
        /// The leader's broker id, when known.
        leader_id: Option<u32>,
        /// The leader's gRPC address, when known.
        leader: Option<String>,
    },
    /// The request carried a leadership epoch this log group has moved past: the producer
    /// talks to a leader it should no longer trust. Refresh and retry.
    #[error(
        "epoch {epoch} is stale: log group {group} is at epoch {current}; refresh the partition's leader and retry"
    )]
    StaleEpoch {
        /// The log group.
        group: u32,
        /// The epoch the request carried.
        epoch: u64,
        /// The group's current epoch.
        current: u64,
    },
    /// The request carried a leadership epoch newer than this broker knows for the group:
    /// this broker is behind (a leader that was replaced without knowing it). Retry at the
    /// group's current leader.
    #[error(
        "log group {group} is at epoch {current} here but the request carries epoch {epoch}: this broker is not the current leader; retry at the leader"
    )]
    EpochAhead {
        /// The log group.
        group: u32,
        /// The epoch the request carried.
        epoch: u64,
        /// The epoch this broker knows.
        current: u64,
    },
    /// Replication failed (no quorum, shutting down).
    #[error("replication failed: {0}")]
    Replication(String),
    /// Storage refused the append.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Storage failed to read.
    #[error("read failed: {0}")]
    Read(ReadError),
    /// The catalog or a group's files could not be changed.
    #[error("storage error: {0}")]
    Io(#[from] std::io::Error),
}

/// One message as fetched, with its offset and append time.
#[derive(Debug, Clone)]
pub struct FetchedMessage {
    /// Partition offset.
    pub offset: u64,
    /// The message.
    pub message: Message,
    /// Broker time of its append.
    pub append_time_ms: i64,
    /// The region that first wrote it.
    pub origin_region: String,
    /// Its position there (`meridian_proto::origin::position`).
    pub origin_position: u64,
}

/// Origin positions: region → the highest position seen.
pub type Positions = Vec<(String, u64)>;

/// What a consumer group committed: where to resume here, and what it has seen of each
/// origin region.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Committed {
    /// The offset to resume at (`None`: nothing committed).
    pub offset: Option<u64>,
    /// Origin positions (multi-region topics).
    pub positions: Positions,
}

/// What an acknowledged produce got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// Offset of the batch's first message.
    pub base_offset: u64,
    /// Broker time stamped on the batch.
    pub append_time_ms: i64,
    /// The log group's leadership epoch (raft term; 0 without replication).
    pub epoch: u64,
}

/// What a produce waits for before it is acknowledged (a topic's default when the
/// request names none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acks {
    /// The leader holds it durably (per its flush policy); replication goes on in the
    /// background, so a leader failure before a quorum holds it may lose it (Kafka's
    /// acks=1). Consumers see it once it is committed.
    Leader,
    /// A quorum of replicas holds it (the default).
    #[default]
    Quorum,
    /// Every replica of the group holds it; fails if one does not within
    /// [`ACKS_ALL_WAIT`] (the batch is still committed at quorum).
    All,
}

impl Acks {
    /// Parses the user's spelling; empty is the default.
    pub fn parse(text: &str) -> Result<Acks, String> {
        match text {
            "leader" => Ok(Acks::Leader),
            "" | "quorum" => Ok(Acks::Quorum),
            "all" => Ok(Acks::All),
            other => Err(format!("unknown acks {other:?}: use leader, quorum or all")),
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

/// How long a produce with [`Acks::All`] waits for the last replicas.
pub const ACKS_ALL_WAIT: Duration = Duration::from_secs(5);

/// Which offset [`Broker::list_offset`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The first retained offset.
    Earliest,
    /// One past the last message.
    Latest,
    /// The first message appended at or after this time (ms since the epoch).
    Time(i64),
}

impl Broker {
    /// Opens (recovering) every log group under the config's data directory.
    pub fn open(config: Config) -> Result<Broker, BrokerError> {
        let data = config.data_dir.clone();
        std::fs::create_dir_all(&data)?;
        let catalog = Catalog::load(&data)?;
        let mut group_config = config.group_config();
        let sync = (config.storage.flush == crate::storage::FlushPolicy::Fsync
            && config.storage.batch_fsyncs
            && config.log_groups > 1)
            .then(|| crate::storage::SyncBatcher::start(&data))
            .transpose()?;
        group_config.sync = sync.clone();
        let directory = config
            .replication
            .peers
            .iter()
            .map(|p| (p.id, p.clone()))
            .collect();
        let broker = Broker {
            groups: RwLock::new(BTreeMap::new()),
            group_config,
            catalog: RwLock::new(catalog),
            rafts: RwLock::new(BTreeMap::new()),
            master_slave: RwLock::new(BTreeMap::new()),
            replication: std::sync::OnceLock::new(),
            directory: RwLock::new(directory),
            view: RwLock::new(managed::ViewState::default()),
            kafka_groups: std::sync::OnceLock::new(),
            sync,
            catalog_writes: tokio::sync::Mutex::new(()),
            mirror_locks: std::sync::Mutex::default(),
            config,
        };
        if broker.config.control.is_empty() {
            for g in 0..broker.config.log_groups {
                broker.open_log_group(g)?;
            }
            let catalog = broker.catalog.read().expect("catalog lock poisoned");
            if let Some(t) = catalog
                .topics()
                .find(|t| t.groups.iter().any(|&g| g >= broker.config.log_groups))
            {
                return Err(BrokerError::Invalid(format!(
                    "topic {:?} has partitions on log group {} but log_groups is {}: restore the old log_groups value",
                    t.name,
                    t.groups.iter().max().copied().unwrap_or(0),
                    broker.config.log_groups
                )));
            }
        }
        Ok(broker)
    }

    /// Opens (recovering) log group `g` with the partitions the catalog places on it, and
    /// hosts it.
    fn open_log_group(&self, g: u32) -> Result<Arc<LogGroup>, BrokerError> {
        if let Some(group) = self.group(g) {
            return Ok(group);
        }
        let catalog = self.catalog.read().expect("catalog lock poisoned");
        let partitions: Vec<(PartitionKey, String)> = catalog
            .topics()
            .flat_map(|t| {
                t.groups
                    .iter()
                    .enumerate()
                    .filter(move |(_, grp)| **grp == g)
                    .map(move |(p, _)| ((t.id, p as u32), t.name.clone()))
            })
            .collect();
        let dir = group_dir(&self.config.data_dir, g);
        let group = LogGroup::open(&dir, self.group_config.clone(), &partitions).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("opening log group {}: {e}", dir.display()),
            )
        })?;
        for &id in catalog.retired() {
            group.retire_topic(id);
        }
        let group = Arc::new(group);
        self.groups
            .write()
            .expect("groups lock poisoned")
            .insert(g, group.clone());
        Ok(group)
    }

    /// Log group `g`, if hosted here.
    pub fn group(&self, g: u32) -> Option<Arc<LogGroup>> {
        self.groups
            .read()
            .expect("groups lock poisoned")
            .get(&g)
            .cloned()
    }

    /// Whether the log groups replicate (a region, static or managed).
    fn is_replicated(&self) -> bool {
        self.replication.get().is_some()
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The log groups hosted here, by id.
    pub fn groups(&self) -> Vec<(u32, Arc<LogGroup>)> {
        self.groups
            .read()
            .expect("groups lock poisoned")
            .iter()
            .map(|(g, group)| (*g, group.clone()))
            .collect()
    }

    /// Creates a raft-replicated topic; see [`Broker::create_topic_with`].
    pub async fn create_topic(&self, name: &str, partitions: u32) -> Result<Topic, BrokerError> {
        self.create_topic_with(name, partitions, Strategy::Raft)
            .await
    }

    /// Creates a topic with `partitions` partitions (0: the default), spread round-robin
    /// over the log groups of its replication strategy. In a region the change goes through
    /// log group 0's raft and every broker applies it.
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        replication: Strategy,
    ) -> Result<Topic, BrokerError> {
        names::validate("topic", name).map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let partitions = if partitions == 0 {
            self.config.default_partitions
        } else {
            partitions
        };
        if partitions > self.config.partitions_max {
            return Err(BrokerError::Invalid(format!(
                "{partitions} partitions requested; this broker allows at most {} (partitions_max)",
                self.config.partitions_max
            )));
        }
        if !self.config.control.is_empty() {
            return Err(BrokerError::Invalid(
                "this region's topics are managed by the control plane: create topics there (meridian topic create --control ADDR)".into(),
            ));
        }
        if self.strategy_groups(replication).is_empty() {
            return Err(BrokerError::Invalid(format!(
                "this region has no {} log groups: start its brokers with --master-slave GROUP=MASTER_ID (or [[replication.master_slave]] in the config)",
                replication.as_str()
            )));
        }
        if self.is_replicated() {
            return self
                .create_topic_replicated(name, partitions, replication)
                .await;
        }
        let _serial = self.catalog_writes.lock().await;
        let id = {
            let catalog = self.catalog.read().expect("catalog lock poisoned");
            if catalog.get(name).is_some() {
                return Err(BrokerError::TopicExists(name.to_owned()));
            }
            catalog.next_id()
        };
        let topic = Topic {
            name: name.to_owned(),
            id,
            groups: self.spread(id, partitions, replication),
            created_ms: now_ms(),
            replication,
            acks: Acks::default(),
            home: None,
        };
        self.create_topic_local(topic.clone())?;
        Ok(topic)
    }

    /// Grows a topic to `partitions` partitions (never fewer; Kafka's CreatePartitions).
    /// Existing partitions keep their log groups; new ones are spread like a new topic's.
    pub async fn add_partitions(&self, name: &str, partitions: u32) -> Result<Topic, BrokerError> {
        if !self.config.control.is_empty() {
            return Err(BrokerError::Invalid(
                "this region's topics are managed by the control plane: add partitions there (meridian topic alter --partitions N)".into(),
            ));
        }
        if self.is_replicated() {
            return self.grow_topic_replicated(name, partitions).await;
        }
        let _serial = self.catalog_writes.lock().await;
        let mut topic = self.topic(name)?;
        topic.groups = self.grown_groups(&topic, partitions)?;
        self.create_topic_local(topic.clone())?;
        Ok(topic)
    }

    /// The log groups of `topic` grown to `partitions` partitions.
    fn grown_groups(&self, topic: &Topic, partitions: u32) -> Result<Vec<u32>, BrokerError> {
        let held = topic.groups.len() as u32;
        if partitions <= held {
            return Err(BrokerError::Invalid(format!(
                "topic {:?} has {held} partitions; asked for {partitions}: partitions can only be added",
                topic.name
            )));
        }
        if partitions > self.config.partitions_max {
            return Err(BrokerError::Invalid(format!(
                "{partitions} partitions requested; this broker allows at most {} (partitions_max)",
                self.config.partitions_max
            )));
        }
        let mut groups = topic.groups.clone();
        groups.extend(
            self.spread(topic.id, partitions, topic.replication)
                .into_iter()
                .skip(held as usize),
        );
        Ok(groups)
    }

    /// The log group of each partition of a new topic: round-robin over the groups of its
    /// strategy.
    fn spread(&self, id: u32, partitions: u32, replication: Strategy) -> Vec<u32> {
        let groups = self.strategy_groups(replication);
        let n = groups.len() as u32;
        (0..partitions)
            .map(|p| groups[((id + p) % n) as usize])
            .collect()
    }

    /// The log groups of a replication strategy. A broker running alone replicates
    /// nothing, so every group serves either strategy.
    fn strategy_groups(&self, replication: Strategy) -> Vec<u32> {
        let all = self
            .groups
            .read()
            .expect("groups lock poisoned")
            .keys()
            .copied()
            .collect::<Vec<_>>()
            .into_iter();
        if self.config.replication.peers.is_empty() {
            return all.collect();
        }
        all.filter(|&g| {
            let ms = self.config.master_slave_master(g).is_some();
            ms == (replication == Strategy::MasterSlave)
        })
        .collect()
    }

    /// Adds a topic to this broker (or partitions to a topic it has): indexes first,
    /// catalog last, so a crash in between leaves index directories the next start removes
    /// because no topic owns them. Partitions on groups hosted elsewhere (a managed region)
    /// are only recorded; a group opened later picks them up from the catalog.
    fn create_topic_local(&self, topic: Topic) -> Result<(), BrokerError> {
        let mut catalog = self.catalog.write().expect("catalog lock poisoned");
        let held = catalog
            .get(&topic.name)
            .filter(|t| t.id == topic.id)
            .map_or(0, |t| t.groups.len());
        for (p, &g) in topic.groups.iter().enumerate().skip(held) {
            match self.group(g) {
                Some(group) => group.add_partition((topic.id, p as u32), &topic.name)?,
                None if !self.config.control.is_empty() => {}
                None => {
                    return Err(BrokerError::Invalid(format!(
                        "topic {:?} names log group {g}, which this broker does not have",
                        topic.name
                    )));
                }
            }
        }
        tracing::info!(topic = %topic.name, id = topic.id, partitions = topic.groups.len(), "topic created");
        catalog.insert(topic)?;
        Ok(())
    }

    /// Deletes a topic: its partitions become unreadable at once; its records leave the
    /// disk with the segments that hold them.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        if !self.config.control.is_empty() {
            return Err(BrokerError::Invalid(
                "this region's topics are managed by the control plane: delete topics there (meridian topic delete --control ADDR)".into(),
            ));
        }
        if self.is_replicated() {
            return self.delete_topic_replicated(name).await;
        }
        self.delete_topic_local(name)
    }

    fn delete_topic_local(&self, name: &str) -> Result<(), BrokerError> {
        let mut catalog = self.catalog.write().expect("catalog lock poisoned");
        let topic = catalog
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))?;
        catalog.remove(name)?;
        let mut used: Vec<u32> = topic.groups.clone();
        used.sort_unstable();
        used.dedup();
        for g in used {
            if let Some(group) = self.group(g) {
                group.remove_topic(topic.id, name)?;
            }
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<Topic> {
        self.catalog
            .read()
            .expect("catalog lock poisoned")
            .topics()
            .cloned()
            .collect()
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Result<Topic, BrokerError> {
        self.catalog
            .read()
            .expect("catalog lock poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))
    }

    /// `(earliest, latest)` of one partition.
    pub fn partition_offsets(
        &self,
        topic: &Topic,
        partition: u32,
    ) -> Result<(u64, u64), BrokerError> {
        let (group, key) = self.locate(topic, partition)?;
        group.offsets(key).map_err(BrokerError::Read)
    }

    /// Appends messages to a partition; returns the first message's offset and the append
    /// time once the batch is durable.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        mut messages: Vec<Message>,
        acks: Option<Acks>,
        epoch: u64,
    ) -> Result<Produced, BrokerError> {
        let topic = self.topic(topic)?;
        let acks = acks.unwrap_or(topic.acks);
        let (group, key) = self.locate(&topic, partition)?;
        if let Some(home) = &topic.home {
            self.check_home(&topic.name, home)?;
        }
        if messages.is_empty() {
            return Err(BrokerError::Invalid(
                "a produce request needs at least one message".into(),
            ));
        }
        let now = now_ms();
        let mut size = 0;
        for m in &mut messages {
            self.validate_message(m)?;
            if m.timestamp_ms == 0 {
                m.timestamp_ms = now;
            }
            size += m.encoded_len();
        }
        if size > self.config.batch_bytes_max {
            return Err(BrokerError::TooLarge {
                what: "the batch",
                size,
                limit: self.config.batch_bytes_max,
            });
        }
        let count = messages.len() as u32;
        let payload = Bytes::from(batch::encode_batch(&messages));
        let g = topic.groups[partition as usize];
        let produced = if self.master_slave_group(g).is_some() {
            self.append_master_slave(g, (key, count, payload), acks, epoch)
                .await?
        } else if self.is_replicated() {
            self.append_replicated(g, (key, count, payload), acks, epoch)
                .await?
        } else {
            let appended = group.append(key, payload, count).await?;
            Produced {
                base_offset: appended.base_offset,
                append_time_ms: appended.append_time_ms,
                epoch: 0,
            }
        };
        metrics::counter!("meridian_produce_messages_total").increment(u64::from(count));
        metrics::counter!("meridian_produce_bytes_total").increment(size as u64);
        Ok(produced)
    }

    /// Reads messages from `offset` on (at most about `max_bytes`, at least one message when
    /// any is available), waiting up to `max_wait` for the first one to arrive.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<(Vec<FetchedMessage>, (u64, u64)), BrokerError> {
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        self.require_leader(topic.groups[partition as usize])?;
        let max_wait = max_wait.min(Duration::from_millis(self.config.fetch_wait_max_ms));
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut visible = group.subscribe();
        loop {
            visible.borrow_and_update();
            let batches = group
                .read(key, offset, max_bytes.max(1))
                .map_err(|e| self.read_error(&topic, partition, e))?;
            if !batches.is_empty() || tokio::time::Instant::now() >= deadline {
                let messages = decode(batches, offset, max_bytes, &self.config.region)?;
                metrics::counter!("meridian_fetch_messages_total").increment(messages.len() as u64);
                let range = group.offsets(key).map_err(BrokerError::Read)?;
                return Ok((messages, range));
            }
            // Long poll: wake when the group makes new records visible, or at the deadline.
            if tokio::time::timeout_at(deadline, visible.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return Err(BrokerError::Append(AppendError::Closed));
            }
        }
    }

    /// The Kafka listener's group coordinator (none without a Kafka listener).
    pub(crate) fn kafka_groups(&self) -> Option<&Arc<crate::kafka::groups::Coordinator>> {
        self.kafka_groups.get()
    }

    /// Makes the Kafka listener's group coordinator visible to `kafka_groups`.
    pub(crate) fn set_kafka_groups(&self, c: Arc<crate::kafka::groups::Coordinator>) {
        let _ = self.kafka_groups.set(c);
    }

    /// The broker leading log group `g`, as far as this broker knows.
    pub fn leader_id(&self, g: u32) -> Option<u32> {
        match self.hosted(g).and_then(|_| self.require_leader(g)) {
            Ok(()) => Some(self.config.broker_id),
            Err(BrokerError::NotLeader { leader_id, .. }) => leader_id,
            Err(_) => None,
        }
    }

    /// The region's brokers serving Kafka, with their Kafka addresses (this broker's own;
    /// the others' once the directory carries them).
    pub fn kafka_brokers(&self) -> Vec<(u32, std::net::SocketAddr)> {
        let mut out: Vec<(u32, std::net::SocketAddr)> = self
            .directory()
            .into_iter()
            .filter(|p| p.id != self.config.broker_id)
            .filter_map(|p| Some((p.id, p.kafka?.parse().ok()?)))
            .collect();
        if let Some(me) = self.config.kafka_listen {
            out.push((self.config.broker_id, me));
        }
        out.sort();
        out
    }

    /// A strictly ordered topic takes writes only in its open home region, and only on a
    /// broker sure the control plane has not moved the home meanwhile.
    fn check_home(&self, topic: &str, home: &catalog::Home) -> Result<(), BrokerError> {
        let why = if home.closed {
            format!(
                "its home is moving away from {} (epoch {})",
                home.region, home.epoch
            )
        } else if home.region != self.config.region {
            format!(
                "only its home region {} accepts writes (epoch {})",
                home.region, home.epoch
            )
        } else {
            match self.may_write_home() {
                Ok(()) => return Ok(()),
                Err(e) => format!(
                    "this broker of home region {} cannot take writes: {e}",
                    home.region
                ),
            }
        };
        Err(BrokerError::NotHome(format!(
            "topic {topic} is strictly ordered: {why}; produce in its home region (meridian topic describe {topic})"
        )))
    }

    /// Looks up an offset of a partition; with a time, also returns the append time found.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        query: OffsetQuery,
    ) -> Result<(u64, Option<i64>), BrokerError> {
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        self.require_leader(topic.groups[partition as usize])?;
        // Read your writes: what was acknowledged before this call is in the answer.
        group.caught_up(Duration::from_secs(1)).await;
        let (earliest, latest) = group.offsets(key).map_err(BrokerError::Read)?;
        Ok(match query {
            OffsetQuery::Earliest => (earliest, None),
            OffsetQuery::Latest => (latest, None),
            OffsetQuery::Time(t) => {
                match group.offset_for_time(key, t).map_err(BrokerError::Read)? {
                    Some((offset, time)) => (offset, Some(time)),
                    None => (latest, None),
                }
            }
        })
    }

    /// Commits a consumer group's position in a partition (through the journal), with the
    /// origin positions it has seen below it.
    pub async fn commit_offset(
        &self,
        group_name: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        positions: Positions,
    ) -> Result<(), BrokerError> {
        if offset == crate::storage::POSITIONS_ONLY {
            return Err(BrokerError::Invalid(format!(
                "offset {offset} is reserved: commit the offset of the next message to read"
            )));
        }
        validate_positions(&positions)?;
        names::validate("group", group_name).map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        let g = topic.groups[partition as usize];
        self.write_commit(g, &group, group_name, key, offset, positions)
            .await
    }

    /// Writes a commit record the way the group replicates.
    pub(crate) async fn write_commit(
        &self,
        g: u32,
        group: &LogGroup,
        group_name: &str,
        key: PartitionKey,
        offset: u64,
        positions: Positions,
    ) -> Result<(), BrokerError> {
        if self.master_slave_group(g).is_some() {
            if !positions.is_empty() {
                return Err(BrokerError::Invalid(format!(
                    "log group {g} is master-slave: origin positions are kept by raft groups only"
                )));
            }
            self.commit_offset_master_slave(g, group_name, key, offset)
                .await?;
        } else if self.is_replicated() {
            let command = crate::replication::raft::Command::Commit {
                group: group_name.to_owned(),
                topic_id: key.0,
                partition: key.1,
                offset,
                positions,
            };
            self.replicate(g, command).await?;
        } else {
            group
                .commit_positions(group_name, key, offset, positions)
                .await?;
        }
        Ok(())
    }

    /// A consumer group's committed position in a partition.
    pub async fn committed_offset(
        &self,
        group_name: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Committed, BrokerError> {
        names::validate("group", group_name).map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        self.require_leader(topic.groups[partition as usize])?;
        let positions = group.committed_positions(group_name, key);
        let offset = match group.committed_offset(group_name, key) {
            Some(crate::storage::POSITIONS_ONLY) => Some(self.offset_in(&group, key, &positions)?),
            other => other,
        };
        Ok(Committed { offset, positions })
    }

    /// The first offset of a partition holding a message that `positions` do not cover:
    /// where a consumer that read elsewhere resumes here.
    pub async fn offset_for_positions(
        &self,
        topic: &str,
        partition: u32,
        positions: &Positions,
    ) -> Result<u64, BrokerError> {
        validate_positions(positions)?;
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        self.require_leader(topic.groups[partition as usize])?;
        self.offset_in(&group, key, positions)
    }

    /// Walks the partition from its earliest message to the first one not covered.
    fn offset_in(
        &self,
        group: &LogGroup,
        key: PartitionKey,
        positions: &Positions,
    ) -> Result<u64, BrokerError> {
        use meridian_proto::origin::position;
        let seen: HashMap<&str, u64> = positions.iter().map(|(r, p)| (r.as_str(), *p)).collect();
        let (mut next, latest) = group.offsets(key).map_err(BrokerError::Read)?;
        while next < latest {
            let batches = group.read(key, next, 1 << 20).map_err(BrokerError::Read)?;
            if batches.is_empty() {
                break;
            }
            for b in batches {
                let (region, seq) = match &b.origin {
                    Some(o) => (o.region.as_str(), o.seq),
                    None => (self.config.region.as_str(), b.index),
                };
                let first = position(seq, 0);
                let unseen = match seen.get(region) {
                    None => 0,
                    Some(&limit) if limit < first => 0,
                    Some(&limit) => limit - first + 1,
                };
                if unseen < u64::from(b.count) {
                    return Ok((b.base_offset + unseen).max(next));
                }
                next = b.base_offset + u64::from(b.count);
            }
        }
        Ok(next.max(latest))
    }

    /// Flushes and stops every log group.
    pub fn close(&self) {
        for (_, g) in self.groups() {
            g.close();
        }
        if let Some(sync) = &self.sync {
            sync.stop();
        }
    }

    fn locate(
        &self,
        topic: &Topic,
        partition: u32,
    ) -> Result<(Arc<LogGroup>, PartitionKey), BrokerError> {
        let g =
            *topic
                .groups
                .get(partition as usize)
                .ok_or_else(|| BrokerError::UnknownPartition {
                    topic: topic.name.clone(),
                    partition,
                    partitions: topic.groups.len() as u32,
                })?;
        // Managed: a group hosted elsewhere is answered by naming its leader.
        Ok((self.hosted(g)?, (topic.id, partition)))
    }

    fn validate_message(&self, m: &Message) -> Result<(), BrokerError> {
        let size = m.encoded_len();
        if size > self.config.message_bytes_max {
            return Err(BrokerError::TooLarge {
                what: "a message",
                size,
                limit: self.config.message_bytes_max,
            });
        }
        if m.headers.len() > HEADERS_MAX {
            return Err(BrokerError::Invalid(format!(
                "a message has {} headers; the limit is {HEADERS_MAX}",
                m.headers.len()
            )));
        }
        if let Some((name, _)) = m
            .headers
            .iter()
            .find(|(n, _)| n.len() > HEADER_NAME_BYTES_MAX)
        {
            return Err(BrokerError::Invalid(format!(
                "header name of {} bytes; the limit is {HEADER_NAME_BYTES_MAX}",
                name.len()
            )));
        }
        Ok(())
    }

    fn read_error(&self, topic: &Topic, partition: u32, e: ReadError) -> BrokerError {
        match e {
            ReadError::OffsetOutOfRange {
                offset,
                earliest,
                latest,
            } => BrokerError::OffsetOutOfRange {
                topic: topic.name.clone(),
                partition,
                offset,
                earliest,
                latest,
            },
            other => BrokerError::Read(other),
        }
    }
}

/// Decodes fetched batches, dropping messages before `offset` and stopping near `max_bytes`
/// (but always returning the first message).
fn decode(
    batches: Vec<crate::storage::ReadBatch>,
    offset: u64,
    max_bytes: usize,
    region: &str,
) -> Result<Vec<FetchedMessage>, BrokerError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for b in batches {
        let messages = batch::decode_batch(&b.payload, b.count as usize).map_err(|e| {
            BrokerError::Invalid(format!(
                "stored batch at offset {} does not decode: {e}",
                b.base_offset
            ))
        })?;
        for (i, message) in messages.into_iter().enumerate() {
            let o = b.base_offset + i as u64;
            if o < offset {
                continue;
            }
            bytes += message.encoded_len();
            if !out.is_empty() && bytes > max_bytes {
                return Ok(out);
            }
            let (origin_region, seq) = match &b.origin {
                Some(origin) => (origin.region.clone(), origin.seq),
                None => (region.to_owned(), b.index),
            };
            out.push(FetchedMessage {
                offset: o,
                message,
                append_time_ms: b.append_time_ms,
                origin_region,
                origin_position: meridian_proto::origin::position(seq, i as u32),
            });
        }
    }
    Ok(out)
}

/// Refuses origin positions a commit cannot carry.
pub(crate) fn validate_positions(positions: &Positions) -> Result<(), BrokerError> {
    if positions.len() > 64 {
        return Err(BrokerError::Invalid(format!(
            "{} origin positions: at most 64 regions",
            positions.len()
        )));
    }
    for (region, _) in positions {
        if region.is_empty() || region.len() > meridian_proto::origin::REGION_MAX {
            return Err(BrokerError::Invalid(
                "an origin position's region must be 1 to 249 bytes".into(),
            ));
        }
    }
    Ok(())
}

fn group_dir(data: &Path, group: u32) -> std::path::PathBuf {
    data.join("groups").join(group.to_string())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
