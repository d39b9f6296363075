//! A single broker as a user meets it: real process, real client, real failures.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_client::{ClientError, ConsumerConfig, ProducerConfig, Record, StartFrom};
use meridian_tests::{BrokerProcess, http_get, meridian};

async fn read_all(b: &BrokerProcess, topic: &str) -> BTreeMap<u32, Vec<(u64, Vec<u8>)>> {
    meridian_tests::read_all(&b.client().await, topic).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_produce_loses_nothing_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&tmp.path().join("b1"), &["--flush", "fsync"])
        .await
        .unwrap();
    let client = broker.client().await;
    client.create_topic("orders", 4).await.unwrap();

    // Four producers send keyed messages; every acknowledgment is recorded.
    let acked: Arc<Mutex<Vec<(u32, u64, String)>>> = Arc::default();
    let mut producers = Vec::new();
    for p in 0..4u32 {
        let client = client.clone();
        let acked = acked.clone();
        producers.push(tokio::spawn(async move {
            let producer = client.producer(ProducerConfig {
                linger: Duration::from_millis(1),
                ..ProducerConfig::default()
            });
            for i in 0..50_000u32 {
                let value = format!("p{p}-m{i}");
                let f = producer
                    .send(Record::new("orders", value.clone()).partition(p))
                    .await;
                // Await in windows so that the kill lands amid in-flight batches.
                let acked = acked.clone();
                tokio::spawn(async move {
                    if let Ok(meta) = f.await {
                        acked
                            .lock()
                            .unwrap()
                            .push((meta.partition, meta.offset, value));
                    }
                });
                if i % 500 == 499 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }));
    }
    // Kill once a good share is acknowledged.
    while acked.lock().unwrap().len() < 20_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    broker.kill9();
    for p in producers {
        let _ = p.await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let acked = acked.lock().unwrap().clone();

    broker.restart().await.unwrap();
    let stored = read_all(&broker, "orders").await;
    for (p, messages) in &stored {
        // Offsets are dense and start at 0; each partition's values are in send order.
        for (i, (offset, _)) in messages.iter().enumerate() {
            assert_eq!(*offset, i as u64, "partition {p} offsets are not dense");
        }
        let seq: Vec<u32> = messages
            .iter()
            .map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split("-m")
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(
            seq.windows(2).all(|w| w[0] < w[1]),
            "partition {p} is out of order or has duplicates"
        );
    }
    let mut lost = 0;
    for (partition, offset, value) in &acked {
        let got = stored.get(partition).and_then(|m| m.get(*offset as usize));
        if got.map(|(_, v)| v.as_slice()) != Some(value.as_bytes()) {
            lost += 1;
        }
    }
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged messages were lost or changed",
        acked.len()
    );
    eprintln!(
        "kill -9: {} acknowledged before the kill, all {} readable after restart",
        acked.len(),
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_and_restart_resumes_offsets_and_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(&tmp.path().join("b1"), &["--flush", "async"])
        .await
        .unwrap();
    let client = broker.client().await;
    client.create_topic("events", 2).await.unwrap();
    let producer = client.producer(ProducerConfig::default());
    let mut acks = Vec::new();
    for i in 0..1000 {
        acks.push(
            producer
                .send(Record::new("events", format!("e{i}")).key(format!("k{}", i % 7)))
                .await,
        );
    }
    for a in acks {
        a.await.unwrap();
    }
    client
        .commit_offset("billing", "events", 1, 17)
        .await
        .unwrap();
    let status = broker.terminate();
    assert!(status.success(), "SIGTERM exit status {status}");
    assert!(broker.log_text().contains("region-broker stopped"));

    broker.restart().await.unwrap();
    let client = broker.client().await;
    let stored = read_all(&broker, "events").await;
    assert_eq!(stored.values().map(Vec::len).sum::<usize>(), 1000);
    assert_eq!(
        client
            .committed_offset("billing", "events", 1)
            .await
            .unwrap(),
        Some(17)
    );
    assert_eq!(
        client
            .committed_offset("billing", "events", 0)
            .await
            .unwrap(),
        None
    );
    // Async flush still went through a clean shutdown: nothing needed re-indexing.
    assert!(
        broker.log_text().contains("records_reindexed=0"),
        "log:\n{}",
        broker.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_fetch_wakes_on_new_data_and_seek_by_time_works() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&tmp.path().join("b1"), &[])
        .await
        .unwrap();
    let client = broker.client().await;
    client.create_topic("ticks", 1).await.unwrap();
    let mut consumer = client.consumer(ConsumerConfig::default());
    consumer.assign("ticks", &[0]).await.unwrap();
    let waiter = tokio::spawn(async move { consumer.poll(Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let producer = client.producer(ProducerConfig::default());
    producer
        .send(Record::new("ticks", "first"))
        .await
        .await
        .unwrap();
    let got = waiter.await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value.as_deref(), Some(&b"first"[..]));

    let before_second = got[0].append_time_ms + 1;
    tokio::time::sleep(Duration::from_millis(20)).await;
    producer
        .send(Record::new("ticks", "second"))
        .await
        .await
        .unwrap();
    let (offset, time) = client
        .list_offset("ticks", 0, meridian_client::OffsetSpec::Time(before_second))
        .await
        .unwrap();
    assert_eq!(offset, 1);
    assert!(time.unwrap() >= before_second);
    let mut consumer = client.consumer(ConsumerConfig {
        start: StartFrom::Time(before_second),
        ..ConsumerConfig::default()
    });
    consumer.assign("ticks", &[0]).await.unwrap();
    let got = consumer.poll(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        got.iter().map(|m| m.value.as_deref()).collect::<Vec<_>>(),
        vec![Some(&b"second"[..])]
    );
}

fn broker_error(e: ClientError) -> (tonic::Code, String) {
    match e {
        ClientError::Broker { code, message } => (code, message),
        other => panic!("expected a broker error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_precise_errors_and_never_kills_the_broker() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        &tmp.path().join("b1"),
        &["--message-bytes-max", "1000", "--batch-bytes-max", "5000"],
    )
    .await
    .unwrap();
    let client = broker.client().await;
    client.create_topic("t", 2).await.unwrap();
    use meridian_proto::v1;
    let mut rpc = v1::broker_client::BrokerClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap()
        .max_encoding_message_size(usize::MAX);
    let msg = |n: usize| v1::Message {
        value: vec![b'x'; n].into(),
        ..v1::Message::default()
    };
    let produce = |topic: &str, partition, messages| v1::ProduceRequest {
        topic: topic.into(),
        partition,
        messages,
        acks: 0,
        epoch: 0,
        producer: None,
        transactional: false,
        transactional_id: String::new(),
        deliver_at_ms: 0,
    };

    let cases: Vec<(v1::ProduceRequest, tonic::Code, &str)> = vec![
        (
            produce("missing", 0, vec![msg(1)]),
            tonic::Code::NotFound,
            "unknown topic \"missing\"",
        ),
        (
            produce("t", 7, vec![msg(1)]),
            tonic::Code::NotFound,
            "there is no partition 7",
        ),
        (
            produce("t", 0, vec![]),
            tonic::Code::InvalidArgument,
            "at least one message",
        ),
        (
            produce("t", 0, vec![msg(2000)]),
            tonic::Code::InvalidArgument,
            "the limit is 1000 bytes",
        ),
        (
            produce("t", 0, vec![msg(900); 8]),
            tonic::Code::InvalidArgument,
            "the batch is",
        ),
        (
            produce("t", 0, vec![msg(3 << 20)]),
            tonic::Code::OutOfRange,
            "message length too large",
        ),
    ];
    for (request, code, text) in cases {
        let status = rpc.produce(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(text),
            "{:?} does not mention {text:?}",
            status.message()
        );
    }
    // A transactional batch names its producer (as the transaction's begin answered).
    let anonymous_txn = v1::ProduceRequest {
        transactional: true,
        ..produce("t", 0, vec![msg(1)])
    };
    let refused = rpc.produce(anonymous_txn).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert!(
        refused.message().contains("needs its producer"),
        "{}",
        refused.message()
    );
    let bad_acks = v1::ProduceRequest {
        acks: 42,
        ..produce("t", 0, vec![msg(1)])
    };
    assert!(
        rpc.produce(bad_acks)
            .await
            .unwrap_err()
            .message()
            .contains("unknown acks")
    );

    let (code, message) = broker_error(client.create_topic("bad/name", 1).await.unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument);
    assert!(message.contains("'/'"), "{message}");
    let (code, _) = broker_error(client.create_topic("t", 1).await.unwrap_err());
    assert_eq!(code, tonic::Code::AlreadyExists);
    let (code, message) = broker_error(client.create_topic("huge", 100_000).await.unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");

    let fetch = v1::FetchRequest {
        topic: "t".into(),
        partition: 0,
        offset: 5,
        max_bytes: 0,
        max_wait_ms: 0,
    };
    let status = rpc.fetch(fetch).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange);
    assert!(
        status.message().contains("valid offsets are 0..=0"),
        "{}",
        status.message()
    );
    let (code, message) = broker_error(client.commit_offset("", "t", 0, 1).await.unwrap_err());
    assert_eq!(code, tonic::Code::InvalidArgument, "{message}");

    // Raw garbage on the gRPC port: the connection is refused, the broker lives on.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for garbage in [
        &b"\x00\x01\x02 not http/2 at all\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\xff\xff\xff\xff\xff\xff\xff\xff\xff",
    ] {
        let mut s = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    }
    client
        .producer(ProducerConfig::default())
        .send(Record::new("t", "still alive").partition(0))
        .await
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_is_refused_with_the_key_named() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("broker.toml");
    std::fs::write(
        &config,
        "log_groups = 4\n[storage]\nsegment_bytes = 65536\n",
    )
    .unwrap();
    let out = std::process::Command::new(meridian_tests::binary("region-broker"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "--data-dir",
            tmp.path().join("d").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("batch_bytes_max") && stderr.contains("segment_bytes"),
        "{stderr}"
    );

    std::fs::write(&config, "log_groupz = 4\n").unwrap();
    let out = std::process::Command::new(meridian_tests::binary("region-broker"))
        .args(["--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("unknown field `log_groupz`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_fails_the_produce_and_keeps_what_was_acknowledged() {
    // A real full disk: a 6 MiB tmpfs. Needs root (CI runs as root).
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("small-disk");
    std::fs::create_dir(&mount).unwrap();
    let ok = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=6m",
            "tmpfs",
            mount.to_str().unwrap(),
        ])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "mounting a small tmpfs failed: this test needs root (CI runs as root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(mount.clone());

    let flags = [
        "--log-groups",
        "1",
        "--segment-bytes",
        "1048576",
        "--batch-bytes-max",
        "262144",
        "--message-bytes-max",
        "65536",
    ];
    let mut broker = BrokerProcess::start(&mount.join("b1"), &flags)
        .await
        .unwrap();
    let client = broker.client().await;
    client.create_topic("fill", 1).await.unwrap();
    let producer = client.producer(ProducerConfig::default());
    let mut acked = Vec::new();
    let error = loop {
        let value = format!("{:08}", acked.len()).repeat(4000);
        match producer
            .send(Record::new("fill", value.clone()))
            .await
            .await
        {
            Ok(meta) => acked.push((meta.offset, value)),
            Err(e) => break e,
        }
        assert!(acked.len() < 10_000, "the disk never filled");
    };
    let (code, message) = broker_error(error);
    assert_eq!(code, tonic::Code::ResourceExhausted, "{message}");
    assert!(message.contains("disk full"), "{message}");
    // Still refuses cleanly, then everything acknowledged is readable, before and after a
    // restart.
    assert!(
        producer
            .send(Record::new("fill", "x".repeat(40_000)))
            .await
            .await
            .is_err()
    );
    for round in 0..2 {
        let stored = read_all(&broker, "fill").await;
        let got = &stored[&0];
        assert_eq!(got.len(), acked.len(), "round {round}");
        for ((o, v), (ao, av)) in got.iter().zip(&acked) {
            assert_eq!((o, v.as_slice()), (ao, av.as_bytes()));
        }
        if round == 0 {
            assert!(broker.terminate().success());
            broker.restart().await.unwrap();
        }
    }
    eprintln!(
        "full disk: {} messages acknowledged before ENOSPC, all readable",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_prometheus_text() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&tmp.path().join("b1"), &[])
        .await
        .unwrap();
    let client = broker.client().await;
    client.create_topic("m", 1).await.unwrap();
    client
        .producer(ProducerConfig::default())
        .send(Record::new("m", "v"))
        .await
        .await
        .unwrap();
    let body = http_get(broker.metrics, "/metrics").await.unwrap();
    assert!(
        body.starts_with("HTTP/1.") && body.contains(" 200 "),
        "{body}"
    );
    assert!(body.contains("meridian_produce_messages_total 1"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_produces_consumes_and_resumes_a_group() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&tmp.path().join("b1"), &[])
        .await
        .unwrap();
    let addr = broker.addr;
    let run = move |args: &'static [&'static str], stdin: Option<&'static str>| {
        tokio::task::spawn_blocking(move || meridian(addr, args, stdin))
    };
    let (code, out, _) = run(&["topic", "create", "orders", "--partitions", "2"], None)
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("created topic orders with 2 partitions"));
    let (code, _, err) = run(&["produce", "orders", "--key", "c1", "a", "b", "c"], None)
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["produce", "orders", "--key", "c1"], Some("d\ne\n"))
        .await
        .unwrap();
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run(
        &[
            "consume",
            "orders",
            "--group",
            "g",
            "--from",
            "beginning",
            "--max",
            "3",
        ],
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert_eq!(out, "a\nb\nc\n");
    // The group resumes after what it printed.
    let (code, out, _) = run(
        &["consume", "orders", "--group", "g", "--idle-exit-ms", "500"],
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert_eq!(out, "d\ne\n");
    let (code, out, _) = run(&["--json", "topic", "describe", "orders"], None)
        .await
        .unwrap();
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let total: u64 = v["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["latest_offset"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 5);
    let (code, _, err) = run(&["produce", "nope", "x"], None).await.unwrap();
    assert_eq!(code, 1);
    assert!(
        err.starts_with("error: producing to nope: unknown topic"),
        "{err}"
    );
    let (code, _, err) = run(&["consume", "orders", "--from", "yesterday"], None)
        .await
        .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("RFC 3339"), "{err}");
    let (code, _, err) = run(&["produce", "orders", "--acks", "most", "x"], None)
        .await
        .unwrap();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("use leader, quorum or all"), "{err}");
}
