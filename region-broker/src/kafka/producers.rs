//! Idempotent produce (Kafka's `enable.idempotence`): a sequence refusal becomes Kafka's
//! error code (producer ids come from [`crate::broker::Broker::next_producer_id`]).
//!
//! The producers' state is not kept here: every replica of a log group keeps it from the
//! journal (`meridian_storage`'s `group/producers.rs`: a batch record carries its producer),
//! and the log-group layer checks each batch against it (`HostedGroup::append_idempotent`),
//! so a retry is answered with the offset of the first write whichever broker leads when it
//! arrives, as Kafka does by rebuilding the state from its log.

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
}
