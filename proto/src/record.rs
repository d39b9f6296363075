//! The journal record: a fixed header followed by a payload, checksummed as one. The storage
//! engine writes and reads it; it lives here as a pure codec so it can be fuzzed alone.
//!
//! ```text
//! 0   len             u32   whole record, header included
//! 4   crc             u32   CRC32C of bytes 8..len
//! 8   kind            u8    1 = message batch, 2 = consumer-offset commit, 3 = blank,
//!                           4 = membership, 5 = metadata (replication entries),
//!                           6 = carried (a compacted partition's message copied forward)
//! 9   flags           u8    bit 0: the payload starts with an origin (a mirrored batch,
//!                           `crate::origin`); bit 1: the payload starts with the
//!                           idempotent producer of the batch (`crate::producer`, before
//!                           an origin); other bits 0 (batches only; a carried record
//!                           only bit 0)
//! 10  reserved        u16   0
//! 12  topic_id        u32
//! 16  partition       u32
//! 20  count           u32   messages in the batch (0 for other kinds)
//! 24  term            u64
//! 32  index           u64   one more than the previous record's
//! 40  append_time_ms  i64
//! 48  base_offset     u64   partition offset of the first message (batches)
//! 56  payload
//! ```
//!
//! A `len` of [`SEGMENT_END`] marks the end of a segment's data: the next record is at the
//! start of the next segment. A `len` of zero is never-written space.

use bytes::{BufMut, Bytes};

use crate::origin::{Origin, OriginError};
use crate::producer::{PREFIX_LEN, ProducerBatch, ProducerError};

/// Bytes before the payload.
pub const HEADER_LEN: usize = 56;
/// A `len` value that says "continue in the next segment".
pub const SEGMENT_END: u32 = u32::MAX;
/// Bytes the end-of-segment marker takes; a segment always keeps room for it.
pub const SEGMENT_END_LEN: u64 = 8;

/// Flag: a batch whose payload starts with its origin (`crate::origin::Origin`).
pub const FLAG_ORIGIN: u8 = 1;
/// Flag: a batch whose payload starts with its idempotent producer
/// (`crate::producer::ProducerBatch`, [`crate::producer::PREFIX_LEN`] bytes), before the
/// origin when it has both. Brokers older than this flag refuse such records as corrupt.
pub const FLAG_PRODUCER: u8 = 2;
/// Flag: a batch written inside its producer's transaction (with [`FLAG_PRODUCER`]):
/// readers of committed data see it only once its producer's commit marker follows it.
pub const FLAG_TRANSACTIONAL: u8 = 4;
/// Flag: a transaction marker (with [`FLAG_PRODUCER`], `count` 1): the payload after the
/// producer prefix is a [`TxnMarker`]. It takes an offset, as Kafka's control records do.
pub const FLAG_CONTROL: u8 = 8;
/// Every flag a record may carry.
const FLAGS_KNOWN: u8 = FLAG_ORIGIN | FLAG_PRODUCER | FLAG_TRANSACTIONAL | FLAG_CONTROL;

/// Bytes a [`TxnMarker`] takes.
pub const MARKER_LEN: usize = 8;

/// A transaction marker: how its producer's transaction in this partition ended. Encoded
/// with the fields of Kafka's control record key (version `i16` 0, type `i16`: 0 abort,
/// 1 commit) and the coordinator's epoch (`i32`), little-endian as the journal is (the Kafka
/// listener writes Kafka's own big-endian form on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnMarker {
    /// Committed (else aborted).
    pub commit: bool,
    /// The coordinator's epoch when it wrote the marker.
    pub coordinator_epoch: i32,
}

/// Why marker bytes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkerError {
    /// Not [`MARKER_LEN`] bytes.
    #[error("a transaction marker is {MARKER_LEN} bytes, not {0}")]
    Length(usize),
    /// A version this broker does not read.
    #[error("transaction marker version {0} is not known here")]
    Version(i16),
    /// Neither commit nor abort.
    #[error("transaction marker type {0} is neither abort (0) nor commit (1)")]
    Type(i16),
}

