//! The broker's raft mode: with peers configured, every log group is a raft group over all
//! the region's brokers. Produce and offset commits go through the group's raft (an append
//! is acknowledged once a quorum holds it); the topic catalog travels as commands in log
//! group 0's raft and every broker applies them; a request for a group this broker does not
//! lead is answered with [`BrokerError::NotLeader`] naming the leader's address.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, Raft};

use super::{
    ACKS_ALL_WAIT, Acks, Broker, BrokerError, Produced, Strategy, Topic, group_dir, now_ms,
};
use crate::replication::master_slave::{MasterSlaveGroup, Role, WaitError};
use crate::replication::raft::{
    CatalogChange, Command, CommandResult, JournalLogStore, JournalStateMachine, LocalAck,
    Shipping, SnapshotHooks,
};
use crate::replication::transport::{GroupRaft, GrpcNetwork, Peers, RaftTransportService};

impl Broker {
    /// Log group `group`, hosted here, or `NotLeader` naming its leader.
    pub(super) fn hosted(&self, group: u32) -> Result<Arc<crate::storage::LogGroup>, BrokerError> {
        self.group(group)
            .ok_or_else(|| self.not_leader(group, self.reported_leader(group).map(u64::from)))
    }
}

/// What replication needs to open more groups after start.
#[derive(Debug)]
pub(super) struct Replication {
    node_id: u64,
    raft_config: Arc<openraft::Config>,
    pub(super) peers: Peers,
    transport: RaftTransportService,
}

/// How one log group replicates on this broker.
#[derive(Debug, Clone)]
pub(super) enum GroupRole {
    /// By raft; `initialize` names the first members when this broker sets them up.
    Raft {
        initialize: Option<BTreeMap<u64, BasicNode>>,
    },
    /// Master-slave with this initial master and these other replicas.
    MasterSlave {
        master: u32,
        others: Vec<crate::config::Peer>,
    },
}

impl Broker {
    /// Starts replication. A statically configured region starts one raft per log group
    /// (the broker with the lowest id initializes their membership, all peers, on its first
    /// start) or a master-slave replica for the groups configured so; a managed broker
    /// starts the groups its region view assigns it, later.
    pub async fn start_replication(
        self: &Arc<Self>,
        transport: &RaftTransportService,
    ) -> Result<(), BrokerError> {
        let config = &self.config;
        let node_id = u64::from(config.broker_id);
        let raft_config = openraft::Config {
            cluster_name: format!("meridian-{}", config.region),
            heartbeat_interval: 100,
            election_timeout_min: 600,
            election_timeout_max: 1200,
            // A snapshot names a journal position; a follower installing it ships the journal
            // up to there from a peer (`JournalStateMachine::ship`). What it covers, raft
            // purges and retention may delete.
            snapshot_policy: match config.replication.snapshot_entries {
                0 => openraft::SnapshotPolicy::Never,
                n => openraft::SnapshotPolicy::LogsSinceLast(n),
            },
            max_in_snapshot_log_to_keep: config.replication.snapshot_entries.clamp(1, 1000),
            // A broker whose disk was replaced comes back with an empty journal: the leader
            // starts its replication over (from a snapshot if the log was purged) rather
            // than stopping. Raft's safety assumes a replica keeps what it acknowledged, so
            // a wiped replica must not be one of a quorum that is also lost.
            allow_log_reversion: Some(true),
            // Entries are whole produce batches (up to batch_bytes_max each): keep one
            // append RPC to a bounded size.
            max_payload_entries: 32,
            ..openraft::Config::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| BrokerError::Invalid(format!("raft configuration: {e}")))?,
        );
        self.replication
            .set(Replication {
                node_id,
                raft_config,
                peers: Peers::default(),
                transport: transport.clone(),
            })
            .map_err(|_| BrokerError::Replication("replication already started".into()))?;
        if !config.control.is_empty() {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = config
            .replication
            .peers
            .iter()
            .map(|p| {
                (
                    u64::from(p.id),
                    BasicNode {
                        addr: p.raft.clone(),
                    },
                )
            })
            .collect();
        let initializes = members.keys().next() == Some(&node_id);
        for (g, _) in self.groups() {
            let role = match config.master_slave_master(g) {
                Some(master) => GroupRole::MasterSlave {
                    master,
                    others: config
                        .replication
                        .peers
                        .iter()
                        .filter(|p| p.id != config.broker_id)
                        .cloned()
                        .collect(),
                },
                None => GroupRole::Raft {
                    initialize: initializes.then(|| members.clone()),
                },
            };
            self.start_group(g, role).await?;
        }
        Ok(())
    }

