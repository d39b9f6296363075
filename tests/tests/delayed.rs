//! Delayed delivery across real processes: a delayed message stays invisible until its
//! time, bad deliver-at times are refused clearly, and 10,000 messages with random delays
//! each fire once, never early and within a bound, across kills -9 of their leader (one
//! restarted at once, one after a successor took over).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use meridian_client::{ConsumerConfig, Record, StartFrom};
use meridian_tests::{BrokerProcess, Region, meridian};

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `meridian consume TOPIC --from beginning` until idle: the values.
fn consume(broker: &BrokerProcess, topic: &str) -> Vec<String> {
    let (code, out, err) = meridian(
        broker.addr,
        &[
            "consume",
            topic,
            "--from",
            "beginning",
            "--idle-exit-ms",
            "500",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    out.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_is_invisible_until_its_time_and_bad_times_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(tmp.path(), &[]).await.unwrap();
    let client = broker.client().await;
    client.create_topic("later", 2).await.unwrap();
    let addr = broker.addr;

    let sent = now_ms();
    let (code, _, err) = meridian(addr, &["produce", "later", "--delay", "3s", "hello"], None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("scheduled 1 messages"), "{err}");
    let (code, _, err) = meridian(addr, &["produce", "later", "now"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(consume(&broker, "later"), ["now"], "not yet visible");

    // Visible at its time, not before.
    let mut consumer = client.consumer(ConsumerConfig {
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    });
    consumer.subscribe("later").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let fired = loop {
        let got = consumer.poll(Duration::from_millis(500)).await.unwrap();
        if let Some(m) = got
            .into_iter()
            .find(|m| m.value.as_deref() == Some(b"hello"))
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "the delayed message never appeared"
        );
    };
    assert!(
        fired.append_time_ms >= sent + 3_000,
        "fired {} ms after the send, before its 3 s",
        fired.append_time_ms - sent
    );
    assert!(
        fired.timestamp_ms >= sent && fired.timestamp_ms < sent + 3_000,
        "the producer's timestamp is kept"
    );

    // Bad times: past the longest delay, a bad spelling.
    for (args, says) in [
        (vec!["--delay", "400d"], "365 days"),
        (vec!["--deliver-at", "tomorrow"], "RFC 3339"),
    ] {
        let mut all = vec!["produce", "later"];
        all.extend(args);
        all.push("x");
        let (code, _, err) = meridian(addr, &all, None);
        assert_ne!(code, 0);
        assert!(err.contains(says), "{all:?}: {err}");
    }
    assert_eq!(
        consume(&broker, "later").len(),
        2,
        "nothing refused was stored"
    );
}

/// A small deterministic generator (the test's delays are the same every run).
fn lcg(state: &mut u64) -> u64 {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_random_delays_fire_once_in_time_across_a_leader_kill() {
    const N: usize = 10_000;
    /// How late a message may fire: the failover (election, the new leader's replay) and
    /// this shared machine's pauses.
    const LATE_MAX_MS: i64 = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let mut region = Region::start(tmp.path(), 3, &[]).await.unwrap();
    let client = region.client().await;
    client.create_topic("later", 3).await.unwrap();

    // 10,000 sends, 64 at a time, due 4 to 16 s from their send.
    let mut rng = 7u64;
    let delays: Vec<i64> = (0..N)
        .map(|_| 4_000 + (lcg(&mut rng) % 12_000) as i64)
        .collect();
    let mut due = vec![0i64; N];
    let mut set = tokio::task::JoinSet::new();
    for (i, delay) in delays.iter().enumerate() {
        while set.len() >= 64 {
            let (i, at) = set.join_next().await.unwrap().unwrap();
            due[i] = at;
        }
        let (client, delay) = (client.clone(), *delay);
        set.spawn(async move {
            let at = now_ms() + delay;
            let record = Record::new("later", format!("{i}")).partition((i % 3) as u32);
            client.send_delayed(record, at).await.expect("scheduled");
            (i, at)
        });
    }
    while let Some(r) = set.join_next().await {
        let (i, at) = r.unwrap();
        due[i] = at;
    }
    let sent = now_ms();

    // Kill -9 the leader of partition 0 while most timers are pending and restart it at
    // once (it comes back before an election: leading again in its own term); a few
    // seconds later kill its successor-or-itself and bring it back only once another
    // leads.
    let victim = region.leader_of("later", 0).await.expect("a leader");
    region.brokers[victim].kill9();
    region.brokers[victim].restart().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let victim = region.leader_of("later", 0).await.expect("a leader");
    region.brokers[victim].kill9();
    let new = region.new_leader("later", 0, victim).await;
    assert_ne!(new, victim);
    region.brokers[victim].restart().await.unwrap();

    // Read until every message arrived (each counted), or well past the last due time.
    let mut consumer = client.consumer(ConsumerConfig {
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    });
    consumer.subscribe("later").await.unwrap();
    let last_due = *due.iter().max().unwrap();
    let mut seen: BTreeMap<usize, Vec<i64>> = BTreeMap::new();
    let mut total = 0;
    while total < N || now_ms() < last_due + 3_000 {
        assert!(
            now_ms() < last_due + LATE_MAX_MS + 30_000,
            "{total} of {N} fired by {} ms after the last was due",
            now_ms() - last_due
        );
        for m in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let i: usize = std::str::from_utf8(m.value.as_deref().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            seen.entry(i).or_default().push(m.append_time_ms);
            total += 1;
        }
    }
    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, t)| t.len() > 1)
        .map(|(i, _)| i)
        .collect();
    let missing: Vec<_> = (0..N).filter(|i| !seen.contains_key(i)).collect();
    assert!(
        twice.is_empty() && missing.is_empty(),
        "{} fired twice ({:?}…), {} never ({:?}…)",
        twice.len(),
        &twice[..twice.len().min(5)],
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let mut late: Vec<i64> = seen.iter().map(|(i, t)| t[0] - due[*i]).collect();
    late.sort_unstable();
    let early = late.iter().filter(|l| **l < 0).count();
    assert_eq!(
        early, 0,
        "{early} fired before their time (earliest {} ms)",
        late[0]
    );
    let (p50, p99, max) = (late[N / 2], late[N * 99 / 100], late[N - 1]);
    eprintln!(
        "fired late by p50 {p50} ms, p99 {p99} ms, max {max} ms; sends ended {} ms before the last due time",
        last_due - sent
    );
    assert!(
        max <= LATE_MAX_MS,
        "one fired {max} ms late (p50 {p50}, p99 {p99})"
    );
}

/// Active-active: a delayed message produced in region x fires in x at its time (only x
/// holds its timer) and reaches region y through the mirror then — never before its time,
/// once in each region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_message_reaches_the_other_region_at_its_time_once() {
    let tmp = tempfile::tempdir().unwrap();
    let regions = meridian_tests::mirror::TwoRegions::start(tmp.path(), &[], &[]).await;
    regions.create_topic("later", 2).await;
    let _mirrors = regions.link(tmp.path(), &[]);
    let (cx, cy) = (regions.x.client().await, regions.y.client().await);

    let due = now_ms() + 6_000;
    for i in 0..50 {
        cx.send_delayed(Record::new("later", format!("d{i}")), due)
            .await
            .unwrap();
    }
    // A plain message crosses first: the link works, and y has nothing delayed yet.
    let (code, _, err) = meridian(
        regions.x.brokers[0].addr,
        &["produce", "later", "now"],
        None,
    );
    assert_eq!(code, 0, "{err}");
    meridian_tests::wait_until_held(&cy, "later", 1, Duration::from_secs(30)).await;
    assert!(
        now_ms() < due,
        "the link took too long to tell early from on time"
    );

    let mut consumer = cy.consumer(ConsumerConfig {
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    });
    consumer.subscribe("later").await.unwrap();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while seen.len() < 51 {
        assert!(Instant::now() < deadline, "y has {} of 51", seen.len());
        for m in consumer.poll(Duration::from_millis(500)).await.unwrap() {
            let v = String::from_utf8(m.value.clone().unwrap().to_vec()).unwrap();
            if v != "now" {
                assert!(
                    m.append_time_ms >= due,
                    "{v} reached y {} ms early",
                    due - m.append_time_ms
                );
            }
            *seen.entry(v).or_default() += 1;
        }
    }
    // Nothing more comes: each once in y, and x holds each once too.
    for m in consumer.poll(Duration::from_secs(2)).await.unwrap() {
        *seen
            .entry(String::from_utf8(m.value.unwrap().to_vec()).unwrap())
            .or_default() += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "{seen:?}");
    let in_x: usize = meridian_tests::read_all(&cx, "later")
        .await
        .values()
        .map(Vec::len)
        .sum();
    assert_eq!(in_x, 51);
}

/// A timer outlives the journal's retention: with a 3 s retention and segments rolling
/// under steady traffic, a message delayed 10 s still fires, once (its timer record is
/// written again before retention deletes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timer_outlives_the_journals_retention() {
    let tmp = tempfile::tempdir().unwrap();
    // A retention this short needs transactions that time out sooner still.
    let config = tmp.path().join("broker.toml");
    std::fs::write(&config, "[transactions]\ntimeout_max_ms = 2000\n").unwrap();
    let broker = BrokerProcess::start(
        &tmp.path().join("b"),
        &[
            "--config",
            config.to_str().unwrap(),
            // One journal: the filler's segments are the timer's.
            "--log-groups",
            "1",
            "--retention",
            "3s",
            "--retention-check-interval-ms",
            "300",
            "--segment-bytes",
            "65536",
            "--batch-bytes-max",
            "16384",
            "--message-bytes-max",
            "16384",
        ],
    )
    .await
    .unwrap();
    let client = broker.client().await;
    client.create_topic("later", 1).await.unwrap();
    client.create_topic("filler", 1).await.unwrap();
    let due = now_ms() + 10_000;
    client
        .send_delayed(Record::new("later", "held"), due)
        .await
        .unwrap();
    // 8 KiB every 100 ms: a segment fills in under a second.
    let producer = client.producer(Default::default());
    while now_ms() < due + 1_000 {
        producer
            .send(Record::new("filler", vec![b'x'; 8_192]))
            .await
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let filler = client.describe_topic("filler").await.unwrap();
    assert!(
        filler.partitions[0].earliest_offset > 0,
        "retention deleted nothing: {filler:?}"
    );
    let mut consumer = client.consumer(ConsumerConfig {
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    });
    consumer.subscribe("later").await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && got.is_empty() {
        got.extend(consumer.poll(Duration::from_millis(500)).await.unwrap());
    }
    got.extend(consumer.poll(Duration::from_secs(1)).await.unwrap());
    let values: Vec<_> = got.iter().map(|m| m.value.clone().unwrap()).collect();
    assert_eq!(values, [bytes::Bytes::from("held")], "fired once");
    assert!(got[0].append_time_ms >= due);
    assert!(broker.metric("meridian_delayed_rearmed_total").await >= 1.0);
}
