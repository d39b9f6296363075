//! The log-group layer: one [`HostedGroup`] per log group this broker hosts, owning the
//! group's storage ([`storage::LogGroup`]) and its replication ([`Replication`]: standalone,
//! raft or master-slave), and carrying every per-group operation — append at each ack
//! level, the epoch check, waiting for replicas, offset commits, mirrored appends,
//! failover, membership changes, its reported state, stop. Each operation chooses what to
//! do by the group's replication in one `match` here; the broker core above never asks
//! which kind of group it holds.
//!
//! Errors are [`LogGroupError`]s naming leaders by broker id; the broker turns them into
//! its own errors (adding the leader's address from its directory).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::origin::Origin;
use meridian_proto::producer::ProducerBatch;
use openraft::BasicNode;
use openraft::error::{ClientWriteError, RaftError};
use openraft::type_config::async_runtime::WatchReceiver;

use crate::replication::in_sync::{InSync, acks_all_needs};
use crate::replication::master_slave::{MasterSlaveGroup, Role, WaitError};
use crate::replication::raft::{Command, CommandResult, LocalAck, TypeConfig};
use crate::replication::transport::GroupRaft;
use crate::storage::transactions::TxnPart;
use crate::storage::{self, AppendError, PartitionKey, SeqCheck};

pub use crate::replication::{Strategy, UnknownStrategy};
use error::not_running;
pub use error::{LogGroupError, check_epoch};
pub use leadership::{Transferred, preference_order};

mod error;
mod idempotent;
mod in_sync_set;
mod leadership;
mod mirrored;
mod retention;

pub use meridian_proto::settings::{Acks, UnknownAcks};

/// What an append waits for: `acks`, and with [`Acks::All`] at least `min_insync`
/// replicas in sync before it is written and holding it before it is answered — the more
/// of this and the group's `min_insync_replicas` (a topic's own `min.insync.replicas`
/// raises it; 0: the group's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// What the producer asked for.
    pub acks: Acks,
    /// The topic's `min.insync.replicas` (0: none of its own).
    pub min_insync: u32,
}

impl From<Acks> for Ack {
    fn from(acks: Acks) -> Ack {
        Ack {
            acks,
            min_insync: 0,
        }
    }
}

/// How long a follower may go without catching up with its leader's log end, or without
/// answering it, before it is out of sync (Kafka's `replica.lag.time.max.ms`, shorter:
/// acknowledgements must not stop for long when a follower does).
pub const REPLICA_LAG: Duration = Duration::from_millis(1500);

/// How often a leader observes its followers for the in-sync set.
const OBSERVE_EVERY: Duration = Duration::from_millis(100);

/// How long a produce with [`Acks::All`] waits for the replicas `min_insync_replicas`
/// asks for beyond the commit quorum.
pub const ACKS_ALL_WAIT: Duration = Duration::from_secs(5);

/// How long a quorum produce on a master-slave group waits for its slaves.
const MASTER_SLAVE_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// How long an idempotent producer's retry waits for the first write of its batch to be
/// committed before it is answered with that write's offset.
const DUPLICATE_COMMIT_WAIT: Duration = Duration::from_secs(10);

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

/// How one hosted log group replicates on this broker.
#[derive(Debug, Clone)]
pub enum Replication {
    /// Not at all: a broker running alone.
    Standalone,
    /// The broker replicates, but this group's replication has not started (or failed to
    /// start): writes fail until it runs.
    Starting,
    /// By raft over the region's brokers.
    Raft(GroupRaft),
    /// A master and slaves pulling from it.
    MasterSlave(Arc<MasterSlaveGroup>),
}

/// One log group's replication state on this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogGroupState {
    /// The log group.
    pub log_group: u32,
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

