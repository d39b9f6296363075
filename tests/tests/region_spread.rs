//! A topic whose log groups are spread over a region's brokers (fewer replicas than
//! brokers: no broker holds every partition) is described, written and read through any
//! broker: a broker answers for the partitions it does not hold by asking their leaders.
//! (Each broker used to refuse the whole topic as "not the leader", sending clients back
//! and forth: produce, consume and describe all failed.)

use meridian_client::{Client, ProducerConfig, Record};
use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion, meridian_control};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_spread_over_brokers_is_served_by_each() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlaneProcess::embedded(tmp.path(), &["--region", "r"]).await;
    let region = ManagedRegion::start(tmp.path(), "r", 2, &cp.addr, &[])
        .await
        .unwrap();
    let (code, _, err) = meridian_control(
        &cp.addr,
        &[
            "topic",
            "create",
            "spread",
            "--partitions",
            "2",
            "--replicas",
            "1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = meridian_control(&cp.addr, &["--json", "topic", "describe", "spread"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let leaders: Vec<u64> = v["placements"][0]["log_groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["replicas"][0].as_u64())
        .collect();
    assert_eq!(leaders.len(), 2, "one group on each broker: {v}");
    assert_ne!(leaders[0], leaders[1], "one group on each broker: {v}");

    // Through the control plane (the CLI) and at each broker (the SDK).
    for i in 0..50 {
        let (code, _, err) = meridian_control(
            &cp.addr,
            &[
                "produce",
                "spread",
                "--key",
                &format!("k{i}"),
                &format!("cli-{i}"),
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    for (i, b) in region.brokers.iter().enumerate() {
        let client = Client::connect(&b.addr.to_string()).await.unwrap();
        let info = client.describe_topic("spread").await.unwrap();
        assert_eq!(info.partitions.len(), 2);
        let producer = client.producer(ProducerConfig::default());
        for n in 0..50 {
            producer
                .send(Record::new("spread", format!("sdk-{i}-{n}")).key(format!("k{n}")))
                .await
                .await
                .unwrap();
        }
    }
    for (i, b) in region.brokers.iter().enumerate() {
        let client = Client::connect(&b.addr.to_string()).await.unwrap();
        let info = client.describe_topic("spread").await.unwrap();
        let held: u64 = info.partitions.iter().map(|p| p.latest_offset).sum();
        assert_eq!(held, 150, "broker {} describes every partition", i + 1);
        let all = meridian_tests::read_all(&client, "spread").await;
        assert_eq!(all.values().map(Vec::len).sum::<usize>(), 150);
        assert!(all.values().all(|p| !p.is_empty()), "both partitions used");
    }

    // Broker 1 stalls (SIGSTOP: its connections stay open, nothing answers). It is the
    // first broker the CLI starts from, and the only replica of one partition's log group:
    // a produce there names that group, its silent leader and what to run — the first
    // metadata call moves on to broker 2 instead of waiting out the stalled one.
    let on_one = leaders.iter().position(|&b| b == 1).unwrap();
    let group = v["placements"][0]["log_groups"][on_one]["id"]
        .as_u64()
        .unwrap();
    let produce_to = |partition: usize, value: &str| {
        meridian_control(
            &cp.addr,
            &[
                "produce",
                "spread",
                "--partition",
                &partition.to_string(),
                value,
            ],
        )
    };
    region.brokers[0].stop();
    let (code, _, err) = produce_to(on_one, "stalled");
    assert_ne!(
        code, 0,
        "a produce to a stalled leader's only replica fails"
    );
    assert!(
        err.contains(&format!("log group {group} is unavailable"))
            && err.contains(&format!("at {}", region.brokers[0].addr))
            && err.contains("meridian cluster health"),
        "the error names the group, its silent leader and the command to run: {err}"
    );
    // The other partition is served meanwhile.
    let (code, _, err) = produce_to(1 - on_one, "served");
    assert_eq!(code, 0, "the other broker's partition is written: {err}");
    // Broker 2 lists the topics meanwhile: the stalled leader's partition with its offsets
    // unknown, the other with its own.
    let second = Client::connect(&region.brokers[1].addr.to_string())
        .await
        .unwrap();
    let listed = second
        .list_topics()
        .await
        .expect("a listing with one broker stalled");
    let spread = listed.iter().find(|t| t.name == "spread").unwrap();
    let unknown: Vec<bool> = spread
        .partitions
        .iter()
        .map(|p| p.offsets_unknown)
        .collect();
    let mut expected = vec![false, false];
    expected[on_one] = true;
    assert_eq!(unknown, expected, "{spread:?}");
    assert!(
        spread.partitions[1 - on_one].latest_offset > 0,
        "{spread:?}"
    );
    region.brokers[0].signal(libc::SIGCONT);
    let (code, _, err) = produce_to(on_one, "back");
    assert_eq!(code, 0, "written once its leader is back: {err}");

    // An operator moves that group's only replica to the other broker (the CLI's
    // `log-group move`): refused when it names a broker holding none, then carried out,
    // every message still there. (While broker 1 was stopped the control plane may have
    // moved the replica to broker 2 itself: the move starts from wherever it is now.)
    let g = group.to_string();
    let holder = |out: &str| {
        let v: serde_json::Value = serde_json::from_str(out).unwrap();
        v["placements"][0]["log_groups"][on_one]["replicas"].clone()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let from = loop {
        let (_, out, _) = meridian_control(&cp.addr, &["--json", "topic", "describe", "spread"]);
        // One replica: no replacement under way.
        if let Some([b]) = holder(&out).as_array().map(Vec::as_slice) {
            break b.as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "{out}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let move_replica = |from: u64, to: u64| {
        meridian_control(
            &cp.addr,
            &[
                "--region",
                "r",
                "log-group",
                "move",
                &g,
                "--from",
                &from.to_string(),
                "--to",
                &to.to_string(),
            ],
        )
    };
    let to = 3 - from;
    let (code, _, err) = move_replica(to, from);
    assert_ne!(code, 0);
    assert!(err.contains("holds no replica"), "{err}");
    // There and back: the way back adds a broker that held the group before, whose log
    // the new replica replays from a membership in which that broker was the only voter
    // (it used to elect itself on it at once, a second leader serving a shorter log).
    for (from, to) in [(from, to), (to, from)] {
        let (code, out, err) = move_replica(from, to);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(&format!("broker {to} joins")), "{out}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (_, out, _) =
                meridian_control(&cp.addr, &["--json", "topic", "describe", "spread"]);
            let replicas = holder(&out);
            if replicas == serde_json::json!([to]) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "log group {group}'s replicas: {replicas}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    // (The new leader's end offset may trail for a moment after the move: read again.)
    let client = Client::connect(&region.brokers[1].addr.to_string())
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let all = meridian_tests::read_all(&client, "spread").await;
        let held = all.values().map(Vec::len).sum::<usize>();
        if held == 152 {
            break;
        }
        assert!(
            held < 152 && std::time::Instant::now() < deadline,
            "every message kept through the move, once: {held} of 152"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}
