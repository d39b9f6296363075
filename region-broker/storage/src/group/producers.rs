//! Idempotent producers (Kafka's `enable.idempotence`): per partition and producer id, the
//! epoch and the last [`BATCHES_KEPT`] batches written (sequence span, base offset, record
//! index). Like consumer offsets, the state lives in the journal: a batch record with
//! [`record::FLAG_PRODUCER`] carries its producer, the writer updates the state when it
//! commits such a record (a leader's own append, a raft entry, a slave's verbatim copy
//! alike), recovery's and truncation's journal scans rebuild it, a reset clears it and
//! retention trims it to the records left. So every replica holds the same state for the
//! same journal, and a new leader recognizes a retry of a batch its predecessor wrote.
//!
//! Bounded: at most `GroupConfig::producers_max` states per group (the least recently
//! written go first), and a state whose last batch is older than
//! `GroupConfig::producer_expiry` by the journal's own append times goes when a later
//! producer batch is written (Kafka's `producer.id.expiration.ms`). Both depend only on the
//! records, so a replica replaying the same journal evicts and expires the same states.
//!
//! [`Producers::check`] is Kafka's sequence rules, without I/O.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::producer::ProducerBatch;
use meridian_proto::record::{self, RecordHeader, RecordKind};

use super::LogGroup;
use crate::PartitionKey;

/// Batches remembered per producer and partition (Kafka's limit of in-flight requests for
/// an idempotent producer is 5).
pub const BATCHES_KEPT: usize = 5;

/// What to do with an idempotent producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// New: write it.
    Write,
    /// Written before: answer with where, write nothing.
    Duplicate {
        /// The partition offset of its first message.
        base_offset: u64,
        /// The index of its record (to wait until it is committed).
        index: u64,
    },
    /// Refused.
    Refuse(SeqRefusal),
}

/// Why an idempotent batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SeqRefusal {
    /// A newer epoch of the producer wrote here since (Kafka's INVALID_PRODUCER_EPOCH).
    #[error(
        "producer {id} epoch {epoch} is fenced: its epoch {current} wrote to this partition since"
    )]
    Fenced {
        /// Producer id.
        id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The epoch held here.
        current: i16,
    },
    /// A new epoch must start at sequence 0 (Kafka's OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error("producer {id} epoch {epoch} is new here but starts at sequence {first}, not 0")]
    NewEpochNotAtZero {
        /// Producer id.
        id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// Its first sequence.
        first: i32,
    },
    /// The batch neither repeats one of the last batches nor follows the last one (Kafka's
    /// OUT_OF_ORDER_SEQUENCE_NUMBER).
    #[error(
        "producer {id} epoch {epoch} sequence {first}..{last} does not follow its last batch on this partition (next sequence {expected})"
    )]
    OutOfOrder {
        /// Producer id.
        id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// Its first sequence.
        first: i32,
        /// Its last sequence.
        last: i32,
        /// The sequence the next batch must start at.
        expected: i32,
    },
}

/// One batch a producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
    index: u64,
}

/// What a partition knows of one of its idempotent producers (Kafka's DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerState {
    /// The producer id.
    pub id: i64,
    /// Its epoch.
    pub epoch: i16,
    /// The sequence of its last message here.
    pub last_sequence: i32,
    /// When its last batch here was appended.
    pub last_time_ms: i64,
}

/// One producer's state on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    epoch: i16,
    /// Oldest first, [`BATCHES_KEPT`] at most; empty only after a marker fenced an older
    /// epoch ([`Producers::fence`]).
    batches: VecDeque<Written>,
    /// Index and append time of its last record.
    last_index: u64,
    last_time_ms: i64,
}

/// Every idempotent producer's state in one log group.
#[derive(Debug, Clone)]
pub(crate) struct Producers {
    states: HashMap<(PartitionKey, i64), State>,
    /// Each state by the index of its last record: least recently written first.
    by_last: BTreeMap<u64, (PartitionKey, i64)>,
    max: usize,
    expiry_ms: i64,
}

