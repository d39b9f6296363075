//! The log store's write-behind: raft's `append` returns once the entries are readable, and
//! a task of the store's own writes them to the journal and reports them durable.
//!
//! openraft asks [`openraft::storage::RaftLogStorage::append`] to return as soon as the entries can be read
//! back and to report durability through a callback. Waiting for the journal's fsync inside
//! `append` held raft's core for the whole write: a leader sent nothing to its followers and
//! took no new proposal until its own disk had finished, so every round cost the leader's
//! write *then* a follower's, and the replication and apply workers read each entry back
//! from the journal (a read and a CRC pass per entry per reader). Now:
//!
//! - `append` puts the entries into the [`Tail`], an in-memory window of the most recent
//!   entries that serves [`openraft::RaftLogReader::try_get_log_entries`] (replication to followers and
//!   applying) without touching the journal, and queues them for the flusher;
//! - the flusher writes what is queued, in order, several appends in one journal group
//!   commit, waits out a full disk as before ([`super::while_disk_full`]), fires acks=leader
//!   notices, and calls raft's callbacks; the leader's write and the followers' overlap;
//! - a truncation or purge first waits for everything queued before it ([`Job::Barrier`]),
//!   so the journal sees writes and cuts in raft's order;
//! - raft may apply an entry a quorum of followers holds before the leader's own write has
//!   finished: the state machine waits until the journal holds it
//!   ([`crate::storage::LogGroup::wait_for_index`]), since applying moves the watermark past its record.
//!
//! **Bounds.** Entries queued and not yet written hold at most [`UNFLUSHED_BYTES`]: `append`
//! waits for room, which holds raft's core as the old synchronous write did, so a replica
//! whose disk is full stops taking entries (and a leader stops heartbeating) once the budget
//! is spent. The tail keeps written entries only while it holds under [`TAIL_BYTES`]; older
//! ones are read from the journal.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use openraft::EntryPayload;
use openraft::storage::IOFlushed;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use super::{Command, Entry, JournalLogStore, LocalAck, TypeConfig};
use crate::storage::RaftRecord;

/// Bytes of entries queued for the journal and not yet written, at most.
pub(super) const UNFLUSHED_BYTES: usize = 64 << 20;
/// Bytes of written entries the tail keeps for readers, at most.
pub(super) const TAIL_BYTES: usize = 32 << 20;
/// The budget's unit: permits are KiB, so a 64 MiB budget is 65,536 permits.
const PERMIT_BYTES: usize = 1024;

/// What the tail counts an entry as: its payload and a fixed overhead.
fn entry_bytes(entry: &Entry) -> usize {
    128 + match &entry.payload {
        EntryPayload::Normal(Command::Batch { payload, .. }) => payload.len(),
        _ => 0,
    }
}

/// The most recent entries, by index, contiguous: what was appended and maybe not written
/// yet, and what was written, while it fits.
#[derive(Debug, Default)]
pub(super) struct Tail {
    entries: VecDeque<(Entry, usize)>,
    /// Bytes of `entries`.
    bytes: usize,
    /// The last index the journal holds durably (written by the flusher).
    written: Option<u64>,
    /// A write failed: what is unwritten stays so (raft stops on the error).
    failed: bool,
}

/// Whether the tail holds an entry the journal does not hold yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Unwritten {
    /// Held and queued for the journal.
    Yes,
    /// Held, but its write failed.
    Failed,
    /// Written, or not the tail's at all.
    No,
}

