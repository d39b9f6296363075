//! The broker core: one map of hosted log groups ([`HostedGroup`]), the topic catalog
//! (topics and the log group of each partition), the region's directory and, when
//! managed, the control plane's view — and the requests on top of them: topics
//! ([`topics`](self) in `topics.rs`), produce and fetch (`produce.rs`), offsets
//! (`offsets.rs`), mirroring (`mirror.rs`), starting and stopping replicated groups
//! (`replicated.rs`), the managed broker's control-plane session (`managed.rs`).
//!
//! Protocol adapters (gRPC, Kafka) call into this and map [`BrokerError`] to their own
//! error codes. Per-group work (append at an ack level, commits, failover, membership)
//! is the log-group layer's ([`crate::log_group`]); this module never asks which way a
//! group replicates.

pub mod acls;
mod catalog;
pub mod consumer_groups;
mod coordinator_state;
pub mod credentials;
pub mod delayed;
pub mod failover;
mod managed;
mod mirror;
pub mod observed;
mod offsets;
mod produce;
mod producer_ids;
pub mod quotas;
mod readiness;
pub mod region_producer;
pub mod region_reader;
mod replicated;
mod retention;
pub(crate) mod state_topic;
mod topics;
pub mod transactions;

pub use meridian_proto::mirror::ShippedBatch;
pub use mirror::{MirrorAppended, MirroredIn};
pub(crate) use produce::{kafka_codec, messages_of};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use meridian_proto::batch::Message;

pub use crate::log_group::{
    ACKS_ALL_WAIT, Acks, HostedGroup, LogGroupState, Produced, Strategy, UnknownAcks,
    UnknownStrategy,
};
pub use catalog::{Catalog, Topic};
use offsets::validate_positions;

use crate::config::Config;
use crate::log_group::{LogGroupError, Replication};
use crate::storage::{AppendError, LogGroup, PartitionKey, ReadError};

/// How far ahead of the broker's clock a producer may stamp a message (Kafka's
/// `message.timestamp.after.max.ms` default, one hour): what bounds a search by producer
/// timestamp through the append-time index.
pub const TIMESTAMP_AHEAD_MAX_MS: i64 = 3_600_000;

/// Topic ids from here up are internal partitions in every log group (outside the
/// catalog, never mirrored): delayed delivery's timers, then the coordinators' state
/// (consumer groups, transactions).
pub const INTERNAL_TOPIC_ID_MIN: u32 = delayed::TIMERS_TOPIC_ID;

