//! Master-slave replication of one log group: a named master writes the journal; slaves
//! pull whole records from it by journal position with long-poll and write them byte for
//! byte; the master commits (moves the watermark) once `sync_replicas` slaves hold a record.
//!
//! **Roles and epochs.** A group's role is `(epoch, master)`, kept in
//! `groups/<g>/master-slave.json` (fsynced, atomically replaced) and at first taken from
//! the configuration. Records the master writes carry its epoch as their term. A controlled
//! failover (driven from outside: `meridian log-group failover`, later the control plane)
//! first *fences* every reachable replica with a new epoch and no master — slaves stop
//! pulling, so the old master can commit nothing more — then names the most caught-up
//! replica master at that epoch. A replica that missed the change (a restarted old master)
//! learns it by asking its peers.
//!
//! **Divergence.** Each pull names the slave's last record `(index, term)`. If the master
//! holds the same record ending at the same position, the histories agree (as in raft, a
//! term has one writer, so equal index and term mean equal prefixes). Otherwise the master
//! answers with the last index whose term is at most the slave's, and the slave truncates
//! after it — Kafka's leader-epoch truncation. A truncation never cuts below the slave's
//! watermark: committed records are never removed.
//!
//! The decisions (the watermark, which roles are accepted or adopted, when a pull is
//! served and answered, where a slave truncates) are pure functions in [`decide`], tested
//! by their outputs; this file is the runtime: the role file, the pull loop and the RPCs.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::in_sync;
use super::pull::{self, PullError, ReadAnswer, ReadRequest};
use crate::config::{Config, Peer};
use crate::storage::{AppendError, FlushPolicy, LogGroup};

mod decide;

pub use decide::RoleRefused;
pub(crate) use decide::truncation_point;

/// How long a pull waits for new records on the master.
const PULL_WAIT: Duration = Duration::from_millis(500);
/// Bytes of records one pull returns at most (at least one record).
const PULL_BYTES: u32 = 4 << 20;
/// A master that no slave has pulled from for this long asks its peers whether a newer
/// epoch exists (it may have been failed over while it was down).
const PROBE_AFTER: Duration = Duration::from_secs(2);
/// Pause after a failed pull.
const BACKOFF: Duration = Duration::from_millis(200);
/// Pause after a pull whose records found no room here.
const DISK_FULL_BACKOFF: Duration = Duration::from_secs(1);

/// Who is master at which epoch. `master: None` is a fenced group: a failover is naming
/// a new master.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Bumped by every failover; stamped as the term on the master's records.
    pub epoch: u64,
    /// The master's broker id.
    pub master: Option<u32>,
}

/// A request between replicas of a log group, on the replication port: a master-slave
/// slave's pull and role question, and (for any strategy) a journal read.
#[derive(Debug, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// A slave pulls records.
    Pull(PullRequest),
    /// What role does this replica hold?
    Role,
    /// Read the journal, whatever the group's strategy (a raft follower installing a
    /// snapshot ships the journal this way).
    Read(ReadRequest),
}

/// A slave's pull: where its journal ends and what it knows.
#[derive(Debug, Serialize, Deserialize)]
pub struct PullRequest {
    /// The slave's broker id.
    pub follower: u32,
    /// The epoch the slave follows.
    pub epoch: u64,
    /// Where the slave's journal ends.
    pub read: ReadRequest,
    /// The watermark the slave knows (the master answers at once when its own is higher).
    pub watermark: u64,
}

/// A replica's answer to a [`ReplicaRequest`]: records, a refusal, its role or a failure.
#[derive(Debug, Serialize, Deserialize)]
pub enum ReplicaResponse {
    /// The journal's answer, and the master's commit watermark.
    Read {
        /// Records, or how to repair the slave's journal first.
        answer: ReadAnswer,
        /// The master's commit watermark.
        watermark: u64,
    },
    /// This replica is not master at the slave's epoch.
    NotMaster {
        /// Its role.
        role: Role,
    },
    /// The role, answering [`ReplicaRequest::Role`].
    Role {
        /// Its role.
        role: Role,
    },
    /// The request failed here.
    Failed {
        /// Why.
        reason: String,
    },
}

/// What the rest of the group looks like from here.
#[derive(Debug, Clone, Copy)]
struct View {
    role: Role,
    watermark: u64,
}

/// Why a produce on a master-slave group was not acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    /// The role changed while the record waited: it may or may not be committed.
    RoleChanged(Role),
    /// Not enough slaves held it in time.
    Timeout,
    /// The group is shutting down.
    Closed,
}

