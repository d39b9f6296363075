//! An idempotent producer's own state, shared by every producer of the platform (the SDK's,
//! and a broker's own writes for other protocols' clients): its id, each partition's epoch
//! and next sequence, and which failures a batch is resent after (the partition stores it
//! once however often it arrives).

use meridian_proto::v1;

use crate::RegionError;

/// A new idempotent producer id: 62 random bits with bit 62 set, so every id is at least
/// 2^62. Kafka's producer ids (the Kafka listener's: the time in ms above ten bits of the
/// broker id) stay far below it, and the journal takes only ids of 0 or more (the top bit
/// stays clear). Random from std's `RandomState` (randomly keyed per process) over the
/// time, the process id and a counter.
pub fn new_producer_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    ((h.finish() >> 2) | (1 << 62)) as i64
}

/// One partition's idempotent producer state: who writes, in which epoch, and the sequence
/// of the next batch's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sequences {
    id: i64,
    epoch: i16,
    next: i32,
}

impl Sequences {
    pub fn new(id: i64) -> Sequences {
        Sequences {
            id,
            epoch: 0,
            next: 0,
        }
    }

    /// The producer of the next batch, of `count` records, and moves past it (sequences
    /// wrap past `i32::MAX` to 0, as Kafka's and the broker's do).
    pub fn assign(&mut self, count: usize) -> v1::ProducerSequence {
        let first = self.next;
        self.next = ((i64::from(first) + count as i64) & i64::from(i32::MAX)) as i32;
        v1::ProducerSequence {
            id: self.id,
            epoch: i32::from(self.epoch),
            first_sequence: first,
        }
    }

    /// A batch failed for good: the next one starts a new epoch at sequence 0 (the broker
    /// then fences any late copy of the failed one). Past the last epoch, a new id.
    pub fn failed(&mut self) {
        if self.epoch == i16::MAX {
            self.id = new_producer_id();
            self.epoch = 0;
        } else {
            self.epoch += 1;
        }
        self.next = 0;
    }
}

/// Whether an idempotent batch's failed attempt is worth another: the broker failed, went
/// away, did not answer, or the partition is between leaders. Refusals (unknown topic, a
/// batch too large, a sequence refusal, a full disk) are final.
pub fn retriable(e: &RegionError) -> bool {
    match e {
        RegionError::Connect { .. }
        | RegionError::GaveUp(_)
        | RegionError::NoAnswer(..)
        | RegionError::GroupUnavailable { .. } => true,
        RegionError::Broker { code, .. } => matches!(
            code,
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
                | tonic::Code::FailedPrecondition
                | tonic::Code::Aborted
        ),
        RegionError::BadAddress { .. } | RegionError::NoAddress(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sequences_follow_each_batch_and_wrap() {
        let mut s = Sequences::new(1 << 62);
        let a = s.assign(3);
        assert_eq!((a.id, a.epoch, a.first_sequence), (1 << 62, 0, 0));
        let b = s.assign(5);
        assert_eq!(b.first_sequence, 3);
        assert_eq!(s.assign(1).first_sequence, 8);
        s.next = i32::MAX - 1;
        assert_eq!(s.assign(4).first_sequence, i32::MAX - 1);
        // Past i32::MAX the sequence goes on at 0: the batch's last was 1.
        assert_eq!(s.assign(1).first_sequence, 2);
    }

    #[test]
    fn a_failed_batch_starts_a_new_epoch_at_zero() {
        let mut s = Sequences::new(5 << 60);
        s.assign(10);
        s.failed();
        let next = s.assign(2);
        assert_eq!((next.id, next.epoch, next.first_sequence), (5 << 60, 1, 0));
        assert_eq!(s.assign(1).first_sequence, 2);
        // Past the last epoch: a new id, epoch 0.
        s.epoch = i16::MAX;
        s.failed();
        let fresh = s.assign(1);
        assert_ne!(fresh.id, 5 << 60);
        assert_eq!((fresh.epoch, fresh.first_sequence), (0, 0));
    }

    #[test]
    fn producer_ids_are_distinct_and_above_kafkas() {
        let ids: std::collections::HashSet<i64> = (0..1000).map(|_| new_producer_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|&id| id >= 1 << 62), "{ids:?}");
        // The Kafka listener's ids: the time in ms above ten bits, far below 2^62.
        let kafka_now = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64)
            << 10;
        assert!(kafka_now < 1 << 52);
    }

    #[test]
    fn only_failures_of_the_broker_or_the_path_are_retried() {
        let broker = |code| RegionError::Broker {
            code,
            message: String::new(),
        };
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::Cancelled,
            tonic::Code::DeadlineExceeded,
            tonic::Code::FailedPrecondition,
            tonic::Code::Aborted,
        ] {
            assert!(retriable(&broker(code)), "{code:?}");
        }
        for code in [
            tonic::Code::OutOfRange,
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::ResourceExhausted,
            tonic::Code::PermissionDenied,
        ] {
            assert!(!retriable(&broker(code)), "{code:?}");
        }
        assert!(retriable(&RegionError::GaveUp(Duration::from_secs(1))));
        assert!(retriable(&RegionError::Connect {
            addr: "a".into(),
            reason: "refused".into(),
        }));
    }
}
