//! The origin of a mirrored batch: where its messages were first written. A batch record
//! with [`crate::record::FLAG_ORIGIN`] starts its payload with this prefix, then the batch
//! (`crate::batch`):
//!
//! ```text
//! region_len  u16
//! region      region_len bytes (UTF-8)
//! group       u32   the log group of the first write, in its region
//! seq         u64   the record's index (raft index) there: increasing per (region, group)
//! through     u64   every record of (region, group) up to this seq was held here when this
//!                   one was written (what a restarted link may resume after)
//! ```

use bytes::{BufMut, Bytes};

/// Longest region name (the control plane's name rule).
pub const REGION_MAX: usize = 249;

/// Bits of a message's index within its batch in an origin position.
pub const INDEX_BITS: u32 = 24;

/// A message's position in its origin region: the record index of its batch there, then
/// its index in the batch. Positions of one origin grow in the order the origin wrote, in
/// every region holding the messages; a consumer's "seen up to" per origin is one of them.
pub fn position(seq: u64, index: u32) -> u64 {
    (seq << INDEX_BITS) | u64::from(index & ((1 << INDEX_BITS) - 1))
}

/// Where a mirrored batch was first written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    /// The region of the first write.
    pub region: String,
    /// Its log group there.
    pub group: u32,
    /// The record's index there.
    pub seq: u64,
    /// Every record of `(region, group)` up to this seq was held by the target region.
    pub through: u64,
}

/// Why an origin prefix does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// The payload ends inside the prefix.
    #[error("origin prefix truncated")]
    Truncated,
    /// The region name is empty, too long or not UTF-8.
    #[error("origin region name is invalid")]
    BadRegion,
}

impl Origin {
    /// Bytes the prefix takes.
    pub fn encoded_len(&self) -> usize {
        2 + self.region.len() + 4 + 8 + 8
    }

    /// Appends the prefix to `buf`. The region name must be at most [`REGION_MAX`] bytes.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        debug_assert!(!self.region.is_empty() && self.region.len() <= REGION_MAX);
        buf.put_u16_le(self.region.len() as u16);
        buf.put_slice(self.region.as_bytes());
        buf.put_u32_le(self.group);
        buf.put_u64_le(self.seq);
        buf.put_u64_le(self.through);
    }

    /// Splits a mirrored batch's payload into its origin and the batch (a slice, no copy).
    pub fn split(payload: &Bytes) -> Result<(Origin, Bytes), OriginError> {
        let region_len = usize::from(u16::from_le_bytes(
            payload
                .get(..2)
                .ok_or(OriginError::Truncated)?
                .try_into()
                .expect("2 bytes"),
        ));
        if region_len == 0 || region_len > REGION_MAX {
            return Err(OriginError::BadRegion);
        }
        let end = 2 + region_len + 20;
        let fixed = payload
            .get(2 + region_len..end)
            .ok_or(OriginError::Truncated)?;
        let region = std::str::from_utf8(&payload[2..2 + region_len])
            .map_err(|_| OriginError::BadRegion)?
            .to_owned();
        let u64_at = |at: usize| u64::from_le_bytes(fixed[at..at + 8].try_into().expect("8"));
        Ok((
            Origin {
                region,
                group: u32::from_le_bytes(fixed[..4].try_into().expect("4 bytes")),
                seq: u64_at(4),
                through: u64_at(12),
            },
            payload.slice(end..),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trips_and_keeps_the_batch(
            region in "[a-z0-9-]{1,40}",
            group in any::<u32>(),
            seq in any::<u64>(),
            through in any::<u64>(),
            batch in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let origin = Origin { region, group, seq, through };
            let mut buf = Vec::new();
            origin.encode(&mut buf);
            prop_assert_eq!(buf.len(), origin.encoded_len());
            buf.extend_from_slice(&batch);
            let (back, rest) = Origin::split(&Bytes::from(buf)).unwrap();
            prop_assert_eq!(back, origin);
            prop_assert_eq!(rest.as_ref(), batch.as_slice());
        }

        #[test]
        fn split_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Origin::split(&Bytes::from(bytes));
        }
    }

    #[test]
    fn bad_prefixes_are_named() {
        assert_eq!(
            Origin::split(&Bytes::from_static(&[1])),
            Err(OriginError::Truncated)
        );
        assert_eq!(
            Origin::split(&Bytes::from_static(&[0, 0])),
            Err(OriginError::BadRegion)
        );
        assert_eq!(
            Origin::split(&Bytes::from_static(&[2, 0, b'e', b'u', 1])),
            Err(OriginError::Truncated)
        );
        let mut bad = vec![1, 0, 0xff];
        bad.extend_from_slice(&[0; 20]);
        assert_eq!(
            Origin::split(&Bytes::from(bad)),
            Err(OriginError::BadRegion)
        );
    }
}