impl TxnMarker {
    /// Appends its encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&0i16.to_le_bytes());
        out.extend_from_slice(&i16::from(self.commit).to_le_bytes());
        out.extend_from_slice(&self.coordinator_epoch.to_le_bytes());
    }

    /// Decodes exactly one marker.
    pub fn decode(bytes: &[u8]) -> Result<TxnMarker, MarkerError> {
        let b: &[u8; MARKER_LEN] = bytes
            .try_into()
            .map_err(|_| MarkerError::Length(bytes.len()))?;
        let version = i16::from_le_bytes([b[0], b[1]]);
        if version != 0 {
            return Err(MarkerError::Version(version));
        }
        let commit = match i16::from_le_bytes([b[2], b[3]]) {
            0 => false,
            1 => true,
            other => return Err(MarkerError::Type(other)),
        };
        Ok(TxnMarker {
            commit,
            coordinator_epoch: i32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        })
    }
}

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// A batch of messages of one partition.
    Batch = 1,
    /// A consumer group's committed offset for one partition; payload is
    /// `group_len u16, group, offset u64`.
    OffsetCommit = 2,
    /// A replication entry with no data (a new raft leader's first entry).
    Blank = 3,
    /// A replica-set membership change; payload is the replication layer's encoding.
    Membership = 4,
    /// Metadata the replication layer carries (topic catalog changes); JSON payload.
    Metadata = 5,
    /// One message of a compacted partition, still its key's latest, copied forward so
    /// retention can delete the segment that held it: `count` 1, `base_offset` the
    /// message's own (old) offset, which the queue index points here from now on. The
    /// payload is [`encode_carried`]'s: the message's first append time, then a batch
    /// payload of that one message (after its origin, with [`FLAG_ORIGIN`]). It takes no
    /// new offset and ships nowhere: mirrors carried the message when it was written.
    Carried = 6,
}

/// The decoded fixed header of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    /// Whole record length, header included.
    pub len: u32,
    /// What the record holds.
    pub kind: RecordKind,
    /// [`FLAG_ORIGIN`], [`FLAG_PRODUCER`], both or 0.
    pub flags: u8,
    /// The catalog's id of the topic (never reused, unlike names).
    pub topic_id: u32,
    /// Partition within the topic.
    pub partition: u32,
    /// Messages in a batch.
    pub count: u32,
    /// Leadership term that wrote the record.
    pub term: u64,
    /// Position in the group's sequence of records, starting at 1.
    pub index: u64,
    /// Broker time of the append, milliseconds since the Unix epoch.
    pub append_time_ms: i64,
    /// Partition offset of the first message of a batch.
    pub base_offset: u64,
}

/// What the bytes at a journal position are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A whole, checksummed record.
    Record(RecordHeader),
    /// The end-of-segment marker.
    SegmentEnd,
    /// Never-written (zero) space: the end of the journal.
    Empty,
    /// Bytes that are not a valid record: a torn write or corruption.
    Invalid(&'static str),
}

impl RecordHeader {
    /// Payload bytes.
    pub fn payload_len(&self) -> usize {
        self.len as usize - HEADER_LEN
    }
}

/// Encodes a record into `buf`.
pub fn encode(buf: &mut Vec<u8>, header: &RecordHeader, payload: &[u8]) {
    encode_parts(buf, header, &[payload]);
}

