//! The message batch codec: what a journal record's payload holds.
//!
//! A batch is a sequence of messages with no outer header (the journal record carries the
//! count). Every integer is fixed-width little-endian. One message:
//!
//! ```text
//! timestamp_ms  i64
//! key_len       i32      -1 when the message has no key
//! key           key_len bytes
//! value_len     u32      0xFFFF_FFFF (NULL_LEN) when the value is null (a tombstone)
//! value         value_len bytes
//! header_count  u16
//! header_count × { name_len u16, name (UTF-8), value_len u32 (NULL_LEN: null), value }
//! ```
//!
//! Null values and null header values were added later, compatibly: a length of
//! `0xFFFF_FFFF` was never written (messages are limited far below 4 GiB), so every batch
//! written before decodes as it did, and a batch without nulls is encoded byte for byte as
//! before. A null is distinct from an empty value, as in Kafka, where a null value is a
//! tombstone. (The journal record's flags were not used for this: the marker is needed per
//! value, and a reader that does not know it fails on that one batch with a decode error
//! rather than misreading it.)
//!
//! Decoding slices the input `Bytes`, so keys and values of a batch read from a memory map
//! reach the network without a copy.
//!
//! A payload may instead hold a Kafka v2 record batch as its producer sent it (stored so a
//! Kafka consumer gets it unchanged, CRC and compression included): then it starts with
//! [`KAFKA_BATCH_MARK`], eight bytes no batch of messages starts with (its first message's
//! timestamp read as `i64::MIN`; a negative timestamp is refused at produce), and
//! [`decode_batch`] decodes the Kafka batch. Every reader, mirrors included, goes through
//! it, so the journal record and its flags are the same for both.

use bytes::{BufMut, Bytes};

/// The `value_len` of a null value or null header value.
pub const NULL_LEN: u32 = u32::MAX;

/// One message as producers send it and consumers receive it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Partitioning and compaction key; `None` is distinct from an empty key.
    pub key: Option<Bytes>,
    /// The payload; `None` (a tombstone in Kafka's terms) is distinct from an empty value.
    pub value: Option<Bytes>,
    /// Application headers, in order; names may repeat, and a value may be null (`None`).
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Producer timestamp, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before the message does.
    #[error("incomplete message: {needed} more bytes needed")]
    Incomplete {
        /// Bytes missing at least.
        needed: usize,
    },
    /// The bytes cannot be a message.
    #[error("invalid message at byte {offset}: {reason}")]
    Invalid {
        /// Where in the input the problem is.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
}

impl Message {
    /// Bytes that [`Message::encode`] writes for this message.
    pub fn encoded_len(&self) -> usize {
        8 + 4
            + self.key.as_ref().map_or(0, Bytes::len)
            + 4
            + self.value.as_ref().map_or(0, Bytes::len)
            + 2
            + self
                .headers
                .iter()
                .map(|(k, v)| 2 + k.len() + 4 + v.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }

    /// Appends the encoding of this message to `buf`.
    ///
    /// # Panics
    /// When a field exceeds what its length prefix can hold (a key or value of 2 GiB or more,
    /// more than 65,535 headers, a header name over 65,535 bytes, a header value of 4 GiB
    /// less one byte or more). Callers validate sizes against far smaller limits before
    /// encoding.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_i64_le(self.timestamp_ms);
        match &self.key {
            None => buf.put_i32_le(-1),
            Some(key) => {
                buf.put_i32_le(i32::try_from(key.len()).expect("key length checked by caller"));
                buf.put_slice(key);
            }
        }
        put_nullable(buf, self.value.as_ref());
        buf.put_u16_le(u16::try_from(self.headers.len()).expect("header count checked by caller"));
        for (name, value) in &self.headers {
            buf.put_u16_le(u16::try_from(name.len()).expect("header name checked by caller"));
            buf.put_slice(name.as_bytes());
            put_nullable(buf, value.as_ref());
        }
    }

    /// Decodes one message from the front of `buf`; returns it and the bytes it took.
    pub fn decode(buf: &Bytes) -> Result<(Message, usize), DecodeError> {
        let mut r = Reader { buf, pos: 0 };
        let timestamp_ms = i64::from_le_bytes(r.array()?);
        let key_len = i32::from_le_bytes(r.array()?);
        let key = match key_len {
            -1 => None,
            n if n < 0 => return Err(r.invalid(4, "negative key length")),
            n => Some(r.bytes(n as usize)?),
        };
        let value = r.nullable()?;
        let header_count = u16::from_le_bytes(r.array()?);
        let mut headers = Vec::with_capacity(usize::from(header_count).min(64));
        for _ in 0..header_count {
            let name_len = usize::from(u16::from_le_bytes(r.array()?));
            let name_at = r.pos;
            let name = r.bytes(name_len)?;
            let name = std::str::from_utf8(&name)
                .map_err(|_| DecodeError::Invalid {
                    offset: name_at,
                    reason: "header name is not UTF-8",
                })?
                .to_owned();
            headers.push((name, r.nullable()?));
        }
        Ok((
            Message {
                key,
                value,
                headers,
                timestamp_ms,
            },
            r.pos,
        ))
    }
}

