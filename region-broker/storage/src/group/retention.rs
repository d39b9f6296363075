//! Retention: delete the oldest segment while it is expired (by age or by the journal's
//! size), only below what the indexes cover and, in a raft group, below what raft purged;
//! live consumer offsets whose commit record would go are re-appended first. A replicated
//! group never writes a record of its own (raft, or the master, chooses every record and
//! its index): it holds the segment back and lists those offsets
//! ([`LogGroup::offsets_held_back`]) for the replication layer to commit again through the
//! group's log.

use std::io;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::compaction::Carry;
use super::{Body, Command, HeldOffset, LogGroup, Shared, closed, now_ms};
use crate::journal::Journal;

impl Shared {
    /// Deletes the oldest segments while they are expired. Returns whether it stopped to
    /// carry compacted messages forward: the caller indexes the copies and calls again.
    pub(super) fn apply_retention(&self, tx: &mpsc::Sender<Command>) -> io::Result<bool> {
        let config = &self.config;
        let retention = self
            .segment_retention
            .lock()
            .expect("segment retention lock poisoned")
            .unwrap_or(config.retention);
        if retention.is_none() && config.retention_bytes.is_none() {
            return Ok(false);
        }
        loop {
            // In a raft group the records are also the raft log: only what a snapshot
            // covers (raft purged) may go.
            let floor = self.retention_floor.load(Ordering::SeqCst);
            let indexed = self
                .progress
                .lock()
                .expect("progress lock poisoned")
                .indexed;
            let cutoff = retention.map(|r| now_ms() - r.as_millis() as i64);
            let disk = self.journal.disk_bytes();
            let expired = |first: &crate::segment::Segment, next: &crate::segment::Segment| {
                // Only delete what the indexes already cover, so no entry is rebuilt into a
                // deleted segment.
                next.start <= indexed
                    && next.start <= floor
                    && (cutoff.is_some_and(|c| Journal::first_time(next).is_some_and(|t| t < c))
                        || config
                            .retention_bytes
                            .is_some_and(|max| disk - first.size >= max))
            };
            let Some(boundary) = self
                .journal
                .segment_for(self.journal.start())
                .and_then(|first| {
                    let next = self.journal.segment_for(first.end())?;
                    expired(&first, &next).then_some(next.start)
                })
            else {
                self.held_back
                    .lock()
                    .expect("held-back lock poisoned")
                    .clear();
                self.hold_carries(0, Vec::new());
                return Ok(false);
            };
            // A compacted partition's live messages below the boundary are carried past it
            // first; the segment goes on a later round, once the copies are indexed.
            match self.compacted_below(boundary)? {
                Carry::Clear => self.hold_carries(0, Vec::new()),
                Carry::Wait => return Ok(false),
                Carry::Needed(needed) => {
                    if config.replicated {
                        self.hold_carries(boundary, needed);
                        return Ok(false);
                    }
                    self.carry_forward(&needed, tx)?;
                    return Ok(true);
                }
            }
            if config.replicated {
                let held = self.offsets_below(boundary);
                let waiting = !held.is_empty();
                *self.held_back.lock().expect("held-back lock poisoned") = held;
                if waiting {
                    return Ok(false);
                }
            } else {
                self.carry_offsets_forward(boundary, tx)?;
            }
            let Some(start) = self
                .journal
                .drop_first_if(|first, next| !expired(first, next))?
            else {
                return Ok(false);
            };
            metrics::counter!("meridian_journal_segments_deleted_total").increment(1);
            let first_index = {
                let mut records = self.records.lock().expect("records lock poisoned");
                records.drop_below(start);
                records.bounds().map(|(first, _)| first)
            };
            // Producers keep only batches whose records remain: what recovery would rebuild.
            let mut producers = self.producers.lock().expect("producers lock poisoned");
            match first_index {
                Some(first) => producers.drop_below(first),
                None => producers.clear(),
            }
            drop(producers);
            tracing::info!(dir = %self.dir_display, start, "retention deleted the oldest journal segment");
            for (key, index) in self.indexes.read().expect("indexes lock poisoned").iter() {
                let mut index = index.lock().expect("index lock poisoned");
                let earliest = index.first_held(index.earliest(), start)?;
                index.trim_front(earliest)?;
                if let Some(txns) = self
                    .txns
                    .lock()
                    .expect("transactions lock poisoned")
                    .get_mut(key)
                {
                    txns.trim_front(earliest);
                }
            }
        }
    }

    /// Re-appends every live offset commit whose record sits below `boundary`, so deleting
    /// the segments below it loses no committed offset (the journal stays the only store).
    pub(super) fn carry_offsets_forward(
        &self,
        boundary: u64,
        tx: &mpsc::Sender<Command>,
    ) -> io::Result<()> {
        for (group, (topic_id, partition), offset) in self.offsets_below(boundary) {
            let (reply, rx) = oneshot::channel();
            let metadata = self.commit_metadata(&group, (topic_id, partition));
            let body = Body::Commit {
                group,
                offset,
                positions: Vec::new(),
                metadata,
            };
            tx.blocking_send(Command::Append {
                key: (topic_id, partition),
                body,
                reply,
            })
            .map_err(|_| closed())?;
            rx.blocking_recv()
                .map_err(|_| closed())?
                .map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Every live offset (consumer offsets and marks alike) whose commit record sits below
    /// `boundary`.
    fn offsets_below(&self, boundary: u64) -> Vec<HeldOffset> {
        let offsets = self.offsets.lock().expect("offsets lock poisoned");
        let mut held: Vec<HeldOffset> = offsets
            .iter()
            .filter(|(_, (_, pos))| *pos < boundary)
            .map(|((group, t, p), (o, _))| (group.clone(), (*t, *p), *o))
            .collect();
        held.sort();
        held
    }
}

impl LogGroup {
    /// In a replicated group, the offsets whose commit records keep retention from deleting
    /// the oldest expired segment: `(name, partition, offset)`, to be committed again
    /// through the group's log by its leader (names include marks, committed as they are).
    /// Empty when retention is not waiting on any.
    pub fn offsets_held_back(&self) -> Vec<HeldOffset> {
        self.shared
            .held_back
            .lock()
            .expect("held-back lock poisoned")
            .clone()
    }
}
