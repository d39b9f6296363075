//! Fetch: each partition's batches from its offset as Kafka record batches, one per stored
//! batch, with its producer (id, epoch, sequences) and transactional bit, and a transaction
//! marker as Kafka's control batch (so clients count it and move past it). A
//! `read_committed` fetch stops at the last stable offset and gets no aborted batch (they
//! are left out here, so its aborted-transactions list is empty).

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use meridian_proto::batch;
use meridian_proto::record::TxnMarker;

use super::{code, error_code, kafka_protocol, partition_index, str};
use crate::broker::{Broker, BrokerError, Isolation, kafka_codec, messages_of};
use crate::storage::ReadBatch;
use crate::storage::transactions::TxnPart;

/// What a control batch adds to a fetch's size: a record batch header (61 bytes) and its
/// one small record.
const CONTROL_BATCH_BYTES: usize = 80;

/// Fetch: each partition from its offset; when nothing is available anywhere, waits up to
/// `max_wait_ms` on the first partition for data.
pub(super) async fn fetch(broker: &Broker, r: FetchRequest) -> FetchResponse {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    let max_wait = Duration::from_millis(r.max_wait_ms.clamp(0, 30_000) as u64);
    let isolation = match r.isolation_level {
        1 => Isolation::Committed,
        _ => Isolation::Uncommitted,
    };
    let mut out = FetchResponse::default();
    let mut budget = r.max_bytes.max(1) as usize;
    let mut any = false;
    for pass in 0..2 {
        out.responses.clear();
        for topic in &r.topics {
            let name = topic.topic.0.to_string();
            let mut t = FetchableTopicResponse::default();
            t.topic = topic.topic.clone();
            for part in &topic.partitions {
                let wait =
                    if pass == 1 && !any && out.responses.is_empty() && t.partitions.is_empty() {
                        max_wait
                    } else {
                        Duration::ZERO
                    };
                let mut p = PartitionData::default();
                p.partition_index = part.partition;
                p.high_watermark = -1;
                p.last_stable_offset = -1;
                p.log_start_offset = -1;
                p.preferred_read_replica = BrokerId(-1);
                let max = (part.partition_max_bytes.max(1) as usize).min(budget.max(1));
                let index = match partition_index(part.partition) {
                    Ok(index) => index,
                    Err(code) => {
                        p.error_code = code;
                        t.partitions.push(p);
                        continue;
                    }
                };
                // A negative offset is before every offset: out of range, never offset 0.
                let Ok(offset) = u64::try_from(part.fetch_offset) else {
                    p.error_code = code::OFFSET_OUT_OF_RANGE;
                    t.partitions.push(p);
                    continue;
                };
                match broker
                    .fetch_batches(&name, index, (offset, max), wait, isolation)
                    .await
                {
                    Ok(fetched) => {
                        p.high_watermark = fetched.latest as i64;
                        p.last_stable_offset = fetched.last_stable as i64;
                        p.log_start_offset = fetched.earliest as i64;
                        if isolation == Isolation::Committed {
                            p.aborted_transactions = Some(Vec::new());
                        }
                        // A topic of LogAppendTime: records carry the broker's time; one
                        // with a compression.type: batches encoded here are compressed so.
                        let topic = broker.topic(&name).ok();
                        let append_time = topic.as_ref().is_some_and(|t| {
                            t.timestamp_type == meridian_proto::settings::TimestampType::AppendTime
                        });
                        let codec = topic
                            .and_then(|t| t.config.compression)
                            .and_then(kafka_codec)
                            .unwrap_or(Compression::None);
                        match encode_batches(&fetched.batches, offset, max, (append_time, codec)) {
                            Ok(records) => {
                                if !records.is_empty() {
                                    any = true;
                                    budget = budget.saturating_sub(records.len());
                                }
                                p.records = Some(records);
                            }
                            Err(e) => p.error_code = error_code(&e),
                        }
                    }
                    Err(e) => p.error_code = error_code(&e),
                }
                t.partitions.push(p);
            }
            out.responses.push(t);
        }
        if any || max_wait.is_zero() {
            break;
        }
    }
    out
}

