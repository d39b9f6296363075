//! Retry and dead letters across real brokers: a message the application nacks comes back
//! on the policy's backoff, and after its attempts lands in the group's dead-letter topic
//! with headers saying why, how often and from where; the rest is processed once. On a
//! strictly ordered topic a poison message holds back only its own key.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meridian_client::retry::{self, RetryPolicy};
use meridian_client::{Client, ConsumedMessage, ConsumerConfig, Record, StartFrom};
use meridian_tests::Region;

fn policy() -> RetryPolicy {
    RetryPolicy {
        backoff: vec![Duration::from_millis(700), Duration::from_millis(1_200)],
        max_attempts: 3,
        ..RetryPolicy::default()
    }
}

fn header(m: &ConsumedMessage, name: &str) -> Option<String> {
    m.headers
        .iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| String::from_utf8(v.clone()?.to_vec()).ok())
}

fn value(m: &ConsumedMessage) -> String {
    String::from_utf8(m.value.clone().unwrap_or_default().to_vec()).unwrap()
}

/// Every message of `topic` from the beginning (no group).
async fn read(client: &Client, topic: &str, n: usize) -> Vec<ConsumedMessage> {
    let mut c = client.consumer(ConsumerConfig {
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    });
    c.subscribe(topic).await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.len() < n && Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(500)).await.unwrap());
    }
    // Nothing more arrives.
    out.extend(c.poll(Duration::from_millis(500)).await.unwrap());
    out
}

/// Consumes with `group` and the test policy until `done` says so: nacks values starting
/// with "poison", acks the rest; every delivery `(value, attempt, when)` in order.
async fn work(
    client: &Client,
    group: &str,
    topic: &str,
    done: impl Fn(&[(String, u32, Instant)]) -> bool,
) -> Vec<(String, u32, Instant)> {
    let mut c = client.consumer(ConsumerConfig {
        group: Some(group.into()),
        start: StartFrom::Beginning,
        retry: Some(policy()),
        ..ConsumerConfig::default()
    });
    c.subscribe(topic).await.unwrap();
    let mut deliveries = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done(&deliveries) {
        assert!(Instant::now() < deadline, "not done: {deliveries:?}");
        for m in c.poll(Duration::from_millis(200)).await.unwrap() {
            let v = value(&m);
            deliveries.push((v.clone(), m.attempt(), Instant::now()));
            if v.starts_with("poison") {
                c.nack(&m, &format!("cannot process {v}")).await.unwrap();
            } else {
                c.ack(&m);
            }
        }
        c.commit().await.unwrap();
    }
    c.close().await.unwrap();
    deliveries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_message_is_retried_on_backoff_then_dead_lettered_with_its_story() {
    let tmp = tempfile::tempdir().unwrap();
    let region = Region::start(tmp.path(), 3, &[]).await.unwrap();
    let client = region.client().await;
    client.create_topic("jobs", 2).await.unwrap();
    let producer = client.producer(Default::default());
    let mut origin = BTreeMap::new();
    for i in 0..40 {
        let v = if i % 10 == 3 {
            format!("poison-{i}")
        } else {
            format!("job-{i}")
        };
        let at = producer
            .send(Record::new("jobs", v.clone()).partition(i % 2))
            .await
            .await
            .unwrap();
        origin.insert(v, (at.partition, at.offset));
    }

    let poison: Vec<&String> = origin.keys().filter(|v| v.starts_with("poison")).collect();
    let deliveries = work(&client, "workers", "jobs", |d| {
        d.iter().filter(|(v, _, _)| v.starts_with("job")).count() >= 36
            && d.iter()
                .filter(|(v, a, _)| v.starts_with("poison") && *a == 3)
                .count()
                >= 4
    })
    .await;

    let mut by_value: BTreeMap<&str, Vec<(u32, Instant)>> = BTreeMap::new();
    for (v, a, t) in &deliveries {
        by_value.entry(v).or_default().push((*a, *t));
    }
    for (v, d) in &by_value {
        if v.starts_with("job") {
            assert_eq!(d.len(), 1, "{v} processed once: {d:?}");
        } else {
            let attempts: Vec<u32> = d.iter().map(|(a, _)| *a).collect();
            assert_eq!(attempts, [1, 2, 3], "{v}");
            // Each retry waits its backoff (700 ms, then 1.2 s), give or take a round.
            assert!(d[1].1 - d[0].1 >= Duration::from_millis(650), "{v}: {d:?}");
            assert!(
                d[2].1 - d[1].1 >= Duration::from_millis(1_150),
                "{v}: {d:?}"
            );
        }
    }
    assert_eq!(by_value.len(), 40);

    // The dead letters: each poison message once, saying why, how often, from where.
    let dead = read(&client, &retry::dead_letter_topic("workers"), 4).await;
    let mut dead_values: Vec<String> = dead.iter().map(value).collect();
    dead_values.sort();
    assert_eq!(
        dead_values,
        poison.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    );
    for m in &dead {
        let v = value(m);
        let (partition, offset) = origin[&v];
        assert_eq!(
            header(m, retry::REASON),
            Some(format!("cannot process {v}"))
        );
        assert_eq!(header(m, retry::ATTEMPTS).as_deref(), Some("3"));
        assert_eq!(header(m, retry::GROUP).as_deref(), Some("workers"));
        assert_eq!(header(m, retry::ORIGIN_TOPIC).as_deref(), Some("jobs"));
        assert_eq!(
            header(m, retry::ORIGIN_PARTITION),
            Some(partition.to_string())
        );
        assert_eq!(header(m, retry::ORIGIN_OFFSET), Some(offset.to_string()));
    }

    // The group is done with everything: a new member reads nothing again.
    let mut c = client.consumer(ConsumerConfig {
        group: Some("workers".into()),
        start: StartFrom::Beginning,
        retry: Some(policy()),
        ..ConsumerConfig::default()
    });
    c.subscribe("jobs").await.unwrap();
    let mut late = Vec::new();
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        late.extend(c.poll(Duration::from_millis(300)).await.unwrap());
    }
    assert!(
        late.is_empty(),
        "read again: {:?}",
        late.iter().map(value).collect::<Vec<_>>()
    );
}

