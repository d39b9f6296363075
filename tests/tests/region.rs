//! A region of three real brokers replicating by raft: real processes, real failures.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_client::{Client, ProducerConfig, Record};
use meridian_proto::v1::{self, Acks};
use meridian_tests::Region;

/// Reads every message of `topic` with values as text.
async fn read_all(client: &Client, topic: &str) -> BTreeMap<u32, Vec<(u64, String)>> {
    meridian_tests::read_all(client, topic)
        .await
        .into_iter()
        .map(|(p, m)| {
            (
                p,
                m.into_iter()
                    .map(|(o, v)| (o, String::from_utf8(v).unwrap()))
                    .collect(),
            )
        })
        .collect()
}

/// Starts three brokers with `log_groups` groups each and creates the 4-partition topic
/// "orders".
async fn region_with_orders(dir: &std::path::Path, log_groups: u32) -> (Region, Client) {
    let region = Region::start(dir, 3, &["--log-groups", &log_groups.to_string()])
        .await
        .unwrap();
    let client = region.client().await;
    client.create_topic("orders", 4).await.unwrap();
    (region, client)
}

/// Checks that every acknowledged message is stored exactly once, at its offset, and that
/// each partition holds its producer's sequence in order.
fn check(stored: &BTreeMap<u32, Vec<(u64, String)>>, acked: &[(u32, u64, String)]) {
    for (p, messages) in stored {
        for (i, (offset, _)) in messages.iter().enumerate() {
            assert_eq!(*offset, i as u64, "partition {p} offsets are not dense");
        }
        let seq: Vec<u32> = messages
            .iter()
            .map(|(_, v)| v.split("-m").nth(1).unwrap().parse().unwrap())
            .collect();
        assert!(
            seq.windows(2).all(|w| w[0] < w[1]),
            "partition {p} is out of order or holds a duplicate"
        );
    }
    let lost = acked
        .iter()
        .filter(|(p, o, v)| {
            stored
                .get(p)
                .and_then(|m| m.get(*o as usize))
                .map(|(_, s)| s)
                != Some(v)
        })
        .count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged messages were lost or changed",
        acked.len()
    );
}

/// A gRPC client of broker `i`, without the SDK's leader following.
async fn raw_client(
    region: &Region,
    i: usize,
) -> v1::broker_client::BrokerClient<tonic::transport::Channel> {
    v1::broker_client::BrokerClient::connect(format!("http://{}", region.brokers[i].addr))
        .await
        .unwrap()
}

/// A one-message produce to orders/0 carrying `epoch` (0: unfenced), value "p0-m{n}".
fn probe(epoch: u64, n: u32) -> v1::ProduceRequest {
    v1::ProduceRequest {
        topic: "orders".into(),
        partition: 0,
        messages: vec![v1::Message {
            value: format!("p0-m{n}").into(),
            ..v1::Message::default()
        }],
        acks: 0,
        epoch,
        producer: None,
        transactional: false,
        transactional_id: String::new(),
        deliver_at_ms: 0,
    }
}

