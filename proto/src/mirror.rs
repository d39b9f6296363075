//! The mirror link protocol: frames on one QUIC stream per shipped log group, between the
//! mirror of the origin region (the sender) and the mirror of a target region (the
//! receiver). Hand-written because it is ours: a dozen lines of fixed-width fields, pure,
//! and fuzzed (`fuzz/fuzz_targets/mirror_frame.rs`).
//!
//! ```text
//! frame    len u32 (bytes after it) | kind u8 | body
//! 1 Hello    version u16, region (u16 len + UTF-8), group u32,      sender → receiver
//!            topic u32 (0: every topic the receiver holds but those that joined it
//!            later; else that topic alone, one that joined the receiver's region later)
//! 2 Resume   from u64: the first seq the receiver wants             receiver → sender
//! 3 Records  through u64, n u32, n × entry                          sender → receiver
//!            entry: seq u64, topic_id u32, partition u32, count u32,
//!                   append_time_ms i64, payload_len u32, payload (a message batch),
//!                   txn u8 (0 none, 1 a transaction's batch, 2 its commit marker);
//!                   unless 0: producer_id i64, epoch i16, first_sequence i32,
//!                   last_sequence i32
//! 4 Ack      through u64: every seq up to it is held by the target  receiver → sender
//! 5 Refuse   reason (u16 len + UTF-8)                               either way, then close
//! 6 Commits  through u64, n u32, n × commit                         sender → receiver
//!            commit: seq u64, topic_id u32, partition u32, group (u16 len + UTF-8),
//!                    k u16, k × (region (u16 len + UTF-8), position u64)
//! ```
//!
//! `through` of Records and Commits: the frame covers the origin's records up to it (those
//! not listed are not shipped to this region); the receiver acknowledges it once all of the
//! frame is held.
//!
//! Integers are little-endian. A frame is at most [`FRAME_MAX`] bytes; a decoder refuses a
//! longer length before buffering it.

use bytes::{BufMut, Bytes};

/// The protocol version a sender announces.
pub const VERSION: u16 = 4;
/// Largest frame (length field included).
pub const FRAME_MAX: usize = 16 << 20;

/// A shipped batch: a committed, local-origin batch of a log group, as the origin region's
/// brokers read it (`read_local`), the mirror ships it (an entry of [`Frame::Records`]) and
/// the target region appends it. The one Rust type for it; the gRPC message
/// [`crate::v1::LocalBatch`] is its wire form, converted by the `From`s below.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShippedBatch {
    /// The record's index in its origin group: the seq it is shipped under.
    pub seq: u64,
    /// Topic id (the same in every region).
    pub topic_id: u32,
    /// Partition.
    pub partition: u32,
    /// Messages in the batch.
    pub count: u32,
    /// When the origin region appended it.
    pub append_time_ms: i64,
    /// The encoded messages (`crate::batch`); a commit marker's bytes
    /// (`crate::record::TxnMarker`) when `txn` says it is one.
    pub payload: Bytes,
    /// A committed transaction's batch or commit marker: mirrored as a transaction, so a
    /// `read_committed` reader of the target region sees all of it in a partition or none.
    pub txn: Option<ShippedTxn>,
}

/// A shipped batch's part in its producer's (committed) transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShippedTxn {
    /// The commit marker, not messages.
    pub marker: bool,
    /// The producer as the origin wrote it (id, epoch, sequences).
    pub producer: crate::producer::ProducerBatch,
}

#[cfg(feature = "grpc")]
impl From<crate::v1::MirroredTxn> for ShippedTxn {
    fn from(t: crate::v1::MirroredTxn) -> Self {
        ShippedTxn {
            marker: t.marker,
            producer: crate::producer::ProducerBatch {
                id: t.producer_id,
                epoch: i16::try_from(t.producer_epoch).unwrap_or(-1),
                first_sequence: t.first_sequence,
                last_sequence: t.last_sequence,
            },
        }
    }
}

#[cfg(feature = "grpc")]
impl From<ShippedTxn> for crate::v1::MirroredTxn {
    fn from(t: ShippedTxn) -> Self {
        crate::v1::MirroredTxn {
            marker: t.marker,
            producer_id: t.producer.id,
            producer_epoch: i32::from(t.producer.epoch),
            first_sequence: t.producer.first_sequence,
            last_sequence: t.producer.last_sequence,
        }
    }
}

#[cfg(feature = "grpc")]
impl From<crate::v1::LocalBatch> for ShippedBatch {
    fn from(b: crate::v1::LocalBatch) -> Self {
        ShippedBatch {
            seq: b.seq,
            topic_id: b.topic_id,
            partition: b.partition,
            count: b.count,
            append_time_ms: b.append_time_ms,
            payload: b.payload,
            txn: b.txn.map(ShippedTxn::from),
        }
    }
}

