//! Kafka clients against a broker's Kafka listener, with a real third-party client: kcat
//! (librdkafka), which the test script installs. Metadata lists the cluster; produce and
//! consume keep keys, headers and timestamps; every compression codec; 10,000 messages in
//! order on one partition; the same topic over gRPC and Kafka; offsets by time; an
//! oversized message and an unknown topic are refused with Kafka's errors; garbage on the
//! port closes that connection and nothing else.

use std::io::Write;
use std::net::SocketAddr;
use std::process::Command;

use meridian_client::{ProducerConfig, Record};
use meridian_tests::{BrokerProcess, free_addr};

/// Runs kcat (Debian's kcat, which the test script installs) with `args` against `kafka`,
/// feeding `stdin`; (exit code, stdout, stderr).
fn kcat(kafka: SocketAddr, args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", &kafka.to_string()]).args(args);
    meridian_tests::run(cmd, stdin)
}

fn consume(kafka: SocketAddr, topic: &str, format: &str) -> Vec<String> {
    let (code, out, err) = kcat(
        kafka,
        &[
            "-C",
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            format,
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    out.lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_lists_produces_and_consumes_through_the_kafka_listener() {
    let tmp = tempfile::tempdir().unwrap();
    let kafka = free_addr();
    let kafka_flag = kafka.to_string();
    let broker = BrokerProcess::start(tmp.path(), &["--kafka-listen", &kafka_flag])
        .await
        .unwrap();
    let client = broker.client().await;
    client.create_topic("orders", 3).await.unwrap();
    client.create_topic("seq", 1).await.unwrap();

    // kcat -L lists the cluster: this broker, the topics, each partition's leader.
    let (code, out, err) = kcat(kafka, &["-L"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("broker 1 at {kafka}")), "{out}");
    assert!(out.contains("topic \"orders\" with 3 partitions"), "{out}");
    assert!(out.contains("partition 2, leader 1"), "{out}");

    // Keys, headers and timestamps survive the round trip.
    let (code, _, err) = kcat(
        kafka,
        &[
            "-P",
            "-t",
            "orders",
            "-K",
            ":",
            "-H",
            "trace=abc",
            "-H",
            "tenant=7",
        ],
        Some(b"k1:first\nk2:second\nk1:third\n"),
    );
    assert_eq!(code, 0, "{err}");
    let mut got = consume(kafka, "orders", "%k=%s|%h|%T\n");
    got.sort();
    assert_eq!(got.len(), 3, "{got:?}");
    for (line, want) in got.iter().zip(["k1=first", "k1=third", "k2=second"]) {
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(parts[0], want);
        assert_eq!(parts[1], "trace=abc,tenant=7");
        assert!(
            parts[2].parse::<i64>().unwrap() > 1_700_000_000_000,
            "{line}"
        );
    }
    // Same key, same partition, in order.
    let by_partition = consume(kafka, "orders", "%p %k %s\n");
    let k1: Vec<&String> = by_partition.iter().filter(|l| l.contains(" k1 ")).collect();
    assert_eq!(k1.len(), 2);
    assert_eq!(k1[0].split(' ').next(), k1[1].split(' ').next());

    // Every compression codec.
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let input = format!("{codec}-a\n{codec}-b\n");
        let (code, _, err) = kcat(
            kafka,
            &["-P", "-t", "seq", "-p", "0", "-z", codec],
            Some(input.as_bytes()),
        );
        assert_eq!(code, 0, "{codec}: {err}");
    }
    let codecs = consume(kafka, "seq", "%s\n");
    assert_eq!(
        codecs,
        [
            "none-a", "none-b", "gzip-a", "gzip-b", "snappy-a", "snappy-b", "lz4-a", "lz4-b",
            "zstd-a", "zstd-b"
        ]
    );

    // 10,000 messages in order on one partition.
    let many: String = (0..10_000).map(|i| format!("m{i}\n")).collect();
    let (code, _, err) = kcat(
        kafka,
        &["-P", "-t", "seq", "-p", "0"],
        Some(many.as_bytes()),
    );
    assert_eq!(code, 0, "{err}");
    let all = consume(kafka, "seq", "%o %s\n");
    assert_eq!(all.len(), 10_010);
    for (i, line) in all[10..].iter().enumerate() {
        assert_eq!(line, &format!("{} m{i}", i + 10));
    }

    // One topic, two protocols: gRPC produces, Kafka consumes, and the other way round.
    let producer = client.producer(ProducerConfig::default());
    producer
        .send(Record::new("orders", "from-grpc").key("g"))
        .await
        .await
        .unwrap();
    assert!(consume(kafka, "orders", "%k=%s\n").contains(&"g=from-grpc".to_owned()));
    let held = meridian_tests::read_all(&client, "orders").await;
    let values: Vec<Vec<u8>> = held.values().flatten().map(|(_, v)| v.clone()).collect();
    assert!(values.contains(&b"first".to_vec()));

    // Offsets by time: before everything is offset 0; the latest is the end.
    let (code, out, err) = kcat(kafka, &["-Q", "-t", "seq:0:1000"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("seq [0] offset 0"), "{out}");

    // A message over the broker's limit (1 MiB) is refused as Kafka refuses it.
    let big = vec![b'x'; 1_500_000];
    let (_, _, err) = kcat(
        kafka,
        &[
            "-P",
            "-t",
            "seq",
            "-p",
            "0",
            "-X",
            "message.max.bytes=10000000",
        ],
        Some(&big),
    );
    assert!(err.contains("Message size too large"), "{err}");
    // A message of about 1 MiB, under the limit, goes through.
    let (code, _, err) = kcat(
        kafka,
        &[
            "-P",
            "-t",
            "orders",
            "-p",
            "0",
            "-X",
            "message.max.bytes=3000000",
        ],
        Some(&vec![b'y'; 1_040_000]),
    );
    assert_eq!(code, 0, "{err}");
    let sizes = consume(kafka, "orders", "%S\n");
    assert!(sizes.contains(&"1040000".to_owned()), "{sizes:?}");

    // An unknown topic is reported.
    let (_, _, err) = kcat(kafka, &["-C", "-t", "nope", "-o", "beginning", "-e"], None);
    assert!(err.contains("Unknown topic or partition"), "{err}");

    // Garbage on the Kafka port closes that connection; the broker serves on.
    for junk in [
        &b"\x00\x00\x00\x10garbage-garbage!"[..],
        b"\x7f\xff\xff\xff",
        b"\x00\x00\x00\x08\x00\x12\x00\x09\x00\x00",
    ] {
        let mut s = std::net::TcpStream::connect(kafka).unwrap();
        let _ = s.write_all(junk);
    }
    let (code, out, _) = kcat(kafka, &["-L"], None);
    assert_eq!(code, 0);
    assert!(out.contains("orders"));
    assert!(broker.running(), "the broker survived garbage");
}