/// A native API message or header marked null (`value_null`) that also carries bytes: the
/// value would be ambiguous, so it is refused rather than read as one or the other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is marked null (value_null) but carries {len} bytes")]
pub struct NullWithBytes {
    /// "a message value" or "header NAME".
    pub what: String,
    /// The bytes it carries.
    pub len: usize,
}

/// The native API's form of a nullable value: bytes and a null mark (`value_null`), the
/// bytes empty when null.
pub fn to_wire(value: Option<Bytes>) -> (Bytes, bool) {
    match value {
        Some(value) => (value, false),
        None => (Bytes::new(), true),
    }
}

/// A nullable value from the native API's bytes and null mark; `what` names it in the error
/// when a null carries bytes.
pub fn from_wire(
    value: Bytes,
    null: bool,
    what: impl FnOnce() -> String,
) -> Result<Option<Bytes>, NullWithBytes> {
    match (null, value.is_empty()) {
        (false, _) => Ok(Some(value)),
        (true, true) => Ok(None),
        (true, false) => Err(NullWithBytes {
            what: what(),
            len: value.len(),
        }),
    }
}

#[cfg(feature = "grpc")]
mod native {
    use bytes::Bytes;

    use super::{Message, NullWithBytes, from_wire, to_wire};
    use crate::v1;

    impl v1::Header {
        /// A header of the native API, null when `value` is `None`.
        pub fn from_pair(key: String, value: Option<Bytes>) -> v1::Header {
            let (value, value_null) = to_wire(value);
            v1::Header {
                key,
                value,
                value_null,
            }
        }

        /// The header's name and value (`None` when null).
        pub fn into_pair(self) -> Result<(String, Option<Bytes>), NullWithBytes> {
            let key = self.key;
            let value = from_wire(self.value, self.value_null, || format!("header {key:?}"))?;
            Ok((key, value))
        }
    }

    impl TryFrom<v1::Message> for Message {
        type Error = NullWithBytes;

        fn try_from(m: v1::Message) -> Result<Message, NullWithBytes> {
            Ok(Message {
                key: m.key,
                value: from_wire(m.value, m.value_null, || "a message value".into())?,
                headers: m
                    .headers
                    .into_iter()
                    .map(v1::Header::into_pair)
                    .collect::<Result<_, _>>()?,
                timestamp_ms: m.timestamp_ms,
            })
        }
    }

    impl v1::FetchedMessage {
        /// The message a fetch answered with, taken out of it: a null value or header
        /// stays null (a broker's answer, trusted: a null carrying bytes reads as null).
        pub fn take_message(&mut self) -> Message {
            Message {
                key: self.key.take(),
                value: (!self.value_null).then(|| std::mem::take(&mut self.value)),
                headers: std::mem::take(&mut self.headers)
                    .into_iter()
                    .map(|h| (h.key, (!h.value_null).then_some(h.value)))
                    .collect(),
                timestamp_ms: self.timestamp_ms,
            }
        }
    }

    impl From<Message> for v1::Message {
        fn from(m: Message) -> v1::Message {
            let (value, value_null) = to_wire(m.value);
            v1::Message {
                key: m.key,
                value,
                value_null,
                headers: m
                    .headers
                    .into_iter()
                    .map(|(k, v)| v1::Header::from_pair(k, v))
                    .collect(),
                timestamp_ms: m.timestamp_ms,
            }
        }
    }
}

/// A value's length (`NULL_LEN` when null) and bytes.
fn put_nullable(buf: &mut impl BufMut, value: Option<&Bytes>) {
    match value {
        None => buf.put_u32_le(NULL_LEN),
        Some(value) => {
            let len = u32::try_from(value.len())
                .ok()
                .filter(|&n| n != NULL_LEN)
                .expect("value length checked by caller");
            buf.put_u32_le(len);
            buf.put_slice(value);
        }
    }
}

/// Encodes `messages` as one batch payload.
pub fn encode_batch(messages: &[Message]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(messages.iter().map(Message::encoded_len).sum());
    for message in messages {
        message.encode(&mut buf);
    }
    buf
}

