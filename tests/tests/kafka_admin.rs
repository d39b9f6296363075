//! The Kafka admin surface used in normal operation, with confluent-kafka's AdminClient:
//! DeleteRecords moving a partition's earliest offset on every replica; ElectLeaders moving
//! leadership to preferred replicas; client quotas set and described over the protocol, and
//! a producer throttled to its rate.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Decodable, StrBytes};
use meridian_client::{ProducerConfig, Record};
use meridian_tests::python_output;

#[path = "support/kafka_raw.rs"]
mod kafka_raw;
use kafka_raw::kafka_call;

/// A region of three brokers with Kafka listeners, known to all of them, holding `topic`
/// with `partitions` partitions of 100 records each (`p{partition}-{i}`), and its Kafka
/// bootstrap list.
async fn region_with_records(
    dir: &std::path::Path,
    topic: &str,
    partitions: u32,
) -> (meridian_tests::Region, meridian_client::Client, String) {
    let region = meridian_tests::Region::start_with_kafka(dir, 3, &[])
        .await
        .unwrap();
    let client = region.client().await;
    client.create_topic(topic, partitions).await.unwrap();
    // Every broker knows it (the catalog replicates) before anything is sent.
    region.wait_topic_known(topic).await;
    let producer = client.producer(ProducerConfig::default());
    for p in 0..partitions {
        for i in 0..100 {
            producer
                .send(Record::new(topic, format!("p{p}-{i}")).partition(p))
                .await
                .await
                .unwrap();
        }
    }
    let bootstrap = region
        .kafka
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    (region, client, bootstrap)
}

/// DeleteRecords on a 3-replica partition moves its start on every replica: the start
/// holds after its leader is killed -9 and another leads, and the partition beside it
/// keeps everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_earliest_offset_on_every_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut region, _, bootstrap) = region_with_records(tmp.path(), "trimmed", 2).await;
    let script = "confluent_delete_records.py";
    python_output(
        script,
        vec![bootstrap.clone(), "trimmed".into(), "delete".into()],
    )
    .await;
    // Another replica leads: it moved the start too (it was replicated, not local).
    let leader = region.new_leader("trimmed", 0, usize::MAX).await;
    region.brokers[leader].kill9();
    // Both partitions led by live brokers (the other one's group may have lost its leader
    // too) before a client asks.
    region.new_leader("trimmed", 0, leader).await;
    region.new_leader("trimmed", 1, leader).await;
    let alive: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| region.kafka[i].to_string())
        .collect();
    python_output(
        script,
        vec![alive.join(","), "trimmed".into(), "check".into()],
    )
    .await;
    // The killed one comes back with the same start.
    region.brokers[leader].restart().await.unwrap();
    python_output(script, vec![bootstrap, "trimmed".into(), "check".into()]).await;
}

/// ElectLeaders (confluent-kafka's AdminClient) moves each partition's leadership to its
/// preferred replica, the first replica Metadata lists; after that replica is killed -9 and
/// restarted, electing it again brings partition 0 back while an idempotent producer writes
/// 3,000 records, each stored once and in order. The native hand-over names any voter, and
/// refuses a broker that is not one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_leaders_moves_partitions_to_their_preferred_replicas() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut region, client, bootstrap) = region_with_records(tmp.path(), "elected", 3).await;
    let script = "confluent_elect.py";
    python_output(
        script,
        vec![bootstrap.clone(), "elected".into(), "settle".into()],
    )
    .await;

    // Partition 0's preferred replica leads it now: killed, another leads; back, it is
    // elected again (the script retries while it catches up).
    let preferred = region.new_leader("elected", 0, usize::MAX).await;
    region.brokers[preferred].kill9();
    region.new_leader("elected", 0, preferred).await;
    region.brokers[preferred].restart().await.unwrap();
    let out = python_output(script, vec![bootstrap, "elected".into(), "restore".into()]).await;
    println!("{out}");
    assert_eq!(
        region.leader_of("elected", 0).await,
        Some(preferred),
        "partition 0 back at its preferred replica"
    );

    // The native hand-over: partition 1's group to a voter that does not lead it.
    let info = client.describe_topic("elected").await.unwrap();
    let group = info.partitions[1].log_group;
    let leader = region.new_leader("elected", 1, usize::MAX).await;
    let to = (leader + 1) % 3;
    let wait = std::time::Duration::from_secs(10);
    let moved = client
        .transfer_leadership(group, Some(to as u32 + 1), wait)
        .await
        .unwrap();
    assert!(moved.moved, "{moved:?}");
    assert_eq!(moved.leader, to as u32 + 1);
    assert_eq!(region.leader_of("elected", 1).await, Some(to));
    let again = client
        .transfer_leadership(group, Some(to as u32 + 1), wait)
        .await
        .unwrap();
    assert!(!again.moved, "{again:?}");
    let refused = client
        .transfer_leadership(group, Some(9), wait)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(tonic::Code::InvalidArgument),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("not a voting replica"),
        "{refused}"
    );
}

