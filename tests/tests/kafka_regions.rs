//! Kafka topics and groups across regions: a topic created over Kafka in one region is
//! placed in every region (`[kafka] topic_regions` empty) and mirrored; a Kafka consumer
//! group that read part of it in one region resumes in the other, after that region's
//! broker is killed, where it left off: nothing lost, nothing read twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use meridian_tests::mirror::TwoRegions;
use meridian_tests::python_output;

const SCRIPT: &str = "confluent_regions.py";

fn values(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_topic_lives_in_every_region_and_its_group_fails_over_once() {
    let tmp = tempfile::tempdir().unwrap();
    let kafka = ["--kafka-listen", "auto"];
    let mut regions = TwoRegions::start(tmp.path(), &kafka, &kafka).await;
    let _mirrors = regions.link(tmp.path(), &[]);
    let (kx, ky) = (regions.x.kafka[0].clone(), regions.y.kafka[0].clone());
    let arg = |s: &str| s.to_owned();

    python_output(SCRIPT, vec![arg("create"), kx.clone(), arg("kt")]).await;
    // Placed in both regions by the control plane: y's broker gets it too.
    let cy = regions.y.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while cy.describe_topic("kt").await.is_err() {
        assert!(Instant::now() < deadline, "kt never reached region y");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    python_output(
        SCRIPT,
        vec![arg("produce"), kx.clone(), arg("kt"), arg("1000")],
    )
    .await;
    meridian_tests::wait_until_held(&cy, "kt", 1000, Duration::from_secs(60)).await;

    // The group reads 400 in x and commits; its commits reach y.
    let first = tmp.path().join("first");
    let args = |b: &str, most: &str, out: &Path| {
        vec![
            arg("consume"),
            b.to_owned(),
            arg("kt"),
            arg("kgroup"),
            arg(most),
            out.display().to_string(),
        ]
    };
    python_output(SCRIPT, args(&kx, "400", &first)).await;
    let first = values(&first);
    assert_eq!(first.len(), 400);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut at = 0;
        for p in 0..2 {
            at += cy
                .committed_offset("kgroup", "kt", p)
                .await
                .unwrap()
                .unwrap_or(0);
        }
        if at == 400 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "y resolves the group's commits to {at} of 400"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Region x is lost; the group resumes in y.
    regions.x.brokers[0].kill9();
    let rest = tmp.path().join("rest");
    python_output(SCRIPT, args(&ky, "100000", &rest)).await;
    let rest = values(&rest);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for v in first.iter().chain(&rest) {
        *seen.entry(v.clone()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "read twice: {twice:?}");
    let missing: Vec<String> = (0..1000)
        .map(|i| format!("v{i}"))
        .filter(|v| !seen.contains_key(v))
        .collect();
    assert!(missing.is_empty(), "never read: {missing:?}");
    assert_eq!(seen.len(), 1000);
}
