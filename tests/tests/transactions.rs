//! Transactions across real processes: a three-broker region, unchanged Kafka clients
//! (confluent-kafka, `tests/kafka_clients/confluent_transactions.py`), and kill -9 of a
//! partition leader and of the transaction coordinator mid-transaction.

use meridian_tests::python_output;

/// Commit, abort, commit, and one left open: a `read_committed` consumer sees only the
/// committed records and is held at the last stable offset while one is open, a
/// `read_uncommitted` one sees all, and the end offsets count the markers;
/// consume-transform-produce with `send_offsets_to_transaction`, whose aborted round leaves
/// the group's offsets as the committed round left them; a fenced producer is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_transactions_commit_abort_and_hold_read_committed_readers() {
    const PARTITIONS: u32 = 3;
    let tmp = tempfile::tempdir().unwrap();
    let region = meridian_tests::Region::start_with_kafka(tmp.path(), 3, &[])
        .await
        .unwrap();
    let client = region.client().await;
    client.create_topic("txn", PARTITIONS).await.unwrap();
    client.create_topic("txn-out", PARTITIONS).await.unwrap();
    let bootstrap: Vec<String> = region.kafka.iter().map(|a| a.to_string()).collect();
    let out = python_output(
        "confluent_transactions.py",
        vec![
            bootstrap.join(","),
            "txn".into(),
            "txn-out".into(),
            PARTITIONS.to_string(),
        ],
    )
    .await;
    let report: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    eprintln!("{report}");
    assert_eq!(report["committed_while_open"], 60);
    assert_eq!(report["uncommitted_while_open"], 120);
    assert_eq!(report["committed_after"], 90);
    assert_eq!(report["out_committed"], 60);
    assert_eq!(report["out_uncommitted"], 90);
    assert_eq!(report["zombie_fenced"], true);
    // The admin APIs: the ids are listed once each, the committed one described at its
    // coordinator (NOT_COORDINATOR, 16, at the others), and partition 0's producers known at
    // its leader, none with a transaction open.
    let admin = kafka_transactions_admin(&region.kafka, "meridian-txn-ctp", "txn");
    eprintln!("{admin}");
    let listed = admin["listed"].as_array().unwrap();
    assert_eq!(
        listed.iter().filter(|t| t[0] == "meridian-txn-ctp").count(),
        1,
        "{admin}"
    );
    assert!(
        listed.contains(&serde_json::json!(["meridian-txn-ctp", "CompleteAbort"])),
        "{admin}"
    );
    let described = admin["described"].as_array().unwrap();
    assert_eq!(
        described.iter().filter(|d| d["error"] == 0).count(),
        1,
        "{admin}"
    );
    assert_eq!(
        described.iter().filter(|d| d["error"] == 16).count(),
        2,
        "{admin}"
    );
    let producers = admin["producers"].as_array().unwrap();
    assert_eq!(producers.len(), 1, "one leader answers: {admin}");
    let open_at = producers[0].as_array().unwrap();
    assert!(!open_at.is_empty(), "{admin}");
    assert!(
        open_at.iter().all(|o| o == -1),
        "no transaction is open: {admin}"
    );
    // The native reader reads committed data: the same 90 records.
    let values = read_native(&client, "txn", 90).await;
    assert_eq!(values.len(), 90, "{values:?}");
    assert!(!values.iter().any(|v| v.starts_with("a-")));
    for b in &region.brokers {
        assert!(b.running());
    }
}

/// What a native consumer reads of `topic` from the start: until `expect` values came and
/// then a poll brought nothing more.
async fn read_native(client: &meridian_client::Client, topic: &str, expect: usize) -> Vec<String> {
    use meridian_client::{ConsumerConfig, StartFrom};
    let mut consumer = client.consumer(ConsumerConfig {
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    });
    consumer.subscribe(topic).await.expect("subscribe");
    let mut values = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let batch = consumer
            .poll(std::time::Duration::from_secs(2))
            .await
            .expect("poll");
        if batch.is_empty() && (values.len() >= expect || std::time::Instant::now() > deadline) {
            return values;
        }
        for m in batch {
            values.push(String::from_utf8(m.value.unwrap_or_default().to_vec()).unwrap());
        }
    }
}

