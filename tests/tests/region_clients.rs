//! Clients across regions and through a region's failover. Kafka topics and groups: a topic created over Kafka in one region is
//! placed in every region (`[kafka] topic_regions` empty) and mirrored; a Kafka consumer
//! group that read part of it in one region resumes in the other, after that region's
//! broker is killed, where it left off: nothing lost, nothing read twice. kcat producing
//! to a region through its failover and restore: the writes made while it is failed over
//! land in the region taking over, and every line is held once in both regions. The CLI:
//! a running `meridian produce` follows its region's failover, and a region named
//! explicitly that is down is refused with the reason.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
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

/// Line `i` of a phase: 1,024 bytes with its newline, as kcat reads stdin 1,024 bytes at a
/// time (a shorter line would wait in its buffer for the next ones).
fn line(prefix: &str, i: usize) -> String {
    format!("{:.<1023}", format!("{prefix}{i}-"))
}

/// Feeds kcat's stdin lines `{prefix}0..{prefix}{n-1}` ([`line`]), a few at a time.
async fn feed(stdin: &mut std::process::ChildStdin, prefix: &str, n: usize) {
    for i in 0..n {
        writeln!(stdin, "{}", line(prefix, i)).unwrap();
        if i % 10 == 9 {
            stdin.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stdin.flush().unwrap();
}

/// Waits until `metric` of `broker` reaches `at_least`.
async fn wait_metric(broker: &meridian_tests::BrokerProcess, metric: &str, at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = broker.metric(metric).await;
        if v >= at_least {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{metric} stayed at {v}, below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every value of `topic` in a region, read over gRPC (60 s at most for `n` to arrive).
async fn held_once(client: &meridian_client::Client, topic: &str, n: usize) -> Vec<String> {
    meridian_tests::wait_until_held(client, topic, n as u64, Duration::from_secs(60)).await;
    let read = meridian_tests::read_all(client, topic).await;
    let mut values: Vec<String> = read
        .values()
        .flatten()
        .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        .collect();
    values.sort();
    values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_produces_through_a_region_failover_and_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let kafka = ["--kafka-listen", "auto"];
    let regions = TwoRegions::start(tmp.path(), &kafka, &kafka).await;
    regions.create_topic("kf", 2).await;
    let _mirrors = regions.link(tmp.path(), &[]);
    let (x, y) = (&regions.x.brokers[0], &regions.y.brokers[0]);
    let control = regions.control.addr.clone();
    let mut kcat = Command::new("kcat")
        .args(["-P", "-b", &regions.x.kafka[0], "-t", "kf"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kcat runs");
    let mut stdin = kcat.stdin.take().unwrap();
    let produced = "meridian_produce_messages_total";

    feed(&mut stdin, "a", 300).await;
    wait_metric(x, produced, 300.0).await;
    let (x_before, y_before) = (x.metric(produced).await, y.metric(produced).await);
    let (code, _, err) =
        meridian_tests::platform::meridian_control(&control, &["region", "fail", "x"]);
    assert_eq!(code, 0, "{err}");
    wait_metric(x, "meridian_region_failed_over", 1.0).await;
    // An idempotent producer (confluent-kafka) meanwhile: its sequences live in x, so its
    // batches wait for the restore, retried.
    let idempotent = meridian_tests::python_command(
        SCRIPT,
        &[
            "produce".into(),
            regions.x.kafka[0].clone(),
            "kf".into(),
            "100".into(),
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("python runs");
    feed(&mut stdin, "b", 300).await;
    // Written in y, through x's broker; nothing written in x meanwhile.
    wait_metric(y, produced, y_before + 300.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        x.metric(produced).await,
        x_before,
        "x took writes while failed over"
    );
    assert_eq!(
        y.metric(produced).await,
        y_before + 300.0,
        "the idempotent producer's batches went on"
    );

    let (code, _, err) =
        meridian_tests::platform::meridian_control(&control, &["region", "restore", "x"]);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while x.metric("meridian_region_failed_over").await != 0.0 {
        assert!(Instant::now() < deadline, "x never took writes again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    feed(&mut stdin, "c", 300).await;
    drop(stdin);
    let status = tokio::task::spawn_blocking(move || kcat.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.status.success(),
        "kcat: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let idempotent = tokio::task::spawn_blocking(move || idempotent.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&idempotent.stdout).contains("OK"),
        "the idempotent producer: {}{}",
        String::from_utf8_lossy(&idempotent.stdout),
        String::from_utf8_lossy(&idempotent.stderr)
    );
    assert_eq!(
        x.metric(produced).await,
        x_before + 400.0,
        "after the restore, x takes them"
    );

    let mut want: Vec<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|p| (0..300).map(move |i| line(p, i)))
        .chain((0..100).map(|i| format!("v{i}")))
        .collect();
    want.sort();
    for region in [&regions.x, &regions.y] {
        let got = held_once(&region.client().await, "kf", 1000).await;
        assert_eq!(got, want, "region {} holds each line once", region.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_follows_a_failover_and_refuses_a_named_region_that_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let regions = TwoRegions::start(tmp.path(), &[], &[]).await;
    regions.create_topic("cf", 2).await;
    let _mirrors = regions.link(tmp.path(), &[]);
    let (x, y) = (&regions.x.brokers[0], &regions.y.brokers[0]);
    let control = regions.control.addr.clone();
    let mut cli = Command::new(meridian_tests::binary("meridian"))
        .args(["--control", &control, "--region", "x", "produce", "cf"])
        .env("XDG_CONFIG_HOME", "/nonexistent-meridian-test")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("meridian runs");
    let mut stdin = cli.stdin.take().unwrap();
    let produced = "meridian_produce_messages_total";
    feed(&mut stdin, "a", 100).await;
    wait_metric(x, produced, 100.0).await;
    let y_before = y.metric(produced).await;

    let (code, _, err) =
        meridian_tests::platform::meridian_control(&control, &["region", "fail", "x"]);
    assert_eq!(code, 0, "{err}");
    // Named explicitly, a down region is refused with why, and nothing is sent elsewhere.
    let (code, _, err) = meridian_tests::platform::meridian_control(
        &control,
        &["--region", "x", "produce", "cf", "stray"],
    );
    assert_ne!(code, 0, "produced to a failed-over region named explicitly");
    assert!(err.contains("region x does not serve topic"), "{err}");
    assert!(err.contains("failed over by an operator"), "{err}");
    // The running one moves to y (it asks the control plane every second): what it
    // sends then is written there, none in x.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let x_failed = x.metric(produced).await;
    feed(&mut stdin, "b", 100).await;
    wait_metric(y, produced, y_before + 100.0).await;
    assert_eq!(
        x.metric(produced).await,
        x_failed,
        "written in x after the move"
    );

    let (code, _, err) =
        meridian_tests::platform::meridian_control(&control, &["region", "restore", "x"]);
    assert_eq!(code, 0, "{err}");
    feed(&mut stdin, "c", 100).await;
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || cli.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("moved to region y"), "{err}");
    let mut want: Vec<String> = ["a", "b", "c"]
        .iter()
        .flat_map(|p| (0..100).map(move |i| line(p, i)))
        .collect();
    want.sort();
    for region in [&regions.x, &regions.y] {
        let got = held_once(&region.client().await, "cf", 300).await;
        assert_eq!(got, want, "region {} holds each line once", region.name);
    }
}