/// One AlterClientQuotas entry for client id `client`: `key` set to `value`; the answer's
/// (error code, message).
fn alter_quota(kafka: std::net::SocketAddr, client: &str, key: &str, value: f64) -> (i16, String) {
    use kafka_protocol::messages::alter_client_quotas_request::{EntityData, EntryData, OpData};
    use kafka_protocol::messages::{AlterClientQuotasRequest, AlterClientQuotasResponse};
    let mut entity = EntityData::default();
    entity.entity_type = StrBytes::from_static_str("client-id");
    entity.entity_name = Some(StrBytes::from_string(client.to_owned()));
    let mut op = OpData::default();
    op.key = StrBytes::from_string(key.to_owned());
    op.value = value;
    let mut entry = EntryData::default();
    entry.entity = vec![entity];
    entry.ops = vec![op];
    let mut r = AlterClientQuotasRequest::default();
    r.entries = vec![entry];
    let mut stream = std::net::TcpStream::connect(kafka).unwrap();
    let mut body = kafka_call(&mut stream, ApiKey::AlterClientQuotas, 1, &r);
    let out = AlterClientQuotasResponse::decode(&mut body, 1).unwrap();
    let e = &out.entries[0];
    (
        e.error_code,
        e.error_message
            .as_ref()
            .map(|m| m.to_string())
            .unwrap_or_default(),
    )
}

/// The producer_byte_rate DescribeClientQuotas reports for client id `client`.
fn described_rate(kafka: std::net::SocketAddr, client: &str) -> Option<f64> {
    use kafka_protocol::messages::describe_client_quotas_request::ComponentData;
    use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};
    let mut filter = ComponentData::default();
    filter.entity_type = StrBytes::from_static_str("client-id");
    filter.match_type = 0;
    filter._match = Some(StrBytes::from_string(client.to_owned()));
    let mut r = DescribeClientQuotasRequest::default();
    r.components = vec![filter];
    let mut stream = std::net::TcpStream::connect(kafka).unwrap();
    let mut body = kafka_call(&mut stream, ApiKey::DescribeClientQuotas, 1, &r);
    let out = DescribeClientQuotasResponse::decode(&mut body, 1).unwrap();
    assert_eq!(out.error_code, 0, "{:?}", out.error_message);
    let entries = out.entries.unwrap_or_default();
    entries
        .iter()
        .flat_map(|e| &e.values)
        .find(|v| &*v.key == "producer_byte_rate")
        .map(|v| v.value)
}

/// (bytes a second, throttle events) of confluent_quota.py producing 2 MB as `client`.
async fn produce_measured(bootstrap: &str, client: &str) -> (f64, u64) {
    let out = python_output(
        "confluent_quota.py",
        vec![
            bootstrap.to_owned(),
            "quoted".into(),
            client.to_owned(),
            "2000000".into(),
        ],
    )
    .await;
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = |name: &str| {
        let i = words.iter().position(|w| *w == name).unwrap();
        words[i + 1].parse::<f64>().unwrap()
    };
    eprintln!("{client}: {}", out.lines().next().unwrap_or_default());
    (at("RATE"), at("THROTTLES") as u64)
}