/// Encodes a record whose payload is `parts` one after the other (a prefix and a batch,
/// written without joining them first).
pub fn encode_parts(buf: &mut Vec<u8>, header: &RecordHeader, parts: &[&[u8]]) {
    debug_assert_eq!(
        header.len as usize,
        HEADER_LEN + parts.iter().map(|p| p.len()).sum::<usize>()
    );
    let start = buf.len();
    buf.put_u32_le(header.len);
    buf.put_u32_le(0);
    buf.put_u8(header.kind as u8);
    buf.put_u8(header.flags);
    buf.put_u16_le(0);
    buf.put_u32_le(header.topic_id);
    buf.put_u32_le(header.partition);
    buf.put_u32_le(header.count);
    buf.put_u64_le(header.term);
    buf.put_u64_le(header.index);
    buf.put_i64_le(header.append_time_ms);
    buf.put_u64_le(header.base_offset);
    for part in parts {
        buf.put_slice(part);
    }
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Parses the record at the front of `buf`, checking its checksum.
///
/// `buf` runs to the end of the segment, so a record longer than `buf` is invalid.
pub fn parse(buf: &[u8]) -> Parsed {
    parse_checked(buf, true)
}

/// Parses the record at the front of `buf`; checks the checksum only if `verify`. Recovery
/// skips the check below the last checkpoint, where every record was verified before.
pub fn parse_checked(buf: &[u8], verify: bool) -> Parsed {
    if buf.len() < 4 {
        return if buf.iter().all(|&b| b == 0) {
            Parsed::Empty
        } else {
            Parsed::Invalid("short tail")
        };
    }
    let len = u32_at(buf, 0);
    if len == SEGMENT_END {
        return if buf.len() >= SEGMENT_END_LEN as usize && u32_at(buf, 4) == SEGMENT_END {
            Parsed::SegmentEnd
        } else {
            Parsed::Invalid("torn segment-end marker")
        };
    }
    if len == 0 {
        return if buf[..buf.len().min(HEADER_LEN)].iter().all(|&b| b == 0) {
            Parsed::Empty
        } else {
            Parsed::Invalid("zero length with data after it")
        };
    }
    let len = len as usize;
    if len < HEADER_LEN {
        return Parsed::Invalid("length shorter than the header");
    }
    if len > buf.len() {
        return Parsed::Invalid("length runs past the segment");
    }
    if verify && crc32c::crc32c(&buf[8..len]) != u32_at(buf, 4) {
        return Parsed::Invalid("checksum mismatch");
    }
    let kind = match buf[8] {
        1 => RecordKind::Batch,
        2 => RecordKind::OffsetCommit,
        3 => RecordKind::Blank,
        4 => RecordKind::Membership,
        5 => RecordKind::Metadata,
        6 => RecordKind::Carried,
        _ => return Parsed::Invalid("unknown record kind"),
    };
    let flags = buf[9];
    let allowed = match kind {
        RecordKind::Batch => FLAGS_KNOWN,
        RecordKind::Carried => FLAG_ORIGIN,
        _ => 0,
    };
    if flags & !allowed != 0 {
        return Parsed::Invalid("unknown record flags");
    }
    if kind == RecordKind::Carried && (u32_at(buf, 20) != 1 || len - HEADER_LEN < CARRIED_TIME_LEN)
    {
        return Parsed::Invalid("a carried record holding other than one message");
    }
    if flags & (FLAG_TRANSACTIONAL | FLAG_CONTROL) != 0 && flags & FLAG_PRODUCER == 0 {
        return Parsed::Invalid("a transactional record without its producer");
    }
    if flags & FLAG_CONTROL != 0 && u32_at(buf, 20) != 1 {
        return Parsed::Invalid("a transaction marker counting other than one message");
    }
    let prefix = if flags & FLAG_PRODUCER != 0 {
        PREFIX_LEN
    } else {
        0
    };
    if len - HEADER_LEN < prefix {
        return Parsed::Invalid("payload shorter than its producer prefix");
    }
    Parsed::Record(RecordHeader {
        len: len as u32,
        kind,
        flags,
        topic_id: u32_at(buf, 12),
        partition: u32_at(buf, 16),
        count: u32_at(buf, 20),
        term: u64_at(buf, 24),
        index: u64_at(buf, 32),
        append_time_ms: u64_at(buf, 40) as i64,
        base_offset: u64_at(buf, 48),
    })
}

/// A batch record's payload taken apart: its prefixes, and the encoded messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchPayload {
    /// The idempotent producer that wrote it ([`FLAG_PRODUCER`]).
    pub producer: Option<ProducerBatch>,
    /// Where a mirrored batch was first written ([`FLAG_ORIGIN`]).
    pub origin: Option<Origin>,
    /// The encoded messages (`crate::batch`): a slice of the payload, never a copy.
    pub batch: Bytes,
}

/// Why a batch record's prefixes do not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The producer prefix.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// The origin prefix.
    #[error(transparent)]
    Origin(#[from] OriginError),
}

/// Splits a batch record's payload (with the record's `flags`) into its producer, its
/// origin and its messages: the one reader of the prefixes every reader of batch payloads
/// goes through.
pub fn split_batch(flags: u8, payload: &Bytes) -> Result<BatchPayload, PrefixError> {
    let (producer, rest) = if flags & FLAG_PRODUCER != 0 {
        let (p, rest) = ProducerBatch::split(payload)?;
        (Some(p), rest)
    } else {
        (None, payload.clone())
    };
    let (origin, batch) = if flags & FLAG_ORIGIN != 0 {
        let (o, batch) = Origin::split(&rest)?;
        (Some(o), batch)
    } else {
        (None, rest)
    };
    Ok(BatchPayload {
        producer,
        origin,
        batch,
    })
}

/// Bytes before a carried record's batch payload: the message's first append time.
pub const CARRIED_TIME_LEN: usize = 8;

/// A carried record's payload: `append_time_ms` (when the message was first written,
/// which time lookups and retention keep going by), then `batch` (a batch payload of one
/// message, after its origin for a mirrored one).
pub fn encode_carried(append_time_ms: i64, batch: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(CARRIED_TIME_LEN + batch.len());
    out.put_i64_le(append_time_ms);
    out.extend_from_slice(batch);
    Bytes::from(out)
}