/// Why a role change was not made.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The role is refused (stale, taken, or an unknown master).
    #[error(transparent)]
    Refused(#[from] RoleRefused),
    /// The role file could not be written.
    #[error("storing the role of log group {group}: {source}")]
    Store {
        /// The log group.
        group: u32,
        /// The I/O error.
        source: io::Error,
    },
    /// The task writing the role file failed.
    #[error("storing the role of log group {group}: {source}")]
    Task {
        /// The log group.
        group: u32,
        /// The task's failure.
        source: tokio::task::JoinError,
    },
}

/// Why a slave's pull from its master failed (it backs off and tries again).
#[derive(Debug, thiserror::Error)]
enum FollowError {
    /// The master is not one of the group's other brokers.
    #[error("master {0} is not a peer")]
    NotAPeer(u32),
    /// The request did not reach the master, or its answer did not come back.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The master's answer could not be applied here.
    #[error("log group {group}: {source}")]
    Apply {
        /// The log group.
        group: u32,
        /// Why.
        source: PullError,
    },
    /// A newer role could not be adopted.
    #[error(transparent)]
    Role(#[from] RoleError),
    /// The master is not master at the slave's epoch, and names no newer master.
    #[error("broker {master} is not master at epoch {epoch} (it holds epoch {}, master {:?})", theirs.epoch, theirs.master)]
    NotMaster {
        /// The broker asked.
        master: u32,
        /// The epoch the slave follows.
        epoch: u64,
        /// The broker's role.
        theirs: Role,
    },
    /// The master failed the request.
    #[error("broker {master}: {reason}")]
    Failed {
        /// The broker asked.
        master: u32,
        /// Its reason.
        reason: String,
    },
}

/// Why a request to a peer's replication port got no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The request could not be encoded.
    #[error("encoding the request: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    /// No connection to the peer.
    #[error("{0}")]
    Unreachable(String),
    /// The peer's replication port refused or failed the call.
    #[error("{addr}: {} ({:?})", status.message(), status.code())]
    Status {
        /// The peer.
        addr: String,
        /// Its answer.
        status: tonic::Status,
    },
    /// The answer did not decode.
    #[error("{addr}: malformed master-slave answer: {source}")]
    Malformed {
        /// The peer.
        addr: String,
        /// Why.
        source: rmp_serde::decode::Error,
    },
}

/// Sends a request to a peer's replication port; the broker supplies it.
pub type PeerCall = Arc<
    dyn Fn(
            String,
            u32,
            ReplicaRequest,
            Duration,
        ) -> futures_util::future::BoxFuture<'static, Result<ReplicaResponse, CallError>>
        + Send
        + Sync,
>;

/// One master-slave log group on this broker.
pub struct MasterSlaveGroup {
    id: u32,
    me: u32,
    group: Arc<LogGroup>,
    path: PathBuf,
    sync_replicas: usize,
    /// The other brokers of the region.
    others: Vec<Peer>,
    view: watch::Sender<View>,
    /// On the master: each slave's journal end (what it holds) at this epoch, and when it
    /// last pulled.
    slaves: Mutex<HashMap<u32, (u64, Instant)>>,
    /// Held while a role changes or a pulled chunk is appended, so a role change waits for
    /// an append of the old epoch to finish and no such append starts after it.
    apply: tokio::sync::Mutex<()>,
    stop: AtomicBool,
    call: PeerCall,
}

impl std::fmt::Debug for MasterSlaveGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterSlaveGroup")
            .field("id", &self.id)
            .field("me", &self.me)
            .field("role", &self.role())
            .finish_non_exhaustive()
    }
}

const FILE: &str = "master-slave.json";