/// A producer_byte_rate quota on a client id, set and described over the Kafka protocol
/// (a key not enforced refused by name), holds confluent-kafka producing as that client
/// to its rate, with throttle times reported; another client id in the same run is not
/// held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_quota_throttles_a_client_to_its_rate() {
    const RATE: f64 = 200_000.0;
    let tmp = tempfile::tempdir().unwrap();
    let kafka = meridian_tests::free_addr();
    let broker =
        meridian_tests::BrokerProcess::start(tmp.path(), &["--kafka-listen", &kafka.to_string()])
            .await
            .unwrap();
    broker
        .client()
        .await
        .create_topic("quoted", 1)
        .await
        .unwrap();
    // None set yet: none described (the quotas topic does not exist until the first).
    let described = tokio::task::spawn_blocking(move || described_rate(kafka, "slow"))
        .await
        .unwrap();
    assert_eq!(described, None);
    let (code, message) =
        tokio::task::spawn_blocking(move || alter_quota(kafka, "slow", "request_percentage", 50.0))
            .await
            .unwrap();
    assert_eq!(code, 42, "{message}");
    assert!(message.contains("request_percentage"), "{message}");
    let (code, message) =
        tokio::task::spawn_blocking(move || alter_quota(kafka, "slow", "producer_byte_rate", RATE))
            .await
            .unwrap();
    assert_eq!(code, 0, "{message}");
    let described = tokio::task::spawn_blocking(move || described_rate(kafka, "slow"))
        .await
        .unwrap();
    assert_eq!(described, Some(RATE));

    let bootstrap = kafka.to_string();
    let (slow, throttles) = produce_measured(&bootstrap, "slow").await;
    let (fast, _) = produce_measured(&bootstrap, "fast").await;
    // The first second's worth passes at once; the rest at the rate.
    assert!(
        slow <= RATE * 1.25,
        "the quoted client produced {slow:.0} B/s, quota {RATE}"
    );
    assert!(throttles > 0, "no throttle time was reported");
    assert!(
        fast > RATE * 2.0,
        "the client without a quota produced only {fast:.0} B/s"
    );
}

/// A topic's `retention.bytes` keeps each partition within its bytes while the topic
/// beside it keeps everything; DescribeLogDirs lists each partition's bytes and
/// OffsetForLeaderEpoch answers at the leader — both with kafka-python, a second client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_bytes_log_dirs_and_leader_epochs_with_kafka_python() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("broker.toml");
    std::fs::write(&config, "[storage]\nretention_check_interval_ms = 300\n").unwrap();
    let config = config.display().to_string();
    let flags = ["--kafka-listen", "auto", "--config", &config];
    let (_cp, regions, _certs) =
        meridian_tests::platform::managed_regions(tmp.path(), &["x"], 1, &flags).await;
    python_output("kafka_python_logs.py", vec![regions[0].kafka[0].clone()]).await;
}

/// Committed offset metadata is kept with the offset (through raft, in the commit record)
/// and returned by OffsetFetch, also after the broker is killed -9 and restarted;
/// metadata over 4,096 bytes is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offset_metadata_survives_a_kill() {
    let tmp = tempfile::tempdir().unwrap();
    let flags = ["--kafka-listen", "auto"];
    let (_cp, mut regions, _certs) =
        meridian_tests::platform::managed_regions(tmp.path(), &["x"], 1, &flags).await;
    let kafka = regions[0].kafka[0].clone();
    let script = "confluent_offset_metadata.py";
    python_output(script, vec![kafka.clone(), "commit".into()]).await;
    regions[0].brokers[0].kill9();
    regions[0].brokers[0].restart().await.unwrap();
    python_output(script, vec![kafka, "check".into()]).await;
}
