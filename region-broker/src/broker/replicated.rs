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

use super::{ACKS_ALL_WAIT, Acks, Broker, BrokerError, Produced, Topic, group_dir, now_ms};
use crate::replication::raft::{
    CatalogChange, Command, CommandResult, JournalLogStore, JournalStateMachine,
};
use crate::replication::transport::{GroupRaft, GrpcNetwork, Peers, RaftTransportService};

impl Broker {
    /// Starts one raft per log group, registered with `transport`. The broker with the
    /// lowest id initializes the groups' membership (all peers) on its first start.
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
            // Snapshots do not ship journal segments yet: a replica that needed one would
            // get the state machine's metadata without the messages. So raft never builds
            // snapshots or purges its log, and lagging replicas catch up from the log.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            ..openraft::Config::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| BrokerError::Invalid(format!("raft configuration: {e}")))?,
        );
        let peers = Peers::default();
        let mut rafts = Vec::with_capacity(self.groups.len());
        for (g, group) in self.groups.iter().enumerate() {
            let dir = group_dir(&config.data_dir, g as u32);
            let store = JournalLogStore::open(group.clone(), &dir)?;
            let mut sm = JournalStateMachine::open(group.clone(), &dir)?;
            if g == 0 {
                let broker = Arc::downgrade(self);
                sm = sm.with_hook(Arc::new(move |command: &Command| {
                    match (broker.upgrade(), command) {
                        (Some(broker), Command::Catalog(change)) => {
                            broker.apply_catalog(change).map_err(io::Error::other)
                        }
                        _ => Ok(()),
                    }
                }));
            }
            let network = GrpcNetwork::new(g as u32, peers.clone());
            let raft = Raft::new(node_id, raft_config.clone(), network, store, sm)
                .await
                .map_err(|e| {
                    BrokerError::Replication(format!("starting raft for log group {g}: {e}"))
                })?;
            transport.register(g as u32, raft.clone());
            rafts.push(raft);
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
        if members.keys().next() == Some(&node_id) {
            for (g, raft) in rafts.iter().enumerate() {
                match raft.initialize(members.clone()).await {
                    Ok(()) => {
                        tracing::info!(group = g, "initialized the log group's raft membership")
                    }
                    // Already initialized on an earlier start: nothing to do.
                    Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
                    Err(e) => {
                        return Err(BrokerError::Replication(format!(
                            "initializing log group {g}: {e}"
                        )));
                    }
                }
            }
        }
        if self.rafts.set(rafts).is_err() {
            return Err(BrokerError::Replication(
                "replication already started".into(),
            ));
        }
        Ok(())
    }

    /// Stops every group's raft.
    pub async fn stop_replication(&self) {
        if let Some(rafts) = self.rafts.get() {
            for raft in rafts {
                let _ = raft.shutdown().await;
            }
        }
    }

    pub(super) fn raft(&self, group: u32) -> Option<&GroupRaft> {
        self.rafts.get().map(|r| &r[group as usize])
    }

    /// Fails with `NotLeader` unless this broker leads `group`. Reads raft's published
    /// metrics rather than asking the raft task, so it costs no round trip.
    pub(super) fn require_leader(&self, group: u32) -> Result<(), BrokerError> {
        use openraft::type_config::async_runtime::WatchReceiver;
        let Some(raft) = self.raft(group) else {
            return Ok(());
        };
        let leader = raft.metrics().borrow_watched().current_leader;
        if leader == Some(u64::from(self.config.broker_id)) {
            return Ok(());
        }
        Err(self.not_leader(group, leader))
    }

    fn not_leader(&self, group: u32, leader: Option<u64>) -> BrokerError {
        let leader = leader.and_then(|id| {
            self.config
                .replication
                .peers
                .iter()
                .find(|p| u64::from(p.id) == id)
        });
        BrokerError::NotLeader {
            group,
            epoch: self.epoch(group),
            leader_id: leader.map(|p| p.id),
            leader: leader.map(|p| p.grpc.clone()),
        }
    }

    /// The group's leadership epoch: its current raft term.
    pub(super) fn epoch(&self, group: u32) -> u64 {
        use openraft::type_config::async_runtime::WatchReceiver;
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
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(self.not_leader(group, f.leader_id))
            }
            Err(e) => Err(BrokerError::Replication(format!("log group {group}: {e}"))),
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
            (id, self.spread(id, partitions))
        };
        let change = CatalogChange::CreateTopic {
            name: name.to_owned(),
            id,
            groups,
            created_ms: now_ms(),
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

    /// Applies a catalog change from log group 0 (on every broker, the leader included).
    /// Idempotent: entries are applied again after a restart.
    fn apply_catalog(&self, change: &CatalogChange) -> Result<(), BrokerError> {
        match change {
            CatalogChange::CreateTopic {
                name,
                id,
                groups,
                created_ms,
            } => {
                match self
                    .catalog
                    .read()
                    .expect("catalog lock poisoned")
                    .get(name)
                {
                    Some(t) if t.id == *id => return Ok(()),
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

    /// Appends a batch through the partition's group raft.
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
        if epoch != 0 && epoch < current {
            return Err(BrokerError::StaleEpoch {
                group,
                epoch,
                current,
            });
        }
        let command = Command::Batch {
            topic_id: key.0,
            partition: key.1,
            count,
            payload,
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