impl Tail {
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.log_id.index)
    }

    /// The last index held, if any.
    pub(super) fn last(&self) -> Option<u64> {
        self.entries.back().map(|(e, _)| e.log_id.index)
    }

    /// The log id of the last entry held.
    pub(super) fn last_log_id(&self) -> Option<super::LogId> {
        self.entries.back().map(|(e, _)| e.log_id)
    }

    /// Adds entries appended after what the tail holds; a first index that does not follow
    /// on replaces what the tail holds from there (or all of it, after a gap).
    pub(super) fn push(&mut self, entries: &[Entry]) {
        let Some(first) = entries.first().map(|e| e.log_id.index) else {
            return;
        };
        match self.last() {
            Some(last) if first <= last => self.remove_from(first),
            Some(last) if first > last + 1 => self.clear(),
            _ => {}
        }
        for e in entries {
            let bytes = entry_bytes(e);
            self.bytes += bytes;
            self.entries.push_back((e.clone(), bytes));
        }
        self.evict();
    }

    /// Whether entry `index` is the tail's and not written yet.
    pub(super) fn unwritten(&self, index: u64) -> Unwritten {
        let held =
            self.first().is_some_and(|f| f <= index) && self.last().is_some_and(|l| index <= l);
        match (held && self.written.is_none_or(|w| index > w), self.failed) {
            (false, _) => Unwritten::No,
            (true, false) => Unwritten::Yes,
            (true, true) => Unwritten::Failed,
        }
    }

    /// Forgets entries from `index` on (a truncation).
    pub(super) fn remove_from(&mut self, index: u64) {
        while self.last().is_some_and(|l| l >= index) {
            let (_, bytes) = self.entries.pop_back().expect("tail entry");
            self.bytes -= bytes;
        }
        self.written = match self.written {
            Some(w) if w >= index => index.checked_sub(1),
            w => w,
        };
    }

    /// Forgets entries up to `index` (a purge).
    pub(super) fn remove_through(&mut self, index: u64) {
        while self.first().is_some_and(|f| f <= index) {
            let (_, bytes) = self.entries.pop_front().expect("tail entry");
            self.bytes -= bytes;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The journal holds everything up to `index`.
    fn written_through(&mut self, index: u64) {
        self.written = self.written.max(Some(index));
        self.evict();
    }

    /// Drops the oldest written entries while over [`TAIL_BYTES`]; unwritten ones stay
    /// (the journal cannot serve them yet): [`UNFLUSHED_BYTES`] bounds those.
    fn evict(&mut self) {
        while self.bytes > TAIL_BYTES
            && self
                .first()
                .is_some_and(|f| self.written.is_some_and(|w| f <= w))
        {
            let (_, bytes) = self.entries.pop_front().expect("tail entry");
            self.bytes -= bytes;
        }
    }

    /// The entries from `start` to `end` (inclusive) the tail holds, and the first index of
    /// the range it holds (`end + 1` when it holds none of it).
    pub(super) fn range(&self, start: u64, end: u64) -> (u64, Vec<Entry>) {
        let (Some(first), Some(last)) = (self.first(), self.last()) else {
            return (end + 1, Vec::new());
        };
        let from = start.max(first);
        if from > end.min(last) {
            return (end + 1, Vec::new());
        }
        let skip = usize::try_from(from - first).unwrap_or(usize::MAX);
        let take = usize::try_from(end - from + 1).unwrap_or(usize::MAX);
        let entries: Vec<Entry> = self
            .entries
            .iter()
            .skip(skip)
            .take(take)
            .map(|(e, _)| e.clone())
            .collect();
        (from, entries)
    }
}

/// What the flusher is asked to do, in raft's order.
pub(super) enum Job {
    /// Write these entries' records, then fire their notices and raft's callback.
    Append(Pending),
    /// Answer once everything queued before is written (a truncation or purge follows).
    Barrier(oneshot::Sender<()>),
}

/// One `append` call's records, waiting for the journal.
pub(super) struct Pending {
    records: Vec<RaftRecord>,
    acks: Vec<(u64, LocalAck)>,
    callback: IOFlushed<TypeConfig>,
    /// Its share of [`UNFLUSHED_BYTES`], given back once written.
    _room: OwnedSemaphorePermit,
}

/// The queue to a store's flusher task and its byte budget.
#[derive(Debug)]
pub(super) struct Flusher {
    tx: mpsc::UnboundedSender<Job>,
    room: Arc<Semaphore>,
}

impl Flusher {
    /// Starts the flusher task of `store` (on the current runtime).
    pub(super) fn start(store: JournalLogStore) -> Flusher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(store, rx));
        Flusher {
            tx,
            room: Arc::new(Semaphore::new(UNFLUSHED_BYTES / PERMIT_BYTES)),
        }
    }

    /// Queues `entries` (already in the tail) for the journal; waits while the budget of
    /// unwritten bytes is spent.
    pub(super) async fn append(
        &self,
        entries: Vec<Entry>,
        callback: IOFlushed<TypeConfig>,
    ) -> io::Result<()> {
        let bytes: usize = entries.iter().map(entry_bytes).sum();
        let permits = (bytes / PERMIT_BYTES + 1).min(UNFLUSHED_BYTES / PERMIT_BYTES);
        let room = self
            .room
            .clone()
            .acquire_many_owned(u32::try_from(permits).unwrap_or(u32::MAX))
            .await
            .map_err(|_| io::Error::other("the raft log's flusher stopped"))?;
        let mut acks = Vec::new();
        let records = entries
            .into_iter()
            .map(|entry| {
                if let EntryPayload::Normal(Command::Batch { local_ack, .. }) = &entry.payload {
                    acks.push((entry.log_id.index, local_ack.clone()));
                }
                super::record_from_entry(entry)
            })
            .collect::<io::Result<Vec<_>>>()?;
        self.tx
            .send(Job::Append(Pending {
                records,
                acks,
                callback,
                _room: room,
            }))
            .map_err(|_| io::Error::other("the raft log's flusher stopped"))
    }

    /// Waits until everything queued so far is written (or failed).
    pub(super) async fn barrier(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Job::Barrier(tx))
            .map_err(|_| io::Error::other("the raft log's flusher stopped"))?;
        rx.await
            .map_err(|_| io::Error::other("the raft log's flusher stopped"))
    }
}