/// Kill -9 mid-transaction: transaction 1's records are prepared (written, not ended) when
/// the leader of partition 0 — which is also the transaction's coordinator: its id is
/// chosen to hash to partition 0's log group — is killed and restarted; transaction 2's
/// when partition 1's leader is. Neither is visible to `read_committed` readers before it
/// ends; then the committed one is visible exactly once and the aborted one never
/// (`kafka_clients/confluent_txn_kill.py` counts every record).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_survives_kill9_of_its_coordinator_and_a_partition_leader() {
    const PARTITIONS: u32 = 3;
    const PER_PARTITION: usize = 300;
    let tmp = tempfile::tempdir().unwrap();
    let mut region = meridian_tests::Region::start_with_kafka(tmp.path(), 3, &[])
        .await
        .unwrap();
    let client = region.client().await;
    client.create_topic("txk", PARTITIONS).await.unwrap();
    let info = client.describe_topic("txk").await.unwrap();
    let group0 = info.partitions[0].log_group;
    let groups = region.log_group_ids().await;
    let id = (0..)
        .map(|n| format!("kill-{n}"))
        .find(|id| groups[(fnv1a(id) % groups.len() as u64) as usize] == group0)
        .unwrap();
    let bootstrap: Vec<String> = region.kafka.iter().map(|a| a.to_string()).collect();
    let dir = tmp.path().join("signals");
    std::fs::create_dir_all(&dir).unwrap();
    let script = tokio::spawn(python_output(
        "confluent_txn_kill.py",
        vec![
            bootstrap.join(","),
            "txk".into(),
            PARTITIONS.to_string(),
            id.clone(),
            PER_PARTITION.to_string(),
            dir.display().to_string(),
        ],
    ));
    for (round, partition) in [(1, 0), (2, 1)] {
        let prepared = dir.join(format!("prepared{round}"));
        while !prepared.exists() {
            assert!(
                !script.is_finished(),
                "the script stopped before round {round}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let victim = region.new_leader("txk", partition, usize::MAX).await;
        region.brokers[victim].kill9();
        region.new_leader("txk", partition, victim).await;
        region.brokers[victim].restart().await.unwrap();
        eprintln!(
            "round {round}: killed and restarted broker {} (led partition {partition})",
            victim + 1
        );
        std::fs::write(dir.join(format!("go{round}")), b"").unwrap();
    }
    let out = script.await.unwrap();
    let report: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    eprintln!("{report}");
    let total = PER_PARTITION * PARTITIONS as usize;
    assert_eq!(report["committed"], total);
    assert_eq!(report["committed_distinct"], total);
    assert_eq!(report["uncommitted"], 2 * total);
    assert_eq!(report["committed_visible_before_end1"], 0);
    // The native reader agrees.
    let values = read_native(&client, "txk", total).await;
    assert_eq!(values.len(), total);
    assert!(values.iter().all(|v| v.starts_with("t1-")));
}

/// FNV-1a, as brokers place coordinators (`Broker::coordinator_group`).
fn fnv1a(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A long-running `meridian txn` process, killed with SIGKILL when dropped; its stdout
/// lines as they come.
struct Cli {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Cli {
    fn start(broker: &str, args: &[&str]) -> Cli {
        use std::io::BufRead;
        let mut child = std::process::Command::new(meridian_tests::binary("meridian"))
            .arg("--broker")
            .arg(broker)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("meridian starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Cli { child, lines }
    }

    /// The next line it prints (within 30 s).
    fn line(&self) -> String {
        self.lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("a line from meridian")
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A transaction as `meridian txn describe --json` shows it.
fn describe(broker: std::net::SocketAddr, id: &str) -> serde_json::Value {
    let (code, out, err) =
        meridian_tests::meridian(broker, &["--json", "txn", "describe", id], None);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Waits until `id`'s phase is `phase` (30 s at most); its description.
async fn wait_phase(broker: std::net::SocketAddr, id: &str, phase: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let t = describe(broker, id);
        if t["phase"] == phase {
            return t;
        }
        assert!(std::time::Instant::now() < deadline, "{id} stays {t}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// Native two-phase messages with check-back: a producer sends half messages and is killed
/// with SIGKILL before committing; past the transaction's timeout the broker checks back
/// with another producer of its group (`meridian txn answer`), whose commit decides. With no
/// producer of the group alive, the configured default (rollback) is applied after the
/// configured attempts and recorded as such; a commit after that is refused, a rollback is
/// done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_half_message_is_decided_by_check_back_or_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let region = meridian_tests::Region::start(
        tmp.path(),
        3,
        &[
            "--txn-check-back-attempts",
            "3",
            "--txn-check-back-backoff-ms",
            "300",
        ],
    )
    .await
    .unwrap();
    let client = region.client().await;
    client.create_topic("orders", 2).await.unwrap();
    let broker = region.brokers[0].addr;
    let bootstrap = meridian_tests::bootstrap(&region.brokers);
    let half = |id: &str| {
        Cli::start(
            &bootstrap,
            &[
                "txn",
                "produce",
                "--id",
                id,
                "--producer-group",
                "payments",
                "--timeout-ms",
                "5000",
                "--end",
                "open",
                "orders",
                &format!("{id}-a"),
                &format!("{id}-b"),
                &format!("{id}-c"),
            ],
        )
    };

    // A producer of the group that answers "commit"; the sender dies before committing.
    let answering = Cli::start(
        &bootstrap,
        &[
            "txn",
            "answer",
            "--producer-group",
            "payments",
            "--outcome",
            "commit",
        ],
    );
    let mut sender = half("pay-1");
    let prepared: serde_json::Value = serde_json::from_str(&sender.line()).unwrap();
    assert_eq!(prepared["prepared"], 3);
    assert_eq!(describe(broker, "pay-1")["phase"], "ongoing");
    assert!(
        read_native(&client, "orders", 0).await.is_empty(),
        "half messages are invisible"
    );
    sender.kill9();
    let t = wait_phase(broker, "pay-1", "complete-commit").await;
    assert_eq!(t["decided_by"], "check-back", "{t}");
    let asked: serde_json::Value = serde_json::from_str(&answering.line()).unwrap();
    assert_eq!(asked["check_back"], "pay-1");
    let mut values = read_native(&client, "orders", 3).await;
    values.sort();
    assert_eq!(values, ["pay-1-a", "pay-1-b", "pay-1-c"]);
    drop(answering);

    // Nobody of the group is alive: three check-backs, then the default, rollback.
    let mut sender = half("pay-2");
    sender.line();
    sender.kill9();
    let t = wait_phase(broker, "pay-2", "complete-abort").await;
    assert_eq!(t["decided_by"], "default", "{t}");
    assert_eq!(t["check_backs"], 3, "{t}");
    let values = read_native(&client, "orders", 3).await;
    assert_eq!(
        values.len(),
        3,
        "the rolled-back half messages stay invisible: {values:?}"
    );
    let (code, _, err) = meridian_tests::meridian(broker, &["txn", "commit", "pay-2"], None);
    assert_ne!(code, 0);
    assert!(
        err.contains("a commit after the transaction was rolled back is refused"),
        "{err}"
    );
    let (code, _, err) = meridian_tests::meridian(broker, &["txn", "rollback", "pay-2"], None);
    assert_eq!(code, 0, "rolling back again is done: {err}");
    let (code, out, err) = meridian_tests::meridian(broker, &["txn", "list"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("pay-1") && out.contains("complete-abort"),
        "{out}"
    );
}

#[path = "support/kafka_raw.rs"]
mod kafka_raw;

/// What the Kafka admin APIs of transactions say of a region's transactions: ListTransactions
/// (at each broker, the ids it coordinates), DescribeTransactions (at an id's
/// coordinator: state, producer, partitions; NOT_COORDINATOR elsewhere), DescribeProducers
/// (at a partition's leader: its producers and where their open transaction starts).
fn kafka_transactions_admin(
    kafka: &[std::net::SocketAddr],
    id: &str,
    topic: &str,
) -> serde_json::Value {
    use kafka_protocol::messages::{
        ApiKey, DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest,
        DescribeTransactionsResponse, ListTransactionsRequest, ListTransactionsResponse, TopicName,
        TransactionalId, describe_producers_request::TopicRequest,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    let mut listed = Vec::new();
    let mut described = Vec::new();
    let mut producers = Vec::new();
    for &addr in kafka {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut body = kafka_raw::kafka_call(
            &mut s,
            ApiKey::ListTransactions,
            1,
            &ListTransactionsRequest::default().with_duration_filter(-1),
        );
        let list = ListTransactionsResponse::decode(&mut body, 1).unwrap();
        for t in list.transaction_states {
            listed.push(serde_json::json!([
                t.transactional_id.0.to_string(),
                t.transaction_state.to_string()
            ]));
        }
        let mut body = kafka_raw::kafka_call(
            &mut s,
            ApiKey::DescribeTransactions,
            0,
            &DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(
                StrBytes::from_string(id.to_owned()),
            )]),
        );
        let d = DescribeTransactionsResponse::decode(&mut body, 0).unwrap();
        for t in d.transaction_states {
            described.push(serde_json::json!({
                "error": t.error_code,
                "state": t.transaction_state.to_string(),
                "topics": t.topics.iter().map(|t| (t.topic.0.to_string(), t.partitions.clone())).collect::<Vec<_>>(),
            }));
        }
        let mut body = kafka_raw::kafka_call(
            &mut s,
            ApiKey::DescribeProducers,
            0,
            &DescribeProducersRequest::default().with_topics(vec![
                TopicRequest::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partition_indexes(vec![0]),
            ]),
        );
        let p = DescribeProducersResponse::decode(&mut body, 0).unwrap();
        for part in &p.topics[0].partitions {
            if part.error_code == 0 {
                producers.push(serde_json::json!(
                    part.active_producers
                        .iter()
                        .map(|a| a.current_txn_start_offset)
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    serde_json::json!({ "listed": listed, "described": described, "producers": producers })
}

/// Across regions, through real mirror processes: a transaction committed in region x is
/// read in region y, one rolled back never is, and while one is open in x, y sees none of
/// it — nor what x stored after its first batch (shipping waits there, keeping order) —
/// until it commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_is_mirrored_once_committed_and_never_once_rolled_back() {
    use meridian_client::{Record, TransactionConfig};
    let tmp = tempfile::tempdir().unwrap();
    let regions = meridian_tests::mirror::TwoRegions::start(tmp.path(), &[], &[]).await;
    regions.create_topic("ledger", 2).await;
    let _mirrors = regions.link(tmp.path(), &[]);
    let (cx, cy) = (regions.x.client().await, regions.y.client().await);
    let send_all = async |txn: &mut meridian_client::Transaction, tag: &str| {
        for i in 0..4u32 {
            txn.send(Record::new("ledger", format!("{tag}-{i}")).partition(i % 2))
                .await
                .unwrap();
        }
    };
    let config = |id: &str| TransactionConfig::new(id, "ledger-writers");
    let mut committed = cx.begin_transaction(config("mirror-1")).await.unwrap();
    send_all(&mut committed, "committed").await;
    committed.commit().await.unwrap();
    let mut rolled_back = cx.begin_transaction(config("mirror-2")).await.unwrap();
    send_all(&mut rolled_back, "rolled-back").await;
    rolled_back.rollback().await.unwrap();
    let mut open = cx.begin_transaction(config("mirror-3")).await.unwrap();
    send_all(&mut open, "late").await;
    // A plain message stored after the open transaction's first batch.
    let producer = cx.producer(meridian_client::ProducerConfig::default());
    producer
        .send(Record::new("ledger", "plain-after").partition(0))
        .await
        .await
        .unwrap();

    // In x itself, read_committed readers see the committed transaction only (the plain
    // message waits behind the open transaction on partition 0).
    assert_eq!(
        sorted(read_native(&cx, "ledger", 4).await),
        (0..4).map(|i| format!("committed-{i}")).collect::<Vec<_>>()
    );
    let seen = wait_values(&cy, "ledger", 4).await;
    let mut expected: Vec<String> = (0..4).map(|i| format!("committed-{i}")).collect();
    assert_eq!(sorted(seen.clone()), expected, "y while mirror-3 is open");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        sorted(read_native(&cy, "ledger", 4).await),
        expected,
        "still held"
    );
    // Not merely hidden from committed reads: y's log holds mirror-1 alone (two messages
    // and a commit marker per partition), nothing of the rolled-back or the open one.
    let ends: Vec<u64> = cy
        .describe_topic("ledger")
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.latest_offset)
        .collect();
    assert_eq!(ends, [3, 3], "y's log ends while mirror-3 is open");

    open.commit().await.unwrap();
    expected.extend((0..4).map(|i| format!("late-{i}")));
    expected.push("plain-after".into());
    let seen = wait_values(&cy, "ledger", 9).await;
    assert_eq!(sorted(seen), sorted(expected), "y after mirror-3 committed");
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Reads `topic` in a region until at least `n` values are there (60 s at most).
async fn wait_values(client: &meridian_client::Client, topic: &str, n: usize) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let values = read_native(client, topic, n).await;
        if values.len() >= n || std::time::Instant::now() > deadline {
            return values;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// A consume-transform-produce loop (confluent-kafka: read_committed consumer, transactional
/// producer, `send_offsets_to_transaction`) fails over to another region mid-stream: killed
/// -9 in region x after part of the input, then — once x's committed work has reached y —
/// started again in y with the same group. Input offsets differ between the regions (an
/// aborted transaction takes offsets in x only), so y resumes by the group's portable
/// position, not by offset. Every input has exactly one output, counted in both regions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consume_transform_produce_loop_fails_over_to_another_region_exactly_once() {
    use std::io::BufRead;
    const INPUTS: usize = 1500;
    let tmp = tempfile::tempdir().unwrap();
    let kafka = ["--kafka-listen", "auto"];
    let regions = meridian_tests::mirror::TwoRegions::start(tmp.path(), &kafka, &kafka).await;
    regions.create_topic("in", 3).await;
    regions.create_topic("out", 3).await;
    let _mirrors = regions.link(tmp.path(), &[]);
    let (x, y) = (regions.x.kafka[0].clone(), regions.y.kafka[0].clone());
    let step = |args: &[&str]| args.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    python_output(
        "ctp_failover.py",
        step(&["prefill", &x, &INPUTS.to_string()]),
    )
    .await;

    // The loop in x, killed -9 in the middle of a transaction (its records written, its
    // offsets not yet sent) once it has committed 40% of the input.
    let mut cmd =
        meridian_tests::python_command("ctp_failover.py", &step(&["run", &x, "30", "0.2"]));
    cmd.stdout(std::process::Stdio::piped());
    let (done_in_x, killed_at) = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("the loop starts");
        let lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut done = 0;
        for line in lines.map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("committed ") {
                done = n.parse::<usize>().unwrap();
            } else if line.starts_with("open ") && done >= INPUTS * 2 / 5 {
                break;
            }
        }
        child.kill().unwrap();
        let killed_at = std::time::Instant::now();
        child.wait().unwrap();
        (done, killed_at)
    })
    .await
    .unwrap();
    assert!(
        done_in_x < INPUTS,
        "the loop in x finished before it was killed"
    );

    // Failing over: once y holds x's committed output and the group's position in y covers
    // exactly the inputs that output came from (x's open transaction aborts on its timeout).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let state = loop {
        let out = python_output("ctp_failover.py", step(&["state", &x, &y])).await;
        let state: serde_json::Value =
            serde_json::from_str(out.lines().next().unwrap()).expect("state is JSON");
        let (x_out, y_out, y_committed) = (
            state["x_out"].as_u64().unwrap(),
            state["y_out"].as_u64().unwrap(),
            state["y_committed"].as_u64().unwrap(),
        );
        if x_out >= done_in_x as u64 && x_out == y_out && y_out == y_committed {
            break state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "y never caught up with x's committed work: {state}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let drained = killed_at.elapsed();
    let resumed = python_output("ctp_failover.py", step(&["run", &y, "6", "0"])).await;
    eprintln!(
        "ctp failover: {done_in_x} inputs committed in x before kill -9, {state} when y \
         resumed {drained:?} after the kill; y: {}",
        resumed.lines().last().unwrap_or_default()
    );
    let verified = python_output(
        "ctp_failover.py",
        step(&["verify", &y, &INPUTS.to_string()]),
    )
    .await;
    eprintln!("y: {verified}");
    // y's output travels back: x holds every output once too.
    let verified = python_output(
        "ctp_failover.py",
        step(&["verify", &x, &INPUTS.to_string()]),
    )
    .await;
    eprintln!("x: {verified}");
}

/// A committed transaction reaches the other region as a transaction: while its batches
/// arrive (frames of 4 KiB here, so about a hundred of them), `read_committed` readers of y
/// see none of it — the last stable offset stays before it although its messages are
/// stored — and then all of it at once, when its commit marker arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_appears_whole_in_the_other_region() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::{ApiKey, ListOffsetsRequest, ListOffsetsResponse, TopicName};
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use meridian_client::{Record, TransactionConfig};
    const RECORDS: u32 = 120;
    let tmp = tempfile::tempdir().unwrap();
    let kafka = ["--kafka-listen", "auto"];
    let regions = meridian_tests::mirror::TwoRegions::start(tmp.path(), &[], &kafka).await;
    regions.create_topic("whole", 2).await;
    let _mirrors = regions.link(tmp.path(), &["--batch-bytes", "4096"]);
    let (cx, cy) = (regions.x.client().await, regions.y.client().await);
    // y's stable and high offsets of a partition: ListOffsets (latest) at read_committed
    // and at read_uncommitted.
    let kafka_y = regions.y.kafka[0].clone();
    let offsets = move |partition: i32| {
        let mut s = std::net::TcpStream::connect(&kafka_y).unwrap();
        let mut at = |isolation: i8| {
            let mut part = ListOffsetsPartition::default();
            part.partition_index = partition;
            part.timestamp = -1;
            let mut t = ListOffsetsTopic::default();
            t.name = TopicName(StrBytes::from_static_str("whole"));
            t.partitions = vec![part];
            let mut request = ListOffsetsRequest::default();
            request.isolation_level = isolation;
            request.topics = vec![t];
            let mut answer = kafka_raw::kafka_call(&mut s, ApiKey::ListOffsets, 5, &request);
            let response = ListOffsetsResponse::decode(&mut answer, 5).unwrap();
            let p = &response.topics[0].partitions[0];
            assert_eq!(p.error_code, 0, "ListOffsets of whole/{partition} in y");
            p.offset
        };
        (at(1), at(0))
    };
    // Watch y while x commits a transaction of RECORDS messages of 8 KiB over both
    // partitions: each is its own batch, then one commit marker per partition. A stable
    // offset past the messages (at the marker: it is stored, not yet committed) shows all.
    let messages = i64::from(RECORDS / 2);
    let watcher = tokio::task::spawn_blocking(move || {
        let (mut seen, mut mid_transfer) = (Vec::new(), 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let now = [offsets(0), offsets(1)];
            for &(stable, high) in &now {
                if 0 < stable && stable < messages {
                    seen.push(stable);
                }
                if stable == 0 && high > 0 {
                    mid_transfer += 1;
                }
            }
            if now.iter().all(|&(stable, _)| stable >= messages) {
                return (seen, mid_transfer);
            }
            assert!(
                std::time::Instant::now() < deadline,
                "y never showed the transaction: {now:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    });
    let mut txn = cx
        .begin_transaction(TransactionConfig::new("whole-1", "whole-writers"))
        .await
        .unwrap();
    for i in 0..RECORDS {
        let value = format!("{i:08}").repeat(1024);
        txn.send(Record::new("whole", value).partition(i % 2))
            .await
            .unwrap();
    }
    txn.commit().await.unwrap();
    let (partial, mid_transfer) = watcher.await.unwrap();
    assert!(
        partial.is_empty(),
        "read_committed readers of y saw part of the transaction: stable offsets {partial:?}"
    );
    assert!(
        mid_transfer > 0,
        "the watch never caught the transaction on its way (stored in y, not yet stable)"
    );
    let values = read_native(&cy, "whole", RECORDS as usize).await;
    assert_eq!(values.len(), RECORDS as usize);
    eprintln!(
        "whole: {mid_transfer} looks at y while the transaction was on its way, all before it"
    );
}

/// A transactional batch for a partition its transaction never added (so no marker would
/// ever end it there, holding read_committed readers forever) is refused with
/// INVALID_TXN_STATE, as Kafka's verification (KIP-890) does, and nothing is written; so is
/// one after its transaction ended, and one naming an id with no producer. Raw Kafka
/// requests: real clients always add first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_for_a_partition_never_added_is_refused_and_holds_no_reader() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey, EndTxnRequest,
        EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest,
        ProduceResponse, TopicName, TransactionalId,
        add_partitions_to_txn_request::AddPartitionsToTxnTopic,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let tmp = tempfile::tempdir().unwrap();
    let kafka = meridian_tests::free_addr();
    let flag = kafka.to_string();
    let broker = meridian_tests::BrokerProcess::start(tmp.path(), &["--kafka-listen", &flag])
        .await
        .unwrap();
    broker
        .client()
        .await
        .create_topic("stray", 2)
        .await
        .unwrap();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(kafka).unwrap();
        let txn_id = || TransactionalId(StrBytes::from_static_str("stray-writer"));
        let mut init = InitProducerIdRequest::default();
        init.transactional_id = Some(txn_id());
        init.transaction_timeout_ms = 60_000;
        let mut answer = kafka_raw::kafka_call(&mut s, ApiKey::InitProducerId, 2, &init);
        let id = InitProducerIdResponse::decode(&mut answer, 2).unwrap();
        assert_eq!(id.error_code, 0);
        let (pid, epoch) = (id.producer_id.0, id.producer_epoch);
        let mut add = AddPartitionsToTxnRequest::default();
        add.v3_and_below_transactional_id = txn_id();
        add.v3_and_below_producer_id = id.producer_id;
        add.v3_and_below_producer_epoch = epoch;
        add.v3_and_below_topics = vec![
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("stray")))
                .with_partitions(vec![0]),
        ];
        let mut answer = kafka_raw::kafka_call(&mut s, ApiKey::AddPartitionsToTxn, 3, &add);
        let added = AddPartitionsToTxnResponse::decode(&mut answer, 3).unwrap();
        assert_eq!(
            added.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
            0
        );
        let mut sequences = [0i32; 2];
        let mut produce = |s: &mut std::net::TcpStream, id: &'static str, partition: i32| {
            let seq = &mut sequences[partition as usize];
            let record = Record {
                transactional: true,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: pid,
                producer_epoch: epoch,
                timestamp_type: TimestampType::Creation,
                offset: 0,
                sequence: *seq,
                timestamp: 1_700_000_000_000,
                key: None,
                value: Some(bytes::Bytes::from_static(b"stray")),
                headers: Default::default(),
            };
            let mut buf = bytes::BytesMut::new();
            let options = RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            };
            RecordBatchEncoder::encode(&mut buf, [record].iter(), &options).unwrap();
            let mut request = ProduceRequest::default();
            request.transactional_id = Some(TransactionalId(StrBytes::from_static_str(id)));
            request.acks = -1;
            request.timeout_ms = 10_000;
            request.topic_data = vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("stray")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(buf.freeze())),
                    ]),
            ];
            let mut answer = kafka_raw::kafka_call(s, ApiKey::Produce, 8, &request);
            let r = ProduceResponse::decode(&mut answer, 8).unwrap();
            let code = r.responses[0].partition_responses[0].error_code;
            if code == 0 {
                *seq += 1;
            }
            code
        };
        let mut codes = vec![
            produce(&mut s, "stray-writer", 1),
            produce(&mut s, "stray-writer", 0),
            produce(&mut s, "nobody", 1),
        ];
        let mut end = EndTxnRequest::default();
        end.transactional_id = txn_id();
        end.producer_id = id.producer_id;
        end.producer_epoch = epoch;
        end.committed = true;
        let mut answer = kafka_raw::kafka_call(&mut s, ApiKey::EndTxn, 3, &end);
        assert_eq!(
            EndTxnResponse::decode(&mut answer, 3).unwrap().error_code,
            0
        );
        codes.push(produce(&mut s, "stray-writer", 0));
        codes
    })
    .await
    .unwrap();
    // Refused (48), written, refused, refused once the transaction ended.
    assert_eq!(outcome, vec![48, 0, 48, 48]);
    // Nothing of the refused batches is stored; the committed one is readable.
    let client = broker.client().await;
    let values = read_native(&client, "stray", 1).await;
    assert_eq!(values, vec!["stray".to_string()]);
    let (latest, _) = client
        .list_offset("stray", 1, meridian_client::OffsetSpec::Latest)
        .await
        .unwrap();
    assert_eq!(latest, 0, "partition 1 holds nothing");
}

