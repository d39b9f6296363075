//! Decoding what Kafka clients send: a request frame's header and body, and the record
//! batches of a produce. The codecs are the `kafka-protocol` crate's; this module adds what
//! a server must: the APIs and versions it serves, and a guarantee that bytes nobody
//! expected are an error, never a panic (fuzzed: `fuzz/fuzz_targets/kafka_request.rs`).
//! Compression codecs are the user's choice of `kafka-protocol` features (the broker turns
//! on gzip, snappy, lz4 and zstd).

use bytes::{Buf, Bytes};
pub use kafka_protocol;
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind};
use kafka_protocol::protocol::Decodable;
use kafka_protocol::records::RecordBatchDecoder;

use crate::batch::Message;

/// The APIs served and their versions (what ApiVersions advertises).
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 4),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::ApiVersions, 0, 3),
];

/// Why a request frame is refused (the connection is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The frame is shorter than a request header.
    #[error("a frame of {0} bytes holds no request header")]
    Short(usize),
    /// An API or version not served.
    #[error("unsupported API {key} version {version}")]
    Unsupported {
        /// The API key.
        key: i16,
        /// The version asked for.
        version: i16,
    },
    /// The bytes do not decode.
    #[error("malformed request: {0}")]
    Malformed(String),
}

/// Decodes a request frame (without its length prefix): the header, and the request —
/// `None` for an ApiVersions request of a version not served (answered at version 0, as
/// Kafka does).
pub fn decode_request(body: Bytes) -> Result<(RequestHeader, Option<RequestKind>), RequestError> {
    if body.len() < 8 {
        return Err(RequestError::Short(body.len()));
    }
    // The decoders index into the bytes they are given; anything they did not expect must
    // be an error for this connection, not an unwind through the server.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut body = body;
        let (key, version) = {
            let mut head = &body[..4];
            (head.get_i16(), head.get_i16())
        };
        let api = ApiKey::try_from(key).map_err(|_| RequestError::Unsupported { key, version })?;
        let header = RequestHeader::decode(&mut body, api.request_header_version(version))
            .map_err(|e| RequestError::Malformed(format!("request header: {e}")))?;
        let Some(&(_, min, max)) = SUPPORTED.iter().find(|(k, ..)| *k == api) else {
            return Err(RequestError::Unsupported { key, version });
        };
        if version < min || version > max {
            if api == ApiKey::ApiVersions {
                return Ok((header, None));
            }
            return Err(RequestError::Unsupported { key, version });
        }
        let request = RequestKind::decode(api, &mut body, version)
            .map_err(|e| RequestError::Malformed(format!("{api:?} v{version}: {e}")))?;
        Ok((header, Some(request)))
    }))
    .unwrap_or_else(|_| {
        Err(RequestError::Malformed(
            "the request does not decode".into(),
        ))
    })
}

/// Why a produce's records are refused: a Kafka error code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsError {
    /// The Kafka error code.
    pub code: i16,
    /// What is wrong.
    pub message: String,
}

/// CORRUPT_MESSAGE.
pub const CORRUPT_MESSAGE: i16 = 2;
/// INVALID_REQUEST.
pub const INVALID_REQUEST: i16 = 42;
/// UNSUPPORTED_COMPRESSION_TYPE.
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;

/// The messages of a partition's record batches (control records dropped; a null value is
/// stored empty).
pub fn decode_records(records: Option<Bytes>) -> Result<Vec<Message>, RecordsError> {
    let err = |code, message: String| RecordsError { code, message };
    let Some(mut records) = records else {
        return Err(err(INVALID_REQUEST, "no records".into()));
    };
    let sets = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        RecordBatchDecoder::decode_all(&mut records)
    }))
    .map_err(|_| err(CORRUPT_MESSAGE, "the record batch does not decode".into()))?
    .map_err(|e| {
        let text = e.to_string();
        if text.contains("ompression") || text.contains("not supported") {
            err(
                UNSUPPORTED_COMPRESSION_TYPE,
                format!("{text}: use none, gzip, snappy, lz4 or zstd"),
            )
        } else {
            err(CORRUPT_MESSAGE, text)
        }
    })?;
    let mut out = Vec::new();
    for set in sets {
        for record in set.records {
            if record.control {
                continue;
            }
            out.push(Message {
                key: record.key,
                value: record.value.unwrap_or_default(),
                headers: record
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v.unwrap_or_default()))
                    .collect(),
                timestamp_ms: record.timestamp.max(0),
            });
        }
    }
    if out.is_empty() {
        return Err(err(INVALID_REQUEST, "the batch holds no record".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that are no request are refused with an error, never a panic.
    #[test]
    fn garbage_is_refused() {
        for body in [
            vec![0u8; 3],
            vec![0u8; 8],
            vec![0, 3, 0, 12, 0, 0, 0, 1],
            vec![0, 18, 0, 3, 0, 0, 0, 1, 0xff, 0xff, 0x7f],
            vec![0xff; 64],
            vec![0, 0, 0, 9, 0, 0, 0, 1, 0, 5],
            // A Metadata request declaring 0x30000030 topics in 14 bytes: refused, not a
            // 58 GB allocation (the fuzzer's first find; third_party/kafka-protocol).
            vec![0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0x30, 0, 0, 0x30],
            // The same with a compact array (Metadata v9+, flexible).
            vec![0, 3, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0x0f],
        ] {
            assert!(decode_request(Bytes::from(body)).is_err());
        }
        assert!(decode_records(Some(Bytes::from_static(&[0xff; 70]))).is_err());
        assert!(decode_records(None).is_err());
    }
}
