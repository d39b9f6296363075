//! Fetch serves stored batches as produced: a record batch a producer sent (compressed or
//! not) is stored unchanged and a consumer receives the same bytes, CRC included, with only
//! its base offset (and no leader epoch) written in, outside the CRC; a batch that needs converting (records without a timestamp
//! are stamped by the broker) is encoded again. kcat, checking CRCs, reads them all, and
//! the native API reads the same messages.

use std::net::SocketAddr;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

#[path = "support/kafka_raw.rs"]
mod kafka_raw;
use kafka_raw::kafka_call;

/// A batch of `n` records `{tag}-{i}` (keys, a header, the producer's `timestamp`).
fn batch(tag: &str, n: usize, compression: Compression, timestamp: i64) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // One batch: the encoder starts another where offset − sequence changes.
            sequence: i as i32,
            timestamp,
            key: Some(Bytes::from(format!("k{}", i % 7))),
            value: Some(Bytes::from(format!("{tag}-{i}-{}", "v".repeat(i % 50)))),
            headers: [(
                StrBytes::from_static_str("h"),
                Some(Bytes::from_static(b"1")),
            )]
            .into_iter()
            .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression,
    };
    RecordBatchEncoder::encode(&mut buf, records.iter(), &options).unwrap();
    buf.freeze()
}

fn produce(kafka: SocketAddr, records: Bytes) -> i64 {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
    let mut stream = std::net::TcpStream::connect(kafka).unwrap();
    let mut part = PartitionProduceData::default();
    part.index = 0;
    part.records = Some(records);
    let mut t = TopicProduceData::default();
    t.name = TopicName(StrBytes::from_static_str("stored"));
    t.partition_data = vec![part];
    let mut request = ProduceRequest::default();
    request.acks = -1;
    request.timeout_ms = 10_000;
    request.topic_data = vec![t];
    let mut answer = kafka_call(&mut stream, ApiKey::Produce, 7, &request);
    let response = ProduceResponse::decode(&mut answer, 7).unwrap();
    let p = &response.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0, "{:?}", p.error_message);
    p.base_offset
}

/// The record batches a fetch from `offset` returns, each as its bytes.
fn fetch(kafka: SocketAddr, offset: i64) -> Vec<Bytes> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let mut stream = std::net::TcpStream::connect(kafka).unwrap();
    let mut p = FetchPartition::default();
    p.partition = 0;
    p.fetch_offset = offset;
    p.partition_max_bytes = 1 << 20;
    p.current_leader_epoch = -1;
    p.log_start_offset = -1;
    let mut t = FetchTopic::default();
    t.topic = TopicName(StrBytes::from_static_str("stored"));
    t.partitions = vec![p];
    let mut r = FetchRequest::default();
    r.replica_id = kafka_protocol::messages::BrokerId(-1);
    r.max_wait_ms = 500;
    r.max_bytes = 1 << 20;
    r.topics = vec![t];
    let mut answer = kafka_call(&mut stream, ApiKey::Fetch, 12, &r);
    let response = FetchResponse::decode(&mut answer, 12).unwrap();
    let part = &response.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    let mut records = part.records.clone().unwrap_or_default();
    let mut out = Vec::new();
    while records.len() >= 12 {
        let len = 12 + (&records[8..12]).get_i32() as usize;
        out.push(records.split_to(len));
    }
    out
}

/// The CRC field of a v2 record batch.
fn crc(batch: &[u8]) -> u32 {
    (&batch[17..21]).get_u32()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumed_batch_is_the_produced_batch_crc_and_compression_included() {
    let tmp = tempfile::tempdir().unwrap();
    let kafka = meridian_tests::free_addr();
    let broker =
        meridian_tests::BrokerProcess::start(tmp.path(), &["--kafka-listen", &kafka.to_string()])
            .await
            .unwrap();
    broker
        .client()
        .await
        .create_topic("stored", 1)
        .await
        .unwrap();
    let now = 1_700_000_000_000;
    let sent = [
        batch("gzip", 50, Compression::Gzip, now),
        batch("lz4", 40, Compression::Lz4, now),
        batch("plain", 30, Compression::None, now),
        // No timestamp: the broker stamps it, so it is converted.
        batch("stamped", 20, Compression::None, -1),
    ];
    let mut bases = Vec::new();
    for b in &sent {
        let b = b.clone();
        bases.push(
            tokio::task::spawn_blocking(move || produce(kafka, b))
                .await
                .unwrap(),
        );
    }
    assert_eq!(bases, [0, 50, 90, 120]);
    let got = tokio::task::spawn_blocking(move || fetch(kafka, 0))
        .await
        .unwrap();
    assert_eq!(got.len(), 4, "one batch each");
    for (i, (sent, got)) in sent.iter().zip(&got).enumerate().take(3) {
        assert_eq!((&got[0..8]).get_i64(), bases[i], "batch {i}'s base offset");
        assert_eq!(crc(got), crc(sent), "batch {i}'s CRC");
        assert_eq!(&got[8..12], &sent[8..12], "batch {i}'s length");
        assert_eq!(&got[16..], &sent[16..], "batch {i} as produced");
    }
    assert_ne!(
        &got[3][16..],
        &sent[3][16..],
        "the stamped batch was converted"
    );
    // From inside a stored batch: the whole batch, as Kafka answers.
    let from_inside = tokio::task::spawn_blocking(move || fetch(kafka, 60))
        .await
        .unwrap();
    assert_eq!(&from_inside[0][16..], &sent[1][16..]);

    // kcat checks every CRC and reads each record once, in order.
    let mut cmd = std::process::Command::new("kcat");
    cmd.args([
        "-b",
        &kafka.to_string(),
        "-C",
        "-t",
        "stored",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-X",
        "check.crcs=true",
        "-f",
        "%o %s\\n",
    ]);
    let (code, out, err) = meridian_tests::run(cmd, None);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 140, "{err}");
    for (o, line) in lines.iter().enumerate() {
        assert!(line.starts_with(&format!("{o} ")), "{line}");
    }
    assert!(lines[0].ends_with(" gzip-0-"), "{}", lines[0]);
    assert!(lines[139].starts_with("139 stamped-19-"), "{}", lines[139]);
    // The native API decodes the same messages from the stored batches.
    let read = meridian_tests::read_all(&broker.client().await, "stored").await;
    let values: Vec<String> = read[&0]
        .iter()
        .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        .collect();
    assert_eq!(values.len(), 140);
    assert_eq!(values[50], "lz4-0-");
    assert_eq!(values[91], "plain-1-v");
}