/// One broker's topics and log groups.
#[derive(Debug)]
pub struct Broker {
    config: Config,
    /// The log groups this broker hosts, by id: all of `0..log_groups` standing alone or
    /// in a statically configured region; those the control plane assigns it when managed.
    log_groups: RwLock<BTreeMap<u32, Arc<HostedGroup>>>,
    /// How log groups are opened (kept to open more later).
    group_config: crate::storage::GroupConfig,
    catalog: RwLock<Catalog>,
    /// Makes the groups' commits durable together (fsync policy, several groups).
    sync: Option<Arc<crate::storage::SyncBatcher>>,
    /// What replication needs to start more groups; set once replication runs.
    replication: std::sync::OnceLock<replicated::Replicator>,
    /// The region's brokers (id → addresses): from `replication.peers`, or from the
    /// control plane's view when managed.
    directory: RwLock<BTreeMap<u32, crate::config::Peer>>,
    /// Managed: the control plane's view (leaders of groups not hosted here, version).
    view: RwLock<managed::ViewState>,
    /// Serializes catalog changes proposed by this broker.
    catalog_writes: tokio::sync::Mutex<()>,
    /// Serializes the mirrored appends of one origin to one group (log group, origin
    /// region, origin group).
    #[allow(clippy::type_complexity)]
    mirror_locks: std::sync::Mutex<HashMap<(u32, String, u32), Arc<tokio::sync::Mutex<()>>>>,
    /// The transaction coordinators of the groups this broker leads.
    transactions: transactions::Transactions,
    /// The consumer-group coordinators of the groups this broker leads.
    consumer_groups: consumer_groups::ConsumerGroups,
    /// Delayed delivery's schedules of the log groups led here.
    delayed: delayed::Delayed,
    /// Hands out producer ids.
    producer_ids: producer_ids::ProducerIds,
    /// A client of the region through this broker's own gRPC listener, made on first use.
    region_client: tokio::sync::OnceCell<meridian_region_client::RegionClient>,
    /// The region taking this one's Kafka writes while it is failed over.
    takeover: RwLock<Option<Arc<failover::Takeover>>>,
    /// The region's users and their SASL credentials.
    credentials: credentials::Credentials,
    /// The client quotas, and this broker's meters of them.
    quotas: quotas::Quotas,
    /// The region's access control lists.
    acls: acls::Acls,
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
    #[error("this broker does not lead log group {log_group} (epoch {epoch}); {}", match (leader_id, leader) {
        (Some(id), Some(addr)) => format!("broker {id} at {addr} does: retry there"),
        _ => "no leader is known yet: retry shortly".to_owned(),
    })]
    NotLeader {
        /// The log group.
        log_group: u32,
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
        "epoch {epoch} is stale: log group {log_group} is at epoch {current}; refresh the partition's leader and retry"
    )]
    StaleEpoch {
        /// The log group.
        log_group: u32,
        /// The epoch the request carried.
        epoch: u64,
        /// The group's current epoch.
        current: u64,
    },
    /// The request carried a leadership epoch newer than this broker knows for the group:
    /// this broker is behind (a leader that was replaced without knowing it). Retry at the
    /// group's current leader.
    #[error(
        "log group {log_group} is at epoch {current} here but the request carries epoch {epoch}: this broker is not the current leader; retry at the leader"
    )]
    EpochAhead {
        /// The log group.
        log_group: u32,
        /// The epoch the request carried.
        epoch: u64,
        /// The epoch this broker knows.
        current: u64,
    },
    /// Replication failed (no quorum, shutting down).
    #[error("replication failed: {0}")]
    Replication(String),
    /// A leadership hand-over refused (the voter named is not in sync: Kafka's
    /// PREFERRED_LEADER_NOT_AVAILABLE) or not seen finished in time (`timed_out`).
    #[error("{message}")]
    Election {
        /// What happened, naming the brokers.
        message: String,
        /// The hand-over started but no election of the voter was seen in time.
        timed_out: bool,
    },
    /// A transactional batch whose partition is not in its producer's open transaction
    /// (never added, or the transaction ended), or whose producer an newer epoch fenced:
    /// nothing was written.
    #[error("{message}")]
    NotInTransaction {
        /// The coordinator's refusal.
        message: String,
        /// Refused because a newer producer epoch fenced it.
        fenced: bool,
    },
    /// A message stamped too far ahead of the broker's clock.
    #[error("{0}")]
    InvalidTimestamp(String),
    /// A commit's metadata larger than the broker keeps.
    #[error("the commit's metadata is {0} bytes; at most 4096 are kept: commit shorter metadata")]
    MetadataTooLarge(usize),
    /// A message the topic cannot take as it is (a compacted topic's message without a
    /// key): sending it again cannot help.
    #[error("{0}")]
    InvalidRecord(String),
    /// A consumer group's coordinator refused a heartbeat or a member's commit.
    #[error(transparent)]
    Group(#[from] consumer_groups::membership::GroupError),
    /// A delayed produce was refused (its deliver-at time, or too many timers).
    #[error(transparent)]
    Delay(#[from] delayed::schedule::DelayError),
    /// An `acks=all` produce found fewer replicas than `min_insync_replicas` asks for:
    /// in sync before the write (nothing written), or holding the batch after it.
    #[error(transparent)]
    NotEnoughReplicas(LogGroupError),
    /// An idempotent producer's batch was refused by its sequence or epoch
    /// (`LogGroupError::Sequence`): nothing was written.
    #[error(transparent)]
    Sequence(LogGroupError),
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

/// Which records a fetch returns (Kafka's isolation level).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything visible, transactions open or aborted included (`read_uncommitted`).
    Uncommitted,
    /// Up to the last stable offset, aborted transactions left out (`read_committed`).
    Committed,
}

/// What [`Broker::fetch_batches`] read, with the partition's offsets.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Batches and transaction markers, in offset order.
    pub batches: Vec<crate::storage::ReadBatch>,
    /// The earliest offset.
    pub earliest: u64,
    /// One past the last visible offset (Kafka's high watermark).
    pub latest: u64,
    /// The last stable offset.
    pub last_stable: u64,
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
    /// The metadata committed with the offset (Kafka's); empty when none.
    pub metadata: String,
}

