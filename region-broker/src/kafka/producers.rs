//! Idempotent produce (Kafka's `enable.idempotence`): InitProducerId hands out producer ids,
//! and for every (producer, partition) the partition leader keeps the sequence numbers of
//! the last five batches it wrote, so a batch the client sends again (its answer was lost,
//! the connection dropped) is answered with the offset it was written at instead of being
//! written twice, and a gap in the sequence is refused as Kafka refuses it.
//!
//! The state lives in the leader's memory. Kafka rebuilds it from the log after a leader
//! change; here a new leader starts without it and accepts the producer's next sequence as
//! it comes (a retry that crosses a leader change can be written twice — the one case
//! where this is weaker than Kafka).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use meridian_proto::kafka::ProducerBatch;

/// Batches remembered per producer and partition (Kafka's `max.in.flight` limit for
/// idempotence is 5).
const REMEMBERED: usize = 5;

/// Producer-partition states kept at most; the least recently used go first.
const STATES_MAX: usize = 100_000;

/// Kafka error codes of sequence checks.
pub(crate) mod code {
    pub(crate) const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub(crate) const INVALID_PRODUCER_EPOCH: i16 = 47;
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// New: write it, then [`Sequences::record`] it.
    Write,
    /// Written before, at this base offset: answer with it, write nothing.
    Duplicate(i64),
    /// Refused with this Kafka error code.
    Refuse(i16),
}

/// One producer's recent batches on one partition.
#[derive(Debug)]
pub(crate) struct Sequences {
    epoch: i16,
    /// `(first sequence, last sequence, base offset)`, oldest first.
    recent: VecDeque<(i32, i32, i64)>,
    last_used: Instant,
}

impl Sequences {
    fn new() -> Sequences {
        Sequences {
            epoch: -1,
            recent: VecDeque::new(),
            last_used: Instant::now(),
        }
    }

    /// Kafka's sequence rules: an older epoch is fenced; a newer epoch starts again at
    /// sequence 0; a batch seen before is a duplicate; otherwise the batch must follow the
    /// last one. Without history (a new producer here, or a new leader) any sequence starts.
    pub(crate) fn check(&self, batch: &ProducerBatch) -> Check {
        if batch.epoch < self.epoch {
            return Check::Refuse(code::INVALID_PRODUCER_EPOCH);
        }
        if batch.epoch > self.epoch && self.epoch >= 0 {
            return if batch.first_sequence == 0 {
                Check::Write
            } else {
                Check::Refuse(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
            };
        }
        if let Some(&(_, _, offset)) = self
            .recent
            .iter()
            .find(|(first, last, _)| *first == batch.first_sequence && *last == batch.last_sequence)
        {
            return Check::Duplicate(offset);
        }
        match self.recent.back() {
            None => Check::Write,
            Some(&(_, last, _)) if batch.first_sequence == last.wrapping_add(1) & i32::MAX => {
                Check::Write
            }
            Some(_) => Check::Refuse(code::OUT_OF_ORDER_SEQUENCE_NUMBER),
        }
    }

    /// Remembers a batch written at `base_offset`.
    pub(crate) fn record(&mut self, batch: &ProducerBatch, base_offset: i64) {
        if batch.epoch != self.epoch {
            self.epoch = batch.epoch;
            self.recent.clear();
        }
        if self.recent.len() == REMEMBERED {
            self.recent.pop_front();
        }
        self.recent
            .push_back((batch.first_sequence, batch.last_sequence, base_offset));
    }
}

/// Each (producer id, topic, partition)'s sequences.
type States = HashMap<(i64, String, i32), Arc<tokio::sync::Mutex<Sequences>>>;

/// Producer ids and every producer's sequences on the partitions this broker leads.
#[derive(Debug)]
pub(crate) struct Producers {
    broker_id: u32,
    last_id: AtomicI64,
    states: Mutex<States>,
}

impl Producers {
    pub(crate) fn new(broker_id: u32) -> Producers {
        Producers {
            broker_id,
            last_id: AtomicI64::new(0),
            states: Mutex::new(HashMap::new()),
        }
    }

