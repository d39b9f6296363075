//! Strictly ordered topics, with real processes: writes only in the home region; moving the
//! home closes the old one (its brokers confirm) before the new one opens; a home broker
//! that cannot be sure of its control-plane lease stops taking them.

use std::time::{Duration, Instant};

use meridian_client::{Client, ProducerConfig, Record};
use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion, meridian_control};

async fn produce(client: &Client, topic: &str, value: &str) -> Result<(), String> {
    let producer = client.producer(ProducerConfig::default());
    let sent = producer.send(Record::new(topic, value.to_owned())).await;
    sent.await.map(|_| ()).map_err(|e| e.to_string())
}

async fn eventually_produces(client: &Client, topic: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        match produce(client, topic, "probe").await {
            Ok(()) => return,
            Err(e) => assert!(
                Instant::now() < deadline,
                "still refused after {limit:?}: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_go_to_the_home_region_and_a_home_move_fences_the_old_one_first() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cp = ControlPlaneProcess::embedded(
        tmp.path(),
        &[
            "--region",
            "a",
            "--region",
            "b",
            "--broker-lease-ms",
            "2000",
        ],
    )
    .await;
    let a = ManagedRegion::start(tmp.path(), "a", 1, &cp.addr, &[])
        .await
        .unwrap();
    let b = ManagedRegion::start(tmp.path(), "b", 1, &cp.addr, &[])
        .await
        .unwrap();
    for args in [
        &[
            "topic",
            "create",
            "ledger",
            "--partitions",
            "2",
            "--replicas",
            "1",
            "--ordering",
            "strict",
            "--home",
            "a",
        ][..],
        &[
            "topic",
            "create",
            "chatter",
            "--partitions",
            "1",
            "--replicas",
            "1",
        ][..],
    ] {
        let (code, _, err) = meridian_control(&cp.addr, args);
        assert_eq!(code, 0, "{err}");
    }
    let (ca, cb) = (a.client().await, b.client().await);
    produce(&ca, "ledger", "one").await.unwrap();
    let e = produce(&cb, "ledger", "two").await.unwrap_err();
    assert!(e.contains("only its home region a accepts writes"), "{e}");
    // A producer whose batch to a strictly ordered partition failed sends nothing more
    // there, even once writes would be taken (the next would land before the failed one).
    let stopped = cb.producer(ProducerConfig::default());
    let send = |value: &'static str| {
        let stopped = stopped.clone();
        async move {
            let sent = stopped
                .send(Record::new("ledger", value).partition(0))
                .await;
            sent.await.map(|_| ()).map_err(|e| e.to_string())
        }
    };
    let e = send("refused").await.unwrap_err();
    assert!(e.contains("only its home region a accepts writes"), "{e}");
    produce(&cb, "chatter", "anywhere").await.unwrap();

    // Move the home to b: a stops first, then b opens.
    let (code, out, err) = meridian_control(&cp.addr, &["topic", "alter", "ledger", "--home", "b"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("home b"), "{out}");
    let e = produce(&ca, "ledger", "three").await.unwrap_err();
    assert!(e.contains("only its home region b accepts writes"), "{e}");
    eventually_produces(&cb, "ledger", Duration::from_secs(10)).await;
    let e = send("after").await.unwrap_err();
    assert!(
        e.contains("an earlier batch to ledger/0 failed") && e.contains("strictly ordered"),
        "{e}"
    );
    let (code, _, err) =
        meridian_control(&cp.addr, &["topic", "alter", "ledger", "--home", "mars"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid home = mars"), "{err}");
    let (code, _, err) = meridian_control(&cp.addr, &["topic", "alter", "chatter", "--home", "a"]);
    assert_eq!(code, 1);
    assert!(err.contains("not strictly ordered"), "{err}");

    // Without the control plane, the home's broker cannot know whether the home moved once
    // its lease may have lapsed: it refuses strict writes, and takes the others.
    cp.kill9();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let e = produce(&cb, "ledger", "four").await.unwrap_err();
    assert!(e.contains("lease may have lapsed"), "{e}");
    produce(&cb, "chatter", "still").await.unwrap();
    cp.spawn();
    eventually_produces(&cb, "ledger", Duration::from_secs(30)).await;
}
