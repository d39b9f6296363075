//! What a partition's journal says of transactions: which producers have a transaction open
//! in it (from the first offset of their first transactional batch until their commit or
//! abort marker), and which offset ranges were aborted. From these, a read of committed
//! data stops at the *last stable offset* (the first offset of the oldest open
//! transaction) and skips aborted batches, as Kafka's `read_committed` does.
//!
//! Decisions only, without I/O: the group feeds it every committed batch and marker of the
//! partition in offset order — as it indexes them, and again when recovery walks the
//! journal — so every replica derives the same state. Each call is guarded by offset, so
//! feeding a range twice (recovery re-indexing what was indexed) changes nothing.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

use meridian_proto::producer::ProducerBatch;
use meridian_proto::record::{self, RecordHeader, RecordKind, TxnMarker};
use serde::{Deserialize, Serialize};

/// A producer id.
pub type ProducerId = i64;

/// How a producer's batch takes part in its transaction; the record's flags say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnPart {
    /// Messages written inside the transaction ([`record::FLAG_TRANSACTIONAL`]).
    Batch,
    /// The transaction's commit or abort marker ([`record::FLAG_CONTROL`]; its payload a
    /// [`TxnMarker`], one offset).
    Marker,
}

impl TxnPart {
    /// The record flag it sets.
    pub fn flag(self) -> u8 {
        match self {
            TxnPart::Batch => record::FLAG_TRANSACTIONAL,
            TxnPart::Marker => record::FLAG_CONTROL,
        }
    }

    /// What a record's flags say.
    pub fn of(flags: u8) -> Option<TxnPart> {
        if flags & record::FLAG_CONTROL != 0 {
            Some(TxnPart::Marker)
        } else if flags & record::FLAG_TRANSACTIONAL != 0 {
            Some(TxnPart::Batch)
        } else {
            None
        }
    }
}

/// What one record tells a partition's transaction state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnEvent {
    /// A transactional batch at `first..=last`.
    Batch {
        /// Its producer.
        producer_id: ProducerId,
        /// Its first offset.
        first: u64,
        /// Its last offset.
        last: u64,
    },
    /// A marker at `offset`.
    Marker {
        /// Its producer.
        producer_id: ProducerId,
        /// The producer epoch the coordinator wrote it with: older epochs are fenced here
        /// from then on (a timed-out producer's zombie cannot open a transaction again).
        epoch: i16,
        /// Commit or abort.
        marker: Marker,
        /// Its offset.
        offset: u64,
    },
}

impl TxnEvent {
    /// What a batch record (`h`, with the flags as written, and `payload` after any
    /// producer prefix, the origin's included) of `producer` says; `None` for a batch outside transactions or a
    /// marker that does not decode (the writer never writes one).
    pub fn of(h: &RecordHeader, producer: &ProducerBatch, payload: &[u8]) -> Option<TxnEvent> {
        if h.kind != RecordKind::Batch {
            return None;
        }
        match TxnPart::of(h.flags)? {
            TxnPart::Batch => Some(TxnEvent::Batch {
                producer_id: producer.id,
                first: h.base_offset,
                last: h.base_offset + u64::from(h.count.max(1)) - 1,
            }),
            TxnPart::Marker => {
                // A marker mirrored from another region carries its origin first (a
                // marker is a few dozen bytes: copying it costs nothing).
                let m = if h.flags & record::FLAG_ORIGIN != 0 {
                    let whole = Bytes::copy_from_slice(payload);
                    let (_, rest) = meridian_proto::origin::Origin::split(&whole).ok()?;
                    TxnMarker::decode(&rest).ok()?
                } else {
                    TxnMarker::decode(payload).ok()?
                };
                Some(TxnEvent::Marker {
                    producer_id: producer.id,
                    epoch: producer.epoch,
                    marker: if m.commit {
                        Marker::Commit
                    } else {
                        Marker::Abort
                    },
                    offset: h.base_offset,
                })
            }
        }
    }

    /// What a whole batch record (its payload starting with the producer prefix) says.
    pub fn of_record(h: &RecordHeader, payload: &[u8]) -> Option<TxnEvent> {
        if h.flags & record::FLAG_PRODUCER == 0 {
            return None;
        }
        let producer = ProducerBatch::decode(payload).ok()?;
        let rest = payload.get(meridian_proto::producer::PREFIX_LEN..)?;
        TxnEvent::of(h, &producer, rest)
    }
}

/// An aborted transaction's range in one partition: Kafka's `AbortedTransaction` (a reader
/// skips the producer's transactional batches from `first_offset` up to its abort marker
/// at `marker_offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aborted {
    /// The producer.
    pub producer_id: ProducerId,
    /// Its first transactional offset in the partition.
    pub first_offset: u64,
    /// The offset of the abort marker.
    pub marker_offset: u64,
}

