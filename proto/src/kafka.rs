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
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    // Version 0 is advertised because librdkafka asks for it before it uses version 1
    // with SaslAuthenticate; a version-0 handshake itself is refused (kafka/sasl.rs).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::AlterUserScramCredentials, 0, 0),
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

/// The partitions a consumer-group member was assigned, from the bytes its leader sent in
/// SyncGroup (Kafka's consumer protocol, `ConsumerProtocolAssignment` v0–3); `None` when
/// they are not in that format (another protocol type, or garbage).
pub fn decode_assignment(bytes: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    use kafka_protocol::messages::ConsumerProtocolAssignment;
    if bytes.len() < 2 {
        return None;
    }
    std::panic::catch_unwind(|| {
        let mut buf = Bytes::copy_from_slice(bytes);
        let version = buf.get_i16();
        if !(0..=3).contains(&version) {
            return None;
        }
        let a = ConsumerProtocolAssignment::decode(&mut buf, version).ok()?;
        Some(
            a.assigned_partitions
                .into_iter()
                .map(|tp| (tp.topic.0.to_string(), tp.partitions))
                .collect(),
        )
    })
    .ok()
    .flatten()
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
/// Kafka's MESSAGE_TOO_LARGE.
pub const MESSAGE_TOO_LARGE: i16 = 10;
/// INVALID_REQUEST.
pub const INVALID_REQUEST: i16 = 42;
/// UNSUPPORTED_COMPRESSION_TYPE.
pub const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;

/// Who wrote an idempotent producer's batch, and the sequence numbers it spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// The producer id (InitProducerId gave it).
    pub id: i64,
    /// The producer epoch.
    pub epoch: i16,
    /// The sequence number of the first record.
    pub first_sequence: i32,
    /// The sequence number of the last record.
    pub last_sequence: i32,
}

/// A partition's records as a produce carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Records {
    /// The messages as produced (control records dropped): a null value or header value
    /// stays null, repeated header keys stay in order, the producer's timestamp is kept
    /// (`-1`, Kafka's "none", becomes 0: the broker stamps it).
    pub messages: Vec<Message>,
    /// Set when an idempotent producer wrote them (producer id 0 or more).
    pub producer: Option<ProducerBatch>,
    /// Written inside a transaction.
    pub transactional: bool,
    /// The one record batch as the producer sent it, when it can be stored and served so
    /// unchanged: a single v2 batch whose records all carry a timestamp and consecutive
    /// offsets (a fetch then rewrites only its base offset, outside its CRC).
    pub verbatim: Option<Bytes>,
}

/// A record batch stored as produced, compressed again with `to` (a topic's
/// `compression.type`): `None` when it already is (or it is not one batch, which the caller
/// stores as messages anyway). Producer fields, offsets and timestamps are kept; the CRC is
/// computed again.
pub fn recompress(
    batch: &Bytes,
    to: kafka_protocol::records::Compression,
    inflated_max: usize,
) -> Result<Option<Bytes>, RecordsError> {
    use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};
    let err = |message: String| RecordsError {
        code: CORRUPT_MESSAGE,
        message,
    };
    let mut input = batch.clone();
    let sets = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kafka_protocol::compression::with_decompressed_limit(inflated_max, || {
            RecordBatchDecoder::decode_all(&mut input)
        })
    }))
    .map_err(|_| err("the record batch does not decode".into()))?
    .map_err(|e| err(format!("{e:#}")))?;
    let [set] = sets.as_slice() else {
        return Ok(None);
    };
    if set.compression == to {
        return Ok(None);
    }
    let mut out = bytes::BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: to,
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        RecordBatchEncoder::encode(&mut out, set.records.iter(), &options)
    }))
    .map_err(|_| err("the record batch does not encode".into()))?
    .map_err(|e| err(format!("compressing the record batch again: {e:#}")))?;
    Ok(Some(out.freeze()))
}

/// What a compressed batch may inflate to when the caller names no limit
/// ([`decode_records_within`]): the largest frame a Kafka listener takes.
pub const INFLATED_MAX: usize = 64 << 20;

/// [`decode_records_within`] [`INFLATED_MAX`].
pub fn decode_records(records: Option<Bytes>) -> Result<Records, RecordsError> {
    decode_records_within(records, INFLATED_MAX)
}