/// At most this many queued appends go into one journal write.
const APPENDS_PER_WRITE: usize = 256;

/// The flusher task: takes what is queued, writes consecutive appends together, answers
/// barriers in order. Ends when every store handle is gone.
async fn run(store: JournalLogStore, mut rx: mpsc::UnboundedReceiver<Job>) {
    let mut jobs = Vec::new();
    while let Some(job) = rx.recv().await {
        jobs.push(job);
        while jobs.len() < APPENDS_PER_WRITE {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let mut appends = Vec::new();
        for job in jobs.drain(..) {
            match job {
                Job::Append(p) => appends.push(p),
                Job::Barrier(done) => {
                    write(&store, std::mem::take(&mut appends)).await;
                    let _ = done.send(());
                }
            }
        }
        write(&store, appends).await;
    }
}

/// Writes the records of `appends` with one journal append, then answers each.
async fn write(store: &JournalLogStore, appends: Vec<Pending>) {
    if appends.is_empty() {
        return;
    }
    let mut records = Vec::new();
    let mut acks = Vec::new();
    let mut callbacks = Vec::with_capacity(appends.len());
    for p in appends {
        records.extend(p.records);
        acks.extend(p.acks);
        callbacks.push((p.callback, p._room));
    }
    let last = records.last().map(|r| r.index);
    let result = store.write_records(records, acks).await;
    match (&result, last) {
        (Ok(()), Some(last)) => store.tail().written_through(last),
        (Err(_), _) => store.tail().failed = true,
        _ => {}
    }
    for (callback, _room) in callbacks {
        callback.io_completed(
            result
                .as_ref()
                .map(|_| ())
                .map_err(|e| io::Error::new(e.kind(), e.to_string())),
        );
    }
}

/// The tail as the store shares it.
pub(super) type SharedTail = Arc<Mutex<Tail>>;

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::EntryPayload;

    fn entry(index: u64, bytes: usize) -> Entry {
        Entry {
            log_id: super::super::LogId::new_term_index(1, index),
            payload: EntryPayload::Normal(Command::Batch {
                topic_id: 1,
                partition: 0,
                count: 1,
                payload: bytes::Bytes::from(vec![0u8; bytes]),
                mirrored: false,
                producer: None,
                local_ack: LocalAck::default(),
            }),
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn serves_what_it_holds_of_a_range() {
        let mut tail = Tail::default();
        tail.push(&[entry(5, 10), entry(6, 10), entry(7, 10)]);
        let (from, got) = tail.range(1, 6);
        assert_eq!((from, indexes(&got)), (5, vec![5, 6]));
        let (from, got) = tail.range(7, 9);
        assert_eq!((from, indexes(&got)), (7, vec![7]));
        let (from, got) = tail.range(8, 9);
        assert_eq!((from, got.len()), (10, 0));
        let (from, got) = tail.range(1, 4);
        assert_eq!((from, got.len()), (5, 0));
    }

    #[test]
    fn an_overlapping_append_replaces_and_a_gap_restarts() {
        let mut tail = Tail::default();
        tail.push(&[entry(1, 10), entry(2, 10), entry(3, 10)]);
        tail.push(&[entry(2, 20)]);
        assert_eq!(tail.last(), Some(2));
        assert_eq!(tail.bytes, 2 * 128 + 30);
        tail.push(&[entry(9, 10)]);
        assert_eq!(indexes(&tail.range(0, 100).1), vec![9]);
    }

    #[test]
    fn only_written_entries_are_evicted() {
        let mut tail = Tail::default();
        let big = TAIL_BYTES / 3;
        tail.push(&[entry(1, big), entry(2, big), entry(3, big)]);
        // Over the budget, but nothing is written: all stay readable.
        assert_eq!(indexes(&tail.range(0, 10).1), vec![1, 2, 3]);
        tail.written_through(2);
        // Written ones go, oldest first, until under the budget.
        assert_eq!(indexes(&tail.range(0, 10).1), vec![2, 3]);
        // Over again: the written 2 goes, the unwritten 3 stays.
        tail.push(&[entry(4, big)]);
        assert_eq!(indexes(&tail.range(0, 10).1), vec![3, 4]);
        tail.written_through(4);
        assert_eq!(indexes(&tail.range(0, 10).1), vec![3, 4]);
    }

    #[test]
    fn truncation_and_purge() {
        let mut tail = Tail::default();
        tail.push(&[entry(1, 1), entry(2, 1), entry(3, 1), entry(4, 1)]);
        tail.written_through(4);
        tail.remove_from(3);
        assert_eq!(tail.written, Some(2));
        tail.remove_through(1);
        assert_eq!(indexes(&tail.range(0, 10).1), vec![2]);
        assert_eq!(tail.bytes, 129);
    }
}
