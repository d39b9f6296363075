//! openraft storage over the journal: the raft log *is* the log group's journal, so every
//! message is written once.
//!
//! A raft entry maps to one journal record with the entry's term and index in the record
//! header: `Normal(Command::Batch)` is a message-batch record, `Normal(Command::Commit)` an
//! offset-commit record, `Blank` and `Membership` records of their own kinds. The log store
//! keeps beside the journal only what raft needs that is not log data: the vote and the purged
//! log id (`raft-state.json`, replaced atomically and fsynced), and the committed log id
//! (`raft-committed.json`, a hint written without fsync: losing it only makes raft re-apply
//! more on restart). The state machine is the group's commit watermark: applying an entry
//! moves the watermark past its record, which is what makes its messages visible to
//! consumers; its own state (last applied, membership) is `raft-sm.json`, written without
//! fsync on every apply since applying again is idempotent — and made durable before any
//! purge, so the applied state never falls behind what the log no longer holds.
//!
//! Leader ids are openraft's standard ones (one leader per term), so a log id is exactly
//! `(term, index)`, which the record header holds.
//!
//! Snapshots name the journal position of their last entry (and carry log group 0's topic
//! catalog); installing one ships the journal up to there from another member
//! ([`super::pull`]). What raft purges becomes the group's retention floor.
//!
//! **A full disk is waited out, never reported to raft.** openraft treats any error of its
//! storage as fatal: the raft node stops for good, and the replica (or the leader) takes no
//! entry until the process restarts. So a write that fails for want of space (`ENOSPC`: the
//! journal's `AppendError::DiskFull`, or a state file that cannot be written) is retried
//! here, with a backoff of up to a second and a warning at most every
//! [`crate::storage::LOG_EVERY`], until space returns ([`while_disk_full`]): raft's I/O on
//! this replica pauses meanwhile — a follower stops acknowledging (the leader goes on with
//! the others and the in-sync set drops it), a leader stops heartbeating and loses its
//! leadership — and resumes where it stopped. An append is retried from the first entry the
//! journal does not hold (a batch may have been stored in part). The committed-id hint is
//! only skipped while it cannot be written. Every other error, a failed fsync above all,
//! still goes to raft as before: after a failed fsync the disk's contents are unknown, the
//! group refuses writes (`AppendError::Fatal`) and only a restart recovers it.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use meridian_proto::producer::ProducerBatch;
use meridian_proto::record::{self, RecordHeader, RecordKind};
use openraft::storage::{IOFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};

pub use crate::storage::transactions::TxnPart;
use crate::storage::{AppendError, LogGroup, LogThrottle, PartitionKey, RaftRecord};

openraft::declare_raft_types!(
    /// Raft types of a log group.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = openraft::BasicNode,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
);

/// A log id: `(term, index)`.
pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
/// A raft vote.
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
/// A snapshot's metadata.
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot.
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
/// What a snapshot carries (the state machine's metadata, JSON).
pub type SnapshotData = io::Cursor<Vec<u8>>;

