//! The platform with its control plane, as real processes: managed brokers registering
//! under leases, topics placed through the control plane, bad metadata refused, a broker
//! killed under load replaced with nothing acknowledged lost, and the data plane serving
//! while the control plane's leader is killed (and while no control plane runs at all).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meridian_client::{Client, ConsumerConfig, ProducerConfig, Record, StartFrom};
use meridian_proto::v1;
use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion, meridian_control, start_etcd};
use meridian_tests::read_all;

/// Creates a topic through the CLI; panics with its error.
fn create_topic(control: &str, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json", "topic", "create"];
    all.extend_from_slice(args);
    let (code, out, err) = meridian_control(control, &all);
    assert_eq!(code, 0, "topic create {args:?}: {err}");
    serde_json::from_str(&out).expect("JSON")
}

/// The error line of a CLI call that must fail.
fn refused(control: &str, args: &[&str]) -> String {
    let (code, out, err) = meridian_control(control, args);
    assert_eq!(code, 1, "{args:?} should fail; printed {out}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_are_placed_through_the_control_plane_and_bad_metadata_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlaneProcess::embedded(
        tmp.path(),
        &[
            "--region",
            "eu",
            "--region",
            "us",
            "--broker-lease-ms",
            "2000",
        ],
    )
    .await;
    let control = cp.addr.clone();
    // acks=all produces in eu need every replica of three (Kafka's min.insync.replicas).
    let eu = ManagedRegion::start(
        tmp.path(),
        "eu",
        3,
        &control,
        &["--min-insync-replicas", "3"],
    )
    .await
    .unwrap();
    let mut us = ManagedRegion::start(tmp.path(), "us", 1, &control, &[])
        .await
        .unwrap();

    // Placed in every region it spans, replicas on distinct live brokers, leaders elected.
    let t = create_topic(
        &control,
        &["orders", "--partitions", "4", "--regions", "eu"],
    );
    assert_eq!(t["partitions"], 4);
    assert_eq!(t["replication_factor"], 3);
    let placement = &t["placements"][0];
    assert_eq!(placement["region"], "eu");
    assert_eq!(placement["partition_groups"].as_array().unwrap().len(), 4);
    let groups = placement["log_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "one group per broker: {placement}");
    let mut leaders = BTreeSet::new();
    for g in groups {
        let replicas: BTreeSet<u64> = g["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_u64().unwrap())
            .collect();
        assert_eq!(replicas, [1, 2, 3].into(), "{g}");
        leaders.insert(g["leader"].as_u64().expect("a leader"));
    }
    assert_eq!(
        leaders.len(),
        3,
        "leaders spread over the brokers: {groups:?}"
    );

    // The data path: produce and consume through the routed region.
    let (client, route) = Client::connect_routed(&control, "orders", Some("eu"))
        .await
        .unwrap();
    assert_eq!(route.region, "eu");
    let producer = client.producer(ProducerConfig::default());
    for i in 0..40 {
        producer
            .send(Record::new("orders", format!("m{i}")).key(format!("k{}", i % 7)))
            .await
            .await
            .expect("acknowledged");
    }
    let all = read_all(&client, "orders").await;
    assert_eq!(all.values().map(Vec::len).sum::<usize>(), 40);
    // Every broker serves the topic, the ones not hosting a partition by naming its leader.
    for b in &eu.brokers {
        let info = b.client().await.describe_topic("orders").await.unwrap();
        assert_eq!(info.partitions.len(), 4);
    }
    // A managed broker leaves topic changes to the control plane.
    let e = eu.brokers[0]
        .client()
        .await
        .create_topic("direct", 1)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("managed by the control plane"),
        "{e}"
    );

    // A topic's acks is what a produce naming none waits for: with `all` and
    // min_insync_replicas 3, a stopped follower fails the produce (NOT_ENOUGH_REPLICAS);
    // altered to `quorum`, the same produce succeeds.
    let t = create_topic(
        &control,
        &[
            "audit",
            "--partitions",
            "1",
            "--regions",
            "eu",
            "--acks",
            "all",
        ],
    );
    assert_eq!(t["acks"], "all");
    let group = t["placements"][0]["log_groups"][0].clone();
    let leader = group["leader"].as_u64().unwrap() as u32;
    let follower = group["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap() as u32)
        .find(|r| *r != leader)
        .unwrap();
    // Straight to the leader: a client whose current broker is the stopped one would wait
    // for its request timeout first.
    let at_leader = eu.brokers[leader as usize - 1]
        .client()
        .await
        .producer(ProducerConfig {
            // NOT_ENOUGH_REPLICAS is retried (replicas may catch up): give up soon.
            delivery_timeout: Duration::from_secs(10),
            ..ProducerConfig::default()
        });
    eu.brokers[follower as usize - 1].stop();
    let e = at_leader
        .send(Record::new("audit", "needs three replicas"))
        .await
        .await
        .unwrap_err();
    assert!(e.to_string().contains("min_insync_replicas"), "{e}");
    let (code, _, err) =
        meridian_control(&control, &["topic", "alter", "audit", "--acks", "quorum"]);
    assert_eq!(code, 0, "{err}");
    at_leader
        .send(Record::new("audit", "a quorum is enough"))
        .await
        .await
        .expect("acks=quorum with one follower stopped");
    eu.brokers[follower as usize - 1].signal(libc::SIGCONT);
    // Stopped longer than its lease, it registers again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while eu.live().await.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "broker {follower} did not register again"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Bad metadata, each refused with the field and what would work.
    let cases: [(&[&str], &str); 7] = [
        (
            &["topic", "create", "orders"],
            "topic \"orders\" already exists",
        ),
        (
            &["topic", "create", "x", "--regions", "mars"],
            "no such region; the regions are eu, us",
        ),
        (
            &["topic", "create", "y", "--regions", "us", "--replicas", "3"],
            "region us has 1 live broker(s): lower it or add brokers",
        ),
        (&["topic", "create", "bad/name"], "invalid name"),
        (
            &["topic", "create", "p", "--partitions", "5000"],
            "must be 1 to 1024",
        ),
        (
            &[
                "topic",
                "create",
                "h",
                "--regions",
                "eu",
                "--ordering",
                "strict",
                "--home",
                "us",
            ],
            "home region of a strictly ordered topic must be one of its regions",
        ),
        (
            &["topic", "alter", "orders", "--partitions", "2"],
            "partitions can be added, never removed",
        ),
    ];
    for (args, says) in cases {
        let err = refused(&control, args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A retention that is no duration is refused at the flag (a usage error), before any
    // call.
    let (code, _, err) = meridian_control(
        &control,
        &["topic", "create", "z", "--retention", "forever"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a duration such as 7d, or none"), "{err}");
    let err = refused(&control, &["topic", "describe", "nope"]);
    assert!(err.contains("unknown topic \"nope\""), "{err}");

    // More partitions: placed like new ones, and writable at once.
    let (code, _, err) =
        meridian_control(&control, &["topic", "alter", "orders", "--partitions", "6"]);
    assert_eq!(code, 0, "{err}");
    let info = client.describe_topic("orders").await.unwrap();
    assert_eq!(info.partitions.len(), 6);
    producer
        .send(Record::new("orders", "late").partition(5))
        .await
        .await
        .expect("the new partition takes writes");

    // Delete: gone from every broker of the region.
    let (code, _, err) = meridian_control(&control, &["topic", "delete", "orders"]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    for b in &eu.brokers {
        while b.client().await.describe_topic("orders").await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "broker still has the deleted topic"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let (code, out, _) = meridian_control(&control, &["--json", "broker", "list"]);
    assert_eq!(code, 0);
    let brokers: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(brokers.as_array().unwrap().len(), 4, "{brokers}");

    // Routing: with no region named, the client measures each healthy region's round trip
    // and takes the nearest; a named region is used while it is healthy, and refused with
    // the reason once it loses its last broker (never silently replaced), while a client
    // naming none is sent to one that serves.
    create_topic(&control, &["both", "--regions", "eu,us", "--replicas", "1"]);
    let nearest = meridian_client::route(&control, "both", None)
        .await
        .unwrap();
    assert!(nearest.rtt.is_some(), "{nearest:?}");
    assert!(
        ["eu", "us"].contains(&nearest.region.as_str()),
        "{nearest:?}"
    );
    let named = meridian_client::route(&control, "both", Some("us"))
        .await
        .unwrap();
    assert_eq!(named.region, "us");
    assert_eq!(named.brokers, vec![us.brokers[0].addr.to_string()]);
    us.brokers[0].kill9();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match meridian_client::route(&control, "both", Some("us")).await {
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains("region us does not serve topic"), "{e}");
                // Why: no live broker, or (once the control plane marks it) its leases lapsed.
                assert!(
                    e.contains("no live broker") || e.contains("lost its lease"),
                    "{e}"
                );
                break;
            }
            Ok(r) => assert_eq!(r.region, "us", "a named region replaced: {r:?}"),
        }
        assert!(Instant::now() < deadline, "us still served after its kill");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = meridian_client::route(&control, "both", None)
        .await
        .unwrap();
    assert_eq!(r.region, "eu");
    assert_eq!(r.brokers.len(), 3);
    let err = refused(&control, &["region", "delete", "us"]);
    assert!(err.contains("region us still holds topics both"), "{err}");
}

/// Sends messages until `stop`, one at a time per key; records what was acknowledged.
fn produce_until(
    client: Client,
    topic: &'static str,
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<BTreeMap<u32, Vec<(u64, String)>>> {
    tokio::spawn(async move {
        let producer = client.producer(ProducerConfig::default());
        let mut acked: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut pending = Vec::new();
            for _ in 0..20 {
                let value = format!("v{i}");
                i += 1;
                let f = producer
                    .send(Record::new(topic, value.clone()).key(format!("k{}", i % 11)))
                    .await;
                pending.push((value, f));
            }
            for (value, f) in pending {
                match f.await {
                    Ok(m) => acked
                        .entry(m.partition)
                        .or_default()
                        .push((m.offset, value)),
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::Relaxed).is_multiple_of(500) {
                            eprintln!("send failed: {e}");
                        }
                    }
                }
            }
        }
        acked
    })
}

/// Every acknowledged message is in `held` at its offset.
fn assert_all_held(
    acked: &BTreeMap<u32, Vec<(u64, String)>>,
    held: &BTreeMap<u32, Vec<(u64, Vec<u8>)>>,
) {
    for (p, messages) in acked {
        let stored: BTreeMap<u64, &[u8]> = held
            .get(p)
            .map(|v| v.iter().map(|(o, m)| (*o, m.as_slice())).collect())
            .unwrap_or_default();
        for (offset, value) in messages {
            assert_eq!(
                stored.get(offset).copied(),
                Some(value.as_bytes()),
                "acknowledged message {value} at {p}/{offset} is missing"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broker_killed_under_load_is_replaced_and_nothing_acknowledged_is_lost() {
    let etcd = start_etcd();
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlaneProcess::start(
        "cp-1",
        &format!("etcd:{}", etcd.endpoint),
        tmp.path(),
        &["--region", "eu", "--broker-lease-ms", "2000"],
    );
    cp.wait_leader(Duration::from_secs(60)).await;
    let control = cp.addr.clone();
    let mut eu = ManagedRegion::start(tmp.path(), "eu", 4, &control, &[])
        .await
        .unwrap();
    create_topic(&control, &["load", "--partitions", "2", "--replicas", "3"]);
    let client = eu.client().await;
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let producing = produce_until(client.clone(), "load", stop.clone(), failures.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Kill the leader of a group that has a spare broker to move to.
    let groups = eu.groups().await;
    let victim_group = groups
        .iter()
        .find(|g| g.leader.is_some())
        .expect("a led group")
        .clone();
    let victim = victim_group.leader.unwrap();
    eu.brokers[victim as usize - 1].kill9();
    let killed_at = Instant::now();

    // Every group it held gets a replacement: three live replicas again, the dead one out.
    let held_by_victim: Vec<u32> = groups
        .iter()
        .filter(|g| g.replicas.contains(&victim))
        .map(|g| g.id)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = eu.groups().await;
        let restored = held_by_victim.iter().all(|id| {
            now.iter().find(|g| g.id == *id).is_some_and(|g| {
                g.replicas.len() == 3 && !g.replicas.contains(&victim) && g.leader.is_some()
            })
        });
        if restored {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log groups {held_by_victim:?} not restored 60 s after broker {victim} died: {now:?}\ncontrol plane log:\n{}",
            cp.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "replication restored {:?} after the kill",
        killed_at.elapsed()
    );
    // The raft membership agrees with the record: the new replica votes.
    let placed = eu.groups().await;
    for id in &held_by_victim {
        let g = placed.iter().find(|g| g.id == *id).unwrap();
        let leader = &eu.brokers[g.leader.unwrap() as usize - 1];
        let mut c = v1::broker_client::BrokerClient::connect(format!("http://{}", leader.addr))
            .await
            .unwrap();
        let info = c
            .log_groups(v1::LogGroupsRequest {})
            .await
            .unwrap()
            .into_inner()
            .groups
            .into_iter()
            .find(|x| x.group == *id)
            .unwrap();
        let voters: BTreeSet<u32> = info.voters.into_iter().collect();
        let replicas: BTreeSet<u32> = g.replicas.iter().copied().collect();
        assert_eq!(voters, replicas, "log group {id}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = producing.await.unwrap();
    let total: usize = acked.values().map(Vec::len).sum();
    assert!(total > 100, "only {total} messages acknowledged");
    let held = read_all(&eu.client().await, "load").await;
    assert_all_held(&acked, &held);
    eprintln!(
        "{total} acknowledged, all held; {} sends failed while the leader changed",
        failures.load(Ordering::Relaxed)
    );
    // The dead broker returns: no longer a replica of what was moved, it drops its stale
    // copies; then, holding nothing, it takes load gradually — a replica moves to it (the
    // new copy catching up before the old one leaves) until the replicas are balanced.
    eu.brokers[victim as usize - 1].restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let load = replicas_per_broker(&eu.groups().await);
        let (min, max) = (load.values().min().copied(), load.values().max().copied());
        if load.get(&victim).copied().unwrap_or(0) > 0
            && max.zip(min).is_some_and(|(a, b)| a - b <= 1)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker {victim} took no load within 60 s: {load:?}\ncontrol plane log:\n{}",
            cp.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A group the balancing gave back to it before it learnt it had lost it may keep its
    // old copy (raft truncates what diverged and catches it up); any other it drops. The
    // balancing does not wait for that (the records say the broker holds nothing), so the
    // drop may come a little after the balance: wait for it.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let log = eu.brokers[victim as usize - 1].log_text();
        let placed = eu.groups().await;
        let kept: Vec<u32> = held_by_victim
            .iter()
            .copied()
            .filter(|id| {
                let given_back = placed
                    .iter()
                    .any(|g| g.id == *id && g.replicas.contains(&victim));
                !given_back
                    && !log.contains(&format!(
                        "stopped hosting the log group group={id} deleted=true"
                    ))
            })
            .collect();
        if kept.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "broker {victim} kept its stale copy of log groups {kept:?} 15 s after the balance: {placed:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = read_all(&eu.client().await, "load").await;
    assert_all_held(&acked, &held);
}

/// Replicas each broker holds, by the control plane's placement.
fn replicas_per_broker(groups: &[v1::LogGroupPlacement]) -> BTreeMap<u32, usize> {
    let mut n = BTreeMap::new();
    for g in groups {
        for b in &g.replicas {
            *n.entry(*b).or_default() += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn produce_and_consume_never_stop_while_the_control_plane_leader_is_killed() {
    let etcd = start_etcd();
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("etcd:{}", etcd.endpoint);
    let mut cps: Vec<ControlPlaneProcess> = (1..=3)
        .map(|i| {
            ControlPlaneProcess::start(
                &format!("cp-{i}"),
                &store,
                tmp.path(),
                &["--region", "eu", "--broker-lease-ms", "4000"],
            )
        })
        .collect();
    let leader = cps[0].wait_leader(Duration::from_secs(60)).await;
    let control: String = cps
        .iter()
        .map(|c| c.addr.clone())
        .collect::<Vec<_>>()
        .join(",");
    let mut eu = ManagedRegion::start(tmp.path(), "eu", 3, &control, &[])
        .await
        .unwrap();
    create_topic(&control, &["steady", "--partitions", "3"]);
    let client = eu.client().await;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let producing = produce_until(client.clone(), "steady", stop.clone(), failures.clone());
    let consumed = Arc::new(AtomicU64::new(0));
    let consuming = {
        let (client, stop, consumed) = (client.clone(), stop.clone(), consumed.clone());
        tokio::spawn(async move {
            let mut consumer = client.consumer(ConsumerConfig {
                start: StartFrom::Beginning,
                ..ConsumerConfig::default()
            });
            consumer.subscribe("steady").await.expect("subscribe");
            let mut seen: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                let batch = consumer
                    .poll(Duration::from_millis(500))
                    .await
                    .expect("poll never fails");
                for m in batch {
                    seen.entry(m.partition).or_default().push(m.offset);
                    consumed.fetch_add(1, Ordering::Relaxed);
                }
            }
            seen
        })
    };
    // Progress over `window`: both counters move.
    // Progress over a window: consumption moves on, and (when `strict`) no produce fails.
    // A restarted broker may take a group's leadership back, and a produce in flight at a
    // leader that steps down fails as with Kafka; the windows after a restart allow that.
    let progress = |what: &'static str, strict: bool| {
        let consumed = consumed.clone();
        let failures = failures.clone();
        async move {
            let (before, failed) = (
                consumed.load(Ordering::Relaxed),
                failures.load(Ordering::Relaxed),
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = consumed.load(Ordering::Relaxed);
            assert!(after > before, "consumption stalled while {what}");
            if strict {
                assert_eq!(
                    failures.load(Ordering::Relaxed),
                    failed,
                    "a produce failed while {what}"
                );
            }
        }
    };
    progress("the control plane is up", true).await;

    let li = cps.iter().position(|c| c.id == leader).unwrap();
    cps[li].kill9();
    progress("the control-plane leader was killed", true).await;
    cps[(li + 1) % 3]
        .wait_leader_other_than(Some(&leader), Duration::from_secs(30))
        .await;

    // No control plane at all: the data plane serves from what it holds; a broker restarted
    // meanwhile serves from its saved view.
    for c in &mut cps {
        c.kill9();
    }
    progress("no control plane runs", true).await;
    eu.brokers[2].terminate();
    eu.brokers[2].restart().await.unwrap();
    let info = eu.brokers[2]
        .client()
        .await
        .describe_topic("steady")
        .await
        .unwrap();
    assert_eq!(info.partitions.len(), 3);
    progress("a broker restarted without a control plane", false).await;

    // The control plane returns; brokers register again and nothing was lost.
    for c in &mut cps {
        c.spawn();
    }
    cps[0].wait_leader(Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while eu.live().await.len() < 3 {
        assert!(Instant::now() < deadline, "brokers did not register again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress("the control plane came back", false).await;
    stop.store(true, Ordering::Relaxed);
    let acked = producing.await.unwrap();
    let seen = consuming.await.unwrap();
    // The consumer saw each partition's offsets in order, without gaps or repeats.
    for (p, offsets) in &seen {
        for w in offsets.windows(2) {
            assert_eq!(
                w[1],
                w[0] + 1,
                "partition {p}: offsets {} then {}",
                w[0],
                w[1]
            );
        }
    }
    let held = read_all(&eu.client().await, "steady").await;
    assert_all_held(&acked, &held);
}

/// A managed region's raft groups keep Kafka's high watermark: a batch only the leader
/// holds (acknowledged at acks=leader while both followers are stopped) is not readable
/// until a quorum holds it, and then it is. (Managed brokers learn their peers from the
/// control plane; their groups once opened as unreplicated, so consumers and mirrors read
/// records raft had not committed, and the mirror's reads woke only on their timeout.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_only_the_leader_holds_is_not_readable_until_a_quorum_holds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlaneProcess::embedded(tmp.path(), &["--region", "eu"]).await;
    let eu = ManagedRegion::start(tmp.path(), "eu", 3, &cp.addr, &[])
        .await
        .unwrap();
    create_topic(&cp.addr, &["hw", "--partitions", "1", "--replicas", "3"]);
    let client = eu.client().await;
    let first = client
        .producer(ProducerConfig::default())
        .send(Record::new("hw", "committed"))
        .await
        .await
        .unwrap();
    let g = client.describe_topic("hw").await.unwrap().partitions[0].log_group;
    let leader = eu
        .groups()
        .await
        .into_iter()
        .find(|p| p.id == g)
        .and_then(|p| p.leader)
        .expect("the topic's group has a leader");
    let at_leader = eu.brokers[leader as usize - 1].client().await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader as usize - 1).collect();
    for &f in &followers {
        eu.brokers[f].stop();
    }
    let meta = tokio::time::timeout(
        Duration::from_secs(10),
        at_leader
            .producer(ProducerConfig {
                acks: v1::Acks::Leader,
                ..ProducerConfig::default()
            })
            .send(Record::new("hw", "only the leader has this"))
            .await,
    )
    .await
    .expect("acks=leader answers without a quorum")
    .unwrap();
    assert_eq!(meta.offset, first.offset + 1);
    // Long enough for the indexer to have published it, were it not waiting for the commit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (latest, _) = at_leader
        .list_offset("hw", 0, meridian_client::OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(latest, meta.offset, "readable before a quorum holds it");
    let read = read_all(&at_leader, "hw").await;
    assert_eq!(
        read[&0].len(),
        1,
        "a consumer read an uncommitted batch: {read:?}"
    );
    for &f in &followers {
        eu.brokers[f].signal(libc::SIGCONT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (latest, _) = at_leader
            .list_offset("hw", 0, meridian_client::OffsetSpec::Latest)
            .await
            .unwrap();
        if latest == meta.offset + 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the acks=leader batch never became readable"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Two topics sharing a log group keep what each one's own retention says: the short one
/// stops serving its messages once they are older than its retention (its partitions'
/// starts move, exactly), the long one keeps all of its, and the moved start survives a
/// restart of the broker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_sharing_a_log_group_each_keep_what_their_own_retention_says() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("broker.toml");
    std::fs::write(&config, "[storage]\nretention_check_interval_ms = 200\n").unwrap();
    let cp = ControlPlaneProcess::embedded(tmp.path(), &["--region", "r"]).await;
    let mut region = ManagedRegion::start(
        tmp.path(),
        "r",
        1,
        &cp.addr,
        &["--config", config.to_str().unwrap()],
    )
    .await
    .unwrap();
    let short = create_topic(
        &cp.addr,
        &["short", "--partitions", "1", "--retention", "2s"],
    );
    let long = create_topic(
        &cp.addr,
        &["long", "--partitions", "1", "--retention", "1h"],
    );
    let group = |t: &serde_json::Value| t["placements"][0]["partition_groups"][0].clone();
    assert_eq!(
        group(&short),
        group(&long),
        "one log group holds both: {short} {long}"
    );
    let values = |prefix: &str| (0..50).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();
    for (topic, prefix) in [("short", "s"), ("long", "l")] {
        let mut args = vec!["produce".to_owned(), topic.to_owned()];
        args.extend(values(prefix));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _, err) = meridian_control(&cp.addr, &args);
        assert_eq!(code, 0, "{err}");
    }
    let read = |topic: &str| {
        let (code, out, err) = meridian_control(
            &cp.addr,
            &[
                "consume",
                topic,
                "--from",
                "beginning",
                "--idle-exit-ms",
                "1500",
            ],
        );
        assert_eq!(code, 0, "{err}");
        out.lines().map(str::to_owned).collect::<Vec<_>>()
    };
    assert_eq!(read("long").len(), 50);
    // Past the short topic's 2 s: none of its messages is served, all of the long one's are.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = read("short");
        if got.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "short still serves {} messages",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let kept = read("long");
    assert_eq!(kept.len(), 50, "the long topic keeps everything: {kept:?}");
    // A message written now is served; the restarted broker serves none of the expired ones.
    let (code, _, err) = meridian_control(&cp.addr, &["produce", "short", "fresh"]);
    assert_eq!(code, 0, "{err}");
    region.brokers[0].kill9();
    region.brokers[0].restart().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, _) = meridian_control(
            &cp.addr,
            &[
                "consume",
                "long",
                "--from",
                "beginning",
                "--idle-exit-ms",
                "1500",
            ],
        );
        if code == 0 && out.lines().count() == 50 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the long topic after the restart: {out}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let after = read("short");
    assert!(
        after.iter().all(|v| v == "fresh"),
        "an expired message came back after the restart: {after:?}"
    );
}