/// Decodes a whole batch payload that must hold exactly `count` messages.
pub fn decode_batch(payload: &Bytes, count: usize) -> Result<Vec<Message>, DecodeError> {
    if let Some(kafka) = kafka_batch(payload) {
        return decode_kafka(kafka, count);
    }
    let mut out = Vec::with_capacity(count.min(4096));
    let mut rest = payload.clone();
    let mut consumed = 0;
    for _ in 0..count {
        let (message, used) = Message::decode(&rest).map_err(|e| shift(e, consumed))?;
        out.push(message);
        consumed += used;
        rest = rest.slice(used..);
    }
    if !rest.is_empty() {
        return Err(DecodeError::Invalid {
            offset: consumed,
            reason: "bytes after the last message",
        });
    }
    Ok(out)
}

/// The messages of a Kafka record batch stored as produced (`count` of them).
#[cfg(feature = "kafka")]
fn decode_kafka(kafka: Bytes, count: usize) -> Result<Vec<Message>, DecodeError> {
    let records = crate::kafka::decode_records_within(Some(kafka), crate::kafka::INFLATED_MAX)
        .map_err(|_| DecodeError::Invalid {
            offset: KAFKA_BATCH_MARK.len(),
            reason: "a stored Kafka record batch does not decode",
        })?;
    if records.messages.len() != count {
        return Err(DecodeError::Invalid {
            offset: KAFKA_BATCH_MARK.len(),
            reason: "a stored Kafka record batch holds another count of records",
        });
    }
    Ok(records.messages)
}

/// Without the Kafka codec a stored Kafka record batch cannot be read: an error, never a
/// misreading.
#[cfg(not(feature = "kafka"))]
fn decode_kafka(_: Bytes, _: usize) -> Result<Vec<Message>, DecodeError> {
    Err(DecodeError::Invalid {
        offset: 0,
        reason: "a stored Kafka record batch (meridian-proto's kafka feature decodes it)",
    })
}

/// The first bytes of a payload holding a Kafka record batch as produced (see the module's
/// doc): `i64::MIN` little-endian.
pub const KAFKA_BATCH_MARK: [u8; 8] = i64::MIN.to_le_bytes();

/// The payload storing Kafka record batch `batch` as produced.
pub fn kafka_payload(batch: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(KAFKA_BATCH_MARK.len() + batch.len());
    out.extend_from_slice(&KAFKA_BATCH_MARK);
    out.extend_from_slice(batch);
    Bytes::from(out)
}

/// The Kafka record batch a payload stores as produced, if it is one.
pub fn kafka_batch(payload: &Bytes) -> Option<Bytes> {
    payload
        .starts_with(&KAFKA_BATCH_MARK)
        .then(|| payload.slice(KAFKA_BATCH_MARK.len()..))
}