impl Aborted {
    /// Whether `producer_id`'s transactional batch at `offset` is in this range.
    pub fn covers(&self, producer_id: ProducerId, offset: u64) -> bool {
        self.producer_id == producer_id
            && self.first_offset <= offset
            && offset < self.marker_offset
    }
}

/// How a transaction ended, as its marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// Committed.
    Commit,
    /// Aborted.
    Abort,
}

/// Where a transactional batch's transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnStatus {
    /// Not ended yet.
    Open,
    /// Ended by an abort marker.
    Aborted,
    /// Ended by a commit marker.
    Committed,
}

/// One partition's open transactions and aborted ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionTxns {
    /// Open transactions: producer → its first offset.
    open: HashMap<ProducerId, u64>,
    /// Aborted ranges by marker offset (ascending, so trimming the front is cheap).
    aborted: BTreeMap<u64, Aborted>,
    /// One past the last offset fed: anything below is already accounted for.
    next: u64,
}

impl PartitionTxns {
    /// Feeds one record's event.
    pub fn apply(&mut self, event: TxnEvent) {
        match event {
            TxnEvent::Batch {
                producer_id,
                first,
                last,
            } => self.batch(producer_id, true, first, last),
            TxnEvent::Marker {
                producer_id,
                marker,
                offset,
                ..
            } => self.marker(producer_id, marker, offset),
        }
    }

    /// A batch at `first..=last` by `producer_id`, transactional or not.
    pub fn batch(&mut self, producer_id: ProducerId, transactional: bool, first: u64, last: u64) {
        if last < self.next {
            return;
        }
        if transactional {
            self.open.entry(producer_id).or_insert(first);
        }
        self.next = last + 1;
    }

    /// `producer_id`'s marker at `offset`: its open transaction (if any) ends.
    pub fn marker(&mut self, producer_id: ProducerId, marker: Marker, offset: u64) {
        if offset < self.next {
            return;
        }
        self.next = offset + 1;
        let Some(first_offset) = self.open.remove(&producer_id) else {
            return;
        };
        if marker == Marker::Abort {
            self.aborted.insert(
                offset,
                Aborted {
                    producer_id,
                    first_offset,
                    marker_offset: offset,
                },
            );
        }
    }

    /// The last stable offset with `end` the partition's committed end: the first offset
    /// of its oldest open transaction, or `end` when none is open.
    pub fn last_stable(&self, end: u64) -> u64 {
        self.open
            .values()
            .copied()
            .min()
            .map_or(end, |f| f.min(end))
    }

    /// The producers with a transaction open, with its first offset, by first offset.
    pub fn open(&self) -> Vec<(ProducerId, u64)> {
        let mut out: Vec<_> = self.open.iter().map(|(p, f)| (*p, *f)).collect();
        out.sort_by_key(|&(p, f)| (f, p));
        out
    }

    /// Whether a producer has a transaction open here.
    pub fn is_open(&self, producer_id: ProducerId) -> bool {
        self.open.contains_key(&producer_id)
    }

    /// The aborted ranges a read of `from..to` must know: those whose range overlaps it.
    pub fn aborted_in(&self, from: u64, to: u64) -> Vec<Aborted> {
        self.aborted
            .range(from..)
            .map(|(_, a)| *a)
            .filter(|a| a.first_offset < to)
            .collect()
    }

    /// Where the transaction of `producer_id`'s transactional batch at `offset` stands.
    pub fn status(&self, producer_id: ProducerId, offset: u64) -> TxnStatus {
        match self.open.get(&producer_id) {
            Some(&first) if first <= offset => TxnStatus::Open,
            _ if self.is_aborted(producer_id, offset) => TxnStatus::Aborted,
            _ => TxnStatus::Committed,
        }
    }

    /// Whether the batch of `producer_id` at `offset` (transactional) was aborted.
    pub fn is_aborted(&self, producer_id: ProducerId, offset: u64) -> bool {
        self.aborted
            .range(offset..)
            .any(|(_, a)| a.covers(producer_id, offset))
    }

    /// Retention moved the partition's earliest offset to `earliest`: ranges wholly below
    /// it are gone; an open transaction that began below it now begins there.
    pub fn trim_front(&mut self, earliest: u64) {
        self.aborted = self.aborted.split_off(&earliest);
        for first in self.open.values_mut() {
            *first = (*first).max(earliest);
        }
    }

