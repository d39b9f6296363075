//! Log compaction over Kafka, in two regions: confluent-kafka creates a topic with
//! `cleanup.policy=compact` in region x, writes 100,000 updates over 1,000 keys and a
//! tombstone for every tenth key, and reads back, in both regions, each key exactly once
//! with its latest value. Region y's broker runs with small segments and a byte retention,
//! so its journal deletes segments while the mirror fills it: the live messages in them
//! are carried forward through raft (mirrored ones with their origin), and y still reads
//! every latest value — also after its broker is killed -9 and restarted.

use std::time::{Duration, Instant};

use meridian_tests::mirror::TwoRegions;
use meridian_tests::python_output;

const SCRIPT: &str = "confluent_compaction.py";
const UPDATES: u64 = 100_000;
const KEYS: u64 = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_reads_each_keys_latest_value_in_both_regions() {
    let tmp = tempfile::tempdir().unwrap();
    let y_config = tmp.path().join("y.toml");
    std::fs::write(
        &y_config,
        "batch_bytes_max = 262144\nmessage_bytes_max = 131072\n\
         [storage]\nsegment_bytes = 524288\nretention_bytes = 1048576\nretention_check_interval_ms = 300\n\
         [replication]\nsnapshot_entries = 2\n",
    )
    .unwrap();
    let y_config = y_config.display().to_string();
    let x_flags = ["--kafka-listen", "auto"];
    let y_flags = ["--kafka-listen", "auto", "--config", &y_config];
    let mut regions = TwoRegions::start(tmp.path(), &x_flags, &y_flags).await;
    let _mirrors = regions.link(tmp.path(), &[]);
    let (kx, ky) = (regions.x.kafka[0].clone(), regions.y.kafka[0].clone());
    let arg = |s: &str| s.to_owned();

    python_output(SCRIPT, vec![arg("create"), kx.clone(), arg("table")]).await;
    let (cx, cy) = (regions.x.client().await, regions.y.client().await);
    let deadline = Instant::now() + Duration::from_secs(30);
    while cy.describe_topic("table").await.is_err() {
        assert!(Instant::now() < deadline, "table never reached region y");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (n, keys) = (UPDATES.to_string(), KEYS.to_string());
    python_output(
        SCRIPT,
        vec![
            arg("produce"),
            kx.clone(),
            arg("table"),
            n.clone(),
            keys.clone(),
        ],
    )
    .await;
    // Offsets are kept: every update and tombstone took one, in both regions.
    let total = UPDATES + KEYS / 10;
    meridian_tests::wait_until_held(&cx, "table", total, Duration::from_secs(60)).await;
    meridian_tests::wait_until_held(&cy, "table", total, Duration::from_secs(120)).await;
    let read = |bootstrap: &str| {
        vec![
            arg("read"),
            bootstrap.to_owned(),
            arg("table"),
            n.clone(),
            keys.clone(),
        ]
    };
    python_output(SCRIPT, read(&kx)).await;

    // y deleted segments under the compacted topic's live messages, carried first.
    let y = &regions.y.brokers[0];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let carried = y.metric("meridian_compaction_carried_total").await;
        let deleted = y.metric("meridian_journal_segments_deleted_total").await;
        if carried > 0.0 && deleted > 0.0 {
            eprintln!("y carried {carried} messages and deleted {deleted} segments");
            break;
        }
        if Instant::now() > deadline {
            let page = match meridian_tests::http_get(y.metrics, "/metrics").await {
                Ok(page) => page,
                Err(e) => format!("journal: metrics unavailable: {e}"),
            };
            let page: Vec<&str> = page
                .lines()
                .filter(|l| {
                    ["journal", "retention", "raft", "compaction", "snapshot"]
                        .iter()
                        .any(|w| l.contains(w))
                })
                .collect();
            panic!(
                "y carried {carried} messages and deleted {deleted} segments in 90 s; metrics:\n{}",
                page.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    python_output(SCRIPT, read(&ky)).await;

    // Killed and restarted: the index and the carried copies are recovered.
    regions.y.brokers[0].kill9();
    regions.y.brokers[0].restart().await.unwrap();
    let cy = regions.y.client().await;
    meridian_tests::wait_until_held(&cy, "table", total, Duration::from_secs(60)).await;
    python_output(SCRIPT, read(&ky)).await;
}