/// What a client asks raft to replicate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Append a batch of encoded messages (`meridian_proto::batch`) to a partition.
    Batch {
        /// Topic id.
        topic_id: u32,
        /// Partition.
        partition: u32,
        /// Messages in the batch.
        count: u32,
        /// The encoded messages; for a mirrored batch, preceded by its origin
        /// (`meridian_proto::origin`).
        payload: Bytes,
        /// A mirrored batch: its record carries `FLAG_ORIGIN`.
        #[serde(default)]
        mirrored: bool,
        /// An idempotent producer's batch: its record carries the producer
        /// (`FLAG_PRODUCER`), so every replica keeps the producer's state. Absent in
        /// entries of brokers before idempotent producers were replicated.
        #[serde(default)]
        producer: Option<ProducerBatch>,
        /// Part of its producer's transaction: a transactional batch
        /// (`FLAG_TRANSACTIONAL`) or a transaction marker (`FLAG_CONTROL`); needs
        /// `producer`. Absent in entries of brokers before transactions.
        #[serde(default)]
        transaction: Option<TxnPart>,
        /// With acks=leader: told when the leader's own journal holds the batch. Never
        /// serialized, so followers and entries read back from the journal have none.
        #[serde(skip)]
        local_ack: LocalAck,
    },
    /// Change the region's topic catalog (carried in log group 0).
    Catalog(CatalogChange),
    /// Commit a consumer group's offset.
    Commit {
        /// Consumer group.
        group: String,
        /// Topic id.
        topic_id: u32,
        /// Partition.
        partition: u32,
        /// The committed offset.
        offset: u64,
        /// Origin positions seen below it (multi-region topics).
        #[serde(default)]
        positions: Vec<(String, u64)>,
        /// The committer's metadata (Kafka's); empty: none.
        #[serde(default)]
        metadata: String,
    },
    /// Write a compacted partition's live message again past the segment retention would
    /// delete: a `Carried` record at the message's own offset, which the queue index points
    /// at from then on (`meridian_storage::compaction`).
    Carry {
        /// Topic id.
        topic_id: u32,
        /// Partition.
        partition: u32,
        /// The message's offset.
        offset: u64,
        /// The record's flags (`FLAG_ORIGIN` for a mirrored message).
        flags: u8,
        /// The carried record's payload (`record::encode_carried`).
        payload: Bytes,
    },
}

/// A change to the topic catalog, applied by every broker of the region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatalogChange {
    /// A topic was created.
    CreateTopic {
        /// Name.
        name: String,
        /// Never-reused id.
        id: u32,
        /// Log group of each partition.
        groups: Vec<u32>,
        /// Creation time.
        created_ms: i64,
        /// How its groups replicate (absent in entries written before strategies existed).
        #[serde(default)]
        replication: super::Strategy,
    },
    /// A topic was deleted.
    DeleteTopic {
        /// Name.
        name: String,
        /// Its id.
        id: u32,
    },
}

/// A one-shot notice, attached by the leader to a batch it proposes with acks=leader, that
/// its own journal holds the batch durably (raft has not committed it yet: Kafka's acks=1).
/// Equality ignores it: it is not part of the command's content.
#[derive(Clone, Default)]
pub struct LocalAck(
    Option<Arc<Mutex<Option<tokio::sync::oneshot::Sender<crate::storage::Appended>>>>>,
);

impl LocalAck {
    /// A notice, and the receiver it fires.
    pub fn new() -> (
        LocalAck,
        tokio::sync::oneshot::Receiver<crate::storage::Appended>,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (LocalAck(Some(Arc::new(Mutex::new(Some(tx))))), rx)
    }

    fn fire(&self, appended: crate::storage::Appended) {
        if let Some(tx) = self
            .0
            .as_ref()
            .and_then(|m| m.lock().expect("local ack lock poisoned").take())
        {
            let _ = tx.send(appended);
        }
    }
}

impl PartialEq for LocalAck {
    fn eq(&self, _: &LocalAck) -> bool {
        true
    }
}

impl Eq for LocalAck {}

impl Debug for LocalAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "LocalAck" } else { "-" })
    }
}

/// Called with every command a state machine applies, in log order (the broker applies
/// catalog changes through it). It must be idempotent: entries may be applied again after
/// a restart.
pub type ApplyHook = Arc<dyn Fn(&Command) -> io::Result<()> + Send + Sync>;

impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Batch {
                topic_id,
                partition,
                count,
                payload,
                ..
            } => {
                write!(
                    f,
                    "batch of {count} ({} bytes) for {topic_id}/{partition}",
                    payload.len()
                )
            }
            Command::Commit {
                group,
                topic_id,
                partition,
                offset,
                ..
            } => {
                write!(f, "commit {group} at {offset} on {topic_id}/{partition}")
            }
            Command::Catalog(change) => write!(f, "catalog change {change:?}"),
            Command::Carry {
                topic_id,
                partition,
                offset,
                ..
            } => write!(f, "carry {topic_id}/{partition} offset {offset} forward"),
        }
    }
}

/// What applying a command produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandResult {
    /// Offset of a batch's first message.
    pub base_offset: Option<u64>,
    /// Append time stamped on a batch.
    pub append_time_ms: Option<i64>,
}