    /// A producer id no broker of the region gave before: the time in ms above ten bits of
    /// this broker's id, moving forward at least by 1024 per id (so ids stay unique across
    /// restarts and brokers without asking anyone).
    pub(crate) fn next_id(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let candidate = (now << 10) | i64::from(self.broker_id % 1024);
        let mut last = self.last_id.load(Ordering::Relaxed);
        loop {
            let id = candidate.max(last + 1024);
            match self
                .last_id
                .compare_exchange(last, id, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return id,
                Err(now) => last = now,
            }
        }
    }

    /// The sequences of `producer` on a partition, locked: hold the guard across the write
    /// so a retry arriving on another connection waits for the first attempt's outcome.
    pub(crate) async fn lock(
        &self,
        producer: i64,
        topic: &str,
        partition: i32,
    ) -> tokio::sync::OwnedMutexGuard<Sequences> {
        let state = {
            let mut states = self.states.lock().expect("producer states lock poisoned");
            if states.len() >= STATES_MAX {
                evict(&mut states);
            }
            states
                .entry((producer, topic.to_owned(), partition))
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Sequences::new())))
                .clone()
        };
        let mut guard = state.lock_owned().await;
        guard.last_used = Instant::now();
        guard
    }
}

/// Drops the least recently used tenth of the states (those not in use right now).
fn evict(states: &mut States) {
    let mut idle: Vec<(Instant, (i64, String, i32))> = states
        .iter()
        .filter_map(|(k, v)| v.try_lock().ok().map(|s| (s.last_used, k.clone())))
        .collect();
    idle.sort_by_key(|(used, _)| *used);
    for (_, k) in idle.into_iter().take(STATES_MAX / 10) {
        states.remove(&k);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(epoch: i16, first: i32, last: i32) -> ProducerBatch {
        ProducerBatch {
            id: 7,
            epoch,
            first_sequence: first,
            last_sequence: last,
        }
    }

    #[test]
    fn retries_are_duplicates_and_gaps_are_refused() {
        let mut s = Sequences::new();
        // A producer new here may start anywhere (this leader may be new).
        assert_eq!(s.check(&batch(0, 10, 14)), Check::Write);
        s.record(&batch(0, 10, 14), 100);
        assert_eq!(s.check(&batch(0, 15, 19)), Check::Write);
        s.record(&batch(0, 15, 19), 105);
        // The first batch sent again: its offset, nothing written.
        assert_eq!(s.check(&batch(0, 10, 14)), Check::Duplicate(100));
        assert_eq!(s.check(&batch(0, 15, 19)), Check::Duplicate(105));
        // A gap, or a batch overlapping another: out of order.
        assert_eq!(
            s.check(&batch(0, 25, 29)),
            Check::Refuse(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(
            s.check(&batch(0, 12, 16)),
            Check::Refuse(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        // A new epoch starts at 0; the old epoch is fenced from then on.
        assert_eq!(
            s.check(&batch(1, 5, 5)),
            Check::Refuse(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        assert_eq!(s.check(&batch(1, 0, 0)), Check::Write);
        s.record(&batch(1, 0, 0), 110);
        assert_eq!(
            s.check(&batch(0, 20, 20)),
            Check::Refuse(code::INVALID_PRODUCER_EPOCH)
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered_and_sequences_wrap() {
        let mut s = Sequences::new();
        for i in 0..7 {
            let b = batch(0, i, i);
            assert_eq!(s.check(&b), Check::Write);
            s.record(&b, i64::from(i));
        }
        assert_eq!(s.check(&batch(0, 6, 6)), Check::Duplicate(6));
        assert_eq!(s.check(&batch(0, 2, 2)), Check::Duplicate(2));
        assert_eq!(
            s.check(&batch(0, 1, 1)),
            Check::Refuse(code::OUT_OF_ORDER_SEQUENCE_NUMBER)
        );
        let mut s = Sequences::new();
        s.record(&batch(0, i32::MAX - 1, i32::MAX), 0);
        assert_eq!(s.check(&batch(0, 0, 3)), Check::Write);
    }

    #[test]
    fn producer_ids_are_unique_and_carry_the_broker() {
        let p = Producers::new(3);
        let ids: Vec<i64> = (0..1000).map(|_| p.next_id()).collect();
        let mut sorted = ids.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|id| id % 1024 == 3 && *id > 0));
    }
}