/// A log group hosted by this broker: its storage and how it replicates.
#[derive(Debug)]
pub struct HostedGroup {
    id: u32,
    /// This broker's id (what "leading" means here).
    me: u32,
    storage: Arc<storage::LogGroup>,
    replication: Replication,
    /// Replicas an `acks=all` produce needs at least (0: the commit quorum).
    min_insync: u32,
    /// Which replicas are in sync, as this broker sees them while it leads.
    in_sync: Mutex<InSync>,
    /// Serializes an idempotent producer's appends and transaction markers on one
    /// partition (check, write, answer): [`HostedGroup::lock_producer`].
    #[allow(clippy::type_complexity)]
    producer_locks: Mutex<HashMap<(PartitionKey, i64), Arc<tokio::sync::Mutex<()>>>>,
    /// The raft term in which this broker, leading, last made sure its storage holds and
    /// has applied the whole log (so producer sequences and mirror marks cover it); 0: not
    /// yet, or a write failed since (its entry may still apply).
    applied_in_term: AtomicU64,
}

/// A batch mirrored from another region, for [`HostedGroup::append_mirrored`].
#[derive(Debug, Clone)]
pub struct MirroredBatch {
    /// Its partition here.
    pub key: PartitionKey,
    /// Where it was first written.
    pub origin: Origin,
    /// Messages in it.
    pub count: u32,
    /// The encoded message batch, as the origin stored it.
    pub payload: Bytes,
    /// A committed transaction's batch or commit marker: its producer here, and which.
    pub txn: Option<(ProducerBatch, TxnPart)>,
}

impl HostedGroup {
    /// Log group `id` of broker `me`, over `storage`, replicating as `replication`.
    /// An `acks=all` produce needs at least `min_insync` replicas (0: the commit quorum).
    pub fn new(
        id: u32,
        me: u32,
        storage: Arc<storage::LogGroup>,
        replication: Replication,
        min_insync: u32,
    ) -> HostedGroup {
        HostedGroup {
            id,
            me,
            storage,
            replication,
            min_insync,
            in_sync: Mutex::new(InSync::new(REPLICA_LAG)),
            producer_locks: Mutex::new(HashMap::new()),
            applied_in_term: AtomicU64::new(0),
        }
    }

    /// The same group and storage, replicating as `replication` now.
    pub fn with_replication(&self, replication: Replication) -> HostedGroup {
        HostedGroup::new(
            self.id,
            self.me,
            self.storage.clone(),
            replication,
            self.min_insync,
        )
    }