#[cfg(feature = "grpc")]
impl From<ShippedBatch> for crate::v1::LocalBatch {
    fn from(b: ShippedBatch) -> Self {
        crate::v1::LocalBatch {
            seq: b.seq,
            topic_id: b.topic_id,
            partition: b.partition,
            count: b.count,
            append_time_ms: b.append_time_ms,
            payload: b.payload,
            txn: b.txn.map(crate::v1::MirroredTxn::from),
        }
    }
}

/// A consumer group's commit with origin positions, shipped so the group can move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// The commit record's index in its origin group.
    pub seq: u64,
    /// Topic id.
    pub topic_id: u32,
    /// Partition.
    pub partition: u32,
    /// Consumer group.
    pub group: String,
    /// Origin region → highest position seen.
    pub positions: Vec<(String, u64)>,
}

/// A frame of the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream: the origin group it ships.
    Hello {
        /// Protocol version.
        version: u16,
        /// Origin region.
        region: String,
        /// Origin log group.
        group: u32,
        /// 0: the group's main stream; else the one topic this stream ships (a topic
        /// that joined the receiver's region after its creation).
        topic: u32,
    },
    /// Where the sender starts (or restarts); 0: from the first record the sender retains
    /// (the receiver holds nothing of the origin group yet).
    Resume {
        /// First seq wanted.
        from: u64,
    },
    /// Records, in seq order.
    Records {
        /// Every seq up to this is held by the target (acknowledged earlier).
        through: u64,
        /// The records.
        entries: Vec<ShippedBatch>,
    },
    /// Records held by the target.
    Ack {
        /// Every seq up to this.
        through: u64,
    },
    /// The other side refuses the stream.
    Refuse {
        /// Why.
        reason: String,
    },
    /// Consumer commits with origin positions.
    Commits {
        /// The frame covers the origin's records up to this.
        through: u64,
        /// The commits.
        commits: Vec<Commit>,
    },
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length field is over [`FRAME_MAX`].
    #[error("frame of {0} bytes is over the {FRAME_MAX}-byte limit")]
    TooLarge(usize),
    /// The kind byte is unknown.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// The body does not match its kind.
    #[error("malformed {kind} frame: {why}")]
    Malformed {
        /// The frame kind.
        kind: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

impl Frame {
    /// Appends the encoded frame to `buf`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        buf.put_u32_le(0);
        match self {
            Frame::Hello {
                version,
                region,
                group,
                topic,
            } => {
                buf.put_u8(1);
                buf.put_u16_le(*version);
                put_str(buf, region);
                buf.put_u32_le(*group);
                buf.put_u32_le(*topic);
            }
            Frame::Resume { from } => {
                buf.put_u8(2);
                buf.put_u64_le(*from);
            }
            Frame::Records { through, entries } => {
                buf.put_u8(3);
                buf.put_u64_le(*through);
                buf.put_u32_le(entries.len() as u32);
                for e in entries {
                    buf.put_u64_le(e.seq);
                    buf.put_u32_le(e.topic_id);
                    buf.put_u32_le(e.partition);
                    buf.put_u32_le(e.count);
                    buf.put_i64_le(e.append_time_ms);
                    buf.put_u32_le(e.payload.len() as u32);
                    buf.put_slice(&e.payload);
                    match &e.txn {
                        None => buf.put_u8(0),
                        Some(t) => {
                            buf.put_u8(if t.marker { 2 } else { 1 });
                            t.producer.encode_into(buf);
                        }
                    }
                }
            }
            Frame::Ack { through } => {
                buf.put_u8(4);
                buf.put_u64_le(*through);
            }
            Frame::Refuse { reason } => {
                buf.put_u8(5);
                put_str(buf, reason);
            }
            Frame::Commits { through, commits } => {
                buf.put_u8(6);
                buf.put_u64_le(*through);
                buf.put_u32_le(commits.len() as u32);
                for c in commits {
                    buf.put_u64_le(c.seq);
                    buf.put_u32_le(c.topic_id);
                    buf.put_u32_le(c.partition);
                    put_str(buf, &c.group);
                    buf.put_u16_le(c.positions.len().min(u16::MAX as usize) as u16);
                    for (region, position) in c.positions.iter().take(u16::MAX as usize) {
                        put_str(buf, region);
                        buf.put_u64_le(*position);
                    }
                }
            }
        }
        let len = (buf.len() - start - 4) as u32;
        buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    }

    /// Decodes the frame at the front of `buf`: `Ok(None)` until it is whole, else the frame
    /// and the bytes it took. Payloads are slices of `buf`.
    pub fn decode(buf: &Bytes) -> Result<Option<(Frame, usize)>, FrameError> {
        let Some(len) = buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if len + 4 > FRAME_MAX {
            return Err(FrameError::TooLarge(len + 4));
        }
        if buf.len() < 4 + len {
            return Ok(None);
        }
        let body = buf.slice(4..4 + len);
        let mut r = Reader { buf: &body, at: 1 };
        let kind = *body.first().ok_or(FrameError::Malformed {
            kind: "empty",
            why: "no kind byte",
        })?;
        let frame = match kind {
            1 => Frame::Hello {
                version: r.u16("hello")?,
                region: r.str("hello")?,
                group: r.u32("hello")?,
                // Version 3's Hello had no topic: it does not decode (the fuzz target
                // holds decode and encode to the same bytes).
                topic: r.u32("hello")?,
            },
            2 => Frame::Resume {
                from: r.u64("resume")?,
            },
            3 => {
                let through = r.u64("records")?;
                let n = r.u32("records")? as usize;
                // Each entry takes at least 33 bytes: refuse counts the body cannot hold.
                if n > (len - r.at) / 33 {
                    return Err(FrameError::Malformed {
                        kind: "records",
                        why: "more entries than bytes",
                    });
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let seq = r.u64("records")?;
                    let topic_id = r.u32("records")?;
                    let partition = r.u32("records")?;
                    let count = r.u32("records")?;
                    let append_time_ms = r.u64("records")? as i64;
                    let payload_len = r.u32("records")? as usize;
                    let payload = r.bytes(payload_len, "records")?;
                    let txn = match r.u8("records")? {
                        0 => None,
                        part @ (1 | 2) => Some(ShippedTxn {
                            marker: part == 2,
                            producer: crate::producer::ProducerBatch::decode(&r.fixed::<
                                { crate::producer::PREFIX_LEN },
                            >(
                                "records"
                            )?)
                            .map_err(|_| FrameError::Malformed {
                                kind: "records",
                                why: "a transaction's producer has a negative id, epoch or sequence",
                            })?,
                        }),
                        _ => {
                            return Err(FrameError::Malformed {
                                kind: "records",
                                why: "unknown transaction part",
                            });
                        }
                    };
                    entries.push(ShippedBatch {
                        seq,
                        topic_id,
                        partition,
                        count,
                        append_time_ms,
                        payload,
                        txn,
                    });
                }
                Frame::Records { through, entries }
            }
            4 => Frame::Ack {
                through: r.u64("ack")?,
            },
            5 => Frame::Refuse {
                reason: r.str("refuse")?,
            },
            6 => {
                let through = r.u64("commits")?;
                let n = r.u32("commits")? as usize;
                // Each commit takes at least 20 bytes.
                if n > (len - r.at) / 20 {
                    return Err(FrameError::Malformed {
                        kind: "commits",
                        why: "more commits than bytes",
                    });
                }
                let mut commits = Vec::with_capacity(n);
                for _ in 0..n {
                    let seq = r.u64("commits")?;
                    let topic_id = r.u32("commits")?;
                    let partition = r.u32("commits")?;
                    let group = r.str("commits")?;
                    let k = usize::from(r.u16("commits")?);
                    let mut positions = Vec::with_capacity(k.min((len - r.at) / 10));
                    for _ in 0..k {
                        let region = r.str("commits")?;
                        positions.push((region, r.u64("commits")?));
                    }
                    commits.push(Commit {
                        seq,
                        topic_id,
                        partition,
                        group,
                        positions,
                    });
                }
                Frame::Commits { through, commits }
            }
            other => return Err(FrameError::UnknownKind(other)),
        };
        if r.at != len {
            return Err(FrameError::Malformed {
                kind: frame.name(),
                why: "bytes after the body",
            });
        }
        Ok(Some((frame, 4 + len)))
    }

    /// The frame's kind, in lower case (for messages).
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Resume { .. } => "resume",
            Frame::Records { .. } => "records",
            Frame::Ack { .. } => "ack",
            Frame::Refuse { .. } => "refuse",
            Frame::Commits { .. } => "commits",
        }
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    buf.put_u16_le(s.len() as u16);
    buf.put_slice(s);
}