    /// Opens log group `g` (if not open) and starts its replication in `role`.
    pub(super) async fn start_group(
        self: &Arc<Self>,
        g: u32,
        role: GroupRole,
    ) -> Result<(), BrokerError> {
        let r = self
            .replication
            .get()
            .ok_or_else(|| BrokerError::Replication("replication is not running".into()))?;
        let group = self.open_log_group(g)?;
        let dir = group_dir(&self.config.data_dir, g);
        r.transport.register_journal(g, group.clone());
        match role {
            GroupRole::MasterSlave { master, others } => {
                let replica = MasterSlaveGroup::open_with(
                    g,
                    group,
                    &dir,
                    (self.config.broker_id, master),
                    self.config.replication.sync_replicas as usize,
                    others,
                    r.peers.master_slave_call(),
                )?;
                r.transport.register_master_slave(g, replica.clone());
                tokio::spawn(replica.clone().run());
                self.master_slave
                    .write()
                    .expect("groups lock poisoned")
                    .insert(g, replica);
            }
            GroupRole::Raft { initialize } => {
                let store = JournalLogStore::open(group.clone(), &dir)?;
                let mut sm =
                    JournalStateMachine::open(group.clone(), &dir)?.with_shipping(Shipping {
                        me: r.node_id,
                        group: g,
                        call: r.peers.master_slave_call(),
                    });
                // In a statically configured region log group 0 carries the catalog.
                if g == 0 && self.config.control.is_empty() {
                    sm = self.with_catalog_hooks(sm);
                }
                let network = GrpcNetwork::new(g, r.peers.clone());
                let raft = Raft::new(r.node_id, r.raft_config.clone(), network, store, sm)
                    .await
                    .map_err(|e| {
                        BrokerError::Replication(format!("starting raft for log group {g}: {e}"))
                    })?;
                r.transport.register(g, raft.clone());
                self.rafts
                    .write()
                    .expect("groups lock poisoned")
                    .insert(g, raft.clone());
                if let Some(members) = initialize {
                    match raft.initialize(members).await {
                        Ok(()) => {
                            tracing::info!(group = g, "initialized the log group's raft membership")
                        }
                        // Already initialized on an earlier start: nothing to do.
                        Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(
                            _,
                        ))) => {}
                        Err(e) => {
                            return Err(BrokerError::Replication(format!(
                                "initializing log group {g}: {e}"
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops hosting log group `g`: its replication stops, the group closes, and with
    /// `delete` its directory goes (the group's replicas are elsewhere now).
    pub(super) async fn stop_group(&self, g: u32, delete: bool) -> Result<(), BrokerError> {
        if let Some(r) = self.replication.get() {
            r.transport.unregister(g);
        }
        let raft = self.rafts.write().expect("groups lock poisoned").remove(&g);
        if let Some(raft) = raft {
            let _ = raft.shutdown().await;
        }
        let ms = self
            .master_slave
            .write()
            .expect("groups lock poisoned")
            .remove(&g);
        if let Some(ms) = ms {
            ms.stop();
        }
        let group = self
            .groups
            .write()
            .expect("groups lock poisoned")
            .remove(&g);
        if let Some(group) = group {
            tokio::task::spawn_blocking(move || group.close())
                .await
                .map_err(|e| BrokerError::Replication(format!("closing log group {g}: {e}")))?;
        }
        if delete {
            let dir = group_dir(&self.config.data_dir, g);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        tracing::info!(group = g, deleted = delete, "stopped hosting the log group");
        Ok(())
    }

    /// Log group 0's state machine in a static region: applies catalog changes, and puts
    /// the catalog in snapshots.
    fn with_catalog_hooks(self: &Arc<Self>, sm: JournalStateMachine) -> JournalStateMachine {
        let save = Arc::downgrade(self);
        let restore = Arc::downgrade(self);
        let broker = Arc::downgrade(self);
        sm.with_snapshot_hooks(SnapshotHooks {
            save: Arc::new(move || {
                let broker = save
                    .upgrade()
                    .ok_or_else(|| io::Error::other("broker stopped"))?;
                let snapshot = broker
                    .catalog
                    .read()
                    .expect("catalog lock poisoned")
                    .snapshot();
                serde_json::to_value(snapshot).map_err(io::Error::other)
            }),
            restore: Arc::new(move |value| {
                let broker = restore
                    .upgrade()
                    .ok_or_else(|| io::Error::other("broker stopped"))?;
                let snapshot: super::catalog::CatalogSnapshot =
                    serde_json::from_value(value.clone()).map_err(io::Error::other)?;
                broker.restore_catalog(&snapshot).map_err(io::Error::other)
            }),
        })
        .with_hook(Arc::new(move |command: &Command| {
            match (broker.upgrade(), command) {
                (Some(broker), Command::Catalog(change)) => {
                    broker.apply_catalog(change).map_err(io::Error::other)
                }
                _ => Ok(()),
            }
        }))
    }

    /// Stops every group's raft and master-slave task.
    pub async fn stop_replication(&self) {
        let rafts: Vec<GroupRaft> = self
            .rafts
            .read()
            .expect("groups lock poisoned")
            .values()
            .cloned()
            .collect();
        for raft in rafts {
            let _ = raft.shutdown().await;
        }
        for replica in self
            .master_slave
            .read()
            .expect("groups lock poisoned")
            .values()
        {
            replica.stop();
        }
    }

    pub(super) fn raft(&self, group: u32) -> Option<GroupRaft> {
        self.rafts
            .read()
            .expect("groups lock poisoned")
            .get(&group)
            .cloned()
    }

    /// The master-slave replica of `group`, if it is replicated that way.
    pub(super) fn master_slave_group(&self, group: u32) -> Option<Arc<MasterSlaveGroup>> {
        self.master_slave
            .read()
            .expect("groups lock poisoned")
            .get(&group)
            .cloned()
    }

    /// Fails with `NotLeader` unless this broker leads `group`. Reads raft's published
    /// metrics rather than asking the raft task, so it costs no round trip.
    pub(super) fn require_leader(&self, group: u32) -> Result<(), BrokerError> {
        use openraft::type_config::async_runtime::WatchReceiver;
        if let Some(ms) = self.master_slave_group(group) {
            let role = ms.role();
            if role.master == Some(self.config.broker_id) {
                return Ok(());
            }
            return Err(self.not_leader(group, role.master.map(u64::from)));
        }
        let Some(raft) = self.raft(group) else {
            return Ok(());
        };
        let leader = raft.metrics().borrow_watched().current_leader;
        if leader == Some(u64::from(self.config.broker_id)) {
            return Ok(());
        }
        Err(self.not_leader(group, leader))
    }

    pub(super) fn not_leader(&self, group: u32, leader: Option<u64>) -> BrokerError {
        let leader = leader.and_then(|id| self.peer(u32::try_from(id).ok()?));
        BrokerError::NotLeader {
            group,
            epoch: self.epoch(group),
            leader_id: leader.as_ref().map(|p| p.id),
            leader: leader.map(|p| p.grpc),
        }
    }

    /// The region's brokers as this broker knows them (configured peers, or the control
    /// plane's view).
    pub fn directory(&self) -> Vec<crate::config::Peer> {
        self.directory
            .read()
            .expect("directory lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// A broker of the region, from the directory.
    pub(super) fn peer(&self, id: u32) -> Option<crate::config::Peer> {
        self.directory
            .read()
            .expect("directory lock poisoned")
            .get(&id)
            .cloned()
    }

    /// The group's leadership epoch: its current raft term.
    pub fn epoch(&self, group: u32) -> u64 {
        use openraft::type_config::async_runtime::WatchReceiver;
        if let Some(ms) = self.master_slave_group(group) {
            return ms.role().epoch;
        }
        self.raft(group)
            .map_or(0, |raft| raft.metrics().borrow_watched().current_term)
    }

    /// Replicates a command through `group`'s raft; returns once a quorum holds it and it is
    /// applied here.
    pub(super) async fn replicate(
        &self,
        group: u32,
        command: Command,
    ) -> Result<CommandResult, BrokerError> {
        self.replicate_indexed(group, command).await.map(|(r, _)| r)
    }

    /// [`Broker::replicate`], also returning the entry's log index.
    async fn replicate_indexed(
        &self,
        group: u32,
        command: Command,
    ) -> Result<(CommandResult, u64), BrokerError> {
        let raft = self
            .raft(group)
            .ok_or_else(|| BrokerError::Replication("replication is not running".into()))?;
        match raft.client_write(command).await {
            Ok(resp) => Ok((resp.data, resp.log_id.index)),
            Err(e) => Err(self.raft_error(group, e)),
        }
    }

    /// Waits until every voter of `group` holds the entry at `index`.
    async fn wait_all_replicas(&self, group: u32, index: u64) -> Result<(), BrokerError> {
        let raft = self
            .raft(group)
            .ok_or_else(|| BrokerError::Replication("replication is not running".into()))?;
        let all_hold = move |m: &openraft::RaftMetrics<crate::replication::raft::TypeConfig>| {
            let Some(replication) = &m.replication else {
                return false;
            };
            m.membership_config.voter_ids().all(|id| {
                id == m.id
                    || replication
                        .get(&id)
                        .is_some_and(|matched| matched.is_some_and(|l| l.index >= index))
            })
        };
        raft.wait(Some(ACKS_ALL_WAIT)).metrics(all_hold, "every replica holds the entry").await.map_err(|_| {
            BrokerError::Replication(format!(
                "acks=all: not every replica of log group {group} acknowledged within {} s (the batch is committed at quorum)",
                ACKS_ALL_WAIT.as_secs()
            ))
        })?;
        Ok(())
    }

    /// Creates a topic through log group 0's raft.
    pub(super) async fn create_topic_replicated(
        &self,
        name: &str,
        partitions: u32,
        replication: Strategy,
    ) -> Result<Topic, BrokerError> {
        let _serial = self.catalog_writes.lock().await;
        self.require_leader(0)?;
        if let Some(raft) = self.raft(0) {
            // Every committed catalog change is applied here before the next id is chosen.
            raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
                .await
                .map_err(|e| BrokerError::Replication(format!("log group 0: {e}")))?;
        }
        let (id, groups) = {
            let catalog = self.catalog.read().expect("catalog lock poisoned");
            if catalog.get(name).is_some() {
                return Err(BrokerError::TopicExists(name.to_owned()));
            }
            let id = catalog.next_id();
            (id, self.spread(id, partitions, replication))
        };
        let change = CatalogChange::CreateTopic {
            name: name.to_owned(),
            id,
            groups,
            created_ms: now_ms(),
            replication,
        };
        self.replicate(0, Command::Catalog(change)).await?;
        self.topic(name)
    }

    /// Adds partitions to a topic through log group 0's raft: the same entry as a creation,
    /// with the same id and more groups (every broker adds what it does not hold).
    pub(super) async fn grow_topic_replicated(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<Topic, BrokerError> {
        let _serial = self.catalog_writes.lock().await;
        self.require_leader(0)?;
        let topic = self.topic(name)?;
        let groups = self.grown_groups(&topic, partitions)?;
        let change = CatalogChange::CreateTopic {
            name: name.to_owned(),
            id: topic.id,
            groups,
            created_ms: topic.created_ms,
            replication: topic.replication,
        };
        self.replicate(0, Command::Catalog(change)).await?;
        self.topic(name)
    }

    /// Deletes a topic through log group 0's raft.
    pub(super) async fn delete_topic_replicated(&self, name: &str) -> Result<(), BrokerError> {
        let _serial = self.catalog_writes.lock().await;
        self.require_leader(0)?;
        let topic = self.topic(name)?;
        self.replicate(
            0,
            Command::Catalog(CatalogChange::DeleteTopic {
                name: name.to_owned(),
                id: topic.id,
            }),
        )
        .await?;
        Ok(())
    }

    /// Makes the local catalog the one a snapshot of log group 0 carries: topics it lacks
    /// are created, topics it no longer has are deleted, retired ids are kept.
    fn restore_catalog(
        &self,
        snapshot: &super::catalog::CatalogSnapshot,
    ) -> Result<(), BrokerError> {
        for local in self.topics() {
            if !snapshot
                .topics
                .iter()
                .any(|t| t.name == local.name && t.id == local.id)
            {
                self.delete_topic_local(&local.name)?;
            }
        }
        for topic in &snapshot.topics {
            let held = self
                .catalog
                .read()
                .expect("catalog lock poisoned")
                .get(&topic.name)
                .map(|t| (t.id, t.groups.len()));
            if held.is_none_or(|(id, n)| id != topic.id || n < topic.groups.len()) {
                self.create_topic_local(topic.clone())?;
            }
        }
        for &id in &snapshot.retired {
            self.catalog
                .write()
                .expect("catalog lock poisoned")
                .retire(id)?;
            for (_, g) in self.groups() {
                g.retire_topic(id);
            }
        }
        tracing::info!(
            topics = snapshot.topics.len(),
            "topic catalog restored from a snapshot"
        );
        Ok(())
    }

    /// Applies a catalog change from log group 0 (on every broker, the leader included).
    /// Idempotent: entries are applied again after a restart.
    fn apply_catalog(&self, change: &CatalogChange) -> Result<(), BrokerError> {
        match change {
            CatalogChange::CreateTopic {
                name,
                id,
                groups,
                created_ms,
                replication,
            } => {
                match self
                    .catalog
                    .read()
                    .expect("catalog lock poisoned")
                    .get(name)
                {
                    Some(t) if t.id == *id && t.groups.len() >= groups.len() => return Ok(()),
                    // Partitions added: the same topic with more groups.
                    Some(t) if t.id == *id => {
                        let mut grown = t.clone();
                        grown.groups = groups.clone();
                        self.create_topic_local(grown)?;
                        return Ok(());
                    }
                    Some(t) => {
                        tracing::warn!(topic = %name, id, existing = t.id, "ignoring a catalog entry for a name already in use");
                        return Ok(());
                    }
                    None => {}
                }
                self.create_topic_local(Topic {
                    name: name.clone(),
                    id: *id,
                    groups: groups.clone(),
                    created_ms: *created_ms,
                    replication: *replication,
                    acks: Acks::default(),
                    home: None,
                })?;
            }
            CatalogChange::DeleteTopic { name, id } => {
                let current = self
                    .catalog
                    .read()
                    .expect("catalog lock poisoned")
                    .get(name)
                    .map(|t| t.id);
                if current == Some(*id) {
                    self.delete_topic_local(name)?;
                }
            }
        }
        Ok(())
    }

    /// Appends a batch `(partition, count, payload)` through the partition's group raft,
    /// fencing a producer whose `epoch` (when not 0) is older than the group's.
    pub(super) async fn append_replicated(
        &self,
        group: u32,
        (key, count, payload): (crate::storage::PartitionKey, u32, Bytes),
        acks: Acks,
        epoch: u64,
    ) -> Result<Produced, BrokerError> {
        // No leadership check here: a follower's raft refuses the write with ForwardToLeader,
        // which `replicate` turns into NotLeader.
        let current = self.epoch(group);
        check_epoch(group, epoch, current)?;
        if acks == Acks::Leader {
            return self
                .append_replicated_leader_only(group, (key, count, payload), current)
                .await;
        }
        let command = Command::Batch {
            topic_id: key.0,
            partition: key.1,
            count,
            payload,
            mirrored: false,
            local_ack: LocalAck::default(),
        };
        let (result, index) = self.replicate_indexed(group, command).await?;
        if acks == Acks::All {
            self.wait_all_replicas(group, index).await?;
        }
        match (result.base_offset, result.append_time_ms) {
            (Some(base_offset), Some(append_time_ms)) => Ok(Produced {
                base_offset,
                append_time_ms,
                epoch: current,
            }),
            _ => Err(BrokerError::Replication(
                "the replicated batch left no record".into(),
            )),
        }
    }
}

impl Broker {
    /// acks=leader on a raft group: proposes the batch and answers as soon as the leader's
    /// own journal holds it, while raft replicates and commits it in the background. Like
    /// Kafka's acks=1, a leader that fails before a quorum holds the batch may lose it.
    async fn append_replicated_leader_only(
        &self,
        group: u32,
        (key, count, payload): (crate::storage::PartitionKey, u32, Bytes),
        epoch: u64,
    ) -> Result<Produced, BrokerError> {
        let raft = self
            .raft(group)
            .ok_or_else(|| BrokerError::Replication("replication is not running".into()))?;
        let (local_ack, appended) = LocalAck::new();
        let command = Command::Batch {
            topic_id: key.0,
            partition: key.1,
            count,
            payload,
            mirrored: false,
            local_ack,
        };
        // Proposed here, in the caller's order (a Kafka connection's pipelined produces of
        // one partition must be appended in the order they came), not from a spawned task.
        let (responder, committed) = openraft::impls::ProgressResponder::complete_only();
        raft.client_write_ff(command, Some(responder))
            .await
            .map_err(|e| BrokerError::Replication(format!("log group {group}: {e}")))?;
        match appended.await {
            Ok(a) => {
                tokio::spawn(async move {
                    if let Ok(Err(e)) = committed.await {
                        tracing::debug!(group, error = %e, "an acks=leader batch was not committed");
                    }
                });
                Ok(Produced {
                    base_offset: a.base_offset,
                    append_time_ms: a.append_time_ms,
                    epoch,
                })
            }
            // Never appended here: the write failed; say why.
            Err(_) => match committed.await {
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => {
                    Err(self.not_leader(group, f.leader_id))
                }
                Ok(Err(e)) => Err(BrokerError::Replication(format!("log group {group}: {e}"))),
                Ok(Ok(_)) | Err(_) => Err(BrokerError::Replication(format!(
                    "log group {group}: the batch was not appended on the leader"
                ))),
            },
        }
    }
}

/// Fences a produce by the epoch it carries (0: not fenced): an older epoch means the
/// producer is behind, a newer one that this broker is.
fn check_epoch(group: u32, epoch: u64, current: u64) -> Result<(), BrokerError> {
    if epoch == 0 || epoch == current {
        Ok(())
    } else if epoch < current {
        Err(BrokerError::StaleEpoch {
            group,
            epoch,
            current,
        })
    } else {
        Err(BrokerError::EpochAhead {
            group,
            epoch,
            current,
        })
    }
}

/// How long a quorum produce on a master-slave group waits for its slaves.
const MASTER_SLAVE_COMMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Broker {
    /// Appends a batch on a master-slave group's master and waits for `acks`.
    pub(super) async fn append_master_slave(
        &self,
        group: u32,
        (key, count, payload): (crate::storage::PartitionKey, u32, Bytes),
        acks: Acks,
        epoch: u64,
    ) -> Result<Produced, BrokerError> {
        let role = self.master_role(group)?;
        check_epoch(group, epoch, role.epoch)?;
        let appended = self.hosted(group)?.append(key, payload, count).await?;
        self.wait_master_slave(
            group,
            appended.position + u64::from(appended.len),
            role,
            acks,
        )
        .await?;
        Ok(Produced {
            base_offset: appended.base_offset,
            append_time_ms: appended.append_time_ms,
            epoch: role.epoch,
        })
    }

    /// Commits a consumer group's offset through a master-slave group's journal.
    pub(super) async fn commit_offset_master_slave(
        &self,
        group: u32,
        group_name: &str,
        key: crate::storage::PartitionKey,
        offset: u64,
    ) -> Result<(), BrokerError> {
        let role = self.master_role(group)?;
        let appended = self
            .hosted(group)?
            .commit_offset(group_name, key, offset)
            .await?;
        self.wait_master_slave(
            group,
            appended.position + u64::from(appended.len),
            role,
            Acks::Quorum,
        )
        .await
    }

    /// The group's role, if this broker is its master; `NotLeader` otherwise.
    fn master_role(&self, group: u32) -> Result<Role, BrokerError> {
        let ms = self.master_slave_group(group).ok_or_else(|| {
            BrokerError::Replication(format!("log group {group} is not master-slave"))
        })?;
        let role = ms.role();
        if role.master != Some(self.config.broker_id) {
            return Err(self.not_leader(group, role.master.map(u64::from)));
        }
        Ok(role)
    }

    /// Waits until a record ending at `end`, written at `role`, satisfies `acks`.
    async fn wait_master_slave(
        &self,
        group: u32,
        end: u64,
        role: Role,
        acks: Acks,
    ) -> Result<(), BrokerError> {
        let ms = self.master_slave_group(group).ok_or_else(|| {
            BrokerError::Replication(format!("log group {group} is not master-slave"))
        })?;
        let failed = |e: WaitError, what: &str| match e {
            WaitError::RoleChanged(now) => BrokerError::Replication(format!(
                "log group {group} failed over (epoch {}, master {:?}) before the batch was committed: it may or may not be stored",
                now.epoch, now.master
            )),
            WaitError::Timeout => BrokerError::Replication(what.to_owned()),
            WaitError::Closed => BrokerError::Append(crate::storage::AppendError::Closed),
        };
        match acks {
            Acks::Leader => {
                ms.advance_watermark();
                Ok(())
            }
            Acks::Quorum | Acks::All => {
                ms.wait_committed(end, role.epoch, MASTER_SLAVE_COMMIT_WAIT)
                    .await
                    .map_err(|e| {
                        failed(
                            e,
                            &format!(
                                "fewer than {} slave(s) of log group {group} acknowledged within {} s: the batch is not committed yet (it may still be); check the group's slaves",
                                ms.sync_replicas(),
                                MASTER_SLAVE_COMMIT_WAIT.as_secs()
                            ),
                        )
                    })?;
                if acks == Acks::All {
                    ms.wait_all(end, role.epoch, ACKS_ALL_WAIT).await.map_err(|e| {
                        failed(
                            e,
                            &format!(
                                "acks=all: not every replica of log group {group} acknowledged within {} s (the batch is committed at quorum)",
                                ACKS_ALL_WAIT.as_secs()
                            ),
                        )
                    })?;
                }
                Ok(())
            }
        }
    }

    /// Sets a master-slave group's epoch and master on this broker (a failover step).
    pub async fn set_master(
        &self,
        group: u32,
        epoch: u64,
        master: Option<u32>,
    ) -> Result<(), BrokerError> {
        let ms = self.master_slave_group(group).ok_or_else(|| {
            BrokerError::Invalid(format!(
                "log group {group} is not replicated master-slave on this broker"
            ))
        })?;
        ms.set_role(Role { epoch, master })
            .await
            .map(|_| ())
            .map_err(BrokerError::Invalid)
    }

    /// Adds and removes voting replicas of a raft group (on its leader). An added broker is
    /// first a learner and catches up; it votes once it has.
    pub async fn change_replicas(
        &self,
        group: u32,
        add: &[u32],
        remove: &[u32],
    ) -> Result<(), BrokerError> {
        use openraft::type_config::async_runtime::WatchReceiver;
        let raft = self.raft(group).ok_or_else(|| {
            BrokerError::Invalid(format!(
                "log group {group} is not replicated by raft here: replicas of master-slave groups are fixed by configuration"
            ))
        })?;
        self.require_leader(group)?;
        let peer = |id: u32| {
            self.peer(id).ok_or_else(|| {
                BrokerError::Invalid(format!("broker {id} is not a broker of this region"))
            })
        };
        let metrics = raft.metrics().borrow_watched().clone();
        let mut voters: std::collections::BTreeSet<u64> =
            metrics.membership_config.voter_ids().collect();
        for &id in add {
            let p = peer(id)?;
            if !voters.contains(&u64::from(id)) {
                raft.add_learner(
                    u64::from(id),
                    BasicNode {
                        addr: p.raft.clone(),
                    },
                    true,
                )
                .await
                .map_err(|e| self.raft_error(group, e))?;
                voters.insert(u64::from(id));
            }
        }
        for &id in remove {
            peer(id)?;
            voters.remove(&u64::from(id));
        }
        if voters.is_empty() {
            return Err(BrokerError::Invalid(format!(
                "log group {group} needs at least one replica"
            )));
        }
        raft.change_membership(voters.clone(), false)
            .await
            .map_err(|e| self.raft_error(group, e))?;
        tracing::info!(group, ?voters, "log group replicas changed");
        Ok(())
    }

    fn raft_error(
        &self,
        group: u32,
        e: RaftError<
            crate::replication::raft::TypeConfig,
            ClientWriteError<crate::replication::raft::TypeConfig>,
        >,
    ) -> BrokerError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                self.not_leader(group, f.leader_id)
            }
            e => BrokerError::Replication(format!("log group {group}: {e}")),
        }
    }

    /// The brokers holding log group `g`, as far as this broker knows: raft's voters where
    /// it hosts the group, else the leader alone (empty when it knows none).
    pub fn replicas_of(&self, g: u32) -> Vec<u32> {
        use openraft::type_config::async_runtime::WatchReceiver;
        if let Some(raft) = self.raft(g) {
            let m = raft.metrics().borrow_watched().clone();
            let voters: Vec<u32> = m.membership_config.voter_ids().map(|v| v as u32).collect();
            if !voters.is_empty() {
                return voters;
            }
        }
        self.leader_id(g).into_iter().collect()
    }

    /// The replication state of every log group on this broker.
    pub fn log_groups_info(&self) -> Vec<LogGroupState> {
        use openraft::type_config::async_runtime::WatchReceiver;
        self.groups()
            .into_iter()
            .map(|(g, group)| {
                let (last_index, last_term) = group.last_record().unwrap_or((0, 0));
                let mut state = LogGroupState {
                    group: g,
                    strategy: "none",
                    epoch: 0,
                    leader: None,
                    start_position: group.positions().0,
                    end_position: group.positions().1,
                    last_index,
                    last_term,
                    watermark: group.watermark(),
                    replicas: Vec::new(),
                    sync_replicas: 0,
                    voters: Vec::new(),
                };
                if let Some(ms) = self.master_slave_group(g) {
                    let role = ms.role();
                    state.strategy = "master-slave";
                    state.epoch = role.epoch;
                    state.leader = role.master;
                    state.sync_replicas = ms.sync_replicas() as u32;
                    if ms.is_master() {
                        state.replicas = ms.slave_positions();
                    }
                } else if let Some(raft) = self.raft(g) {
                    let m = raft.metrics().borrow_watched().clone();
                    state.strategy = "raft";
                    state.epoch = m.current_term;
                    state.leader = m.current_leader.map(|l| l as u32);
                    state.voters = m.membership_config.voter_ids().map(|v| v as u32).collect();
                    if let Some(replication) = &m.replication {
                        state.replicas = replication
                            .iter()
                            .filter(|(id, _)| **id != m.id)
                            .map(|(id, matched)| {
                                let position = matched
                                    .and_then(|l| group.end_of_record(l.index))
                                    .unwrap_or(0);
                                (*id as u32, position)
                            })
                            .collect();
                    }
                }
                state
            })
            .collect()
    }
}

/// One log group's replication state on this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogGroupState {
    /// The group.
    pub group: u32,
    /// `raft`, `master-slave` or `none`.
    pub strategy: &'static str,
    /// Raft term or master-slave epoch.
    pub epoch: u64,
    /// The leader (master) as known here.
    pub leader: Option<u32>,
    /// Start of this replica's journal.
    pub start_position: u64,
    /// End of this replica's journal.
    pub end_position: u64,
    /// Index of its last record.
    pub last_index: u64,
    /// Term of its last record.
    pub last_term: u64,
    /// Commit watermark here.
    pub watermark: u64,
    /// On the leader: each follower's journal end.
    pub replicas: Vec<(u32, u64)>,
    /// Master-slave: slaves a commit needs.
    pub sync_replicas: u32,
    /// Raft: the voting replicas.
    pub voters: Vec<u32>,
}
