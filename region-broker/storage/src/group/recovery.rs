//! Opening a group: finish a pending reset or truncation, walk the journal (checking
//! checksums from the checkpoint on), cut a torn tail, restore the consumer offsets and
//! record positions from the records, keep the index entries the checkpoint vouches for and
//! rebuild the rest, then start the writer and indexer threads.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::Instant;

use bytes::Bytes;
use meridian_proto::record::{RecordHeader, RecordKind};
use tokio::sync::{mpsc, watch};

use super::indexer::Indexer;
use super::offsets::durable_positions;
use super::producers::Producers;
use super::replica::RecordPositions;
use super::writer::Appender;
use super::{LogGroup, OffsetKey, Progress, Shared};
use crate::backend::Backend;
use crate::checkpoint::Checkpoint;
use crate::index::PartitionIndex;
use crate::journal::{Journal, WalkEnd, Writer};
use crate::transactions::{PartitionTxns, TxnEvent};
use crate::{GroupConfig, PartitionKey};

/// What a walk over the journal restores: consumer offsets, idempotent producers' state,
/// each partition's next offset, and the last record's index and time. Recovery and
/// truncation both build one, so the writer's offsets never depend on how far the indexer
/// got.
#[derive(Debug)]
pub(super) struct Scan {
    pub(super) last_index: Option<u64>,
    pub(super) last_time: i64,
    /// Position and length of every record, by record index.
    pub(super) records: RecordPositions,
    pub(super) offsets: HashMap<OffsetKey, (u64, u64)>,
    pub(super) next_offsets: HashMap<PartitionKey, u64>,
    pub(super) producers: Producers,
    /// Each partition's transactions.
    pub(super) txns: HashMap<PartitionKey, PartitionTxns>,
    /// Where the sequence of record indexes broke, if it did.
    pub(super) broken_at: Option<u64>,
}

impl Scan {
    pub(super) fn new(config: &GroupConfig) -> Scan {
        Scan {
            last_index: None,
            last_time: 0,
            records: RecordPositions::default(),
            offsets: HashMap::new(),
            next_offsets: HashMap::new(),
            producers: Producers::new(config.producers_max, config.producer_expiry),
            txns: HashMap::new(),
            broken_at: None,
        }
    }

    pub(super) fn visit(&mut self, pos: u64, h: &RecordHeader, payload: &Bytes) {
        if self.broken_at.is_some() {
            return;
        }
        if self.last_index.is_some_and(|last| h.index != last + 1) {
            self.broken_at = Some(pos);
            return;
        }
        self.last_index = Some(h.index);
        self.records.push(h.index, pos, h.len);
        self.last_time = h.append_time_ms;
        match h.kind {
            RecordKind::OffsetCommit => {
                for (key, value) in durable_positions(h, payload) {
                    self.offsets.insert(key, (value, pos));
                }
            }
            RecordKind::Batch => {
                self.next_offsets.insert(
                    (h.topic_id, h.partition),
                    h.base_offset + u64::from(h.count),
                );
                for (key, value) in durable_positions(h, payload) {
                    self.offsets.insert(key, (value, pos));
                }
                self.producers.visit(h, payload);
                if let Some(event) = TxnEvent::of_record(h, payload) {
                    self.txns
                        .entry((h.topic_id, h.partition))
                        .or_default()
                        .apply(event);
                }
            }
            RecordKind::Blank
            | RecordKind::Membership
            | RecordKind::Metadata
            | RecordKind::Carried => {}
        }
    }
}