/// The messages of a partition's record batches, and the idempotent producer that wrote
/// them. Several batches must come from one producer with consecutive sequences. A
/// compressed batch that would inflate past `inflated_max` bytes is refused
/// (MESSAGE_TOO_LARGE) while it is decompressed, before the bytes past the limit exist: a
/// small batch cannot make the broker allocate gigabytes.
pub fn decode_records_within(
    records: Option<Bytes>,
    inflated_max: usize,
) -> Result<Records, RecordsError> {
    let err = |code, message: String| RecordsError { code, message };
    let Some(mut records) = records else {
        return Err(err(INVALID_REQUEST, "no records".into()));
    };
    let raw = records.clone();
    let sets = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        kafka_protocol::compression::with_decompressed_limit(inflated_max, || {
            RecordBatchDecoder::decode_all(&mut records)
        })
    }))
    .map_err(|_| err(CORRUPT_MESSAGE, "the record batch does not decode".into()))?
    .map_err(|e| {
        let text = format!("{e:#}");
        if text.contains("inflates past") {
            err(MESSAGE_TOO_LARGE, text)
        } else if text.contains("ompression") || text.contains("not supported") {
            err(
                UNSUPPORTED_COMPRESSION_TYPE,
                format!("{text}: use none, gzip, snappy, lz4 or zstd"),
            )
        } else {
            err(CORRUPT_MESSAGE, text)
        }
    })?;
    let verbatim = (sets.len() == 1
        && sets[0].records.iter().enumerate().all(|(i, r)| {
            !r.control && r.timestamp > 0 && r.offset == sets[0].records[0].offset + i as i64
        }))
    .then_some(raw);
    let mut out = Vec::new();
    let mut producer: Option<ProducerBatch> = None;
    let mut transactional = false;
    for set in sets {
        for record in set.records {
            transactional |= record.transactional;
            if record.producer_id >= 0 {
                match &mut producer {
                    None => {
                        producer = Some(ProducerBatch {
                            id: record.producer_id,
                            epoch: record.producer_epoch,
                            first_sequence: record.sequence,
                            last_sequence: record.sequence,
                        })
                    }
                    Some(p)
                        if p.id == record.producer_id
                            && p.epoch == record.producer_epoch
                            && record.sequence == p.last_sequence.wrapping_add(1) & i32::MAX =>
                    {
                        p.last_sequence = record.sequence
                    }
                    Some(_) => {
                        return Err(err(
                            INVALID_REQUEST,
                            "the batches of one partition come from different producers or skip sequence numbers".into(),
                        ));
                    }
                }
            }
            if record.control {
                continue;
            }
            out.push(Message {
                key: record.key,
                value: record.value,
                headers: record
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                timestamp_ms: record.timestamp.max(0),
            });
        }
    }
    if out.is_empty() {
        return Err(err(INVALID_REQUEST, "the batch holds no record".into()));
    }
    Ok(Records {
        messages: out,
        producer,
        transactional,
        verbatim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One v2 batch whose records all carry a timestamp is kept as sent (to be stored so);
    /// two batches, or a record without a timestamp, are not.
    #[test]
    fn a_single_stamped_batch_is_kept_verbatim() {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let batch = |timestamp: i64, compression| {
            let records: Vec<Record> = (0..5)
                .map(|i| Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i,
                    // One batch: the encoder starts another where offset − sequence
                    // changes.
                    sequence: i as i32,
                    timestamp,
                    key: None,
                    value: Some(Bytes::from(format!("v{i}"))),
                    headers: Default::default(),
                })
                .collect();
            let mut buf = bytes::BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression,
            };
            RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
            buf.freeze()
        };
        for compression in [Compression::None, Compression::Gzip] {
            let one = batch(1_700_000_000_000, compression);
            let r = decode_records_within(Some(one.clone()), INFLATED_MAX).unwrap();
            assert_eq!(r.verbatim, Some(one.clone()), "{compression:?}");
            // Stored so, it decodes to the same messages.
            let stored = crate::batch::kafka_payload(&one);
            assert_eq!(crate::batch::decode_batch(&stored, 5).unwrap(), r.messages);
            assert!(
                crate::batch::decode_batch(&stored, 4).is_err(),
                "the count is checked"
            );
        }
        let unstamped = batch(-1, Compression::None);
        assert_eq!(
            decode_records_within(Some(unstamped), INFLATED_MAX)
                .unwrap()
                .verbatim,
            None
        );
        let mut two = bytes::BytesMut::new();
        two.extend_from_slice(&batch(5, Compression::None));
        two.extend_from_slice(&batch(5, Compression::None));
        let r = decode_records_within(Some(two.freeze()), INFLATED_MAX).unwrap();
        assert_eq!((r.messages.len(), r.verbatim), (10, None));
    }

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

    /// One record of `value` in a batch compressed with `compression`.
    fn compressed(value: Bytes, compression: kafka_protocol::records::Compression) -> Bytes {
        use kafka_protocol::records::{
            Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: -1,
            timestamp: 1,
            key: None,
            value: Some(value),
            headers: Default::default(),
        };
        let mut buf = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, [record].iter(), &options).unwrap();
        buf.freeze()
    }

    /// A decompression bomb — a small batch inflating to 16 MiB of zeros — is refused as
    /// MESSAGE_TOO_LARGE under a 1 MiB limit with every codec, and decodes under a limit it
    /// fits.
    #[test]
    fn a_batch_inflating_past_the_limit_is_refused_with_every_codec() {
        use kafka_protocol::records::Compression;
        let bomb = Bytes::from(vec![0u8; 16 << 20]);
        for compression in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let batch = compressed(bomb.clone(), compression);
            assert!(
                batch.len() < 1 << 20,
                "{compression:?}: {} bytes",
                batch.len()
            );
            let e = decode_records_within(Some(batch.clone()), 1 << 20).unwrap_err();
            assert_eq!(e.code, MESSAGE_TOO_LARGE, "{compression:?}: {}", e.message);
            assert!(e.message.contains("1048576-byte limit"), "{}", e.message);
            let ok = decode_records_within(Some(batch), 32 << 20).unwrap();
            assert_eq!(ok.messages.len(), 1, "{compression:?}");
        }
    }

    fn batch(producer_id: i64, sequences: std::ops::Range<i32>) -> bytes::BytesMut {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let records: Vec<Record> = sequences
            .clone()
            .map(|seq| Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id,
                producer_epoch: if producer_id >= 0 { 2 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: i64::from(seq - sequences.start),
                sequence: if producer_id >= 0 { seq } else { -1 },
                timestamp: 1,
                key: None,
                value: Some(Bytes::from(format!("v{seq}"))),
                headers: Default::default(),
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
        buf
    }

    /// A group member's assignment as Kafka's consumer protocol encodes it (a version,
    /// then the message) decodes to its topics and partitions; other bytes to nothing.
    #[test]
    fn assignments_are_decoded_and_garbage_is_not() {
        use bytes::BufMut;
        use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
        use kafka_protocol::messages::{ConsumerProtocolAssignment, TopicName};
        use kafka_protocol::protocol::{Encodable, StrBytes};
        let mut tp = TopicPartition::default();
        tp.topic = TopicName(StrBytes::from_static_str("orders"));
        tp.partitions = vec![0, 2];
        let mut a = ConsumerProtocolAssignment::default();
        a.assigned_partitions = vec![tp];
        let mut buf = bytes::BytesMut::new();
        buf.put_i16(1);
        a.encode(&mut buf, 1).unwrap();
        assert_eq!(
            decode_assignment(&buf),
            Some(vec![("orders".to_owned(), vec![0, 2])])
        );
        assert_eq!(decode_assignment(&[]), None);
        assert_eq!(decode_assignment(&[0, 9, 1, 2]), None);
        assert_eq!(decode_assignment(&[0, 1, 0xff, 0xff, 0xff]), None);
    }

    /// An idempotent producer's batch carries its id, epoch and sequence span; a plain
    /// batch none.
    #[test]
    fn producer_sequences_are_read_from_the_batch() {
        let records = decode_records(Some(batch(42, 5..8).freeze())).unwrap();
        assert_eq!(records.messages.len(), 3);
        assert_eq!(
            records.producer,
            Some(ProducerBatch {
                id: 42,
                epoch: 2,
                first_sequence: 5,
                last_sequence: 7
            })
        );
        assert!(!records.transactional);
        let plain = decode_records(Some(batch(-1, 0..2).freeze())).unwrap();
        assert_eq!(plain.producer, None);
        // Two batches of one producer must follow each other.
        let mut two = batch(42, 0..2);
        two.extend_from_slice(&batch(42, 2..4));
        let both = decode_records(Some(two.freeze())).unwrap();
        assert_eq!(
            both.producer.map(|p| (p.first_sequence, p.last_sequence)),
            Some((0, 3))
        );
        let mut gap = batch(42, 0..2);
        gap.extend_from_slice(&batch(42, 5..6));
        assert_eq!(
            decode_records(Some(gap.freeze())).unwrap_err().code,
            INVALID_REQUEST
        );
    }

    /// A record's content is stored as produced: repeated header keys in order, a null
    /// header value and a null value (a tombstone) as null, an empty value as empty, the
    /// producer's timestamp.
    #[test]
    fn records_keep_their_content() {
        use kafka_protocol::protocol::StrBytes;
        let mut b = bytes::BytesMut::new();
        let headers = vec![
            (
                StrBytes::from_static_str("trace"),
                Some(Bytes::from_static(b"a")),
            ),
            (StrBytes::from_static_str("none"), None),
            (
                StrBytes::from_static_str("trace"),
                Some(Bytes::from_static(b"b")),
            ),
            (StrBytes::from_static_str("empty"), Some(Bytes::new())),
        ];
        let record = |offset, value: Option<Bytes>| kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp: 1_700_000_000_123 + offset,
            key: Some(Bytes::from_static(b"k")),
            value,
            headers: headers.clone(),
        };
        let records = [record(0, None), record(1, Some(Bytes::new()))];
        let options = kafka_protocol::records::RecordEncodeOptions {
            version: 2,
            compression: kafka_protocol::records::Compression::None,
        };
        kafka_protocol::records::RecordBatchEncoder::encode(&mut b, records.iter(), &options)
            .unwrap();
        let got = decode_records(Some(b.freeze())).unwrap().messages;
        let want_headers: Vec<(String, Option<Bytes>)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                Message {
                    key: Some(Bytes::from_static(b"k")),
                    value: None,
                    headers: want_headers.clone(),
                    timestamp_ms: 1_700_000_000_123,
                },
                Message {
                    key: Some(Bytes::from_static(b"k")),
                    value: Some(Bytes::new()),
                    headers: want_headers,
                    timestamp_ms: 1_700_000_000_124,
                },
            ]
        );
    }
}