impl Producers {
    /// No state, keeping `max` states at most, expiring them after `expiry` of log time.
    pub(crate) fn new(max: usize, expiry: Duration) -> Producers {
        Producers {
            states: HashMap::new(),
            by_last: BTreeMap::new(),
            max: max.max(1),
            expiry_ms: i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Kafka's sequence rules: an older epoch is fenced; a newer epoch starts again at
    /// sequence 0; a batch seen before is a duplicate; otherwise the batch must follow the
    /// last one. Without history (a producer new here, or forgotten) any sequence starts.
    pub(crate) fn check(&self, key: PartitionKey, p: &ProducerBatch) -> SeqCheck {
        let Some(state) = self.states.get(&(key, p.id)) else {
            return SeqCheck::Write;
        };
        if p.epoch < state.epoch {
            return SeqCheck::Refuse(SeqRefusal::Fenced {
                id: p.id,
                epoch: p.epoch,
                current: state.epoch,
            });
        }
        if p.epoch > state.epoch {
            return if p.first_sequence == 0 {
                SeqCheck::Write
            } else {
                SeqCheck::Refuse(SeqRefusal::NewEpochNotAtZero {
                    id: p.id,
                    epoch: p.epoch,
                    first: p.first_sequence,
                })
            };
        }
        if let Some(b) = state
            .batches
            .iter()
            .find(|b| b.first_sequence == p.first_sequence && b.last_sequence == p.last_sequence)
        {
            return SeqCheck::Duplicate {
                base_offset: b.base_offset,
                index: b.index,
            };
        }
        let expected = state.batches.back().map_or(p.first_sequence, |b| {
            b.last_sequence.wrapping_add(1) & i32::MAX
        });
        if p.first_sequence == expected {
            SeqCheck::Write
        } else {
            SeqCheck::Refuse(SeqRefusal::OutOfOrder {
                id: p.id,
                epoch: p.epoch,
                first: p.first_sequence,
                last: p.last_sequence,
                expected,
            })
        }
    }

    /// Records a batch written at `base_offset` in record `index` (appended at `time_ms`),
    /// then expires the states idle for longer than the expiry by that time.
    pub(crate) fn record(
        &mut self,
        key: PartitionKey,
        p: &ProducerBatch,
        base_offset: u64,
        index: u64,
        time_ms: i64,
    ) {
        let id = (key, p.id);
        let written = Written {
            first_sequence: p.first_sequence,
            last_sequence: p.last_sequence,
            base_offset,
            index,
        };
        match self.states.get_mut(&id) {
            Some(state) => {
                self.by_last.remove(&state.last_index);
                if state.epoch != p.epoch {
                    state.epoch = p.epoch;
                    state.batches.clear();
                }
                if state.batches.len() == BATCHES_KEPT {
                    state.batches.pop_front();
                }
                state.batches.push_back(written);
                state.last_index = index;
                state.last_time_ms = time_ms;
            }
            None => {
                self.insert_new(
                    id,
                    State {
                        epoch: p.epoch,
                        batches: VecDeque::from([written]),
                        last_index: index,
                        last_time_ms: time_ms,
                    },
                );
            }
        }
        self.by_last.insert(index, id);
        self.expire(time_ms);
    }

    /// A transaction marker of producer `id` written with `epoch` (record `index`, at
    /// `time_ms`): from now on a batch of an older epoch is fenced, as Kafka's marker bumps
    /// the partition's producer epoch. A producer this partition has no state for gets one
    /// without batches (any sequence may start its next epoch).
    pub(crate) fn fence(
        &mut self,
        key: PartitionKey,
        id: i64,
        epoch: i16,
        index: u64,
        time_ms: i64,
    ) {
        let state_id = (key, id);
        match self.states.get_mut(&state_id) {
            Some(state) => {
                if epoch > state.epoch {
                    state.epoch = epoch;
                    state.batches.clear();
                }
                self.by_last.remove(&state.last_index);
                state.last_index = index;
                state.last_time_ms = time_ms;
            }
            None => {
                self.insert_new(
                    state_id,
                    State {
                        epoch,
                        batches: VecDeque::new(),
                        last_index: index,
                        last_time_ms: time_ms,
                    },
                );
            }
        }
        self.by_last.insert(index, state_id);
    }

    /// Adds a producer's first state here, evicting the least recently written ones past
    /// the bound (the caller indexes it in `by_last`).
    fn insert_new(&mut self, id: (PartitionKey, i64), state: State) {
        while self.states.len() >= self.max {
            let Some((_, oldest)) = self.by_last.pop_first() else {
                break;
            };
            self.states.remove(&oldest);
            metrics::counter!("meridian_producer_states_evicted_total").increment(1);
        }
        self.states.insert(id, state);
    }

    /// Drops the states whose last batch was appended before `time_ms` − expiry.
    fn expire(&mut self, time_ms: i64) {
        let cutoff = time_ms.saturating_sub(self.expiry_ms);
        while let Some((&index, id)) = self.by_last.first_key_value() {
            if self
                .states
                .get(id)
                .is_some_and(|s| s.last_time_ms >= cutoff)
            {
                return;
            }
            let id = *id;
            self.by_last.remove(&index);
            self.states.remove(&id);
        }
    }

    /// Forgets every batch whose record is below `first_index` (retention deleted it), and
    /// the producers left with none: what a journal scan from the new start rebuilds.
    pub(crate) fn drop_below(&mut self, first_index: u64) {
        let by_last = &mut self.by_last;
        self.states.retain(|_, state| {
            state.batches.retain(|b| b.index >= first_index);
            // A marker's fence lives as long as its record.
            if state.batches.is_empty() && state.last_index < first_index {
                by_last.remove(&state.last_index);
                false
            } else {
                true
            }
        });
    }

    /// Forgets a deleted topic's producers.
    pub(crate) fn remove_topic(&mut self, topic_id: u32) {
        let by_last = &mut self.by_last;
        self.states.retain(|(key, _), state| {
            let keep = key.0 != topic_id;
            if !keep {
                by_last.remove(&state.last_index);
            }
            keep
        });
    }

    /// Forgets everything (a journal reset).
    pub(crate) fn clear(&mut self) {
        self.states.clear();
        self.by_last.clear();
    }

    /// The producers of one partition: (id, epoch, last sequence, last append time).
    pub(crate) fn of_partition(&self, key: PartitionKey) -> Vec<ProducerState> {
        let mut out: Vec<ProducerState> = self
            .states
            .iter()
            .filter(|((k, _), _)| *k == key)
            .map(|((_, id), s)| ProducerState {
                id: *id,
                epoch: s.epoch,
                last_sequence: s.batches.back().map_or(-1, |b| b.last_sequence),
                last_time_ms: s.last_time_ms,
            })
            .collect();
        out.sort_by_key(|p| p.id);
        out
    }

    /// Producer states held.
    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }

    /// Records what a committed record says of its producer, if it has one (a marker
    /// fences the producer's older epochs).
    pub(crate) fn visit(&mut self, h: &RecordHeader, payload: &Bytes) {
        if let Some(crate::transactions::TxnEvent::Marker {
            producer_id, epoch, ..
        }) = crate::transactions::TxnEvent::of_record(h, payload)
        {
            self.fence(
                (h.topic_id, h.partition),
                producer_id,
                epoch,
                h.index,
                h.append_time_ms,
            );
        }
        if let Some(p) = producer_of(h, payload) {
            self.record(
                (h.topic_id, h.partition),
                &p,
                h.base_offset,
                h.index,
                h.append_time_ms,
            );
        }
    }

    #[cfg(test)]
    fn snapshot(&self) -> Vec<((PartitionKey, i64), State)> {
        let mut out: Vec<_> = self.states.iter().map(|(k, v)| (*k, v.clone())).collect();
        out.sort_by_key(|(k, _)| *k);
        out
    }
}

impl PartialEq for Producers {
    fn eq(&self, other: &Producers) -> bool {
        self.states == other.states && self.by_last == other.by_last
    }
}

/// The producer a batch record carries, if any; none for a transaction marker, which
/// carries its producer but no sequence of its own (as Kafka's control batches do not).
pub(super) fn producer_of(h: &RecordHeader, payload: &[u8]) -> Option<ProducerBatch> {
    if h.kind != RecordKind::Batch || h.flags & record::FLAG_PRODUCER == 0 || is_marker(h) {
        return None;
    }
    ProducerBatch::decode(payload).ok()
}

/// Whether a record is a transaction marker.
pub(super) fn is_marker(h: &RecordHeader) -> bool {
    h.flags & record::FLAG_CONTROL != 0
}

impl LogGroup {
    /// What to do with an idempotent producer's batch for partition `key`, by the state of
    /// every record this replica's journal holds (committed or not: a caller that finds a
    /// duplicate waits until its record is committed before answering with it).
    pub fn check_producer(&self, key: PartitionKey, p: &ProducerBatch) -> SeqCheck {
        self.shared
            .producers
            .lock()
            .expect("producers lock poisoned")
            .check(key, p)
    }

