//! The Kafka admin surface used in normal operation, with confluent-kafka's AdminClient:
//! DeleteRecords moving a partition's earliest offset on every replica.

use meridian_client::{ProducerConfig, Record};
use meridian_tests::python_output;

/// DeleteRecords on a 3-replica partition moves its start on every replica: the start
/// holds after its leader is killed -9 and another leads, and the partition beside it
/// keeps everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_earliest_offset_on_every_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let mut region = meridian_tests::Region::start_with_kafka(tmp.path(), 3, &[])
        .await
        .unwrap();
    let client = region.client().await;
    client.create_topic("trimmed", 2).await.unwrap();
    let producer = client.producer(ProducerConfig::default());
    for p in 0..2u32 {
        for i in 0..100 {
            producer
                .send(Record::new("trimmed", format!("p{p}-{i}")).partition(p))
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
    let script = "confluent_delete_records.py";
    python_output(
        script,
        vec![bootstrap.clone(), "trimmed".into(), "delete".into()],
    )
    .await;
    // Another replica leads: it moved the start too (it was replicated, not local).
    let leader = region.new_leader("trimmed", 0, usize::MAX).await;
    region.brokers[leader].kill9();
    region.new_leader("trimmed", 0, leader).await;
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
