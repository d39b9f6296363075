//! Transactions across real processes: a three-broker region, unchanged Kafka clients
//! (confluent-kafka, `tests/kafka_clients/confluent_transactions.py`), and kill -9 of a
//! partition leader and of the transaction coordinator mid-transaction.

use meridian_tests::python_output;

/// Commit, abort, commit, and one left open: a `read_committed` consumer sees only the
/// committed records and is held at the last stable offset while one is open, a
/// `read_uncommitted` one sees all, and the end offsets count the markers;
/// consume-transform-produce with `send_offsets_to_transaction`, whose aborted round leaves
/// the group's offsets as the committed round left them; a fenced producer is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_transactions_commit_abort_and_hold_read_committed_readers() {
    const PARTITIONS: u32 = 3;
    let tmp = tempfile::tempdir().unwrap();
    let region = meridian_tests::Region::start_with_kafka(tmp.path(), 3, &[])
        .await
        .unwrap();
    let client = region.client().await;
    client.create_topic("txn", PARTITIONS).await.unwrap();
    client.create_topic("txn-out", PARTITIONS).await.unwrap();
    let bootstrap: Vec<String> = region.kafka.iter().map(|a| a.to_string()).collect();
    let out = python_output(
        "confluent_transactions.py",
        vec![
            bootstrap.join(","),
            "txn".into(),
            "txn-out".into(),
            PARTITIONS.to_string(),
        ],
    )
    .await;
    let report: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    eprintln!("{report}");
    assert_eq!(report["committed_while_open"], 60);
    assert_eq!(report["uncommitted_while_open"], 120);
    assert_eq!(report["committed_after"], 90);
    assert_eq!(report["out_committed"], 60);
    assert_eq!(report["out_uncommitted"], 90);
    assert_eq!(report["zombie_fenced"], true);
    // The native reader reads committed data: the same 90 records.
    let values = read_native(&client, "txn", 90).await;
    assert_eq!(values.len(), 90, "{values:?}");
    assert!(!values.iter().any(|v| v.starts_with("a-")));
    for b in &region.brokers {
        assert!(b.running());
    }
}

/// What a native consumer reads of `topic` from the start: until `expect` values came and
/// then a poll brought nothing more.
async fn read_native(client: &meridian_client::Client, topic: &str, expect: usize) -> Vec<String> {
    use meridian_client::{ConsumerConfig, StartFrom};
    let mut consumer = client.consumer(ConsumerConfig {
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    });
    consumer.subscribe(topic).await.expect("subscribe");
    let mut values = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let batch = consumer
            .poll(std::time::Duration::from_secs(2))
            .await
            .expect("poll");
        if batch.is_empty() && (values.len() >= expect || std::time::Instant::now() > deadline) {
            return values;
        }
        for m in batch {
            values.push(String::from_utf8(m.value.unwrap_or_default().to_vec()).unwrap());
        }
    }
}
