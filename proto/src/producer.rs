//! The producer of an idempotent batch (Kafka's `enable.idempotence`): who wrote it and the
//! sequence numbers it spans. A batch record with [`crate::record::FLAG_PRODUCER`] starts
//! its payload with this fixed-size prefix (before an origin prefix, if it also has one):
//!
//! ```text
//! 0   id              i64   the producer id (InitProducerId gave it), 0 or more
//! 8   epoch           i16   the producer epoch, 0 or more
//! 10  first_sequence  i32   the sequence number of the batch's first message, 0 or more
//! 14  last_sequence   i32   the sequence number of its last message, 0 or more (below
//!                           the first when the sequence wrapped past i32::MAX)
//! 18  the rest of the payload
//! ```
//!
//! Every replica rebuilds each producer's recent batches from these prefixes, so a retry is
//! recognized by whichever replica leads when it arrives.

use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};

/// Bytes the prefix takes.
pub const PREFIX_LEN: usize = 18;

/// Who wrote an idempotent batch, and the sequence numbers it spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProducerBatch {
    /// The producer id.
    pub id: i64,
    /// The producer epoch.
    pub epoch: i16,
    /// The sequence number of the first message.
    pub first_sequence: i32,
    /// The sequence number of the last message.
    pub last_sequence: i32,
}

/// Why a producer prefix does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// The payload ends inside the prefix.
    #[error("producer prefix truncated")]
    Truncated,
    /// A negative id, epoch or sequence number.
    #[error("producer prefix holds a negative id, epoch or sequence number")]
    Negative,
}

impl ProducerBatch {
    /// Whether the values are ones a prefix may carry (none negative).
    pub fn is_valid(&self) -> bool {
        self.id >= 0 && self.epoch >= 0 && self.first_sequence >= 0 && self.last_sequence >= 0
    }

    /// The prefix bytes.
    pub fn encode(&self) -> [u8; PREFIX_LEN] {
        let mut out = [0; PREFIX_LEN];
        out[..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..10].copy_from_slice(&self.epoch.to_le_bytes());
        out[10..14].copy_from_slice(&self.first_sequence.to_le_bytes());
        out[14..].copy_from_slice(&self.last_sequence.to_le_bytes());
        out
    }

    /// Appends the prefix to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        buf.put_slice(&self.encode());
    }

    /// Decodes the prefix at the front of `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<ProducerBatch, ProducerError> {
        let b = bytes.get(..PREFIX_LEN).ok_or(ProducerError::Truncated)?;
        let p = ProducerBatch {
            id: i64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            epoch: i16::from_le_bytes(b[8..10].try_into().expect("2 bytes")),
            first_sequence: i32::from_le_bytes(b[10..14].try_into().expect("4 bytes")),
            last_sequence: i32::from_le_bytes(b[14..].try_into().expect("4 bytes")),
        };
        if !p.is_valid() {
            return Err(ProducerError::Negative);
        }
        Ok(p)
    }

    /// Splits a payload into its producer and the rest (a slice, no copy).
    pub fn split(payload: &Bytes) -> Result<(ProducerBatch, Bytes), ProducerError> {
        let p = ProducerBatch::decode(payload)?;
        Ok((p, payload.slice(PREFIX_LEN..)))
    }
}

#[cfg(feature = "kafka")]
impl From<crate::kafka::ProducerBatch> for ProducerBatch {
    fn from(p: crate::kafka::ProducerBatch) -> ProducerBatch {
        ProducerBatch {
            id: p.id,
            epoch: p.epoch,
            first_sequence: p.first_sequence,
            last_sequence: p.last_sequence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_and_keeps_the_rest(
            id in 0..i64::MAX,
            epoch in 0..i16::MAX,
            first_sequence in 0..i32::MAX,
            last_sequence in 0..i32::MAX,
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let p = ProducerBatch { id, epoch, first_sequence, last_sequence };
            let mut buf = Vec::new();
            p.encode_into(&mut buf);
            prop_assert_eq!(buf.len(), PREFIX_LEN);
            buf.extend_from_slice(&rest);
            let payload = Bytes::from(buf);
            let (back, tail) = ProducerBatch::split(&payload).unwrap();
            prop_assert_eq!(back, p);
            prop_assert_eq!(tail.as_ref(), rest.as_slice());
            // A slice of the payload, not a copy.
            prop_assert_eq!(tail.as_ptr(), payload[PREFIX_LEN..].as_ptr());
        }

        #[test]
        fn split_never_panics_and_refuses_negatives(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            match ProducerBatch::split(&Bytes::from(bytes.clone())) {
                Ok((p, _)) => prop_assert!(p.is_valid()),
                Err(ProducerError::Truncated) => prop_assert!(bytes.len() < PREFIX_LEN),
                Err(ProducerError::Negative) => {}
            }
        }
    }

    #[test]
    fn bad_prefixes_are_named() {
        assert_eq!(
            ProducerBatch::split(&Bytes::from_static(&[0; PREFIX_LEN - 1])),
            Err(ProducerError::Truncated)
        );
        let negative = ProducerBatch {
            id: 1,
            epoch: -1,
            first_sequence: 0,
            last_sequence: 0,
        };
        assert_eq!(
            ProducerBatch::decode(&negative.encode()),
            Err(ProducerError::Negative)
        );
    }
}