/// A carried record's payload taken apart: the message's first append time, and the batch
/// payload after it (`None` when too short, which parsing a record already refuses).
pub fn split_carried(payload: &Bytes) -> Option<(i64, Bytes)> {
    let time = payload.get(..CARRIED_TIME_LEN)?;
    let time = i64::from_le_bytes(time.try_into().ok()?);
    Some((time, payload.slice(CARRIED_TIME_LEN..)))
}

/// The bytes of an end-of-segment marker.
pub fn segment_end_marker() -> [u8; SEGMENT_END_LEN as usize] {
    let mut out = [0; 8];
    out[..4].copy_from_slice(&SEGMENT_END.to_le_bytes());
    out[4..].copy_from_slice(&SEGMENT_END.to_le_bytes());
    out
}

/// Encodes an offset-commit payload.
pub fn encode_offset_commit(group: &str, offset: u64) -> Vec<u8> {
    encode_commit(group, offset, &[])
}

/// Encodes an offset-commit payload with origin positions after the offset:
/// `n u16, n × (region len u16, region, position u64)`. A commit without positions is the
/// plain offset commit.
pub fn encode_commit(group: &str, offset: u64, positions: &[(String, u64)]) -> Vec<u8> {
    encode_commit_with(group, offset, positions, "")
}

/// The most bytes of a commit's metadata (Kafka's `offset.metadata.max.bytes` default).
pub const COMMIT_METADATA_MAX: usize = 4096;

/// [`encode_commit`] with the committer's `metadata` (Kafka's OffsetCommit metadata, kept
/// and returned by OffsetFetch; at most [`COMMIT_METADATA_MAX`] bytes, the caller checks):
/// after the positions (their count written, even 0, when there is metadata), `len u16,
/// metadata`. Readers older than it stop at the positions.
pub fn encode_commit_with(
    group: &str,
    offset: u64,
    positions: &[(String, u64)],
    metadata: &str,
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(2 + group.len() + 8 + metadata.len());
    buf.put_u16_le(group.len() as u16);
    buf.put_slice(group.as_bytes());
    buf.put_u64_le(offset);
    if !positions.is_empty() || !metadata.is_empty() {
        buf.put_u16_le(positions.len() as u16);
        for (region, position) in positions {
            buf.put_u16_le(region.len() as u16);
            buf.put_slice(region.as_bytes());
            buf.put_u64_le(*position);
        }
    }
    if !metadata.is_empty() {
        let metadata = &metadata.as_bytes()[..metadata.len().min(COMMIT_METADATA_MAX)];
        buf.put_u16_le(metadata.len() as u16);
        buf.put_slice(metadata);
    }
    buf
}

/// The metadata of an offset-commit payload (empty when it has none, or it does not
/// decode).
pub fn decode_commit_metadata(payload: &Bytes) -> String {
    fn parse(buf: &[u8]) -> Option<String> {
        let group_len = usize::from(u16::from_le_bytes(buf.get(..2)?.try_into().ok()?));
        let mut at = 2 + group_len + 8;
        let n = u16::from_le_bytes(buf.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        for _ in 0..n {
            let len = usize::from(u16::from_le_bytes(buf.get(at..at + 2)?.try_into().ok()?));
            at += 2 + len + 8;
        }
        let len = usize::from(u16::from_le_bytes(buf.get(at..at + 2)?.try_into().ok()?));
        let metadata = std::str::from_utf8(buf.get(at + 2..at + 2 + len)?).ok()?;
        Some(metadata.to_owned())
    }
    parse(payload).unwrap_or_default()
}

/// The origin positions of an offset-commit payload (none for a plain commit, or when the
/// tail does not decode).
pub fn decode_commit_positions(payload: &Bytes) -> Vec<(String, u64)> {
    fn parse(buf: &[u8]) -> Option<Vec<(String, u64)>> {
        let group_len = usize::from(u16::from_le_bytes(buf.get(..2)?.try_into().ok()?));
        let mut at = 2 + group_len + 8;
        let Some(n) = buf.get(at..at + 2) else {
            return Some(Vec::new());
        };
        let n = u16::from_le_bytes(n.try_into().ok()?);
        at += 2;
        let mut out = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let len = usize::from(u16::from_le_bytes(buf.get(at..at + 2)?.try_into().ok()?));
            let region = std::str::from_utf8(buf.get(at + 2..at + 2 + len)?).ok()?;
            at += 2 + len;
            let position = u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?);
            at += 8;
            out.push((region.to_owned(), position));
        }
        Some(out)
    }
    parse(payload).unwrap_or_default()
}

