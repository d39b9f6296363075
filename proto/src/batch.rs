//! The message batch codec: what a journal record's payload holds.
//!
//! A batch is a sequence of messages with no outer header (the journal record carries the
//! count). Every integer is fixed-width little-endian. One message:
//!
//! ```text
//! timestamp_ms  i64
//! key_len       i32      -1 when the message has no key
//! key           key_len bytes
//! value_len     u32
//! value         value_len bytes
//! header_count  u16
//! header_count × { name_len u16, name (UTF-8), value_len u32, value }
//! ```
//!
//! Decoding slices the input `Bytes`, so keys and values of a batch read from a memory map
//! reach the network without a copy.

use bytes::{BufMut, Bytes};

/// One message as producers send it and consumers receive it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Partitioning and compaction key; `None` is distinct from an empty key.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Application headers, in order; names may repeat.
    pub headers: Vec<(String, Bytes)>,
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
            + self.value.len()
            + 2
            + self
                .headers
                .iter()
                .map(|(k, v)| 2 + k.len() + 4 + v.len())
                .sum::<usize>()
    }

    /// Appends the encoding of this message to `buf`.
    ///
    /// # Panics
    /// When a field exceeds what its length prefix can hold (a key or value of 2 GiB or more,
    /// more than 65,535 headers, a header name over 65,535 bytes). Callers validate sizes
    /// against far smaller limits before encoding.
    pub fn encode(&self, buf: &mut impl BufMut) {
        buf.put_i64_le(self.timestamp_ms);
        match &self.key {
            None => buf.put_i32_le(-1),
            Some(key) => {
                buf.put_i32_le(i32::try_from(key.len()).expect("key length checked by caller"));
                buf.put_slice(key);
            }
        }
        buf.put_u32_le(u32::try_from(self.value.len()).expect("value length checked by caller"));
        buf.put_slice(&self.value);
        buf.put_u16_le(u16::try_from(self.headers.len()).expect("header count checked by caller"));
        for (name, value) in &self.headers {
            buf.put_u16_le(u16::try_from(name.len()).expect("header name checked by caller"));
            buf.put_slice(name.as_bytes());
            buf.put_u32_le(u32::try_from(value.len()).expect("header value checked by caller"));
            buf.put_slice(value);
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
        let value_len = u32::from_le_bytes(r.array()?) as usize;
        let value = r.bytes(value_len)?;
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
            let value_len = u32::from_le_bytes(r.array()?) as usize;
            headers.push((name, r.bytes(value_len)?));
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

    fn message() -> impl Strategy<Value = Message> {
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(
                ("[a-z]{0,8}", proptest::collection::vec(any::<u8>(), 0..16)),
                0..4,
            ),
            any::<i64>(),
        )
            .prop_map(|(key, value, headers, timestamp_ms)| Message {
                key: key.map(Bytes::from),
                value: Bytes::from(value),
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k, Bytes::from(v)))
                    .collect(),
                timestamp_ms,
            })
    }

    proptest! {
        #[test]
        fn batch_round_trips(messages in proptest::collection::vec(message(), 0..20)) {
            let buf = Bytes::from(encode_batch(&messages));
            prop_assert_eq!(buf.len(), messages.iter().map(Message::encoded_len).sum::<usize>());
            prop_assert_eq!(decode_batch(&buf, messages.len()).unwrap(), messages);
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
