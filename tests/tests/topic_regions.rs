//! `meridian topic alter --regions` with real processes: a topic made in region x alone,
//! written there while another topic's mirroring runs far ahead in the same log groups,
//! joins y. y's mirror-fed copy catches up from x's start (a stream of its own per x group,
//! surviving a kill -9 of x's mirror) while both regions write on; every acknowledged
//! message is held once in both, in each origin partition's order. Then x leaves the topic:
//! it stops taking writes at once, what it took before is still mirrored to y, and the
//! topic can never return to x.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use meridian_client::{Client, ProducerConfig, Record};
use meridian_tests::mirror::TwoRegions;
use meridian_tests::platform::meridian_control;
use meridian_tests::read_all;

/// Produces `n` messages `{tag}-{i}` to `topic`; returns each value's partition.
async fn produce(client: &Client, topic: &str, tag: &str, n: usize) -> HashMap<String, u32> {
    let producer = client.producer(ProducerConfig::default());
    let mut sent = HashMap::new();
    for i in 0..n {
        let value = format!("{tag}-{i}");
        let meta = producer
            .send(Record::new(topic, value.clone()).key(format!("k{}", i % 11)))
            .await
            .await
            .unwrap_or_else(|e| panic!("producing {value} to {topic}: {e}"));
        sent.insert(value, meta.partition);
    }
    sent
}

async fn held(client: &Client, topic: &str) -> u64 {
    match client.describe_topic(topic).await {
        Ok(info) => info.partitions.iter().map(|p| p.latest_offset).sum(),
        Err(_) => 0,
    }
}

/// Waits until `client`'s region holds `sent.len()` messages of `topic`, then checks it holds
/// exactly them, once each, each in its partition, and each tag's messages of a partition
/// in the order they were sent.
async fn check_holds(client: &Client, region: &str, topic: &str, sent: &HashMap<String, u32>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while held(client, topic).await < sent.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "{region} holds {} of {} messages of {topic} after 90 s",
            held(client, topic).await,
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all = read_all(client, topic).await;
    let mut seen = HashSet::new();
    for (p, messages) in &all {
        let mut last: BTreeMap<String, usize> = BTreeMap::new();
        for (_, m) in messages {
            let value = String::from_utf8(m.clone()).unwrap();
            assert!(seen.insert(value.clone()), "{region} holds {value} twice");
            assert_eq!(
                sent.get(&value),
                Some(p),
                "{region} holds {value} in partition {p}"
            );
            let (tag, i) = value.rsplit_once('-').unwrap();
            let i: usize = i.parse().unwrap();
            if let Some(before) = last.insert(tag.to_owned(), i) {
                assert!(
                    before < i,
                    "{region}: {tag}-{i} after {tag}-{before} in partition {p}"
                );
            }
        }
    }
    assert_eq!(
        seen.len(),
        sent.len(),
        "{region} holds what was acknowledged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_topic_joins_a_region_caught_up_and_leaves_it_losing_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let regions = TwoRegions::start(tmp.path(), &[], &[]).await;
    let cp = regions.control.addr.clone();
    let (cx, cy) = (regions.x.client().await, regions.y.client().await);
    let (mut mx, _my) = regions.link(tmp.path(), &[]);

    // A topic in both regions: x's mirror ships its groups far ahead.
    regions.create_topic("both", 3).await;
    let both = produce(&cx, "both", "bx", 600).await;
    check_holds(&cy, "y", "both", &both).await;

    let (code, _, err) = meridian_control(
        &cp,
        &[
            "topic",
            "create",
            "late",
            "--partitions",
            "3",
            "--replicas",
            "1",
            "--regions",
            "x",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let mut late = produce(&cx, "late", "lx", 1500).await;
    let mut both = both;
    both.extend(produce(&cx, "both", "bx2", 300).await);

    // y joins while x writes on; x's mirror is killed mid catch-up and restarted.
    let (code, out, err) = meridian_control(&cp, &["topic", "alter", "late", "--regions", "x,y"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("in x, y"), "{out}");
    let writing = {
        let cx = cx.clone();
        tokio::spawn(async move { produce(&cx, "late", "lx2", 500).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    mx.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    mx.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cy.describe_topic("late").await.is_err() {
        assert!(Instant::now() < deadline, "late never reached y");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    late.extend(produce(&cy, "late", "ly", 500).await);
    late.extend(writing.await.unwrap());
    check_holds(&cy, "y", "late", &late).await;
    check_holds(&cx, "x", "late", &late).await;
    // `topic describe` shows each region's offsets and sizes.
    let (code, out, err) = meridian_control(&cp, &["--json", "topic", "describe", "late"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    for p in v["placements"].as_array().unwrap() {
        let parts = p["partitions"].as_array().unwrap_or_else(|| panic!("{p}"));
        let held: u64 = parts
            .iter()
            .map(|q| q["latest_offset"].as_u64().unwrap())
            .sum();
        assert_eq!(held, late.len() as u64, "{p}");
        assert!(
            parts.iter().all(|q| q["bytes"].as_u64().unwrap() > 0),
            "{p}"
        );
    }
    let (code, out, err) = meridian_control(&cp, &["topic", "describe", "late"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("region y:") && out.contains("MESSAGES") && out.contains(" KiB"),
        "{out}"
    );
    // The shared topic's mirroring went on undisturbed.
    both.extend(produce(&cx, "both", "bx3", 200).await);
    check_holds(&cy, "y", "both", &both).await;
    let dedicated: Vec<_> = regions
        .y
        .groups()
        .await
        .into_iter()
        .filter(|g| g.topic != 0)
        .collect();
    assert!(
        !dedicated.is_empty(),
        "late has log groups of its own in y: {dedicated:?}"
    );

    // x, where the topic began, leaves it: what x took just before still reaches y (which
    // joined later: on the topic's own streams from x's groups); x takes no more.
    late.extend(produce(&cx, "late", "lx3", 300).await);
    let (code, out, err) = meridian_control(&cp, &["topic", "alter", "late", "--regions", "y"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("in y"), "{out}");
    check_holds(&cy, "y", "late", &late).await;
    let refused = cx
        .producer(ProducerConfig::default())
        .send(Record::new("late", "after-leaving"))
        .await
        .await;
    assert!(refused.is_err(), "x took a write after leaving the topic");
    assert!(
        cx.describe_topic("late").await.is_err(),
        "x still lists late"
    );
    let (code, _, err) = meridian_control(&cp, &["topic", "alter", "late", "--regions", "x,y"]);
    assert_ne!(code, 0, "a topic returned to a region it left");
    assert!(err.contains("never returns"), "{err}");
    check_holds(&cy, "y", "late", &late).await;
}