/// Decodes an offset-commit payload.
pub fn decode_offset_commit(payload: &Bytes) -> Option<(String, u64)> {
    let group_len = usize::from(u16::from_le_bytes(payload.get(..2)?.try_into().ok()?));
    let group = std::str::from_utf8(payload.get(2..2 + group_len)?)
        .ok()?
        .to_owned();
    let offset = u64::from_le_bytes(
        payload
            .get(2 + group_len..2 + group_len + 8)?
            .try_into()
            .ok()?,
    );
    Some((group, offset))
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(payload: &[u8]) -> RecordHeader {
        RecordHeader {
            len: (HEADER_LEN + payload.len()) as u32,
            kind: RecordKind::Batch,
            flags: 0,
            topic_id: 7,
            partition: 3,
            count: 2,
            term: 1,
            index: 42,
            append_time_ms: 1_700_000_000_000,
            base_offset: 99,
        }
    }

    proptest! {
        #[test]
        fn round_trip_and_every_flip_is_caught(payload in proptest::collection::vec(any::<u8>(), 0..100), flip in any::<prop::sample::Index>()) {
            let h = header(&payload);
            let mut buf = Vec::new();
            encode(&mut buf, &h, &payload);
            buf.extend_from_slice(&[0; 16]);
            prop_assert_eq!(parse(&buf), Parsed::Record(h));
            let at = flip.index(h.len as usize);
            buf[at] ^= 0x10;
            let is_record = matches!(parse(&buf), Parsed::Record(_));
            prop_assert!(!is_record, "flipped byte {} still parsed", at);
        }

        #[test]
        fn prefixed_batches_parse_and_split(
            producer in proptest::option::of((0..i64::MAX, 0..i16::MAX, 0..i32::MAX, 0..i32::MAX)),
            origin in proptest::option::of(("[a-z]{1,8}", any::<u32>(), any::<u64>(), any::<u64>())),
            batch in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let producer = producer.map(|(id, epoch, first_sequence, last_sequence)| ProducerBatch {
                id, epoch, first_sequence, last_sequence,
            });
            let origin = origin.map(|(region, group, seq, through)| Origin { region, group, seq, through });
            let mut prefix = Vec::new();
            let mut flags = 0;
            if let Some(p) = &producer {
                p.encode_into(&mut prefix);
                flags |= FLAG_PRODUCER;
            }
            if let Some(o) = &origin {
                o.encode(&mut prefix);
                flags |= FLAG_ORIGIN;
            }
            let mut h = header(&[]);
            h.flags = flags;
            h.len = (HEADER_LEN + prefix.len() + batch.len()) as u32;
            let mut buf = Vec::new();
            encode_parts(&mut buf, &h, &[&prefix, &batch]);
            prop_assert_eq!(parse(&buf), Parsed::Record(h));
            let payload = Bytes::from(buf).slice(HEADER_LEN..);
            let split = split_batch(flags, &payload).unwrap();
            prop_assert_eq!(split.producer, producer);
            prop_assert_eq!(split.origin, origin);
            prop_assert_eq!(split.batch.as_ref(), batch.as_slice());
        }

        #[test]
        fn split_batch_never_panics(flags in 0u8..4, bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = split_batch(flags, &Bytes::from(bytes));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&bytes);
        }
    }

    #[test]
    fn flags_are_checked() {
        let mut h = header(&[0; 4]);
        h.flags = FLAG_PRODUCER;
        let mut buf = Vec::new();
        encode(&mut buf, &h, &[0; 4]);
        assert_eq!(
            parse(&buf),
            Parsed::Invalid("payload shorter than its producer prefix")
        );
        // The first flag no broker knows yet.
        h.flags = 16;
        let mut buf = Vec::new();
        encode(&mut buf, &h, &[0; 4]);
        assert_eq!(parse(&buf), Parsed::Invalid("unknown record flags"));
        h.flags = FLAG_PRODUCER;
        h.kind = RecordKind::OffsetCommit;
        h.len = (HEADER_LEN + PREFIX_LEN) as u32;
        let mut buf = Vec::new();
        encode(&mut buf, &h, &[0; PREFIX_LEN]);
        assert_eq!(parse(&buf), Parsed::Invalid("unknown record flags"));
    }

    #[test]
    fn markers() {
        assert_eq!(parse(&[0; 100]), Parsed::Empty);
        assert_eq!(parse(&[0; 2]), Parsed::Empty);
        assert_eq!(parse(&segment_end_marker()), Parsed::SegmentEnd);
        assert_eq!(
            parse(&segment_end_marker()[..6]),
            Parsed::Invalid("torn segment-end marker")
        );
        let mut torn = vec![0; 64];
        torn[20] = 1;
        assert_eq!(
            parse(&torn),
            Parsed::Invalid("zero length with data after it")
        );
        let commit = Bytes::from(encode_offset_commit("billing", 12));
        assert_eq!(decode_offset_commit(&commit), Some(("billing".into(), 12)));
        assert_eq!(decode_offset_commit(&commit.slice(..5)), None);
        assert!(decode_commit_positions(&commit).is_empty());
        let positions = vec![("eu".to_owned(), 77), ("us-east".to_owned(), 1 << 40)];
        let commit = Bytes::from(encode_commit("billing", 12, &positions));
        assert_eq!(decode_offset_commit(&commit), Some(("billing".into(), 12)));
        assert_eq!(decode_commit_positions(&commit), positions);
        assert!(decode_commit_positions(&commit.slice(..commit.len() - 1)).is_empty());
        assert_eq!(decode_commit_metadata(&commit), "");
        for positions in [Vec::new(), positions] {
            let commit = Bytes::from(encode_commit_with("billing", 12, &positions, "ckpt-9"));
            assert_eq!(decode_offset_commit(&commit), Some(("billing".into(), 12)));
            assert_eq!(decode_commit_positions(&commit), positions);
            assert_eq!(decode_commit_metadata(&commit), "ckpt-9");
            assert_eq!(
                decode_commit_metadata(&commit.slice(..commit.len() - 1)),
                ""
            );
        }
    }

    #[test]
    fn markers_round_trip_and_bad_ones_are_named() {
        for marker in [
            TxnMarker {
                commit: true,
                coordinator_epoch: 7,
            },
            TxnMarker {
                commit: false,
                coordinator_epoch: -1,
            },
        ] {
            let mut buf = Vec::new();
            marker.encode(&mut buf);
            assert_eq!(buf.len(), MARKER_LEN);
            assert_eq!(TxnMarker::decode(&buf), Ok(marker));
        }
        // Version 0, type 1 (commit).
        let mut commit = Vec::new();
        TxnMarker {
            commit: true,
            coordinator_epoch: 0,
        }
        .encode(&mut commit);
        assert_eq!(&commit[..4], &[0, 0, 1, 0]);
        assert_eq!(TxnMarker::decode(&commit[..7]), Err(MarkerError::Length(7)));
        assert_eq!(
            TxnMarker::decode(&[1, 0, 1, 0, 0, 0, 0, 0]),
            Err(MarkerError::Version(1))
        );
        assert_eq!(
            TxnMarker::decode(&[0, 0, 2, 0, 0, 0, 0, 0]),
            Err(MarkerError::Type(2))
        );
    }

    #[test]
    fn transactional_flags_need_their_producer_and_a_marker_counts_one() {
        let producer = ProducerBatch {
            id: 5,
            epoch: 1,
            first_sequence: 0,
            last_sequence: 0,
        };
        let record = |flags: u8, count: u32| {
            let mut payload = Vec::new();
            if flags & FLAG_PRODUCER != 0 {
                producer.encode_into(&mut payload);
            }
            TxnMarker {
                commit: true,
                coordinator_epoch: 0,
            }
            .encode(&mut payload);
            let mut h = header(&payload);
            h.flags = flags;
            h.count = count;
            let mut buf = Vec::new();
            encode(&mut buf, &h, &payload);
            parse(&buf)
        };
        assert!(matches!(
            record(FLAG_PRODUCER | FLAG_TRANSACTIONAL, 3),
            Parsed::Record(_)
        ));
        assert!(matches!(
            record(FLAG_PRODUCER | FLAG_CONTROL, 1),
            Parsed::Record(_)
        ));
        assert_eq!(
            record(FLAG_TRANSACTIONAL, 3),
            Parsed::Invalid("a transactional record without its producer")
        );
        assert_eq!(
            record(FLAG_CONTROL, 1),
            Parsed::Invalid("a transactional record without its producer")
        );
        assert_eq!(
            record(FLAG_PRODUCER | FLAG_CONTROL, 2),
            Parsed::Invalid("a transaction marker counting other than one message")
        );
    }
}