/// Raft state that is not log data and must survive a crash: the vote and the purged log id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct HardState {
    vote: Option<Vote>,
    purged: Option<LogId>,
}

/// The raft log store of one log group.
#[derive(Debug, Clone)]
pub struct JournalLogStore {
    group: Arc<LogGroup>,
    state: Arc<Mutex<HardState>>,
    path: PathBuf,
    committed: Arc<Mutex<Option<LogId>>>,
    committed_path: PathBuf,
    /// Rate limit of the warning that the committed hint cannot be saved (disk full).
    hint_failures: Arc<Mutex<LogThrottle>>,
    /// When the committed hint was last written.
    hint_written: Arc<Mutex<Option<std::time::Instant>>>,
}

impl JournalLogStore {
    /// The log store of `group`, keeping its hard state in `dir`.
    pub fn open(group: Arc<LogGroup>, dir: &Path) -> io::Result<JournalLogStore> {
        let path = dir.join("raft-state.json");
        let state: HardState = load_json(&path)?.unwrap_or_default();
        let committed_path = dir.join("raft-committed.json");
        let committed = load_hint(&committed_path).flatten();
        if let Some(purged) = state.purged
            && let Some(end) = group.end_of_record(purged.index)
        {
            group.set_retention_floor(end);
        }
        Ok(JournalLogStore {
            group,
            state: Arc::new(Mutex::new(state)),
            path,
            committed: Arc::new(Mutex::new(committed)),
            committed_path,
            hint_failures: Arc::default(),
            hint_written: Arc::default(),
        })
    }

    /// Whether the store holds nothing of raft yet: no vote, no log, nothing purged (a
    /// replica's first start).
    pub fn is_empty(&self) -> bool {
        let state = self.state.lock().expect("raft state lock poisoned");
        state.vote.is_none() && state.purged.is_none() && self.group.record_bounds().is_none()
    }

    /// [`JournalLogStore::update`], waiting out a full disk.
    async fn update_durably(
        &self,
        what: &'static str,
        f: impl Fn(&mut HardState),
    ) -> io::Result<()> {
        while_disk_full(&self.group, what, || async { self.update(&f) }).await
    }

    fn update(&self, f: impl FnOnce(&mut HardState)) -> io::Result<()> {
        let mut state = self.state.lock().expect("raft state lock poisoned");
        let mut next = state.clone();
        f(&mut next);
        store_json(&self.path, &next, true)?;
        *state = next;
        Ok(())
    }

    /// Where the journal holds the record with this index, as its append answered.
    fn appended_of(&self, index: u64) -> Option<crate::storage::Appended> {
        let h = self.group.record_header_by_index(index).ok()??;
        let end = self.group.end_of_record(index)?;
        Some(crate::storage::Appended {
            base_offset: h.base_offset,
            position: end - u64::from(h.len),
            append_time_ms: h.append_time_ms,
            index,
            len: h.len,
        })
    }

    fn purged(&self) -> Option<LogId> {
        self.state.lock().expect("raft state lock poisoned").purged
    }

    fn entry(&self, index: u64) -> io::Result<Option<Entry>> {
        let Some((h, payload)) = self
            .group
            .record_by_index(index)
            .map_err(io::Error::other)?
        else {
            return Ok(None);
        };
        entry_from_record(&h, payload).map(Some)
    }
}

impl RaftLogReader<TypeConfig> for JournalLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let Some((first, last)) = self.group.record_bounds() else {
            return Ok(Vec::new());
        };
        let first = first.max(self.purged().map_or(0, |p| p.index + 1));
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i + 1,
            Bound::Unbounded => 0,
        }
        .max(first);
        let end = match range.end_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_sub(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => last,
        }
        .min(last);
        let mut out = Vec::new();
        for index in start..=end {
            if start > end {
                break;
            }
            match self.entry(index)? {
                Some(e) => out.push(e),
                None => break,
            }
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.state.lock().expect("raft state lock poisoned").vote)
    }
}