    /// Runs `round` every `period` while the group is hosted and replicates (the task holds
    /// it weakly and ends once it is dropped); a late round is skipped, not run twice.
    pub(crate) fn every<F, Fut>(self: &Arc<Self>, period: Duration, round: F)
    where
        F: Fn(Arc<HostedGroup>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        if !self.is_replicating() {
            return;
        }
        let group = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(group) = group.upgrade() else {
                    return;
                };
                round(group).await;
            }
        });
    }

    /// The log group's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Its storage.
    pub fn storage(&self) -> &Arc<storage::LogGroup> {
        &self.storage
    }

    /// How it replicates.
    pub fn replication(&self) -> &Replication {
        &self.replication
    }

    /// Whether its replication (raft or master-slave) runs.
    pub fn is_replicating(&self) -> bool {
        matches!(
            self.replication,
            Replication::Raft(_) | Replication::MasterSlave(_)
        )
    }

    /// Its raft, when replicated by raft.
    pub fn raft(&self) -> Option<&GroupRaft> {
        match &self.replication {
            Replication::Raft(raft) => Some(raft),
            _ => None,
        }
    }

    /// Fails with `NotLeader` unless this broker leads the group (a group that does not
    /// replicate is led here). Reads raft's published metrics rather than asking the raft
    /// task, so it costs no round trip.
    pub fn check_leader(&self) -> Result<(), LogGroupError> {
        let leader = match &self.replication {
            Replication::Standalone | Replication::Starting => return Ok(()),
            Replication::MasterSlave(ms) => ms.role().master.map(u64::from),
            Replication::Raft(raft) => raft.metrics().borrow_watched().current_leader,
        };
        if leader == Some(u64::from(self.me)) {
            return Ok(());
        }
        Err(LogGroupError::NotLeader {
            log_group: self.id,
            leader,
        })
    }

    /// The group's leadership epoch: its raft term or master-slave epoch (0 otherwise).
    pub fn epoch(&self) -> u64 {
        match &self.replication {
            Replication::Standalone | Replication::Starting => 0,
            Replication::MasterSlave(ms) => ms.role().epoch,
            Replication::Raft(raft) => raft.metrics().borrow_watched().current_term,
        }
    }

    /// The epoch, when this broker leads the replicated group now (polled often: raft's
    /// metrics are read in place, not copied).
    pub fn leading(&self) -> Option<u64> {
        match &self.replication {
            Replication::Standalone | Replication::Starting => None,
            Replication::MasterSlave(ms) => {
                let role = ms.role();
                (role.master == Some(self.me)).then_some(role.epoch)
            }
            Replication::Raft(raft) => {
                let metrics = raft.metrics();
                let m = metrics.borrow_watched();
                (m.current_leader == Some(u64::from(self.me))).then_some(m.current_term)
            }
        }
    }

    /// The brokers holding the group as raft knows them (its voters); empty otherwise.
    pub fn voters(&self) -> Vec<u32> {
        match &self.replication {
            Replication::Raft(raft) => raft
                .metrics()
                .borrow_watched()
                .membership_config
                .voter_ids()
                .map(|v| v as u32)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Appends a batch `(partition, count, payload)` and waits for `acks`, fencing a
    /// producer whose `epoch` (when not 0) differs from the group's.
    pub async fn append(
        &self,
        batch: (PartitionKey, u32, Bytes),
        acks: impl Into<Ack>,
        epoch: u64,
    ) -> Result<Produced, LogGroupError> {
        self.append_batch(batch, None, acks.into(), epoch).await
    }

    /// Writes a transaction marker (`commit` or abort) for `producer` into a partition:
    /// its open transaction there ends, and readers of committed data move past it. A
    /// marker carries no sequence of its own; writing one twice is harmless (the second
    /// ends nothing).
    pub async fn append_marker(
        &self,
        key: PartitionKey,
        producer: (i64, i16),
        marker: meridian_proto::record::TxnMarker,
        acks: Acks,
    ) -> Result<Produced, LogGroupError> {
        self.check_leader()?;
        // In the producer's turn: a transaction's first batch, verified in the open
        // transaction under it, is written before this marker, never after.
        let _turn = self.lock_producer(key, producer.0).await;
        let p = ProducerBatch {
            id: producer.0,
            epoch: producer.1,
            first_sequence: 0,
            last_sequence: 0,
        };
        let mut payload = Vec::with_capacity(meridian_proto::record::MARKER_LEN);
        marker.encode(&mut payload);
        let payload = Bytes::from(payload);
        self.append_batch(
            (key, 1, payload),
            Some((p, Some(TxnPart::Marker))),
            acks.into(),
            0,
        )
        .await
    }

    /// [`HostedGroup::append`], writing `producer` (an idempotent producer's batch, checked
    /// by the caller) into the record.
    async fn append_batch(
        &self,
        (key, count, payload): (PartitionKey, u32, Bytes),
        producer: Option<(ProducerBatch, Option<TxnPart>)>,
        ack: Ack,
        epoch: u64,
    ) -> Result<Produced, LogGroupError> {
        let acks = ack.acks;
        let min_insync = self.min_insync.max(ack.min_insync);
        let store = |payload| async move {
            match producer {
                Some((p, txn)) => {
                    self.storage
                        .append_producer(key, payload, count, p, txn)
                        .await
                }
                None => self.storage.append(key, payload, count).await,
            }
        };
        match &self.replication {
            Replication::Standalone => {
                let appended = store(payload).await?;
                Ok(Produced {
                    base_offset: appended.base_offset,
                    append_time_ms: appended.append_time_ms,
                    epoch: 0,
                })
            }
            Replication::Starting => {
                check_epoch(self.id, epoch, 0)?;
                Err(not_running())
            }
            Replication::MasterSlave(ms) => {
                let role = self.master_role(ms)?;
                check_epoch(self.id, epoch, role.epoch)?;
                if acks == Acks::All {
                    self.check_min_insync(min_insync)?;
                }
                let appended = store(payload).await?;
                self.wait_master_slave(ms, appended.position + u64::from(appended.len), role, ack)
                    .await?;
                Ok(Produced {
                    base_offset: appended.base_offset,
                    append_time_ms: appended.append_time_ms,
                    epoch: role.epoch,
                })
            }
            Replication::Raft(raft) => {
                // No leadership check here: a follower's raft refuses the write with
                // ForwardToLeader, which becomes NotLeader.
                let current = self.epoch();
                check_epoch(self.id, epoch, current)?;
                if acks == Acks::All {
                    self.check_min_insync(min_insync)?;
                }
                if acks == Acks::Leader {
                    return self
                        .append_raft_leader_only(raft, (key, count, payload), producer, current)
                        .await;
                }
                let command = Command::Batch {
                    topic_id: key.0,
                    partition: key.1,
                    count,
                    payload,
                    mirrored: false,
                    producer: producer.map(|p| p.0),
                    transaction: producer.and_then(|p| p.1),
                    local_ack: LocalAck::default(),
                };
                let (result, index) = self.replicate_indexed(command).await?;
                if acks == Acks::All {
                    self.wait_raft_holders(raft, index, min_insync).await?;
                }
                match (result.base_offset, result.append_time_ms) {
                    (Some(base_offset), Some(append_time_ms)) => Ok(Produced {
                        base_offset,
                        append_time_ms,
                        epoch: current,
                    }),
                    _ => Err(LogGroupError::Replication(
                        "the replicated batch left no record".into(),
                    )),
                }
            }
        }
    }

    /// acks=leader on a raft group: proposes the batch and answers as soon as the leader's
    /// own journal holds it, while raft replicates and commits it in the background. Like
    /// Kafka's acks=1, a leader that fails before a quorum holds the batch may lose it.
    async fn append_raft_leader_only(
        &self,
        raft: &GroupRaft,
        (key, count, payload): (PartitionKey, u32, Bytes),
        producer: Option<(ProducerBatch, Option<TxnPart>)>,
        epoch: u64,
    ) -> Result<Produced, LogGroupError> {
        let group = self.id;
        let (local_ack, appended) = LocalAck::new();
        let command = Command::Batch {
            topic_id: key.0,
            partition: key.1,
            count,
            payload,
            mirrored: false,
            producer: producer.map(|p| p.0),
            transaction: producer.and_then(|p| p.1),
            local_ack,
        };
        // Proposed here, in the caller's order (a Kafka connection's pipelined produces of
        // one partition must be appended in the order they came), not from a spawned task.
        let (responder, committed) = openraft::impls::ProgressResponder::complete_only();
        raft.client_write_ff(command, Some(responder))
            .await
            .map_err(|e| LogGroupError::Replication(format!("log group {group}: {e}")))?;
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
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(LogGroupError::NotLeader {
                    log_group: group,
                    leader: f.leader_id,
                }),
                Ok(Err(e)) => Err(LogGroupError::Replication(format!(
                    "log group {group}: {e}"
                ))),
                Ok(Ok(_)) | Err(_) => Err(LogGroupError::Replication(format!(
                    "log group {group}: the batch was not appended on the leader"
                ))),
            },
        }
    }

    /// Commits a consumer group's position in a partition (with the origin positions it
    /// has seen) the way the log group replicates.
    pub async fn commit_offset(
        &self,
        consumer_group: &str,
        key: PartitionKey,
        offset: u64,
        positions: Vec<(String, u64)>,
    ) -> Result<(), LogGroupError> {
        self.commit_offset_with(consumer_group, key, offset, positions, String::new())
            .await
    }

    /// [`HostedGroup::commit_offset`] keeping the committer's `metadata` (Kafka's) in the
    /// commit record, on every replica.
    pub async fn commit_offset_with(
        &self,
        consumer_group: &str,
        key: PartitionKey,
        offset: u64,
        positions: Vec<(String, u64)>,
        metadata: String,
    ) -> Result<(), LogGroupError> {
        match &self.replication {
            Replication::Standalone => {
                self.storage
                    .commit_with_metadata(consumer_group, key, offset, positions, metadata)
                    .await?;
                Ok(())
            }
            Replication::MasterSlave(ms) => {
                if !positions.is_empty() {
                    return Err(LogGroupError::Invalid(format!(
                        "log group {} is master-slave: origin positions are kept by raft groups only",
                        self.id
                    )));
                }
                let role = self.master_role(ms)?;
                let appended = self
                    .storage
                    .commit_with_metadata(consumer_group, key, offset, Vec::new(), metadata)
                    .await?;
                self.wait_master_slave(
                    ms,
                    appended.position + u64::from(appended.len),
                    role,
                    Acks::Quorum.into(),
                )
                .await
            }
            Replication::Starting | Replication::Raft(_) => {
                let command = Command::Commit {
                    group: consumer_group.to_owned(),
                    topic_id: key.0,
                    partition: key.1,
                    offset,
                    positions,
                    metadata,
                };
                self.replicate(command).await.map(|_| ())
            }
        }
    }

    /// The group's raft, or `Invalid` saying `why_not` for a group raft does not replicate.
    pub fn require_raft(&self, why_not: &str) -> Result<&GroupRaft, LogGroupError> {
        self.raft().ok_or_else(|| {
            LogGroupError::Invalid(format!(
                "log group {} is not replicated by raft: {why_not}",
                self.id
            ))
        })
    }

    /// Waits until everything this leader's raft log holds is applied here (a linearizable
    /// read); a group raft does not replicate has nothing to wait for.
    pub async fn ensure_applied(&self) -> Result<(), LogGroupError> {
        if let Replication::Raft(raft) = &self.replication {
            raft.ensure_linearizable(openraft::raft::ReadPolicy::ReadIndex)
                .await
                .map_err(|e| LogGroupError::Replication(format!("log group {}: {e}", self.id)))?;
        }
        Ok(())
    }

    /// [`HostedGroup::ensure_applied`] once per term of this broker's leadership: within a
    /// term every entry is written by this leader and applied before its write returns, so
    /// one linearizable read (a heartbeat round to a quorum) covers the whole term. Without
    /// this, every mirrored append waited for a heartbeat round.
    pub(crate) async fn ensure_applied_in_term(&self) -> Result<(), LogGroupError> {
        if let Replication::Raft(_) = &self.replication {
            let term = self.epoch();
            if self.applied_in_term.load(Ordering::SeqCst) != term {
                self.ensure_applied().await?;
                self.applied_in_term.store(term, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    /// After a write that failed: its entry may still be applied later, so the next check
    /// against applied state reads linearizably again.
    pub(crate) fn forget_applied(&self) {
        self.applied_in_term.store(0, Ordering::SeqCst);
    }

    /// Replicates commands through the group's raft in one submission, in order; returns
    /// once a quorum holds them all and they are applied here (an error when any failed:
    /// raft keeps order, so what did commit is a prefix).
    pub async fn replicate_many(
        &self,
        commands: Vec<Command>,
    ) -> Result<Vec<CommandResult>, LogGroupError> {
        use futures_util::StreamExt;
        let raft = self.raft().ok_or_else(not_running)?;
        let n = commands.len();
        let mut results = raft
            .client_write_many(commands)
            .await
            .map_err(|e| self.raft_error(RaftError::Fatal(e)))?;
        let mut out = Vec::with_capacity(n);
        while let Some(result) = results.next().await {
            match result {
                Ok(Ok(resp)) => out.push(resp.response),
                Ok(Err(e)) => return Err(self.raft_error(RaftError::APIError(e))),
                Err(fatal) => return Err(self.raft_error(RaftError::Fatal(fatal))),
            }
        }
        if out.len() != n {
            return Err(LogGroupError::Replication(format!(
                "log group {}: raft answered {} of {n} writes",
                self.id,
                out.len()
            )));
        }
        Ok(out)
    }

    /// Replicates a command through the group's raft; returns once a quorum holds it and
    /// it is applied here.
    pub async fn replicate(&self, command: Command) -> Result<CommandResult, LogGroupError> {
        self.replicate_indexed(command).await.map(|(r, _)| r)
    }

    /// [`HostedGroup::replicate`], also returning the entry's log index.
    async fn replicate_indexed(
        &self,
        command: Command,
    ) -> Result<(CommandResult, u64), LogGroupError> {
        let raft = self.raft().ok_or_else(not_running)?;
        match raft.client_write(command).await {
            Ok(resp) => Ok((resp.data, resp.log_id.index)),
            Err(e) => Err(self.raft_error(e)),
        }
    }

    fn raft_error(&self, e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> LogGroupError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => LogGroupError::NotLeader {
                log_group: self.id,
                leader: f.leader_id,
            },
            e => LogGroupError::Replication(format!("log group {}: {e}", self.id)),
        }
    }

    /// acks=all on a raft group: the entry at `index` is committed (a quorum holds it);
    /// waits on only when `min_insync_replicas` asks for more replicas than the quorum.
    /// Never for every voter: a stopped follower must not stop acknowledgements.
    async fn wait_raft_holders(
        &self,
        raft: &GroupRaft,
        index: u64,
        min_insync: u32,
    ) -> Result<(), LogGroupError> {
        let voters = self.voters().len();
        let needed = acks_all_needs(voters, voters / 2 + 1, min_insync);
        if needed <= voters / 2 + 1 {
            return Ok(());
        }
        let enough = move |m: &openraft::RaftMetrics<TypeConfig>| {
            let Some(replication) = &m.replication else {
                return false;
            };
            let followers = replication
                .iter()
                .filter(|(id, matched)| **id != m.id && matched.is_some_and(|l| l.index >= index))
                .count();
            followers + 1 >= needed
        };
        raft.wait(Some(ACKS_ALL_WAIT))
            .metrics(enough, "min_insync_replicas replicas hold the entry")
            .await
            .map_err(|_| LogGroupError::NotEnoughReplicasAfterAppend {
                log_group: self.id,
                needed,
            })?;
        Ok(())
    }

    /// The master-slave group's role, if this broker is its master; `NotLeader` otherwise.
    fn master_role(&self, ms: &MasterSlaveGroup) -> Result<Role, LogGroupError> {
        let role = ms.role();
        if role.master != Some(self.me) {
            return Err(LogGroupError::NotLeader {
                log_group: self.id,
                leader: role.master.map(u64::from),
            });
        }
        Ok(role)
    }

    /// Waits until a master-slave record ending at `end`, written at `role`, satisfies
    /// `acks`.
    async fn wait_master_slave(
        &self,
        ms: &MasterSlaveGroup,
        end: u64,
        role: Role,
        ack: Ack,
    ) -> Result<(), LogGroupError> {
        let (acks, min_insync) = (ack.acks, self.min_insync.max(ack.min_insync));
        let group = self.id;
        let failed = |e: WaitError, what: &str| match e {
            WaitError::RoleChanged(now) => LogGroupError::Replication(format!(
                "log group {group} failed over (epoch {}, master {:?}) before the batch was committed: it may or may not be stored",
                now.epoch, now.master
            )),
            WaitError::Timeout => LogGroupError::Replication(what.to_owned()),
            WaitError::Closed => LogGroupError::Append(AppendError::Closed),
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
                // acks=all: committed (the master and `sync_replicas` slaves hold it), and
                // as many replicas as min_insync_replicas asks for.
                let replicas = ms.replica_count();
                let committed = ms.sync_replicas() + 1;
                let needed = acks_all_needs(replicas, committed, min_insync);
                if acks == Acks::All && needed > committed {
                    ms.wait_holders(end, role.epoch, needed - 1, ACKS_ALL_WAIT)
                        .await
                        .map_err(|e| match e {
                            WaitError::Timeout => LogGroupError::NotEnoughReplicasAfterAppend {
                                log_group: group,
                                needed,
                            },
                            e => failed(e, ""),
                        })?;
                }
                Ok(())
            }
        }
    }

    /// Sets a master-slave group's epoch and master on this broker (a failover step).
    pub async fn set_master(&self, epoch: u64, master: Option<u32>) -> Result<(), LogGroupError> {
        let Replication::MasterSlave(ms) = &self.replication else {
            return Err(LogGroupError::Invalid(format!(
                "log group {} is not replicated master-slave on this broker",
                self.id
            )));
        };
        ms.set_role(Role { epoch, master })
            .await
            .map(|_| ())
            .map_err(|e| LogGroupError::Invalid(e.to_string()))
    }

    /// Makes `add` (broker id, raft address) and the current voters but `remove` the
    /// group's voting replicas (on its raft leader). An added broker is first a learner
    /// and catches up; it votes once it has. The new voters.
    pub async fn change_replicas(
        &self,
        add: &[(u32, String)],
        remove: &[u32],
    ) -> Result<Vec<u64>, LogGroupError> {
        let raft =
            self.require_raft("replicas of master-slave groups are fixed by configuration")?;
        let metrics = raft.metrics().borrow_watched().clone();
        let mut voters: std::collections::BTreeSet<u64> =
            metrics.membership_config.voter_ids().collect();
        for (id, addr) in add {
            let id = u64::from(*id);
            if !voters.contains(&id) {
                raft.add_learner(id, BasicNode { addr: addr.clone() }, true)
                    .await
                    .map_err(|e| self.raft_error(e))?;
                voters.insert(id);
            }
        }
        for &id in remove {
            voters.remove(&u64::from(id));
        }
        if voters.is_empty() {
            return Err(LogGroupError::Invalid(format!(
                "log group {} needs at least one replica",
                self.id
            )));
        }
        raft.change_membership(voters.clone(), false)
            .await
            .map_err(|e| self.raft_error(e))?;
        Ok(voters.into_iter().collect())
    }

    /// The group's replication state on this broker.
    pub fn state(&self) -> LogGroupState {
        let storage = &self.storage;
        let (last_index, last_term) = storage.last_record().unwrap_or((0, 0));
        let (start_position, end_position, ..) = storage.positions();
        let mut state = LogGroupState {
            log_group: self.id,
            strategy: "none",
            epoch: 0,
            leader: None,
            start_position,
            end_position,
            last_index,
            last_term,
            watermark: storage.watermark(),
            replicas: Vec::new(),
            sync_replicas: 0,
            voters: Vec::new(),
        };
        match &self.replication {
            Replication::Standalone | Replication::Starting => {}
            Replication::MasterSlave(ms) => {
                let role = ms.role();
                state.strategy = "master-slave";
                state.epoch = role.epoch;
                state.leader = role.master;
                state.sync_replicas = ms.sync_replicas() as u32;
                if ms.is_master() {
                    state.replicas = ms.slave_positions();
                }
            }
            Replication::Raft(raft) => {
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
                                .and_then(|l| storage.end_of_record(l.index))
                                .unwrap_or(0);
                            (*id as u32, position)
                        })
                        .collect();
                }
            }
        }
        state
    }

    /// Stops the group's replication (its raft or master-slave task); the storage stays
    /// open.
    pub async fn stop_replication(&self) {
        match &self.replication {
            Replication::Standalone | Replication::Starting => {}
            Replication::Raft(raft) => {
                // A raft waiting for space on a full disk (`replication::raft`'s
                // `while_disk_full`) finishes no storage write, so it would not stop: give up
                // on it after a while; closing the storage then ends its wait.
                if tokio::time::timeout(RAFT_SHUTDOWN_WAIT, raft.shutdown())
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        group = self.id,
                        "raft did not stop within {RAFT_SHUTDOWN_WAIT:?} (waiting for disk space?): closing the group's storage under it"
                    );
                }
            }
            Replication::MasterSlave(ms) => ms.stop(),
        }
    }
}

/// How long stopping a group's raft waits for it.
const RAFT_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_is_checked_against_the_groups() {
        assert!(check_epoch(3, 0, 7).is_ok(), "0 is not fenced");
        assert!(check_epoch(3, 7, 7).is_ok());
        assert!(matches!(
            check_epoch(3, 6, 7),
            Err(LogGroupError::StaleEpoch {
                log_group: 3,
                epoch: 6,
                current: 7
            })
        ));
        assert!(matches!(
            check_epoch(3, 8, 7),
            Err(LogGroupError::EpochAhead {
                log_group: 3,
                epoch: 8,
                current: 7
            })
        ));
    }
}