/// Which offset [`Broker::list_offset`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetQuery {
    /// The first retained offset.
    Earliest,
    /// One past the last message.
    Latest,
    /// The first message appended at or after this time (ms since the epoch).
    Time(i64),
    /// The last stable offset: where readers of committed data are held by the oldest
    /// open transaction (the latest offset when none is open).
    LastStable,
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
            log_groups: RwLock::new(BTreeMap::new()),
            group_config,
            catalog: RwLock::new(catalog),
            replication: std::sync::OnceLock::new(),
            directory: RwLock::new(directory),
            view: RwLock::new(managed::ViewState::default()),
            sync,
            catalog_writes: tokio::sync::Mutex::new(()),
            mirror_locks: std::sync::Mutex::default(),
            transactions: transactions::Transactions::new((&config.transactions).into()),
            consumer_groups: consumer_groups::ConsumerGroups::default(),
            delayed: delayed::Delayed::default(),
            producer_ids: producer_ids::ProducerIds::new(config.broker_id),
            region_client: tokio::sync::OnceCell::new(),
            takeover: RwLock::new(None),
            credentials: credentials::Credentials::new(),
            quotas: quotas::Quotas::new(),
            acls: acls::Acls::new(),
            config,
        };
        if broker.config.control.is_empty() {
            // Statically configured: the groups replicate when the config names peers.
            let replicated = !broker.config.replication.peers.is_empty();
            for g in 0..broker.config.log_groups {
                broker.open_log_group(g, replicated)?;
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
    /// hosts it. A `replicated` group makes records visible only once committed (below the
    /// watermark its replication sets), never truncates committed records and keeps what
    /// replicas may still pull from retention.
    fn open_log_group(&self, g: u32, replicated: bool) -> Result<Arc<HostedGroup>, BrokerError> {
        if let Some(group) = self.log_group(g) {
            return Ok(group);
        }
        let catalog = self.catalog.read().expect("catalog lock poisoned");
        // Every group holds its transaction and consumer-group coordinators' state
        // partitions, and its delayed messages' timers.
        let state = [
            (delayed::TIMERS_KEY, delayed::TIMERS_TOPIC.to_owned()),
            (
                transactions::STATE_KEY,
                transactions::STATE_TOPIC.to_owned(),
            ),
            (
                consumer_groups::STATE_KEY,
                consumer_groups::STATE_TOPIC.to_owned(),
            ),
        ];
        let partitions: Vec<(PartitionKey, String)> = catalog
            .topics()
            .flat_map(|t| {
                t.groups
                    .iter()
                    .enumerate()
                    .filter(move |(_, grp)| **grp == g)
                    .map(move |(p, _)| ((t.id, p as u32), t.name.clone()))
            })
            .chain(state)
            .collect();
        let dir = group_dir(&self.config.data_dir, g);
        let config = crate::storage::GroupConfig {
            replicated,
            ..self.group_config.clone()
        };
        let group = LogGroup::open(&dir, config, &partitions).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("opening log group {}: {e}", dir.display()),
            )
        })?;
        for &id in catalog.retired() {
            group.retire_topic(id);
        }
        // A broker that replicates opens a group to start its replication next.
        let replication = match self.is_replicated() {
            true => Replication::Starting,
            false => Replication::Standalone,
        };
        let group = Arc::new(HostedGroup::new(
            g,
            self.config.broker_id,
            Arc::new(group),
            replication,
            self.config.replication.min_insync_replicas,
        ));
        self.host(group.clone());
        Ok(group)
    }

    /// Hosts `group` (in place of what was hosted under its id).
    fn host(&self, group: Arc<HostedGroup>) {
        group.watch_in_sync();
        group.keep_offsets_through_retention();
        self.log_groups
            .write()
            .expect("log groups lock poisoned")
            .insert(group.id(), group);
    }

    /// Log group `g`, if hosted here.
    pub fn log_group(&self, g: u32) -> Option<Arc<HostedGroup>> {
        self.log_groups
            .read()
            .expect("log groups lock poisoned")
            .get(&g)
            .cloned()
    }

    /// Log group `g`, hosted here, or `NotLeader` naming its leader.
    fn hosted(&self, g: u32) -> Result<Arc<HostedGroup>, BrokerError> {
        self.log_group(g)
            .ok_or_else(|| self.not_leader(g, self.reported_leader(g).map(u64::from)))
    }

    /// A log group's error as the broker reports it (a leader named by its address).
    fn group_error(&self, e: LogGroupError) -> BrokerError {
        match e {
            LogGroupError::NotLeader { log_group, leader } => self.not_leader(log_group, leader),
            LogGroupError::StaleEpoch {
                log_group,
                epoch,
                current,
            } => BrokerError::StaleEpoch {
                log_group,
                epoch,
                current,
            },
            LogGroupError::EpochAhead {
                log_group,
                epoch,
                current,
            } => BrokerError::EpochAhead {
                log_group,
                epoch,
                current,
            },
            e @ (LogGroupError::NotEnoughReplicas { .. }
            | LogGroupError::NotEnoughReplicasAfterAppend { .. }) => {
                BrokerError::NotEnoughReplicas(e)
            }
            e @ LogGroupError::Sequence { .. } => BrokerError::Sequence(e),
            LogGroupError::Invalid(why) => BrokerError::Invalid(why),
            LogGroupError::Election { message, timed_out } => {
                BrokerError::Election { message, timed_out }
            }
            LogGroupError::Replication(why) => BrokerError::Replication(why),
            LogGroupError::Append(e) => BrokerError::Append(e),
        }
    }

    /// Whether the log groups replicate (a region, static or managed).
    fn is_replicated(&self) -> bool {
        self.replication.get().is_some()
    }

    /// Runs `request` at the leader of `topic`'s `partition` through the region client:
    /// the other side of every `…_anywhere` call, for a partition another broker leads.
    /// An unknown topic is refused as the broker would (`NotFound`).
    pub(crate) async fn at_partition_leader<T, F, Fut>(
        &self,
        topic: &str,
        partition: u32,
        attempt: std::time::Duration,
        request: F,
    ) -> Result<T, meridian_region_client::RegionError>
    where
        F: FnMut(
            meridian_proto::v1::broker_client::BrokerClient<meridian_proto::auth::Authed>,
        ) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let id = self
            .topic(topic)
            .map_err(|e| meridian_region_client::RegionError::Broker {
                code: tonic::Code::NotFound,
                message: e.to_string(),
            })?
            .id;
        self.region_client()
            .await?
            .call_at_leader(
                meridian_region_client::Leading::Partition(id, partition),
                attempt,
                request,
            )
            .await
    }

    /// A client of the region through this broker's own gRPC listener (it follows each
    /// partition's and group's leader): for what another broker must serve (offset commits
    /// forwarded by the Kafka listener, transaction markers, forwarded transaction requests,
    /// the MQTT listener's writes, reads and share memberships).
    pub(crate) async fn region_client(
        &self,
    ) -> Result<&meridian_region_client::RegionClient, meridian_region_client::RegionError> {
        self.region_client
            .get_or_try_init(|| {
                let own = self.config.grpc_address();
                async move { meridian_region_client::RegionClient::connect(&own).await }
            })
            .await
    }

    /// The configuration the broker runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The log groups hosted here, by id.
    pub fn log_groups(&self) -> Vec<(u32, Arc<HostedGroup>)> {
        self.log_groups
            .read()
            .expect("log groups lock poisoned")
            .iter()
            .map(|(g, group)| (*g, group.clone()))
            .collect()
    }

    /// The broker leading log group `g`, as far as this broker knows.
    pub fn leader_id(&self, g: u32) -> Option<u32> {
        match self.hosted(g).and_then(|_| self.require_leader(g)) {
            Ok(()) => Some(self.config.broker_id),
            Err(BrokerError::NotLeader { leader_id, .. }) => leader_id,
            Err(_) => None,
        }
    }

    /// The region's brokers serving Kafka, with the host and port Kafka clients reach
    /// them at (this broker's own, advertised or listening; the others' once the directory
    /// carries them).
    pub fn kafka_brokers(&self) -> Vec<(u32, String, u16)> {
        let at = |id: u32, address: &str| {
            let (host, port) = meridian_proto::names::host_port(address)?;
            Some((id, host.to_owned(), port))
        };
        let mut out: Vec<(u32, String, u16)> = self
            .directory()
            .into_iter()
            .filter(|p| p.id != self.config.broker_id)
            .filter_map(|p| at(p.id, p.kafka.as_deref()?))
            .collect();
        if let Some(me) = self.config.kafka_address() {
            out.extend(at(self.config.broker_id, &me));
        }
        out.sort();
        out
    }

    /// Flushes and stops every log group.
    pub fn close(&self) {
        for (_, g) in self.log_groups() {
            g.storage().close();
        }
        if let Some(sync) = &self.sync {
            sync.stop();
        }
    }

    fn locate(
        &self,
        topic: &Topic,
        partition: u32,
    ) -> Result<(Arc<HostedGroup>, PartitionKey), BrokerError> {
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
}

fn group_dir(data: &Path, log_group: u32) -> std::path::PathBuf {
    data.join("groups").join(log_group.to_string())
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
