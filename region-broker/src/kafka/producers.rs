//! Idempotent produce (Kafka's `enable.idempotence`): InitProducerId hands out producer ids,
//! and a sequence refusal becomes Kafka's error code.
//!
//! The producers' state is not kept here: every replica of a log group keeps it from the
//! journal (`meridian_storage`'s `group/producers.rs`: a batch record carries its producer),
//! and the log-group layer checks each batch against it (`HostedGroup::append_idempotent`),
//! so a retry is answered with the offset of the first write whichever broker leads when it
//! arrives, as Kafka does by rebuilding the state from its log.

use std::sync::atomic::{AtomicI64, Ordering};

use crate::storage::SeqRefusal;

/// Kafka error codes of sequence checks.
pub(crate) mod code {
    pub(crate) const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub(crate) const INVALID_PRODUCER_EPOCH: i16 = 47;
}

/// The Kafka error code of a refused idempotent batch.
pub(crate) fn refusal_code(refusal: &SeqRefusal) -> i16 {
    match refusal {
        SeqRefusal::Fenced { .. } => code::INVALID_PRODUCER_EPOCH,
        SeqRefusal::NewEpochNotAtZero { .. } | SeqRefusal::OutOfOrder { .. } => {
            code::OUT_OF_ORDER_SEQUENCE_NUMBER
        }
    }
}

/// Hands out producer ids.
#[derive(Debug)]
pub(crate) struct Producers {
    broker_id: u32,
    last_id: AtomicI64,
}

impl Producers {
    pub(crate) fn new(broker_id: u32) -> Producers {
        Producers {
            broker_id,
            last_id: AtomicI64::new(0),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_map_to_kafka_codes() {
        let fenced = SeqRefusal::Fenced {
            id: 1,
            epoch: 0,
            current: 1,
        };
        assert_eq!(refusal_code(&fenced), code::INVALID_PRODUCER_EPOCH);
        let gap = SeqRefusal::OutOfOrder {
            id: 1,
            epoch: 0,
            first: 9,
            last: 9,
            expected: 5,
        };
        assert_eq!(refusal_code(&gap), code::OUT_OF_ORDER_SEQUENCE_NUMBER);
        let new_epoch = SeqRefusal::NewEpochNotAtZero {
            id: 1,
            epoch: 2,
            first: 3,
        };
        assert_eq!(refusal_code(&new_epoch), code::OUT_OF_ORDER_SEQUENCE_NUMBER);
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