impl LogGroup {
    /// Opens (recovering as needed) the group stored in `dir`, which holds `partitions`
    /// (key and topic name, for the index directory). Index directories of other topics are
    /// deleted.
    pub fn open(
        dir: &Path,
        config: GroupConfig,
        partitions: &[(PartitionKey, String)],
    ) -> io::Result<LogGroup> {
        assert!(
            config.segment_bytes >= 4096,
            "segment_bytes must be at least 4 KiB"
        );
        let backend = config.backend.clone();
        backend.create_dir_all(&dir.join("index"))?;
        let checkpoint = Checkpoint::load(&*backend, dir)?.unwrap_or_default();
        let journal = Journal::open(
            config.backend.clone(),
            &dir.join("journal"),
            config.segment_bytes,
        )?;
        if let Some(position) = checkpoint.reset_to {
            tracing::info!(dir = %dir.display(), position, "finishing an interrupted journal reset");
            journal.reset(position)?;
        }
        if let Some(position) = checkpoint.truncate_to {
            tracing::info!(dir = %dir.display(), position, "finishing an interrupted truncation");
            journal.cut(position)?;
        }
        let (visible, _) = watch::channel(0);
        let (pullable, _) = watch::channel(0);
        let term = AtomicU64::new(config.term);
        let retention_floor = AtomicU64::new(if config.replicated { 0 } else { u64::MAX });
        let producers = Producers::new(config.producers_max, config.producer_expiry);
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            dir_display: dir.display().to_string(),
            config,
            journal,
            indexes: RwLock::new(HashMap::new()),
            offsets: Mutex::new(HashMap::new()),
            producers: Mutex::new(producers),
            txns: Mutex::new(HashMap::new()),
            progress: Mutex::new(Progress {
                written: 0,
                synced: 0,
                indexed: 0,
                index_waiting: false,
                watermark: 0,
                fatal: None,
            }),
            progress_changed: Condvar::new(),
            indexing: Mutex::new(()),
            records: Mutex::new(RecordPositions::default()),
            retired_topics: RwLock::new(std::collections::HashSet::new()),
            visible,
            pullable,
            pending_ends: Mutex::new(HashMap::new()),
            retention_floor,
            segment_retention: Mutex::new(None),
            held_back: Mutex::new(Vec::new()),
            compacted: Mutex::new(HashMap::new()),
            carries_held: Mutex::new((0, Vec::new())),
            carried: AtomicU64::new(0),
            term,
            stop: AtomicBool::new(false),
            crashed: AtomicBool::new(false),
            commits: AtomicU64::new(0),
            commit_bytes: AtomicU64::new(0),
            indexes_unsynced: AtomicBool::new(false),
            indexes_rebuilt: AtomicU64::new(0),
        });
        let (end, scan) = shared.recover(&checkpoint, partitions)?;
        shared.pullable.send_replace(end);
        let writer = Writer::new(&shared.journal, end)?;
        let (tx, rx) = mpsc::channel(shared.config.append_queue_max);
        let mut threads = Vec::new();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let appender = Appender {
            shared: shared.clone(),
            writer,
            rx,
            last_index: scan.last_index,
            last_time: scan.last_time,
            next_offsets: scan.next_offsets,
            undo: Vec::new(),
            pending_cut: None,
            failures: Default::default(),
            sync_stage: None,
        };
        threads.push(
            std::thread::Builder::new()
                .name(format!("append-{name}"))
                .spawn(move || appender.run())?,
        );
        let indexer_shared = shared.clone();
        let indexer_tx = tx.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("index-{name}"))
                .spawn(move || Indexer::new(indexer_shared, indexer_tx).run())?,
        );
        Ok(LogGroup {
            shared,
            tx,
            threads: Mutex::new(threads),
        })
    }
}