struct Reader<'a> {
    buf: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn bytes(&mut self, n: usize, kind: &'static str) -> Result<Bytes, FrameError> {
        if self.buf.len() - self.at < n {
            return Err(FrameError::Malformed {
                kind,
                why: "body ends early",
            });
        }
        let out = self.buf.slice(self.at..self.at + n);
        self.at += n;
        Ok(out)
    }

    fn fixed<const N: usize>(&mut self, kind: &'static str) -> Result<[u8; N], FrameError> {
        Ok(self.bytes(N, kind)?.as_ref().try_into().expect("N bytes"))
    }

    fn u8(&mut self, kind: &'static str) -> Result<u8, FrameError> {
        Ok(self.fixed::<1>(kind)?[0])
    }

    fn u16(&mut self, kind: &'static str) -> Result<u16, FrameError> {
        Ok(u16::from_le_bytes(self.fixed(kind)?))
    }

    fn u32(&mut self, kind: &'static str) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.fixed(kind)?))
    }

    fn u64(&mut self, kind: &'static str) -> Result<u64, FrameError> {
        Ok(u64::from_le_bytes(self.fixed(kind)?))
    }

    fn str(&mut self, kind: &'static str) -> Result<String, FrameError> {
        let n = usize::from(self.u16(kind)?);
        let b = self.bytes(n, kind)?;
        String::from_utf8(b.to_vec()).map_err(|_| FrameError::Malformed {
            kind,
            why: "text is not UTF-8",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> impl Strategy<Value = ShippedBatch> {
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<i64>(),
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::option::of((
                any::<bool>(),
                (0..i64::MAX, 0..i16::MAX, 0..i32::MAX, 0..i32::MAX),
            )),
        )
            .prop_map(
                |(seq, topic_id, partition, count, append_time_ms, p, txn)| ShippedBatch {
                    seq,
                    topic_id,
                    partition,
                    count,
                    append_time_ms,
                    payload: Bytes::from(p),
                    txn: txn.map(|(marker, (id, epoch, first, last))| ShippedTxn {
                        marker,
                        producer: crate::producer::ProducerBatch {
                            id,
                            epoch,
                            first_sequence: first,
                            last_sequence: last,
                        },
                    }),
                },
            )
    }

    fn commit() -> impl Strategy<Value = Commit> {
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            "[a-z]{1,10}",
            proptest::collection::vec(("[a-z-]{1,8}", any::<u64>()), 0..4),
        )
            .prop_map(|(seq, topic_id, partition, group, positions)| Commit {
                seq,
                topic_id,
                partition,
                group,
                positions,
            })
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            ("[a-z-]{0,20}", any::<u32>(), any::<u16>(), any::<u32>()).prop_map(
                |(region, group, version, topic)| Frame::Hello {
                    version,
                    region,
                    group,
                    topic,
                }
            ),
            any::<u64>().prop_map(|from| Frame::Resume { from }),
            (any::<u64>(), proptest::collection::vec(entry(), 0..5))
                .prop_map(|(through, entries)| Frame::Records { through, entries }),
            any::<u64>().prop_map(|through| Frame::Ack { through }),
            "[ -~]{0,30}".prop_map(|reason| Frame::Refuse { reason }),
            (any::<u64>(), proptest::collection::vec(commit(), 0..4))
                .prop_map(|(through, commits)| Frame::Commits { through, commits }),
        ]
    }

    proptest! {
        /// Frames round-trip, back to back, fed whole or byte by byte.
        #[test]
        fn frames_round_trip_in_a_stream(frames in proptest::collection::vec(frame(), 1..6), cut in any::<prop::sample::Index>()) {
            let mut wire = Vec::new();
            for f in &frames {
                f.encode(&mut wire);
            }
            let wire = Bytes::from(wire);
            // A prefix never decodes to more than the frames it holds whole.
            let at = cut.index(wire.len());
            let mut got = Vec::new();
            let mut rest = wire.slice(..at);
            while let Some((f, used)) = Frame::decode(&rest).unwrap() {
                got.push(f);
                rest = rest.slice(used..);
            }
            prop_assert!(got.len() <= frames.len());
            prop_assert_eq!(&got[..], &frames[..got.len()]);
            let mut rest = wire.clone();
            let mut all = Vec::new();
            while let Some((f, used)) = Frame::decode(&rest).unwrap() {
                all.push(f);
                rest = rest.slice(used..);
            }
            prop_assert_eq!(all, frames);
            prop_assert!(rest.is_empty());
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Frame::decode(&Bytes::from(bytes));
        }
    }

    #[test]
    fn bad_frames_are_named() {
        let huge = Bytes::from(((FRAME_MAX as u32) + 1).to_le_bytes().to_vec());
        assert!(matches!(Frame::decode(&huge), Err(FrameError::TooLarge(_))));
        let mut unknown = 1u32.to_le_bytes().to_vec();
        unknown.push(9);
        assert_eq!(
            Frame::decode(&Bytes::from(unknown)),
            Err(FrameError::UnknownKind(9))
        );
        // A records frame claiming a million entries in a few bytes.
        let mut lying = Vec::new();
        Frame::Records {
            through: 0,
            entries: vec![],
        }
        .encode(&mut lying);
        lying[4 + 1 + 8..4 + 1 + 8 + 4].copy_from_slice(&1_000_000u32.to_le_bytes());
        assert!(matches!(
            Frame::decode(&Bytes::from(lying)),
            Err(FrameError::Malformed { .. })
        ));
    }
}