impl MasterSlaveGroup {
    /// Opens the group's role (from its file, else epoch 1 with the configured master)
    /// and sets the term of the records the group writes.
    pub fn open(
        id: u32,
        group: Arc<LogGroup>,
        dir: &Path,
        config: &Config,
        call: PeerCall,
    ) -> io::Result<Arc<MasterSlaveGroup>> {
        let me = config.broker_id;
        let initial_master = config.master_slave_master(id).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("log group {id} is not configured master-slave"),
            )
        })?;
        let others = config
            .replication
            .peers
            .iter()
            .filter(|p| p.id != me)
            .cloned()
            .collect();
        Self::open_with(
            id,
            group,
            dir,
            (me, initial_master),
            config.replication.sync_replicas as usize,
            others,
            call,
        )
    }

    /// [`MasterSlaveGroup::open`] with the values spelled out: `(me, initial master)`,
    /// the slaves a commit needs, and the group's other replicas.
    pub fn open_with(
        id: u32,
        group: Arc<LogGroup>,
        dir: &Path,
        (me, initial_master): (u32, u32),
        sync_replicas: usize,
        others: Vec<Peer>,
        call: PeerCall,
    ) -> io::Result<Arc<MasterSlaveGroup>> {
        let path = dir.join(FILE);
        let role = match super::raft::load_json::<Role>(&path)? {
            Some(role) => role,
            None => {
                // Epochs are terms, which never decrease along a journal: a group that held
                // records before (say, under raft) starts at its last term.
                let epoch = group.last_record().map_or(1, |(_, term)| term.max(1));
                let role = Role {
                    epoch,
                    master: Some(initial_master),
                };
                super::raft::store_json(&path, &role, true)?;
                role
            }
        };
        group.set_term(role.epoch);
        // A slave that falls behind the master's retained journal resets to it, so
        // retention here needs no floor.
        group.set_retention_floor(u64::MAX);
        let watermark = group.watermark();
        let (view, _) = watch::channel(View { role, watermark });
        tracing::info!(group = id, epoch = role.epoch, master = ?role.master, "master-slave group opened");
        Ok(Arc::new(MasterSlaveGroup {
            id,
            me,
            group,
            path,
            sync_replicas,
            others,
            view,
            slaves: Mutex::new(HashMap::new()),
            apply: tokio::sync::Mutex::new(()),
            stop: AtomicBool::new(false),
            call,
        }))
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.view.borrow().role
    }

    /// Whether this broker is the master now.
    pub fn is_master(&self) -> bool {
        self.role().master == Some(self.me)
    }

    /// Replicas of the group: the master and every other broker it names.
    pub fn replica_count(&self) -> usize {
        self.others.len() + 1
    }

    /// Slaves that must hold a record before it is committed.
    pub fn sync_replicas(&self) -> usize {
        self.sync_replicas
    }

    /// On the master: each slave's journal end, by broker id.
    pub fn slave_positions(&self) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = self
            .slaves
            .lock()
            .expect("slaves lock poisoned")
            .iter()
            .map(|(&id, &(p, _))| (id, p))
            .collect();
        v.sort_unstable();
        v
    }

    /// Adopts `new` if it is newer: a higher epoch, or the same epoch naming a master where
    /// this replica is fenced. Persists it before answering. Returns the role now held.
    pub async fn set_role(&self, new: Role) -> Result<Role, RoleError> {
        let _apply = self.apply.lock().await;
        let current = self.role();
        if !decide::accept_role(self.id, current, new, self.me, |m| {
            self.others.iter().any(|p| p.id == m)
        })? {
            return Ok(current);
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || super::raft::store_json(&path, &new, true))
            .await
            .map_err(|source| RoleError::Task {
                group: self.id,
                source,
            })?
            .map_err(|source| RoleError::Store {
                group: self.id,
                source,
            })?;
        self.slaves.lock().expect("slaves lock poisoned").clear();
        if new.master == Some(self.me) {
            self.group.set_term(new.epoch);
        }
        self.view.send_modify(|v| v.role = new);
        tracing::info!(group = self.id, epoch = new.epoch, master = ?new.master, previous_epoch = current.epoch, previous_master = ?current.master, "master-slave role changed");
        metrics::counter!("meridian_master_slave_role_changes_total").increment(1);
        Ok(new)
    }

    /// Serves a request from a peer.
    pub async fn handle(&self, request: ReplicaRequest) -> ReplicaResponse {
        match request {
            ReplicaRequest::Role => ReplicaResponse::Role { role: self.role() },
            ReplicaRequest::Pull(pull) => self.serve_pull(pull).await,
            // The transport serves reads for every group before it gets here.
            ReplicaRequest::Read(_) => ReplicaResponse::Failed {
                reason: "journal reads are served by the transport".into(),
            },
        }
    }

    async fn serve_pull(&self, req: PullRequest) -> ReplicaResponse {
        let role = self.role();
        if !decide::serves_pull(role, self.me, req.epoch) {
            return ReplicaResponse::NotMaster { role };
        }
        let mut pullable = self.group.subscribe_pullable();
        let mut view = self.view.subscribe();
        let deadline = tokio::time::Instant::now() + PULL_WAIT;
        let mut noted = false;
        loop {
            pullable.borrow_and_update();
            let v = *view.borrow_and_update();
            if v.role != role {
                return ReplicaResponse::NotMaster { role: v.role };
            }
            let answer = match pull::serve(&self.group, &req.read) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(group = self.id, slave = req.follower, error = %e, "serving a pull");
                    return ReplicaResponse::Failed {
                        reason: e.to_string(),
                    };
                }
            };
            let ReadAnswer::Records { records, .. } = &answer else {
                tracing::info!(
                    group = self.id,
                    slave = req.follower,
                    ?answer,
                    "a slave's journal needs repair first"
                );
                return ReplicaResponse::Read {
                    answer,
                    watermark: v.watermark,
                };
            };
            if !noted {
                // Its history agrees with ours: it holds everything below `from`.
                noted = true;
                self.slaves
                    .lock()
                    .expect("slaves lock poisoned")
                    .insert(req.follower, (req.read.from, Instant::now()));
                self.advance_watermark();
                continue;
            }
            if decide::pull_answered(
                !records.is_empty(),
                v.watermark,
                req.watermark,
                tokio::time::Instant::now() >= deadline,
            ) {
                return ReplicaResponse::Read {
                    answer,
                    watermark: v.watermark,
                };
            }
            tokio::select! {
                _ = pullable.changed() => {}
                _ = view.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    /// Where the master's own durable records end.
    fn durable_end(&self) -> u64 {
        let (_, written, synced, _) = self.group.positions();
        match self.group.flush_policy() {
            FlushPolicy::Fsync => synced,
            FlushPolicy::Async => written,
        }
    }

    /// On the master: commits what `sync_replicas` slaves hold (and the master too).
    pub fn advance_watermark(&self) {
        if !self.is_master() {
            return;
        }
        let held: Vec<u64> = self
            .slaves
            .lock()
            .expect("slaves lock poisoned")
            .values()
            .map(|&(p, _)| p)
            .collect();
        let Some(candidate) = decide::commit_point(self.durable_end(), self.sync_replicas, &held)
        else {
            return;
        };
        if candidate > self.view.borrow().watermark {
            self.group.set_watermark(candidate);
            self.view
                .send_modify(|v| v.watermark = v.watermark.max(candidate));
        }
    }

    /// On the master: waits until the watermark passes `end` (a record written at `epoch`).
    pub async fn wait_committed(
        &self,
        end: u64,
        epoch: u64,
        limit: Duration,
    ) -> Result<(), WaitError> {
        self.advance_watermark();
        self.wait_for(limit, |v| {
            decide::commit_wait(v.role, v.watermark, self.me, epoch, end)
        })
        .await
    }

    /// On the master: waits until at least `slaves` slaves hold the journal up to `end`
    /// (an `acks=all` produce whose `min_insync_replicas` asks for more than the commit).
    pub async fn wait_holders(
        &self,
        end: u64,
        epoch: u64,
        slaves: usize,
        limit: Duration,
    ) -> Result<(), WaitError> {
        self.wait_for(limit, |v| {
            if let Err(changed) = decide::still_master(v.role, self.me, epoch) {
                return Some(Err(changed));
            }
            let held = self.slaves.lock().expect("slaves lock poisoned");
            let holding = held.values().filter(|&&(p, _)| p >= end).count();
            (holding >= slaves).then_some(Ok(()))
        })
        .await
    }

    /// On the master: its durable journal end and, per slave of the group, what it holds
    /// and when it last pulled (what the in-sync tracker observes); `None` elsewhere.
    pub fn replica_progress(&self) -> Option<(u64, Vec<in_sync::Follower>)> {
        if !self.is_master() {
            return None;
        }
        let held = self.slaves.lock().expect("slaves lock poisoned");
        let followers = self
            .others
            .iter()
            .map(|p| {
                let known = held.get(&p.id);
                in_sync::Follower {
                    id: p.id,
                    matched: known.map(|&(position, _)| position),
                    last_ack: known.map(|&(_, at)| at),
                }
            })
            .collect();
        Some((self.durable_end(), followers))
    }

    async fn wait_for(
        &self,
        limit: Duration,
        mut done: impl FnMut(&View) -> Option<Result<(), WaitError>>,
    ) -> Result<(), WaitError> {
        let mut view = self.view.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let v = *view.borrow_and_update();
            if let Some(result) = done(&v) {
                return result;
            }
            // Slave positions move without a view change; look again at least every 50 ms.
            match tokio::time::timeout_at(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(50)),
                view.changed(),
            )
            .await
            {
                Ok(Err(_)) => return Err(WaitError::Closed),
                Err(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(WaitError::Timeout);
                }
                _ => {}
            }
        }
    }

    /// Stops [`MasterSlaveGroup::run`].
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.view.send_modify(|_| {});
    }

    /// The group's replication task: as a slave, pulls from the master; as master or while
    /// fenced, watches for a newer role among its peers.
    pub async fn run(self: Arc<Self>) {
        let mut view = self.view.subscribe();
        let mut probed = false;
        // A full disk fails every pull until space returns: warned about at most once per
        // interval, and the pulls go on (from where the journal ends) once it has room.
        let mut disk_full = crate::storage::LogThrottle::default();
        while !self.stop.load(Ordering::SeqCst) {
            let role = *view.borrow_and_update();
            let role = role.role;
            match role.master {
                Some(m) if m != self.me => match self.pull_once(m, role).await {
                    Err(FollowError::Apply {
                        source: PullError::Append(e @ AppendError::DiskFull { .. }),
                        ..
                    }) => {
                        if let Some(suppressed) = disk_full.failed() {
                            tracing::warn!(group = self.id, master = m, error = %e, suppressed, "disk full: this slave stops copying until space returns, then catches up");
                        }
                        tokio::time::sleep(DISK_FULL_BACKOFF).await;
                    }
                    Err(e) => {
                        tracing::debug!(group = self.id, master = m, error = %e, "pull failed");
                        tokio::time::sleep(BACKOFF).await;
                    }
                    Ok(()) => {
                        if let Some((failures, took)) = disk_full.succeeded() {
                            tracing::info!(
                                group = self.id,
                                master = m,
                                failures,
                                seconds = took.as_secs(),
                                "space returned: this slave copies again"
                            );
                        }
                    }
                },
                _ => {
                    let idle = self
                        .slaves
                        .lock()
                        .expect("slaves lock poisoned")
                        .values()
                        .all(|&(_, at)| at.elapsed() > PROBE_AFTER);
                    if decide::should_probe(role, probed, idle) {
                        probed = true;
                        self.probe().await;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), view.changed()).await;
                }
            }
        }
    }

    /// Asks every peer for its role and adopts a newer one.
    async fn probe(&self) {
        let mut answers = Vec::new();
        for peer in &self.others {
            let answer = (self.call)(
                peer.raft.clone(),
                self.id,
                ReplicaRequest::Role,
                Duration::from_secs(1),
            )
            .await;
            if let Ok(ReplicaResponse::Role { role }) = answer {
                answers.push(role);
            }
        }
        let best = decide::newest_role(self.role(), answers);
        if best != self.role() {
            tracing::info!(group = self.id, epoch = best.epoch, master = ?best.master, "a peer holds a newer role: adopting it");
            if let Err(e) = self.set_role(best).await {
                tracing::warn!(group = self.id, error = %e, "adopting a peer's role");
            }
        }
    }

    /// One pull from the master, applied.
    async fn pull_once(&self, master: u32, role: Role) -> Result<(), FollowError> {
        let addr = self
            .others
            .iter()
            .find(|p| p.id == master)
            .map(|p| p.raft.clone())
            .ok_or(FollowError::NotAPeer(master))?;
        let request = PullRequest {
            follower: self.me,
            epoch: role.epoch,
            read: ReadRequest::continuing(&self.group, PULL_BYTES),
            watermark: self.group.watermark(),
        };
        let answer = (self.call)(
            addr,
            self.id,
            ReplicaRequest::Pull(request),
            PULL_WAIT + Duration::from_secs(5),
        )
        .await?;
        let apply = self.apply.lock().await;
        if self.role() != role {
            return Ok(());
        }
        match answer {
            ReplicaResponse::Read { answer, watermark } => {
                let end = pull::apply(&self.group, answer).await.map_err(|source| {
                    FollowError::Apply {
                        group: self.id,
                        source,
                    }
                })?;
                let watermark = watermark.min(end);
                self.group.set_watermark(watermark);
                self.view
                    .send_modify(|v| v.watermark = v.watermark.max(watermark));
                Ok(())
            }
            ReplicaResponse::NotMaster { role: theirs }
            | ReplicaResponse::Role { role: theirs } => {
                drop(apply);
                match decide::after_refusal(role, theirs) {
                    Some(newer) => {
                        self.set_role(newer).await?;
                        Ok(())
                    }
                    None => Err(FollowError::NotMaster {
                        master,
                        epoch: role.epoch,
                        theirs,
                    }),
                }
            }
            ReplicaResponse::Failed { reason } => Err(FollowError::Failed { master, reason }),
        }
    }
}