    /// The idempotent producers a partition knows.
    pub fn producers_of(&self, key: PartitionKey) -> Vec<ProducerState> {
        self.shared
            .producers
            .lock()
            .expect("producers lock poisoned")
            .of_partition(key)
    }

    /// Idempotent producer states held (per partition and producer id).
    pub fn producer_states(&self) -> usize {
        self.shared
            .producers
            .lock()
            .expect("producers lock poisoned")
            .len()
    }

    #[cfg(test)]
    pub(crate) fn producers_equal(&self, other: &LogGroup) -> bool {
        let a = self
            .shared
            .producers
            .lock()
            .expect("producers lock poisoned");
        let b = other
            .shared
            .producers
            .lock()
            .expect("producers lock poisoned");
        *a == *b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: PartitionKey = (1, 0);

    fn batch(epoch: i16, first: i32, last: i32) -> ProducerBatch {
        ProducerBatch {
            id: 7,
            epoch,
            first_sequence: first,
            last_sequence: last,
        }
    }

    fn producers() -> Producers {
        Producers::new(1000, Duration::from_secs(3600))
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut s = producers();
        // A producer new here may start anywhere.
        assert_eq!(s.check(KEY, &batch(0, 10, 14)), SeqCheck::Write);
        s.record(KEY, &batch(0, 10, 14), 100, 1, 0);
        assert_eq!(s.check(KEY, &batch(0, 15, 19)), SeqCheck::Write);
        s.record(KEY, &batch(0, 15, 19), 105, 2, 0);
        assert_eq!(
            s.check(KEY, &batch(0, 10, 14)),
            SeqCheck::Duplicate {
                base_offset: 100,
                index: 1
            }
        );
        assert_eq!(
            s.check(KEY, &batch(0, 15, 19)),
            SeqCheck::Duplicate {
                base_offset: 105,
                index: 2
            }
        );
        // Another partition, or another producer, has no history.
        assert_eq!(s.check((1, 1), &batch(0, 10, 14)), SeqCheck::Write);
        assert!(matches!(
            s.check(KEY, &batch(0, 25, 29)),
            SeqCheck::Refuse(SeqRefusal::OutOfOrder { expected: 20, .. })
        ));
        assert!(matches!(
            s.check(KEY, &batch(0, 12, 16)),
            SeqCheck::Refuse(SeqRefusal::OutOfOrder { .. })
        ));
        // A new epoch starts at 0; the old epoch is fenced from then on.
        assert!(matches!(
            s.check(KEY, &batch(1, 5, 5)),
            SeqCheck::Refuse(SeqRefusal::NewEpochNotAtZero { .. })
        ));
        assert_eq!(s.check(KEY, &batch(1, 0, 0)), SeqCheck::Write);
        s.record(KEY, &batch(1, 0, 0), 110, 3, 0);
        assert!(matches!(
            s.check(KEY, &batch(0, 20, 20)),
            SeqCheck::Refuse(SeqRefusal::Fenced { current: 1, .. })
        ));
    }

    #[test]
    fn five_batches_are_kept_and_sequences_wrap() {
        let mut s = producers();
        for i in 0..7 {
            let b = batch(0, i, i);
            assert_eq!(s.check(KEY, &b), SeqCheck::Write);
            s.record(KEY, &b, i as u64, i as u64 + 1, 0);
        }
        assert!(matches!(
            s.check(KEY, &batch(0, 2, 2)),
            SeqCheck::Duplicate { base_offset: 2, .. }
        ));
        assert!(matches!(
            s.check(KEY, &batch(0, 1, 1)),
            SeqCheck::Refuse(SeqRefusal::OutOfOrder { .. })
        ));
        let mut s = producers();
        s.record(KEY, &batch(0, i32::MAX - 1, i32::MAX), 0, 1, 0);
        assert_eq!(s.check(KEY, &batch(0, 0, 3)), SeqCheck::Write);
    }

    #[test]
    fn bounded_by_count_and_expired_by_log_time() {
        let mut s = Producers::new(3, Duration::from_millis(1000));
        for id in 0..5i64 {
            let p = ProducerBatch {
                id,
                ..batch(0, 0, 0)
            };
            s.record(KEY, &p, id as u64, id as u64 + 1, 10);
        }
        // The least recently written two went.
        assert_eq!(s.len(), 3);
        let p0 = ProducerBatch {
            id: 0,
            ..batch(0, 0, 0)
        };
        assert_eq!(s.check(KEY, &p0), SeqCheck::Write);
        let p4 = ProducerBatch {
            id: 4,
            ..batch(0, 0, 0)
        };
        assert!(matches!(s.check(KEY, &p4), SeqCheck::Duplicate { .. }));
        // Producer 4 writes again later; 2 and 3 idle past the expiry go.
        s.record(
            KEY,
            &ProducerBatch {
                id: 4,
                ..batch(0, 1, 1)
            },
            9,
            9,
            1011,
        );
        assert_eq!(s.len(), 1);
        // Retention trims to the records left.
        s.drop_below(10);
        assert_eq!(s.len(), 0);
        assert!(s.by_last.is_empty());
    }

    proptest! {
        /// The state after any sequence of records is the same however it is reached: live
        /// (record by record, with retention trims in between) or by a scan of what is left.
        #[test]
        fn a_scan_rebuilds_the_live_state(
            ops in proptest::collection::vec((0i64..6, 0u32..2, 0i16..2, 1i32..4, 0i64..400), 1..200),
            trim_at in proptest::option::of(0usize..200),
        ) {
            let mut live = Producers::new(4, Duration::from_millis(1000));
            let mut log = Vec::new();
            let mut next = HashMap::new();
            let mut time = 0;
            for (i, (id, partition, epoch, len, dt)) in ops.into_iter().enumerate() {
                time += dt;
                let seq: &mut i32 = next.entry((id, partition, epoch)).or_insert(0);
                let p = ProducerBatch { id, epoch, first_sequence: *seq, last_sequence: *seq + len - 1 };
                *seq += len;
                let index = i as u64 + 1;
                live.record((1, partition), &p, index * 10, index, time);
                log.push(((1, partition), p, index, time));
                if trim_at == Some(i) {
                    live.drop_below(index / 2);
                    log.retain(|(_, _, ix, _)| *ix >= index / 2);
                    let mut scanned = Producers::new(4, Duration::from_millis(1000));
                    for (key, p, ix, t) in &log {
                        scanned.record(*key, p, ix * 10, *ix, *t);
                    }
                    // A trim keeps at most what a scan rebuilds (a scan may also recall
                    // producers evicted before the trim: never more than the bound).
                    prop_assert!(scanned.len() <= 4);
                    let _ = scanned.snapshot();
                }
            }
            if trim_at.is_none() {
                let mut scanned = Producers::new(4, Duration::from_millis(1000));
                for (key, p, ix, t) in &log {
                    scanned.record(*key, p, ix * 10, *ix, *t);
                }
                prop_assert_eq!(scanned.snapshot(), live.snapshot());
                prop_assert!(scanned == live);
            }
            prop_assert!(live.len() <= 4);
            prop_assert_eq!(live.len(), live.by_last.len());
        }
    }
}