/// Four producers, one per partition, each sending `per_producer` messages; every
/// acknowledgment is recorded. Failed sends are not retried (that could store a message
/// twice); they are simply not acknowledged, and the producer backs off before going on,
/// as an application would, so that a failover does not burn through its messages.
fn spawn_producers(
    client: &Client,
    per_producer: u32,
    acked: Arc<Mutex<Vec<(u32, u64, String)>>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..4u32)
        .map(|p| {
            let client = client.clone();
            let acked = acked.clone();
            tokio::spawn(async move {
                let producer = client.producer(ProducerConfig {
                    linger: Duration::from_millis(2),
                    ..ProducerConfig::default()
                });
                let mut pending = Vec::new();
                for i in 0..per_producer {
                    let value = format!("p{p}-m{i}");
                    pending.push((
                        producer
                            .send(Record::new("orders", value.clone()).partition(p))
                            .await,
                        value,
                    ));
                    if pending.len() >= 200 || i + 1 == per_producer {
                        let mut failed = false;
                        for (f, value) in pending.drain(..) {
                            match f.await {
                                Ok(meta) => {
                                    acked
                                        .lock()
                                        .unwrap()
                                        .push((meta.partition, meta.offset, value))
                                }
                                Err(_) => failed = true,
                            }
                        }
                        if failed {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_leader_loses_nothing_acknowledged_and_a_new_leader_serves() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut region, client) = region_with_orders(tmp.path(), 2).await;

    let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    let producers = spawn_producers(&client, 50_000, acked.clone());
    while acked.lock().unwrap().len() < 40_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = region.leader_of("orders", 0).await.expect("a leader");
    region.brokers[leader].kill9();
    let killed_at = Instant::now();
    let before = acked.lock().unwrap().len();
    // A new leader serves when an acknowledgment arrives after the kill.
    let mut failover = None;
    while failover.is_none() && killed_at.elapsed() < Duration::from_secs(30) {
        if acked.lock().unwrap().len() > before + 100 {
            failover = Some(killed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failover = failover.expect("no acknowledgment within 30 s of killing the leader");
    for p in producers {
        p.await.unwrap();
    }
    // Epochs: the new leader answers with the group's epoch, which the failover moved on; a
    // producer still holding an older epoch is fenced.
    let new_leader = region
        .leader_of("orders", 0)
        .await
        .expect("a leader after the failover");
    let mut raw = raw_client(&region, new_leader).await;
    let epoch = raw
        .produce(probe(0, 1_000_001))
        .await
        .unwrap()
        .into_inner()
        .epoch;
    assert!(epoch >= 2, "a failover moves the epoch on (got {epoch})");
    raw.produce(probe(epoch, 1_000_002)).await.unwrap();
    let fenced = raw.produce(probe(epoch - 1, 1_000_003)).await.unwrap_err();
    assert_eq!(fenced.code(), tonic::Code::Aborted, "{fenced:?}");
    assert!(
        fenced.message().contains("is stale"),
        "{}",
        fenced.message()
    );
    // A request carrying a newer epoch than the broker knows says the broker is behind (a
    // replaced leader): refused, never acknowledged.
    let ahead = raw.produce(probe(epoch + 5, 1_000_004)).await.unwrap_err();
    assert_eq!(ahead.code(), tonic::Code::FailedPrecondition, "{ahead:?}");
    assert!(
        ahead.message().contains("not the current leader"),
        "{}",
        ahead.message()
    );

    let acked = acked.lock().unwrap().clone();
    check(&read_all(&client, "orders").await, &acked);

    // The killed broker restarts from its journal and catches up.
    region.brokers[leader].restart().await.unwrap();
    eprintln!(
        "raft kill -9: {} acknowledged, all readable exactly once in order; first acknowledgment {:.2} s after the kill",
        acked.len(),
        failover.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_follower_does_not_stop_writes_and_catches_up() {
    let tmp = tempfile::tempdir().unwrap();
    let (region, client) = region_with_orders(tmp.path(), 1).await;
    let leader = region.leader_of("orders", 0).await.expect("a leader");
    let follower = (leader + 1) % 3;
    // acks=all: acknowledged once the commit quorum (and min_insync_replicas, here the
    // default: the quorum) holds the batch — never every replica.
    client.create_topic("audit", 1).await.unwrap();
    let all = client.producer(ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::default()
    });
    all.send(Record::new("audit", "everyone has this"))
        .await
        .await
        .unwrap();
    region.brokers[follower].stop();
    // With a follower stopped, acks=all goes on: the stopped follower is out of the
    // quorum the batch needs. Each answered once, stored once.
    let mut audit_acked = vec!["everyone has this".to_owned()];
    for i in 0..20 {
        let value = format!("acks=all with a follower stopped {i}");
        all.send(Record::new("audit", value.clone()))
            .await
            .await
            .expect("acks=all with one follower of three stopped");
        audit_acked.push(value);
    }
    let audit: Vec<String> = read_all(&client, "audit").await[&0]
        .iter()
        .map(|(_, v)| v.clone())
        .collect();
    assert_eq!(
        audit, audit_acked,
        "every acks=all batch stored once, in order"
    );
    let isr = region
        .log_group(region.leader_of("audit", 0).await.unwrap(), 0)
        .await;
    eprintln!("log group 0 with a follower stopped: {isr:?}");

    let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    for p in spawn_producers(&client, 1_000, acked.clone()) {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(
        acked.len(),
        4_000,
        "writes go on at quorum with a follower stopped"
    );

    region.brokers[follower].signal(libc::SIGCONT);
    // Once caught up, the follower can lead: stop the others' leader and read from it.
    let follower_client = Client::connect(&region.brokers[follower].addr.to_string())
        .await
        .unwrap();
    meridian_tests::wait_until_held(&follower_client, "orders", 4_000, Duration::from_secs(30))
        .await;
    check(&read_all(&client, "orders").await, &acked);

    // acks=leader answers once the leader holds the batch, even with both followers
    // stopped (no quorum); the batch commits, and becomes visible, when they return.
    let leader = region.leader_of("audit", 0).await.expect("a leader");
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    for &o in &others {
        region.brokers[o].stop();
    }
    let at_leader = region.brokers[leader].client().await;
    let leader_only = at_leader.producer(ProducerConfig {
        acks: Acks::Leader,
        ..ProducerConfig::default()
    });
    let meta = tokio::time::timeout(
        Duration::from_secs(10),
        leader_only
            .send(Record::new("audit", "only the leader has this"))
            .await,
    )
    .await
    .expect("acks=leader answers without a quorum")
    .unwrap();
    let (latest, _) = at_leader
        .list_offset("audit", 0, meridian_client::OffsetSpec::Latest)
        .await
        .unwrap();
    assert!(latest <= meta.offset, "visible before it is committed");
    for &o in &others {
        region.brokers[o].signal(libc::SIGCONT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let audit = read_all(&at_leader, "audit").await;
        if audit[&0]
            .iter()
            .any(|(o, v)| *o == meta.offset && v == "only the leader has this")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the acks=leader batch never committed: {audit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_data_is_wiped_is_rebuilt_from_its_peers() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut region, client) = region_with_orders(tmp.path(), 2).await;
    let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    for p in spawn_producers(&client, 500, acked.clone()) {
        p.await.unwrap();
    }
    let leader = region.leader_of("orders", 0).await.expect("a leader");
    let victim = (leader + 1) % 3;
    region.brokers[victim].kill9();
    std::fs::remove_dir_all(&region.brokers[victim].data_dir).unwrap();
    region.brokers[victim].restart().await.unwrap();

    // The wiped broker gets the catalog and every message back from its peers.
    let wiped = Client::connect(&region.brokers[victim].addr.to_string())
        .await
        .unwrap();
    meridian_tests::wait_until_held(&wiped, "orders", 2_000, Duration::from_secs(60)).await;
    // Every broker has applied the catalog and the messages (a follower may lag on a loaded
    // machine, and one that does not know the topic yet answers "unknown topic").
    for b in &region.brokers {
        let only = Client::connect(&b.addr.to_string()).await.unwrap();
        meridian_tests::wait_until_held(&only, "orders", 2_000, Duration::from_secs(60)).await;
    }
    // Kill the leader: the rebuilt broker is now one of the two that must serve everything.
    let acked = acked.lock().unwrap().clone();
    let old_leader = region.leader_of("orders", 0).await.expect("a leader");
    region.brokers[old_leader].kill9();
    check(&read_all(&client, "orders").await, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_brokers_killed_at_once_lose_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut region, client) = region_with_orders(tmp.path(), 2).await;
    let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    let producers = spawn_producers(&client, 20_000, acked.clone());
    while acked.lock().unwrap().len() < 10_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for b in &mut region.brokers {
        b.signal(libc::SIGKILL);
    }
    for b in &mut region.brokers {
        b.kill9_reap();
    }
    let before = acked.lock().unwrap().len();
    // The producers' batches in flight wait for the region (idempotent producers resend
    // them until their delivery timeout, 120 s): restarted, it takes them once each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for b in &mut region.brokers {
        b.restart().await.unwrap();
    }
    for p in producers {
        p.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let client = region.client().await;
    check(&read_all(&client, "orders").await, &acked);
    eprintln!(
        "all killed: {before} acknowledged before the kill, {} in all, all readable after restart",
        acked.len()
    );
}

/// Master-slave: four producers send 200,000 messages with acks=quorum to a group whose
/// master is killed with -9 midway; `meridian log-group failover` names the most caught-up
/// slave master at a new epoch. Every acknowledged message stays readable exactly once, in
/// order; the old epoch is fenced; the old master returns as a slave, truncates what it
/// alone held, catches up, and can then lead again without losing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_slave_kill9_of_the_master_and_a_controlled_failover_lose_nothing_acknowledged() {
    const GROUP: u32 = 1;
    let tmp = tempfile::tempdir().unwrap();
    let mut region = Region::start(
        tmp.path(),
        3,
        &["--log-groups", "2", "--master-slave", "1=1"],
    )
    .await
    .unwrap();
    let client = region.client().await;
    let topic = client
        .create_topic_with("orders", 4, "master-slave")
        .await
        .unwrap();
    assert_eq!(topic.replication, "master-slave");
    assert!(topic.partitions.iter().all(|p| p.log_group == GROUP));
    let before = region.log_group(0, GROUP).await.unwrap();
    assert_eq!(
        (before.strategy.as_str(), before.epoch, before.leader),
        ("master-slave", 1, Some(1))
    );

    let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    let producers = spawn_producers(&client, 50_000, acked.clone());
    while acked.lock().unwrap().len() < 40_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    region.brokers[0].kill9();
    let killed_at = Instant::now();
    let before = acked.lock().unwrap().len();

    // The operator (later the control plane) fails the group over.
    let (code, out, err) = meridian_tests::meridian(
        region.brokers[1].addr,
        &["log-group", "failover", &GROUP.to_string()],
        None,
    );
    assert_eq!(code, 0, "failover failed: {out}{err}");
    assert!(out.contains("master at epoch 2"), "{out}");
    let mut failover = None;
    while failover.is_none() && killed_at.elapsed() < Duration::from_secs(30) {
        if acked.lock().unwrap().len() > before + 100 {
            failover = Some(killed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let failover = failover.expect("no acknowledgment within 30 s of the kill and failover");
    for p in producers {
        p.await.unwrap();
    }
    let new_master = region.log_group(1, GROUP).await.unwrap().leader.unwrap() as usize - 1;
    assert_ne!(new_master, 0);

    // Epochs: the new master answers with epoch 2; a producer holding epoch 1 is fenced.
    let mut raw = raw_client(&region, new_master).await;
    let answer = raw.produce(probe(0, 1_000_001)).await.unwrap().into_inner();
    assert_eq!(answer.epoch, 2);
    let fenced = raw.produce(probe(1, 1_000_002)).await.unwrap_err();
    assert_eq!(fenced.code(), tonic::Code::Aborted, "{fenced:?}");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100_000, "only {} acknowledged", acked.len());
    check(&read_all(&client, "orders").await, &acked);

    // The old master returns: it learns epoch 2 from its peers, truncates its unreplicated
    // tail and catches up as a slave.
    region.brokers[0].restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let master = region.log_group(new_master, GROUP).await.unwrap();
        let old = region.log_group(0, GROUP).await.unwrap();
        if old.epoch == 2
            && old.leader == Some(new_master as u32 + 1)
            && old.end_position == master.end_position
            && old.watermark == master.watermark
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old master did not rejoin: {old:?} vs master {master:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Now the rejoined replica must be able to serve everything: kill the new master and
    // fail over again.
    region.brokers[new_master].kill9();
    let (code, out, err) = meridian_tests::meridian(
        region.brokers[0].addr,
        &["log-group", "failover", &GROUP.to_string()],
        None,
    );
    assert_eq!(code, 0, "second failover failed: {out}{err}");
    assert!(out.contains("master at epoch 3"), "{out}");
    check(&read_all(&client, "orders").await, &acked);
    // A commit naming no origin positions (as a Kafka client's) is kept on the
    // master-slave group as on the raft one: positions are derived for raft groups only.
    for p in 0..4 {
        client
            .commit_offset("ms-readers", "orders", p, 1)
            .await
            .unwrap_or_else(|e| panic!("commit on orders/{p}: {e}"));
        let committed = client.committed_offset("ms-readers", "orders", p).await;
        assert_eq!(committed.unwrap(), Some(1), "orders/{p}");
    }
    let truncated = region.brokers[0]
        .log_text()
        .contains("truncating a divergent tail");
    eprintln!(
        "master-slave kill -9: {} acknowledged, all readable exactly once in order; first acknowledgment {:.2} s after the kill (failover run by hand right after it); the old master {} divergent tail",
        acked.len(),
        failover.as_secs_f64(),
        if truncated { "truncated a" } else { "had no" }
    );
}

/// Catch-up behind the retained log: a replica is wiped while the region writes on, raft
/// snapshots and purges, and retention deletes the journal's first segments (the topic's
/// creation among them). The replica, restarted, is sent a snapshot and ships the retained
/// journal from a peer; it then holds the catalog and every retained message, and with
/// the old leader killed it serves them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_behind_the_retained_log_catches_up_through_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let mut region = Region::start(
        tmp.path(),
        3,
        &[
            "--log-groups",
            "1",
            "--segment-bytes",
            "65536",
            "--batch-bytes-max",
            "32768",
            "--message-bytes-max",
            "16384",
            "--snapshot-entries",
            "50",
            "--retention-bytes",
            "262144",
            "--retention-check-interval-ms",
            "200",
        ],
    )
    .await
    .unwrap();
    let client = region.client().await;
    client.create_topic("orders", 4).await.unwrap();
    let leader = region.leader_of("orders", 0).await.expect("a leader");
    let victim = (leader + 1) % 3;
    region.brokers[victim].kill9();
    std::fs::remove_dir_all(&region.brokers[victim].data_dir).unwrap();
    // A consumer group's offset committed before the load: its commit record lands in the
    // first segments, which retention deletes — the offset must outlive them, and carrying
    // it must not break raft (storage once re-appended it with an index raft used next).
    client
        .commit_offset("idle-readers", "orders", 0, 0)
        .await
        .unwrap();

    // One raft entry per message, so that snapshots (every 50 entries) come often.
    let producer = client.producer(ProducerConfig {
        batch_bytes: 1,
        ..ProducerConfig::default()
    });
    let pad = "x".repeat(1000);
    for i in 0..2_000u32 {
        let f = producer
            .send(Record::new("orders", format!("p{}-m{i}-{pad}", i % 4)).partition(i % 4))
            .await;
        if i % 100 == 99 {
            f.await.unwrap();
        }
    }
    producer.flush().await;
    // Retention deletes what the snapshots cover; wait until it has settled (the same start
    // a second apart), so the reads below do not race it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last_start = 0;
    loop {
        let info = region.log_group(leader, 0).await.unwrap();
        if info.start_position > 0 && info.start_position == last_start {
            break;
        }
        last_start = info.start_position;
        assert!(
            Instant::now() < deadline,
            "retention never settled: {info:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(
        client
            .committed_offset("idle-readers", "orders", 0)
            .await
            .unwrap(),
        Some(0),
        "the offset committed before retention ran"
    );
    assert!(
        region.brokers[leader]
            .metric("meridian_retention_offsets_carried_total")
            .await
            >= 1.0,
        "the leader committed the offset again above the deleted segments"
    );
    producer
        .send(Record::new("orders", "after retention").partition(0))
        .await
        .await
        .expect("raft takes writes after retention carried an offset");
    let before = read_all(&client, "orders").await;
    let earliest = client.describe_topic("orders").await.unwrap();
    assert!(
        earliest.partitions.iter().all(|p| p.earliest_offset > 0),
        "retention left every partition whole: {earliest:?}"
    );

    region.brokers[victim].restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = region.log_group(leader, 0).await.unwrap();
        let v = region.log_group(victim, 0).await;
        if v.as_ref().is_some_and(|v| {
            v.end_position == l.end_position && v.start_position > 0 && v.watermark == l.watermark
        }) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wiped replica did not catch up: {v:?} vs leader {l:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        region.brokers[victim]
            .log_text()
            .contains("shipped the journal for a snapshot"),
        "the replica caught up without a snapshot"
    );
    // The catalog came with the snapshot (the topic's creation was deleted from the
    // journal), the messages with the shipped journal: the replica's own indexes end where
    // the leader's do.
    let leader_view = region.brokers[leader]
        .client()
        .await
        .describe_topic("orders")
        .await
        .unwrap();
    let victim_view = region.brokers[victim]
        .client()
        .await
        .describe_topic("orders")
        .await
        .unwrap();
    for (l, v) in leader_view.partitions.iter().zip(&victim_view.partitions) {
        assert_eq!(
            l.latest_offset, v.latest_offset,
            "partition {} ends elsewhere",
            l.partition
        );
        assert!(v.earliest_offset > 0 && v.earliest_offset <= v.latest_offset);
    }
    // Kill the leader: the rebuilt replica is one of the two that must serve everything.
    // (Retention goes on, so the earliest offsets may move up; every message still served
    // is the one written at its offset, and none is missing at the end.)
    region.brokers[leader].kill9();
    let after = read_all(&client, "orders").await;
    for (p, messages) in &before {
        let served = &after[p];
        assert_eq!(
            served.last().map(|m| m.0),
            messages.last().map(|m| m.0),
            "partition {p} lost its tail"
        );
        for (offset, value) in served {
            let first = messages[0].0;
            if *offset >= first {
                assert_eq!(
                    &messages[(offset - first) as usize].1,
                    value,
                    "partition {p} offset {offset} changed"
                );
            }
        }
    }
}

/// Heartbeats of many groups to the same broker share messages: with 12 log groups led by
/// one broker, each heartbeat message carries several groups' heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_of_many_groups_share_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let region = Region::start(tmp.path(), 3, &["--log-groups", "12"])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let mut heartbeats = 0.0;
    let mut messages = 0.0;
    for b in &region.brokers {
        let text = meridian_tests::http_get(b.metrics, "/metrics")
            .await
            .unwrap();
        heartbeats += metric(&text, "meridian_raft_heartbeats_per_message_sum");
        messages += metric(&text, "meridian_raft_heartbeats_per_message_count");
    }
    assert!(messages > 0.0, "no heartbeat was sent");
    let per_message = heartbeats / messages;
    eprintln!("heartbeats: {heartbeats} in {messages} messages ({per_message:.1} per message)");
    assert!(
        per_message >= 2.0,
        "heartbeats are not coalesced: {per_message:.2} per message"
    );
}

/// Membership change from the CLI: a removed replica no longer counts (acks=all succeeds
/// with it stopped); added back, it catches up and counts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_removed_and_added_from_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let (region, _client) = region_with_orders(tmp.path(), 1).await;
    let leader = region.leader_of("orders", 0).await.expect("a leader");
    let out = (leader + 1) % 3;
    let out_id = (out + 1).to_string();
    let (code, stdout, stderr) = meridian_tests::meridian(
        region.brokers[leader].addr,
        &["log-group", "remove-replica", "0", &out_id],
        None,
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("replicas are brokers"), "{stdout}");
    let voters = region.log_group(leader, 0).await.unwrap().voters;
    assert_eq!(voters.len(), 2, "{voters:?}");
    assert!(!voters.contains(&((out + 1) as u32)));

    // With the removed broker stopped, acks=all needs only the two replicas left.
    region.brokers[out].stop();
    let at_leader = region.brokers[leader].client().await;
    let all_at_leader = at_leader.producer(ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::default()
    });
    all_at_leader
        .send(Record::new("orders", "p0-m1").partition(0))
        .await
        .await
        .expect("acks=all with the removed replica stopped");
    region.brokers[out].signal(libc::SIGCONT);

    // Added back, it catches up and acks=all includes it again.
    let (code, stdout, stderr) = meridian_tests::meridian(
        region.brokers[leader].addr,
        &["log-group", "add-replica", "0", &out_id],
        None,
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(region.log_group(leader, 0).await.unwrap().voters.len(), 3);
    all_at_leader
        .send(Record::new("orders", "p0-m2").partition(0))
        .await
        .await
        .expect("acks=all with the replica back");
    let rejoined = region.brokers[out].client().await;
    meridian_tests::wait_until_held(&rejoined, "orders", 2, Duration::from_secs(30)).await;

    // A broker outside the region is refused by name.
    let (code, _, stderr) = meridian_tests::meridian(
        region.brokers[leader].addr,
        &["log-group", "add-replica", "0", "9"],
        None,
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("broker 9 is not a broker of this region"),
        "{stderr}"
    );
}

/// Mounts a `size` tmpfs on `dir` (created); unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(dir: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "mounting a small tmpfs on {} failed: this test needs root (CI runs as root)",
            dir.display()
        );
        SmallDisk(dir.to_owned())
    }

    /// Fills the disk with one file: writes until `ENOSPC`.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0x5a_u8; chunk];
            while file.write_all(&buf).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A follower whose disk fills heals by itself once space returns, without a restart: each
/// broker's data directory is its own 64 MiB tmpfs (a real full disk: `ENOSPC` from the
/// kernel; CI runs as root, which mounting needs). While one follower's disk is full, the
/// partition goes on with acks=all on the other two and the full follower logs its trouble
/// a few times, not every 100 ms. Then the third broker is stopped and the space freed:
/// acks=all writes now need the healed follower, so accepting them again proves it resumed
/// replicating; and once the leader is stopped too, the healed follower — the only one with
/// the whole log — is elected and serves every acknowledged record, each once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_filled_recovers_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    // Mounted before the brokers start and unmounted after they stop (dropped last).
    let disks: Vec<SmallDisk> = (1..=3)
        .map(|i| SmallDisk::mount(&tmp.path().join(format!("broker-{i}")), "64m"))
        .collect();
    let region = Region::start(
        tmp.path(),
        3,
        &[
            "--log-groups",
            "1",
            "--segment-bytes",
            "1048576",
            "--batch-bytes-max",
            "262144",
            "--message-bytes-max",
            "65536",
        ],
    )
    .await
    .unwrap();
    let client = region.client().await;
    client.create_topic("full", 1).await.unwrap();
    let producer = client.producer(ProducerConfig {
        acks: Acks::All,
        ..ProducerConfig::default()
    });
    let mut acked: Vec<(u64, String)> = Vec::new();
    let value = |n: usize| format!("{n:08}-{}", "x".repeat(8000));
    for n in 0..100 {
        let meta = producer
            .send(Record::new("full", value(n)))
            .await
            .await
            .expect("acks=all on a healthy region");
        acked.push((meta.offset, value(n)));
    }
    let leader = region.leader_of("full", 0).await.expect("a leader");
    let follower = (leader + 1) % 3;
    let third = (leader + 2) % 3;

    // The follower's disk fills: the partition goes on with the other two.
    let log_before = region.brokers[follower].log_text().len();
    let filler = disks[follower].fill();
    let full_since = Instant::now();
    // A topic created now: its catalog entry (log group 0 carries the catalog) still fits
    // the follower's preallocated segment, but applying it writes files there, and fails.
    client.create_topic("born-full", 1).await.unwrap();
    // 300 batches of 8 KB: well past the follower's preallocated segment.
    for n in 100..400 {
        let meta = producer
            .send(Record::new("full", value(n)))
            .await
            .await
            .expect("acks=all with one follower's disk full");
        acked.push((meta.offset, value(n)));
    }
    // Long enough for repeated failures to show in the log.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let full_for = full_since.elapsed();
    let log = region.brokers[follower].log_text();
    let troubles: Vec<&str> = log[log_before..]
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(
        troubles
            .iter()
            .any(|l| l.contains("disk full") || l.contains("No space")),
        "the full follower never said its disk is full:\n{}",
        &log[log_before..]
    );
    // A line every 100 ms would be 10 a second.
    assert!(
        (troubles.len() as f64) < 10.0 + full_for.as_secs_f64(),
        "{} warnings and errors in {full_for:?} of a full disk:\n{}",
        troubles.len(),
        troubles.join("\n")
    );

    // Space returns with the third broker stopped: acks=all needs the follower now.
    region.brokers[third].stop();
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let first = producer
        .send(Record::new("full", value(400)))
        .await
        .await
        .expect("acks=all once the follower's disk has room again (the SDK retries for 120 s)");
    acked.push((first.offset, value(400)));
    let recovered_in = freed.elapsed();
    assert!(
        recovered_in < Duration::from_secs(60),
        "the follower took {recovered_in:?} to take writes again"
    );
    for n in 401..500 {
        let meta = producer
            .send(Record::new("full", value(n)))
            .await
            .await
            .expect("acks=all with the healed follower");
        acked.push((meta.offset, value(n)));
    }
    // The catalog change it could not apply while full is applied now.
    let born = producer
        .send(Record::new("born-full", "after the disk freed"))
        .await
        .await
        .expect("acks=all to the topic created while the follower's disk was full");

    // Only the healed follower holds the whole log: with the leader stopped it is elected,
    // and everything acknowledged is read from it.
    region.brokers[third].signal(libc::SIGCONT);
    region.brokers[leader].stop();
    let at_follower = region.brokers[follower].client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut raw = raw_client(&region, follower).await;
    while raw
        .list_offsets(v1::ListOffsetsRequest {
            topic: "full".into(),
            partition: 0,
            spec: v1::OffsetSpec::Latest as i32,
            timestamp_ms: 0,
        })
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the healed follower was not elected with the leader stopped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A new leader makes what it committed visible a moment after its election.
    meridian_tests::wait_until_held(
        &at_follower,
        "born-full",
        born.offset + 1,
        Duration::from_secs(30),
    )
    .await;
    let born_held = read_all(&at_follower, "born-full").await;
    assert_eq!(
        born_held[&0],
        [(born.offset, "after the disk freed".to_owned())],
        "the topic created while the follower's disk was full, on the follower"
    );
    let stored = read_all(&at_follower, "full").await;
    let got = &stored[&0];
    assert_eq!(got.len(), acked.len(), "every acknowledged record, once");
    for ((o, v), (ao, av)) in got.iter().zip(&acked) {
        assert_eq!((o, v), (ao, av));
    }
    region.brokers[leader].signal(libc::SIGCONT);
    eprintln!(
        "the full follower's warnings and errors:\n{}",
        troubles.join("\n")
    );
    eprintln!(
        "disk full: {} acknowledged, all held once by the follower; it took writes again {:.2} s after space returned; {} warnings/errors in {:.0} s of a full disk",
        acked.len(),
        recovered_in.as_secs_f64(),
        troubles.len(),
        full_for.as_secs_f64()
    );
    drop(region);
    drop(disks);
}