/// A topic's own default outcome (`topic create --txn-default commit`, set through the
/// control plane) decides a native transaction nobody answers for, over the brokers'
/// default (rollback); `topic alter --txn-default broker` gives the decision back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topics_default_outcome_decides_an_unanswered_transaction() {
    use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion, meridian_control};
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlaneProcess::embedded(tmp.path(), &["--region", "r"]).await;
    let flags = [
        "--txn-check-back-attempts",
        "1",
        "--txn-check-back-backoff-ms",
        "100",
    ];
    let region = ManagedRegion::start(tmp.path(), "r", 1, &cp.addr, &flags)
        .await
        .unwrap();
    let create = [
        "topic",
        "create",
        "ledger",
        "--partitions",
        "1",
        "--replicas",
        "1",
    ];
    let (code, _, err) = meridian_control(
        &cp.addr,
        &[&create[..], &["--txn-default", "commit"]].concat(),
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = meridian_control(&cp.addr, &["--json", "topic", "describe", "ledger"]);
    assert_eq!(code, 0, "{err}");
    let described: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(described["txn_default"], "commit", "{described}");
    let (code, _, err) = meridian_control(
        &cp.addr,
        &["topic", "alter", "ledger", "--txn-default", "maybe"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("commit") && err.contains("rollback"), "{err}");
    let client = region.client().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while client.describe_topic("ledger").await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the topic never reached its broker"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let broker = region.brokers[0].addr;
    let bootstrap = region.bootstrap();
    let abandon = |id: &str| {
        let args = [
            "txn",
            "produce",
            "--id",
            id,
            "--producer-group",
            "nobody-home",
            "--timeout-ms",
            "1000",
            "--end",
            "open",
            "ledger",
            "half",
        ];
        let mut sender = Cli::start(&bootstrap, &args);
        sender.line();
        sender.kill9();
    };
    abandon("led-1");
    let t = wait_phase(broker, "led-1", "complete-commit").await;
    assert_eq!(t["decided_by"], "default", "{t}");
    assert_eq!(read_native(&client, "ledger", 1).await, ["half"]);

    let (code, _, err) = meridian_control(
        &cp.addr,
        &["topic", "alter", "ledger", "--txn-default", "broker"],
    );
    assert_eq!(code, 0, "{err}");
    // The broker applies the view within a second or two; a transaction begun after it has
    // timed out and run out of check-backs well after that.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    abandon("led-2");
    let t = wait_phase(broker, "led-2", "complete-abort").await;
    assert_eq!(t["decided_by"], "default", "{t}");
    assert_eq!(read_native(&client, "ledger", 1).await, ["half"]);
}