impl RaftLogStorage<TypeConfig> for JournalLogStore {
    type LogReader = JournalLogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged = self.purged();
        let last = match self.group.record_bounds() {
            Some((_, last)) if purged.is_none_or(|p| last > p.index) => {
                let (h, _) = self
                    .group
                    .record_by_index(last)
                    .map_err(io::Error::other)?
                    .ok_or_else(|| io::Error::other("last record vanished"))?;
                Some(LogId::new_term_index(h.term, h.index))
            }
            _ => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let vote = *vote;
        self.update_durably("saving the raft vote", |s| s.vote = Some(vote))
            .await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        *self.committed.lock().expect("committed lock poisoned") = committed;
        // Called on every commit advance: a hint, so written without fsync and at most every
        // `HINT_EVERY` (a create and a rename per round cost raft milliseconds). On a full
        // disk it is not written. A stale hint only makes raft re-apply more on restart.
        {
            let mut written = self.hint_written.lock().expect("hint lock poisoned");
            if written.is_some_and(|at| at.elapsed() < HINT_EVERY) {
                return Ok(());
            }
            *written = Some(std::time::Instant::now());
        }
        if let Err(e) = store_json(&self.committed_path, &committed, false) {
            if !is_disk_full(&e) {
                return Err(e);
            }
            let mut throttle = self.hint_failures.lock().expect("throttle lock poisoned");
            if let Some(suppressed) = throttle.failed() {
                tracing::warn!(file = %self.committed_path.display(), error = %e, suppressed, "disk full: the committed-entry hint is not saved until space returns");
            }
        } else {
            self.hint_failures
                .lock()
                .expect("throttle lock poisoned")
                .succeeded();
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(*self.committed.lock().expect("committed lock poisoned"))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut acks = Vec::new();
        let records = entries
            .into_iter()
            .map(|entry| {
                if let EntryPayload::Normal(Command::Batch { local_ack, .. }) = &entry.payload {
                    acks.push((entry.log_id.index, local_ack.clone()));
                }
                record_from_entry(entry)
            })
            .collect::<io::Result<Vec<_>>>()?;
        let first = records.first().map(|r| r.index);
        let appended = Mutex::new(Vec::new());
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let result = while_disk_full(&self.group, "appending raft entries", || async {
            let rest: Vec<RaftRecord> =
                if attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0 {
                    records.clone()
                } else {
                    // Again after a full disk: from the first entry the journal does not
                    // hold (the writer may have stored the batch in part before it filled).
                    let held = self.group.last_record().map(|(last, _)| last);
                    let mut appended = appended.lock().expect("appended lock poisoned");
                    for r in &records {
                        if first.is_some_and(|f| r.index >= f) && held.is_some_and(|h| r.index <= h)
                        {
                            appended.extend(self.appended_of(r.index));
                        }
                    }
                    records
                        .iter()
                        .filter(|r| held.is_none_or(|h| r.index > h))
                        .cloned()
                        .collect()
                };
            let done = self.group.append_raft(rest).await.map_err(append_error)?;
            appended
                .lock()
                .expect("appended lock poisoned")
                .extend(done);
            Ok(())
        })
        .await
        .map(|()| {
            let appended = appended.into_inner().expect("appended lock poisoned");
            for (index, ack) in acks {
                if let Some(a) = appended.iter().find(|a| a.index == index) {
                    ack.fire(*a);
                }
            }
        });
        let reply = result
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.io_completed(reply);
        result
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        // A truncation records its intent in the checkpoint first: on a full disk it is
        // tried again (it is idempotent) until space returns.
        while_disk_full(&self.group, "truncating the raft log", || {
            self.group
                .truncate_after_index(last_log_id.map(|l| l.index))
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The applied state (a hint written without fsync) must not be lost behind what the
        // log stops holding: make it durable first. It covers at least the snapshot being
        // purged up to.
        let sm_path = self.path.with_file_name(SM_FILE);
        match std::fs::File::open(&sm_path) {
            Ok(f) => {
                f.sync_all()?;
                std::fs::File::open(sm_path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        self.update_durably("saving the purged raft log id", |s| s.purged = Some(log_id))
            .await?;
        // What raft purged, a snapshot covers: retention may delete it.
        if let Some(end) = self.group.end_of_record(log_id.index) {
            self.group.set_retention_floor(end);
        }
        // A journal that does not reach the purged entry cannot be continued by the next
        // one (log_id + 1): it must start empty. (A snapshot install ships the journal up to
        // its last entry first, so this only happens without one.)
        if self
            .group
            .record_bounds()
            .is_some_and(|(_, last)| last < log_id.index)
        {
            while_disk_full(&self.group, "emptying the raft log", || {
                self.group.truncate_after_index(None)
            })
            .await?;
        }
        Ok(())
    }
}

/// Whether an error says the disk has no room (`ENOSPC`, or the journal's
/// [`AppendError::DiskFull`] carried in an `io::Error`): it passes once space returns.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    // Anywhere in the chain: a hook's error wraps the write's (`BrokerError::Io` in an
    // `io::Error`, say).
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::StorageFull
        {
            return true;
        }
        if let Some(AppendError::DiskFull { .. }) = c.downcast_ref::<AppendError>() {
            return true;
        }
        cause = match c.downcast_ref::<io::Error>() {
            // An `io::Error`'s wrapped error is its inner one, not always its `source`.
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => c.source(),
        };
    }
    false
}

/// An append's error as raft's `io::Error`, keeping the [`AppendError`] inside.
fn append_error(e: AppendError) -> io::Error {
    io::Error::other(e)
}

/// Runs a write of raft's storage again and again while it fails for want of space (see
/// the module docs), until it succeeds, fails otherwise, or the group closes; warns at most
/// every [`crate::storage::LOG_EVERY`] while it waits and says when it goes on.
pub(crate) async fn while_disk_full<T, F, Fut>(
    group: &LogGroup,
    what: &'static str,
    mut write: F,
) -> io::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    const FIRST_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
    const LAST_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
    let mut throttle = LogThrottle::default();
    let mut delay = FIRST_RETRY;
    loop {
        match write().await {
            Ok(v) => {
                if let Some((failures, took)) = throttle.succeeded() {
                    tracing::info!(dir = %group.dir_display(), failures, seconds = took.as_secs(), "{what}: space returned, raft goes on");
                }
                return Ok(v);
            }
            Err(e) if is_disk_full(&e) && !group.is_closed() => {
                metrics::counter!("meridian_raft_disk_full_retries_total").increment(1);
                if let Some(suppressed) = throttle.failed() {
                    tracing::warn!(dir = %group.dir_display(), error = %e, suppressed, "{what}: disk full; raft waits for space on this replica and retries");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(LAST_RETRY);
            }
            Err(e) => return Err(e),
        }
    }
}

pub mod joining;
mod state_machine;
use state_machine::SM_FILE;
pub use state_machine::{JournalStateMachine, RestoreHook, Shipping, SnapshotHooks};

fn record_from_entry(entry: Entry) -> io::Result<RaftRecord> {
    let (term, index) = (entry.log_id.leader_id.term, entry.log_id.index);
    let blank = |kind, payload| RaftRecord {
        term,
        index,
        kind,
        flags: 0,
        producer: None,
        key: (0, 0),
        count: 0,
        base_offset: 0,
        payload,
    };
    Ok(match entry.payload {
        EntryPayload::Blank => blank(RecordKind::Blank, Bytes::new()),
        EntryPayload::Membership(m) => blank(
            RecordKind::Membership,
            Bytes::from(serde_json::to_vec(&m).map_err(io::Error::other)?),
        ),
        EntryPayload::Normal(Command::Batch {
            topic_id,
            partition,
            count,
            payload,
            mirrored,
            producer,
            transaction,
            ..
        }) => RaftRecord {
            term,
            index,
            kind: RecordKind::Batch,
            flags: if mirrored { record::FLAG_ORIGIN } else { 0 }
                | transaction.map_or(0, TxnPart::flag),
            producer,
            key: (topic_id, partition),
            count,
            base_offset: 0,
            payload,
        },
        EntryPayload::Normal(command @ Command::Catalog(_)) => blank(
            RecordKind::Metadata,
            Bytes::from(serde_json::to_vec(&command).map_err(io::Error::other)?),
        ),
        EntryPayload::Normal(Command::Commit {
            group,
            topic_id,
            partition,
            offset,
            positions,
            metadata,
        }) => RaftRecord {
            term,
            index,
            kind: RecordKind::OffsetCommit,
            flags: 0,
            producer: None,
            key: (topic_id, partition),
            count: 0,
            base_offset: offset,
            payload: Bytes::from(record::encode_commit_with(
                &group, offset, &positions, &metadata,
            )),
        },
        EntryPayload::Normal(Command::Carry {
            topic_id,
            partition,
            offset,
            flags,
            payload,
        }) => RaftRecord {
            term,
            index,
            kind: RecordKind::Carried,
            flags,
            producer: None,
            key: (topic_id, partition),
            count: 1,
            base_offset: offset,
            payload,
        },
    })
}

fn entry_from_record(h: &RecordHeader, payload: Bytes) -> io::Result<Entry> {
    let log_id = LogId::new_term_index(h.term, h.index);
    let key: PartitionKey = (h.topic_id, h.partition);
    let payload = match h.kind {
        RecordKind::Blank => EntryPayload::Blank,
        RecordKind::Membership => {
            EntryPayload::Membership(serde_json::from_slice(&payload).map_err(io::Error::other)?)
        }
        RecordKind::Metadata => {
            EntryPayload::Normal(serde_json::from_slice(&payload).map_err(io::Error::other)?)
        }
        RecordKind::Batch => {
            // The producer prefix goes back into the command (the writer writes it again);
            // a mirrored batch's origin stays at the front of the payload.
            let (producer, payload) = if h.flags & record::FLAG_PRODUCER != 0 {
                let (p, rest) = ProducerBatch::split(&payload).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("record {}: {e}", h.index),
                    )
                })?;
                (Some(p), rest)
            } else {
                (None, payload)
            };
            EntryPayload::Normal(Command::Batch {
                topic_id: key.0,
                partition: key.1,
                count: h.count,
                payload,
                mirrored: h.flags & record::FLAG_ORIGIN != 0,
                producer,
                transaction: TxnPart::of(h.flags),
                local_ack: LocalAck::default(),
            })
        }
        RecordKind::Carried => EntryPayload::Normal(Command::Carry {
            topic_id: key.0,
            partition: key.1,
            offset: h.base_offset,
            flags: h.flags,
            payload,
        }),
        RecordKind::OffsetCommit => {
            let (group, offset) = record::decode_offset_commit(&payload).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "malformed offset-commit record")
            })?;
            EntryPayload::Normal(Command::Commit {
                group,
                topic_id: key.0,
                partition: key.1,
                offset,
                positions: record::decode_commit_positions(&payload),
                metadata: record::decode_commit_metadata(&payload),
            })
        }
    };
    Ok(Entry { log_id, payload })
}