fn shift(e: DecodeError, by: usize) -> DecodeError {
    match e {
        DecodeError::Invalid { offset, reason } => DecodeError::Invalid {
            offset: offset + by,
            reason,
        },
        other => other,
    }
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<usize, DecodeError> {
        let have = self.buf.len() - self.pos;
        if have < n {
            return Err(DecodeError::Incomplete { needed: n - have });
        }
        let at = self.pos;
        self.pos += n;
        Ok(at)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let at = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(&self.buf[at..at + N]);
        Ok(out)
    }

    fn bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        let at = self.take(n)?;
        Ok(self.buf.slice(at..at + n))
    }

    /// A `value_len` and its bytes; `None` for `NULL_LEN`.
    fn nullable(&mut self) -> Result<Option<Bytes>, DecodeError> {
        match u32::from_le_bytes(self.array()?) {
            NULL_LEN => Ok(None),
            n => self.bytes(n as usize).map(Some),
        }
    }

    fn invalid(&self, back: usize, reason: &'static str) -> DecodeError {
        DecodeError::Invalid {
            offset: self.pos - back,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Messages with null and empty values and header values, and repeated header names
    /// (names are drawn from three letters so that they often repeat).
    fn message() -> impl Strategy<Value = Message> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
            proptest::collection::vec(
                (
                    "[a-c]{0,2}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
                ),
                0..5,
            ),
            any::<i64>(),
        )
            .prop_map(|(key, value, headers, timestamp_ms)| Message {
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k, v.map(Bytes::from)))
                    .collect(),
                timestamp_ms,
            })
    }

    /// The encoder before null values existed (a null value could not be given to it).
    fn encode_before_nulls(m: &Message, buf: &mut Vec<u8>) {
        buf.put_i64_le(m.timestamp_ms);
        match &m.key {
            None => buf.put_i32_le(-1),
            Some(key) => {
                buf.put_i32_le(key.len() as i32);
                buf.put_slice(key);
            }
        }
        let value = m.value.as_ref().expect("no null value");
        buf.put_u32_le(value.len() as u32);
        buf.put_slice(value);
        buf.put_u16_le(m.headers.len() as u16);
        for (name, value) in &m.headers {
            let value = value.as_ref().expect("no null header value");
            buf.put_u16_le(name.len() as u16);
            buf.put_slice(name.as_bytes());
            buf.put_u32_le(value.len() as u32);
            buf.put_slice(value);
        }
    }

    proptest! {
        #[test]
        fn batch_round_trips(messages in proptest::collection::vec(message(), 0..20)) {
            let buf = Bytes::from(encode_batch(&messages));
            prop_assert_eq!(buf.len(), messages.iter().map(Message::encoded_len).sum::<usize>());
            prop_assert_eq!(decode_batch(&buf, messages.len()).unwrap(), messages);
        }

        /// The extension is compatible: a message the old format could hold (no null value
        /// or header value) is encoded byte for byte as before, so what was written before
        /// decodes as it was and old readers read every batch without a null.
        #[test]
        fn messages_without_nulls_keep_the_old_encoding(mut m in message()) {
            m.value.get_or_insert_with(Bytes::new);
            for (_, v) in &mut m.headers {
                v.get_or_insert_with(Bytes::new);
            }
            let mut old = Vec::new();
            encode_before_nulls(&m, &mut old);
            prop_assert_eq!(&encode_batch(std::slice::from_ref(&m)), &old);
            prop_assert_eq!(decode_batch(&Bytes::from(old), 1).unwrap(), vec![m]);
        }

        #[test]
        fn decode_never_panics_and_never_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let buf = Bytes::from(bytes);
            if let Ok((message, used)) = Message::decode(&buf) {
                prop_assert!(used <= buf.len());
                prop_assert_eq!(message.encoded_len(), used);
            }
        }

        #[test]
        fn every_truncation_is_incomplete(m in message()) {
            let full = Bytes::from(encode_batch(std::slice::from_ref(&m)));
            for cut in 0..full.len() {
                let is_incomplete = matches!(
                    Message::decode(&full.slice(..cut)),
                    Err(DecodeError::Incomplete { .. })
                );
                prop_assert!(is_incomplete);
            }
        }
    }

    /// Null stays null and empty stays empty, for the value and each header value; repeated
    /// header names keep their order.
    #[test]
    fn null_is_not_empty() {
        let m = Message {
            key: Some(Bytes::new()),
            value: None,
            headers: vec![
                ("k".into(), Some(Bytes::from_static(b"1"))),
                ("k".into(), None),
                ("e".into(), Some(Bytes::new())),
                ("k".into(), Some(Bytes::from_static(b"2"))),
            ],
            timestamp_ms: 7,
        };
        let empty = Message {
            value: Some(Bytes::new()),
            ..m.clone()
        };
        let both = Bytes::from(encode_batch(&[m.clone(), empty.clone()]));
        assert_eq!(decode_batch(&both, 2).unwrap(), vec![m.clone(), empty]);
        let mut one = Vec::new();
        m.encode(&mut one);
        assert_eq!(
            &one[12..16],
            &NULL_LEN.to_le_bytes(),
            "the null value's length"
        );
        assert_eq!(one.len(), m.encoded_len());
    }

    /// The native API's form round-trips nulls and empties, and refuses a null with bytes.
    #[cfg(feature = "grpc")]
    #[test]
    fn native_messages_round_trip_nulls() {
        let m = Message {
            key: None,
            value: None,
            headers: vec![
                ("h".into(), None),
                ("h".into(), Some(Bytes::new())),
                ("h".into(), Some(Bytes::from_static(b"x"))),
            ],
            timestamp_ms: 3,
        };
        for m in [
            m.clone(),
            Message {
                value: Some(Bytes::new()),
                ..m
            },
        ] {
            let wire = crate::v1::Message::from(m.clone());
            assert_eq!(wire.value_null, m.value.is_none());
            assert_eq!(Message::try_from(wire).unwrap(), m);
        }
        let bad = crate::v1::Message {
            value: Bytes::from_static(b"v"),
            value_null: true,
            ..Default::default()
        };
        assert_eq!(
            Message::try_from(bad).unwrap_err().to_string(),
            "a message value is marked null (value_null) but carries 1 bytes"
        );
        let bad = crate::v1::Header {
            key: "h".into(),
            value: Bytes::from_static(b"v"),
            value_null: true,
        };
        assert!(bad.into_pair().is_err());
    }

    #[test]
    fn rejects_bad_bytes() {
        let mut bad = vec![0u8; 8];
        bad.extend_from_slice(&(-5i32).to_le_bytes());
        assert_eq!(
            Message::decode(&Bytes::from(bad)),
            Err(DecodeError::Invalid {
                offset: 8,
                reason: "negative key length"
            })
        );
        let one = encode_batch(&[Message::default()]);
        let mut two = one.clone();
        two.push(7);
        assert!(matches!(
            decode_batch(&Bytes::from(two), 1),
            Err(DecodeError::Invalid {
                reason: "bytes after the last message",
                ..
            })
        ));
    }
}