/// On a strictly ordered topic, a poison message holds back the later messages of its key
/// until it is dead-lettered; the other keys go on meanwhile; each key's messages are
/// processed in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_ordered_topic_a_poison_message_holds_back_only_its_key() {
    use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion, meridian_control};
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlaneProcess::embedded(tmp.path(), &["--region", "a"]).await;
    let region = ManagedRegion::start(tmp.path(), "a", 3, &cp.addr, &[])
        .await
        .unwrap();
    // The group's retry and dead-letter topics are made by the operator here (a managed
    // region's topics are the control plane's).
    for (topic, strict) in [("orders", true), ("ow.retry", false), ("ow.dlq", false)] {
        let mut args = vec![
            "topic",
            "create",
            topic,
            "--partitions",
            "1",
            "--replicas",
            "3",
        ];
        if strict {
            args.extend(["--ordering", "strict", "--home", "a"]);
        }
        let (code, _, err) = meridian_control(&cp.addr, &args);
        assert_eq!(code, 0, "{err}");
    }
    let client = region.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    for t in ["orders", "ow.retry", "ow.dlq"] {
        while client.describe_topic(t).await.is_err() {
            assert!(Instant::now() < deadline, "{t} never reached the region");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let producer = client.producer(Default::default());
    // Keys k0..k3, five each, interleaved; k1's second is poison.
    for seq in 0..5 {
        for k in 0..4 {
            let v = if k == 1 && seq == 1 {
                "poison-k1-1".to_owned()
            } else {
                format!("k{k}-{seq}")
            };
            producer
                .send(Record::new("orders", v).key(format!("k{k}")))
                .await
                .await
                .unwrap();
        }
    }
    let deliveries = work(&client, "ow", "orders", |d| {
        d.iter().filter(|(v, _, _)| v.starts_with('k')).count() >= 19
    })
    .await;
    let values: Vec<&str> = deliveries.iter().map(|(v, _, _)| v.as_str()).collect();
    let pos = |v: &str| values.iter().position(|x| *x == v).unwrap();
    // Each key in order, each message once.
    for k in 0..4 {
        let of_key: Vec<&str> = values
            .iter()
            .copied()
            .filter(|v| v.starts_with(&format!("k{k}-")))
            .collect();
        let expected: Vec<String> = (0..5)
            .filter(|s| !(k == 1 && *s == 1))
            .map(|s| format!("k{k}-{s}"))
            .collect();
        assert_eq!(of_key, expected, "key k{k}: {values:?}");
    }
    let poison: Vec<(u32, Instant)> = deliveries
        .iter()
        .filter(|(v, _, _)| v == "poison-k1-1")
        .map(|(_, a, t)| (*a, *t))
        .collect();
    assert_eq!(poison.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3]);
    // k1's next waited for the poison's last attempt; the other keys did not.
    let last_poison = values.iter().rposition(|v| *v == "poison-k1-1").unwrap();
    assert!(pos("k1-2") > last_poison, "{values:?}");
    assert!(
        pos("k0-4") < last_poison && pos("k3-4") < last_poison,
        "{values:?}"
    );
    let dead = read(&client, "ow.dlq", 1).await;
    assert_eq!(dead.iter().map(value).collect::<Vec<_>>(), ["poison-k1-1"]);
    assert_eq!(
        header(&dead[0], retry::ORIGIN_TOPIC).as_deref(),
        Some("orders")
    );
}