    /// Truncation cut the partition back to end before `offset`: what was fed from there
    /// is forgotten (the caller feeds the surviving tail again from the journal when a
    /// transaction's start lies below the cut).
    pub fn truncate(&mut self, offset: u64) {
        self.open.retain(|_, first| *first < offset);
        let _ = self.aborted.split_off(&offset);
        self.next = self.next.min(offset);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_last_stable_offset_waits_for_the_oldest_open_transaction() {
        let mut p = PartitionTxns::default();
        p.batch(1, false, 0, 4);
        assert_eq!(p.last_stable(5), 5);
        p.batch(7, true, 5, 9);
        p.batch(8, true, 10, 11);
        p.batch(1, false, 12, 12);
        assert_eq!(p.last_stable(13), 5, "held at 7's first offset");
        p.marker(7, Marker::Commit, 13);
        assert_eq!(p.last_stable(14), 10, "then at 8's");
        p.marker(8, Marker::Abort, 14);
        assert_eq!(p.last_stable(15), 15);
        assert_eq!(
            p.aborted_in(0, 15),
            [Aborted {
                producer_id: 8,
                first_offset: 10,
                marker_offset: 14
            }]
        );
        assert!(p.is_aborted(8, 10) && p.is_aborted(8, 11));
        assert!(!p.is_aborted(7, 5) && !p.is_aborted(8, 14) && !p.is_aborted(1, 12));
        assert!(p.aborted_in(15, 20).is_empty());
        assert_eq!(p.status(7, 5), TxnStatus::Committed);
        assert_eq!(p.status(8, 10), TxnStatus::Aborted);
        p.batch(7, true, 15, 15);
        assert_eq!(p.status(7, 15), TxnStatus::Open);
        assert_eq!(
            p.status(7, 5),
            TxnStatus::Committed,
            "an earlier transaction of 7"
        );
    }

    #[test]
    fn feeding_again_what_was_fed_changes_nothing() {
        let mut p = PartitionTxns::default();
        p.batch(3, true, 0, 1);
        p.marker(3, Marker::Abort, 2);
        let once = p.clone();
        p.batch(3, true, 0, 1);
        p.marker(3, Marker::Abort, 2);
        assert_eq!(p, once);
    }

    #[test]
    fn retention_and_truncation_keep_what_remains() {
        let mut p = PartitionTxns::default();
        p.batch(1, true, 0, 0);
        p.marker(1, Marker::Abort, 1);
        p.batch(2, true, 2, 5);
        p.batch(3, true, 6, 6);
        p.trim_front(3);
        assert!(
            p.aborted_in(0, 10).is_empty(),
            "the abort wholly below is gone"
        );
        assert_eq!(
            p.last_stable(7),
            3,
            "2's transaction begins at the new earliest"
        );
        p.truncate(6);
        assert!(!p.is_open(3) && p.is_open(2));
        p.batch(3, true, 6, 7);
        assert!(p.is_open(3), "the tail is fed again after the cut");
    }

    proptest! {
        /// Against a model that re-reads the whole partition: the last stable offset is the
        /// first offset of the oldest transaction without a marker, and a transactional
        /// batch is aborted exactly when its transaction's marker says abort.
        #[test]
        fn matches_a_model_that_rereads_everything(
            ops in proptest::collection::vec((0..4i64, 0..3u8, 1..4u64), 1..60)
        ) {
            let mut p = PartitionTxns::default();
            // (producer, kind 0 plain / 1 transactional / 2 marker, first, last, abort?)
            let mut log: Vec<(i64, u8, u64, u64, bool)> = Vec::new();
            let mut next = 0u64;
            for (i, (producer, kind, len)) in ops.into_iter().enumerate() {
                match kind {
                    2 => {
                        let abort = i % 2 == 0;
                        p.marker(producer, if abort { Marker::Abort } else { Marker::Commit }, next);
                        log.push((producer, 2, next, next, abort));
                        next += 1;
                    }
                    k => {
                        p.batch(producer, k == 1, next, next + len - 1);
                        log.push((producer, k, next, next + len - 1, false));
                        next += len;
                    }
                }
            }
            // The model: walk forward, keep each producer's open start.
            let mut open: HashMap<i64, u64> = HashMap::new();
            let mut ranges: Vec<(i64, u64, u64, bool)> = Vec::new();
            for &(producer, kind, first, _, abort) in &log {
                match kind {
                    1 => { open.entry(producer).or_insert(first); }
                    2 => if let Some(f) = open.remove(&producer) { ranges.push((producer, f, first, abort)); },
                    _ => {}
                }
            }
            prop_assert_eq!(p.last_stable(next), open.values().copied().min().unwrap_or(next));
            for &(producer, kind, first, last, _) in &log {
                if kind != 1 { continue; }
                let aborted = ranges.iter().any(|&(rp, f, m, abort)| abort && rp == producer && f <= first && last < m);
                prop_assert_eq!(p.is_aborted(producer, first), aborted, "batch {}..={} of {}", first, last, producer);
            }
        }
    }
}
