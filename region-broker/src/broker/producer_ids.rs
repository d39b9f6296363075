//! Producer ids (Kafka's `producerId`), for idempotent and transactional producers alike:
//! unique across the region's brokers and their restarts without asking anyone.

use std::sync::atomic::{AtomicI64, Ordering};

use super::Broker;

/// Hands out producer ids.
#[derive(Debug)]
pub(super) struct ProducerIds {
    broker_id: u32,
    last_id: AtomicI64,
}

impl ProducerIds {
    /// Ids of the broker `broker_id`.
    pub(super) fn new(broker_id: u32) -> ProducerIds {
        ProducerIds {
            broker_id,
            last_id: AtomicI64::new(0),
        }
    }

    /// A producer id no broker of the region gave before: the time in ms above ten bits of
    /// this broker's id, moving forward at least by 1024 per id (so ids stay unique across
    /// restarts and brokers without asking anyone).
    pub(super) fn next_id(&self) -> i64 {
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

impl Broker {
    /// A producer id no broker of the region gave before.
    pub fn next_producer_id(&self) -> i64 {
        self.producer_ids.next_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_are_unique_and_carry_the_broker() {
        let p = ProducerIds::new(3);
        let ids: Vec<i64> = (0..1000).map(|_| p.next_id()).collect();
        let mut sorted = ids.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|id| id % 1024 == 3 && *id > 0));
    }
}