pub(crate) fn load_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces a small file atomically; with `durable`, also fsyncs it and its directory.
/// How often the committed-entry hint is rewritten at most.
const HINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

pub(crate) fn store_json<T: Serialize>(path: &Path, value: &T, durable: bool) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&serde_json::to_vec(value).map_err(io::Error::other)?)?;
    if durable {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        std::fs::File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()?;
    }
    Ok(())
}

/// Loads a file written without fsync: a crash may have left it empty or stale, which only
/// means raft re-applies or re-commits more entries, so an unreadable file counts as absent.
fn load_hint<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    load_json(path).unwrap_or_else(|e| {
        tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable replication hint file");
        None
    })
}

#[cfg(test)]
mod cluster_tests;

/// Why one member could not ship the journal for a snapshot (the next member is tried).
#[derive(Debug, thiserror::Error)]
enum ShipError {
    /// The request did not reach the member, or its answer did not come back.
    #[error(transparent)]
    Call(#[from] super::master_slave::CallError),
    /// The member failed the read.
    #[error("{0}")]
    Failed(String),
    /// The member answered something other than records.
    #[error("unexpected answer {0}")]
    Unexpected(String),
    /// The member's journal ends before the snapshot's position.
    #[error("it holds the journal only to {held}, not to {until}")]
    Short {
        /// Where its journal ends.
        held: u64,
        /// Where the snapshot needs it to reach.
        until: u64,
    },
    /// Its records could not be applied here.
    #[error(transparent)]
    Apply(io::Error),
}

#[cfg(test)]
mod tests;