impl Shared {
    /// Recovery; returns the journal end, the last record index and the last append time.
    pub(super) fn recover(
        &self,
        checkpoint: &Checkpoint,
        partitions: &[(PartitionKey, String)],
    ) -> io::Result<(u64, Scan)> {
        let started = Instant::now();
        let start = self.journal.start();
        let mut scan = Scan::new(&self.config);
        let walk_end = self.journal.walk_verified_from(
            start,
            u64::MAX,
            checkpoint.journal_synced,
            |pos, h, payload| scan.visit(pos, h, payload),
        );
        let end = match (scan.broken_at, &walk_end) {
            (Some(pos), _) => {
                tracing::warn!(dir = %self.dir_display, position = pos, "record sequence breaks: cutting the journal there");
                pos
            }
            (None, WalkEnd::Invalid(pos, reason)) => {
                tracing::warn!(dir = %self.dir_display, position = pos, reason, "cutting a torn or corrupt journal tail");
                *pos
            }
            (None, WalkEnd::Clean(pos)) => *pos,
        };
        // The walk stopped at the first bad record; what follows it was never acknowledged.
        self.journal.cut(end)?;
        // What the walk found past the last checkpointed sync may be only in the page cache
        // (written, then the process stopped, or its sync failed). It is about to count as
        // durable and visible, and new records will follow it: sync it now, or a power cut
        // could drop it from under records acknowledged later (found by the fault tests:
        // an unsynced segment-end marker vanished, and recovery cut the acknowledged records
        // after it).
        self.journal
            .sync_range(checkpoint.journal_synced.min(end), end)?;
        *self.offsets.lock().expect("offsets lock poisoned") = std::mem::take(&mut scan.offsets);
        *self.records.lock().expect("records lock poisoned") = std::mem::take(&mut scan.records);
        *self.producers.lock().expect("producers lock poisoned") = std::mem::replace(
            &mut scan.producers,
            Producers::new(self.config.producers_max, self.config.producer_expiry),
        );
        *self.txns.lock().expect("transactions lock poisoned") = std::mem::take(&mut scan.txns);

        // Indexes: keep what the checkpoint vouches for (and the journal still holds), then
        // rebuild the rest from the journal.
        let counts: HashMap<PartitionKey, u64> = checkpoint
            .counts
            .iter()
            .map(|&(t, p, c)| ((t, p), c))
            .collect();
        let starts: HashMap<PartitionKey, u64> = checkpoint
            .starts
            .iter()
            .map(|&(t, p, s)| ((t, p), s))
            .collect();
        let mut rebuild_from = checkpoint.indexed.min(end);
        let wanted: std::collections::HashSet<String> =
            partitions.iter().map(|(_, t)| t.clone()).collect();
        remove_stale_index_dirs(&*self.config.backend, &self.dir.join("index"), &wanted)?;
        let mut indexes = HashMap::new();
        for (key, topic) in partitions {
            let dir = self.index_dir(topic, key.1);
            let trusted = counts.get(key).copied().unwrap_or(0);
            let backend = self.config.backend.clone();
            let per_file = self.config.index_entries_per_file;
            // An index whose carried entries point past the journal's end (copies a power
            // cut lost) is rebuilt: such entries are not the ones after an offset.
            let opened =
                PartitionIndex::open(backend.clone(), &dir, per_file, trusted).and_then(|index| {
                    if index.carried_past(end)? {
                        Err(io::Error::other(
                            "its carried entries point past the journal's end",
                        ))
                    } else {
                        Ok(index)
                    }
                });
            let mut index = match opened {
                Ok(index) => index,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "queue index unusable: rebuilding it from the journal");
                    self.indexes_rebuilt.fetch_add(1, Ordering::Relaxed);
                    backend.remove_dir_all(&dir)?;
                    rebuild_from = start;
                    PartitionIndex::open(backend, &dir, per_file, 0)?
                }
            };
            if end < checkpoint.indexed {
                let keep = index.first_at_position(0, end)?;
                index.truncate(keep)?;
            }
            let earliest = index.first_held(0, start)?;
            index.trim_front(earliest)?;
            // A start moved past what the journal dropped (a topic's own retention).
            if let Some(&moved) = starts.get(key) {
                index.set_floor(moved);
                let to = moved.min(index.end());
                if to > index.earliest() {
                    index.trim_front(to)?;
                }
            }
            indexes.insert(*key, Arc::new(Mutex::new(index)));
        }
        {
            let mut pending = self
                .pending_ends
                .lock()
                .expect("pending ends lock poisoned");
            for (key, &end) in &counts {
                if !indexes.contains_key(key) && start > 0 {
                    pending.insert(*key, end);
                }
            }
        }
        *self.indexes.write().expect("indexes lock poisoned") = indexes;
        // A replicated group indexes only what was committed when it last checkpointed; the
        // leader announces the watermark again. Otherwise everything durable is visible.
        let visible = if self.config.replicated {
            checkpoint.indexed.min(end)
        } else {
            end
        };
        let rebuilt = self.index_range(rebuild_from.min(visible), visible)?;
        self.flush_and_checkpoint(end, visible)?;
        *self.progress.lock().expect("progress lock poisoned") = Progress {
            written: end,
            synced: end,
            indexed: visible,
            index_waiting: false,
            watermark: visible,
            fatal: None,
        };
        self.visible.send_replace(visible);
        tracing::info!(
            dir = %self.dir_display, start, end, records_reindexed = rebuilt,
            elapsed_ms = started.elapsed().as_millis() as u64, "log group recovered"
        );
        Ok((end, scan))
    }
}

fn remove_stale_index_dirs(
    backend: &dyn Backend,
    dir: &Path,
    wanted: &std::collections::HashSet<String>,
) -> io::Result<()> {
    for path in backend.list(dir)? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !wanted.contains(&name) {
            tracing::info!(dir = %path.display(), "removing the index of a deleted topic");
            backend.remove_dir_all(&path)?;
        }
    }
    Ok(())
}