/// The stored batches as Kafka record batches, leaving out messages before `offset` and
/// stopping near `max_bytes` (but always returning the first batch); with `append_time`
/// (a topic of LogAppendTime), stamped with the broker's append time. A batch stored as
/// its producer sent it goes out as it is (from the journal's memory map, with only its
/// base offset written in, outside the CRC), whole: the client skips what lies before
/// `offset`, as it does with Kafka's batches.
fn encode_batches(
    batches: &[ReadBatch],
    offset: u64,
    max_bytes: usize,
    (append_time, codec): (bool, Compression),
) -> Result<Bytes, BrokerError> {
    let mut buf = BytesMut::new();
    let mut records: Vec<Record> = Vec::new();
    let mut bytes = 0;
    for b in batches {
        if (!records.is_empty() || !buf.is_empty()) && bytes >= max_bytes {
            break;
        }
        let (producer_id, producer_epoch) = b.producer.map_or((-1, -1), |p| (p.id, p.epoch));
        if b.is_marker() {
            let marker = TxnMarker::decode(&b.payload).map_err(|e| {
                BrokerError::Invalid(format!(
                    "stored marker at offset {} does not decode: {e}",
                    b.base_offset
                ))
            })?;
            if b.base_offset >= offset {
                records.push(control_record(b, marker, (producer_id, producer_epoch)));
                bytes += CONTROL_BATCH_BYTES;
            }
            continue;
        }
        if !append_time
            && b.removed.is_empty()
            && let Some(kafka) = batch::kafka_batch(&b.payload)
            && kafka.len() >= 61
        {
            encode_records(&mut buf, &mut records, codec)?;
            let at = buf.len();
            buf.extend_from_slice(&kafka);
            // Outside the CRC: the base offset here, and no partition leader epoch (as
            // the batches encoded here carry: clients do not validate by epochs).
            (&mut buf[at..at + 8]).put_i64(b.base_offset as i64);
            (&mut buf[at + 12..at + 16]).put_i32(-1);
            bytes += kafka.len();
            metrics::counter!("meridian_kafka_batches_served_as_stored_total").increment(1);
            continue;
        }
        for (i, m) in messages_of(b)?.into_iter().enumerate() {
            let o = b.base_offset + i as u64;
            // Before the fetch offset, or compacted away.
            if o < offset || b.removed.contains(&(i as u32)) {
                continue;
            }
            bytes += m.encoded_len();
            // Within one stored batch, offset − sequence is constant, so the records stay
            // one Kafka batch (the encoder starts a new one where it changes).
            let sequence = match b.producer {
                Some(p) => p.first_sequence.wrapping_add(i as i32) & i32::MAX,
                None => i as i32,
            };
            records.push(Record {
                transactional: b.txn == Some(TxnPart::Batch),
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id,
                producer_epoch,
                timestamp_type: if append_time {
                    TimestampType::LogAppend
                } else {
                    TimestampType::Creation
                },
                offset: o as i64,
                sequence,
                timestamp: if append_time {
                    b.append_time_ms
                } else {
                    m.timestamp_ms
                },
                key: m.key,
                value: m.value,
                headers: m.headers.iter().map(|(k, v)| (str(k), v.clone())).collect(),
            });
        }
    }
    encode_records(&mut buf, &mut records, codec)?;
    Ok(buf.freeze())
}

/// Encodes `records` (taken) as v2 batches compressed with `codec` after what `buf` holds.
fn encode_records(
    buf: &mut BytesMut,
    records: &mut Vec<Record>,
    codec: Compression,
) -> Result<(), BrokerError> {
    if records.is_empty() {
        return Ok(());
    }
    let options = RecordEncodeOptions {
        version: 2,
        compression: codec,
    };
    RecordBatchEncoder::encode(buf, records.iter(), &options).map_err(|e| {
        tracing::error!(error = %e, "encoding a Kafka record batch failed");
        BrokerError::Invalid(format!("encoding a Kafka record batch: {e}"))
    })?;
    records.clear();
    Ok(())
}

/// A transaction marker as Kafka's control record: key (version 0, type 0 abort or 1
/// commit) and value (version 0, coordinator epoch), big-endian as Kafka writes them.
fn control_record(
    b: &ReadBatch,
    marker: TxnMarker,
    (producer_id, producer_epoch): (i64, i16),
) -> Record {
    let mut key = BytesMut::with_capacity(4);
    key.put_i16(0);
    key.put_i16(i16::from(marker.commit));
    let mut value = BytesMut::with_capacity(6);
    value.put_i16(0);
    value.put_i32(marker.coordinator_epoch);
    Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: b.base_offset as i64,
        sequence: -1,
        timestamp: b.append_time_ms,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Default::default(),
    }
}
