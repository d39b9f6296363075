//! MQTT clients against the brokers' MQTT listeners, with third-party clients: Debian's
//! mosquitto_pub and mosquitto_sub (3.1.1 and 5), the paho-mqtt Python client
//! (`kafka_clients/mqtt_paho.py`: MQTT 5's properties, sessions, shared subscriptions,
//! WebSocket) and kcat on the same topics. Every count is exact.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_tests::mqtt::{self, Sub, finish, mosquitto_sub, subscribed};
use meridian_tests::{Region, python_output, run};

/// A region of three raft brokers, each with Kafka and MQTT listeners, and topic `sensors`
/// (3 partitions) known to every broker.
async fn region(dir: &std::path::Path) -> Region {
    let region = Region::start_with_mqtt(dir, 3, &[]).await.unwrap();
    region
        .client()
        .await
        .create_topic("sensors", 3)
        .await
        .unwrap();
    // Each broker applies the creation a moment after it is acknowledged: a Kafka client
    // asking one that has not yet is told the topic is unknown.
    let deadline = Instant::now() + Duration::from_secs(10);
    for b in &region.brokers {
        let client = b.client().await;
        while client.describe_topic("sensors").await.is_err() {
            assert!(
                Instant::now() < deadline,
                "a broker never learned of sensors"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    region
}

fn mqtt_port(region: &Region, i: usize) -> String {
    region.mqtt[i].0.port().to_string()
}

/// `mosquitto_sub` at broker `i` reading `count` messages of `filter`, subscribed.
fn subscriber(
    region: &Region,
    i: usize,
    version: &str,
    qos: u8,
    filter: &str,
    count: usize,
) -> Sub {
    mqtt::subscriber(&mqtt_port(region, i), version, qos, filter, count)
}

/// `mosquitto_pub` at broker `i` sending each line of `lines` as one message to `topic`.
fn publish(
    region: &Region,
    i: usize,
    version: &str,
    qos: u8,
    topic: &str,
    lines: &str,
    extra: &[&str],
) {
    mqtt::publish(&mqtt_port(region, i), version, qos, topic, lines, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_publish_and_subscribe_at_every_qos_on_3_1_1_and_5() {
    let dir = tempfile::tempdir().unwrap();
    let region = region(dir.path()).await;
    const N: usize = 300;
    for version in ["mqttv311", "mqttv5"] {
        for qos in [0u8, 1, 2] {
            let tag = format!("{version}-q{qos}");
            // Broker 1's subscriber, broker 2's and 3's publishers: two topics under
            // one wildcard, each in order.
            let sub = subscriber(&region, 0, version, qos, &format!("sensors/+/{tag}"), 2 * N);
            let lines: String = (0..N).map(|i| format!("{i}\n")).collect();
            publish(
                &region,
                1,
                version,
                qos,
                &format!("sensors/a/{tag}"),
                &lines,
                &[],
            );
            publish(
                &region,
                2,
                version,
                qos,
                &format!("sensors/b/{tag}"),
                &lines,
                &[],
            );
            let got = finish(sub);
            let mut by_topic: BTreeMap<String, Vec<usize>> = BTreeMap::new();
            for (t, p) in got {
                by_topic.entry(t).or_default().push(p.parse().unwrap());
            }
            let want: Vec<usize> = (0..N).collect();
            for side in ["a", "b"] {
                assert_eq!(
                    by_topic.get(&format!("sensors/{side}/{tag}")),
                    Some(&want),
                    "{tag}: every message once, in order"
                );
            }
        }
    }
    // Each publish is a record of `sensors` keyed by its topic name: 2 × 300 × 6.
    meridian_tests::wait_until_held(
        &region.client().await,
        "sensors",
        3600,
        Duration::from_secs(20),
    )
    .await;
}

fn kcat(kafka: SocketAddr, args: &[&str], stdin: Option<&[u8]>) -> (i32, String, String) {
    let mut cmd = Command::new("kcat");
    cmd.arg("-b").arg(kafka.to_string()).args(args);
    run(cmd, stdin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_reads_what_devices_publish_and_devices_receive_what_kafka_writes() {
    let dir = tempfile::tempdir().unwrap();
    let region = region(dir.path()).await;
    // MQTT → Kafka: the topic name is the key, the payload the value, user properties
    // headers.
    let lines: String = (0..50).map(|i| format!("t{i}\n")).collect();
    publish(
        &region,
        0,
        "mqttv5",
        1,
        "sensors/kitchen/temp",
        &lines,
        &["-D", "publish", "user-property", "unit", "C"],
    );
    let (code, out, err) = kcat(
        region.kafka[1],
        &[
            "-C",
            "-t",
            "sensors",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k|%s|%h\n",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 50, "{out}");
    for (i, l) in got.iter().enumerate() {
        let parts: Vec<&str> = l.splitn(3, '|').collect();
        assert_eq!(parts[0], "sensors/kitchen/temp");
        assert_eq!(parts[1], format!("t{i}"), "one topic name keeps its order");
        assert!(
            parts[2].contains("unit=C") && parts[2].contains("mqtt.qos=1"),
            "{l}"
        );
    }
    // Kafka → MQTT: a key that is a topic name of `sensors` is delivered under it; a
    // keyless record under the topic's own name.
    let sub = subscriber(&region, 2, "mqttv311", 1, "sensors/#", 20);
    let sub_plain = subscriber(&region, 1, "mqttv5", 2, "sensors", 10);
    let keyed: String = (0..10)
        .map(|i| format!("sensors/door/{i}:open{i}\n"))
        .collect();
    let (code, _, err) = kcat(
        region.kafka[0],
        &["-P", "-t", "sensors", "-K", ":"],
        Some(keyed.as_bytes()),
    );
    assert_eq!(code, 0, "{err}");
    let plain: String = (0..10).map(|i| format!("k{i}\n")).collect();
    let (code, _, err) = kcat(
        region.kafka[0],
        &["-P", "-t", "sensors"],
        Some(plain.as_bytes()),
    );
    assert_eq!(code, 0, "{err}");
    let mut got = finish(sub);
    got.sort();
    let mut want: Vec<(String, String)> = (0..10)
        .map(|i| (format!("sensors/door/{i}"), format!("open{i}")))
        .chain((0..10).map(|i| ("sensors".to_owned(), format!("k{i}"))))
        .collect();
    want.sort();
    assert_eq!(got, want);
    let got_plain = finish(sub_plain);
    assert_eq!(got_plain.len(), 10);
    assert!(
        got_plain.iter().all(|(t, _)| t == "sensors"),
        "{got_plain:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_reach_every_broker_and_a_will_goes_out_only_on_an_ungraceful_end() {
    let dir = tempfile::tempdir().unwrap();
    let region = region(dir.path()).await;
    // Retained on broker 1, read on brokers 2 and 3; replaced, then cleared.
    publish(
        &region,
        0,
        "mqttv311",
        1,
        "sensors/hall/state",
        "on\n",
        &["-r"],
    );
    publish(
        &region,
        0,
        "mqttv5",
        1,
        "sensors/porch/state",
        "off\n",
        &["-r"],
    );
    let read_retained = |i: usize| {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt_port(&region, i),
            "-t",
            "sensors/+/state",
        ])
        .args(["-F", "%r %t %p", "--retained-only", "-W", "3"]);
        let (_, out, _) = run(cmd, None);
        let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in [1, 2] {
        loop {
            let got = read_retained(i);
            if got == ["1 sensors/hall/state on", "1 sensors/porch/state off"] {
                break;
            }
            if Instant::now() >= deadline {
                let (_, stored, _) = kcat(
                    region.kafka[0],
                    &[
                        "-C",
                        "-t",
                        "mqtt-retained",
                        "-o",
                        "beginning",
                        "-e",
                        "-q",
                        "-f",
                        "%o %k %s\n",
                    ],
                    None,
                );
                panic!(
                    "broker {} shows {got:?}; the retained topic holds (offset key value):\n{stored}",
                    i + 1
                );
            }
        }
    }
    let mut clear = Command::new("mosquitto_pub");
    clear
        .args(["-h", "127.0.0.1", "-p", &mqtt_port(&region, 1), "-q", "1"])
        .args(["-t", "sensors/hall/state", "-r", "-n"]);
    let (code, _, err) = run(clear, None);
    assert_eq!(code, 0, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = read_retained(2);
        if got == ["1 sensors/porch/state off"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "cleared retained still shown: {got:?}"
        );
    }
    // Wills: one client killed -9 (its will goes out), one disconnecting (none).
    let wills = subscriber(&region, 2, "mqttv5", 1, "sensors/will/#", 1);
    let will_client = |id: &str, i: usize, ends_after: &str| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &mqtt_port(&region, i), "-i", id])
            .args([
                "-t",
                "sensors/idle",
                "-k",
                "30",
                "--will-topic",
                &format!("sensors/will/{id}"),
            ])
            .args([
                "--will-payload",
                "gone",
                "--will-qos",
                "1",
                "-W",
                ends_after,
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    };
    // mosquitto_sub's -W timeout ends it with a DISCONNECT: no will.
    let mut graceful = will_client("graceful", 0, "2");
    let mut killed = will_client("killed", 1, "60");
    assert!(graceful.wait().unwrap().code().is_some());
    std::thread::sleep(Duration::from_millis(500));
    killed.kill().unwrap();
    let _ = killed.wait();
    let got = finish(wills);
    assert_eq!(
        got,
        vec![("sensors/will/killed".to_owned(), "gone".to_owned())]
    );
}

/// Sends `bytes` on a fresh connection after a valid CONNECT; what the broker answers
/// until it closes the connection.
fn raw(addr: SocketAddr, connect: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(connect).unwrap();
    let mut connack = [0u8; 4];
    if !connect.is_empty() && connect[8] == 4 {
        s.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 0], "CONNACK accepted");
    }
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_are_refused_and_other_clients_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let region = region(dir.path()).await;
    let addr = region.mqtt[0].0;
    // CONNECT, 3.1.1, clean session, keep-alive 60, client id "x".
    let connect: &[u8] = &[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'x',
    ];
    let sub = subscriber(&region, 0, "mqttv311", 1, "sensors/ok", 5);
    let started = Instant::now();
    let cases: &[(&str, &[u8], &[u8])] = &[
        ("garbage first", &[], b"\xff\xff\xff\xff\xff"),
        ("no CONNECT first", &[], &[0x30, 5, 0, 1, b'a', b'h', b'i']),
        (
            "MQTT 3.1 (MQIsdp)",
            &[],
            &[
                0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 0,
            ],
        ),
        ("a second CONNECT", connect, connect),
        (
            "a wildcard in a PUBLISH topic",
            connect,
            &[0x30, 7, 0, 3, b'a', b'/', b'#', b'h', b'i'],
        ),
        (
            "a topic name that is not UTF-8",
            connect,
            &[0x30, 6, 0, 2, 0xff, 0xfe, b'h', b'i'],
        ),
        (
            "a remaining length over the limit",
            connect,
            &[0x30, 0xff, 0xff, 0xff, 0x7f],
        ),
        (
            "a QoS 1 PUBLISH with packet id 0",
            connect,
            &[0x32, 8, 0, 3, b'a', b'/', b'b', 0, 0, b'h'],
        ),
        ("QoS 3", connect, &[0x36, 6, 0, 1, b'a', 0, 1, b'h']),
        ("a reserved packet type", connect, &[0xf0, 0]),
        ("a SUBSCRIBE without filters", connect, &[0x82, 2, 0, 1]),
    ];
    for (what, first, then) in cases {
        let answer = raw(addr, first, then);
        // Closed; at most a CONNACK refusing (3.1 level) before it.
        assert!(
            answer.is_empty() || answer == [0x20, 2, 0, 1],
            "{what}: {answer:?}"
        );
    }
    // The unknown 3.1 level got its refusal, "unacceptable protocol version".
    assert_eq!(
        raw(
            addr,
            &[],
            &[
                0x10, 14, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 0
            ]
        ),
        [0x20, 2, 0, 1]
    );
    // A client that sends no CONNECT at all is closed after the connect timeout.
    assert!(started.elapsed() < Duration::from_secs(30));
    let lines: String = (0..5).map(|i| format!("{i}\n")).collect();
    publish(&region, 1, "mqttv311", 1, "sensors/ok", &lines, &[]);
    assert_eq!(finish(sub).len(), 5, "the others were served throughout");
    let bad = region.brokers[0]
        .metric("meridian_mqtt_bad_packets_total")
        .await;
    assert!(bad >= 5.0, "bad packets counted: {bad}");
    assert!(region.brokers[0].running(), "no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_uses_mqtt5_properties_sessions_shares_and_websockets() {
    let dir = tempfile::tempdir().unwrap();
    let region = region(dir.path()).await;
    let tcp: Vec<String> = region.mqtt.iter().map(|m| m.0.to_string()).collect();
    let ws: Vec<String> = region.mqtt.iter().map(|m| m.1.to_string()).collect();
    python_output("mqtt_paho.py", vec![tcp.join(","), ws.join(",")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_id_connected_at_another_broker_closes_its_first_connection() {
    let dir = tempfile::tempdir().unwrap();
    let region = region(dir.path()).await;
    // CONNECT, 3.1.1, clean session off (persistent), keep-alive 60, client id "twice".
    let connect: &[u8] = &[
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 60, 0, 5, b't', b'w', b'i', b'c', b'e',
    ];
    let connected = |i: usize| {
        let mut s = TcpStream::connect(region.mqtt[i].0).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(connect).unwrap();
        let mut connack = [0u8; 4];
        s.read_exact(&mut connack).unwrap();
        assert_eq!(connack[..2], [0x20, 2], "CONNACK");
        assert_eq!(connack[3], 0, "accepted");
        s
    };
    let mut first = connected(0);
    let started = Instant::now();
    let _second = connected(1);
    // 3.1.1 has no DISCONNECT from the server: the first connection just ends.
    let mut rest = Vec::new();
    let read = first.read_to_end(&mut rest);
    assert!(
        read.is_ok() && rest.is_empty(),
        "the first connection was not closed: {read:?} {rest:?} after {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_member_that_goes_away_unacknowledged_loses_nothing_to_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let region = region(dir.path()).await;
    let tcp: Vec<String> = region.mqtt.iter().map(|m| m.0.to_string()).collect();
    let ws: Vec<String> = region.mqtt.iter().map(|m| m.1.to_string()).collect();
    python_output(
        "mqtt_paho.py",
        vec![tcp.join(","), ws.join(","), "share-handoff".into()],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_resumes_at_another_broker_after_its_broker_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut region = region(dir.path()).await;
    const N: usize = 200;
    let ports: Vec<String> = (0..3).map(|i| mqtt_port(&region, i)).collect();
    let device = |i: usize, count: usize| {
        let mut cmd = mosquitto_sub();
        cmd.args(["-h", "127.0.0.1", "-p", &ports[i], "-V", "mqttv5"])
            .args([
                "-i",
                "device-7",
                "-c",
                "-x",
                "600",
                "-q",
                "2",
                "-t",
                "sensors/dev/#",
            ])
            .args(["-v", "-d", "-C", &count.to_string(), "-W", "120"]);
        subscribed(cmd)
    };
    // The device subscribes at broker 1 with a session that outlives its connection, reads
    // one message and goes away.
    let first = device(0, 1);
    publish(&region, 1, "mqttv5", 1, "sensors/dev/a", "warm-up\n", &[]);
    assert_eq!(
        finish(first),
        vec![("sensors/dev/a".to_owned(), "warm-up".to_owned())]
    );
    // While it is away, QoS 1 and QoS 2 messages for it, acknowledged at broker 2.
    let lines: String = (0..N).map(|i| format!("{i}\n")).collect();
    publish(&region, 1, "mqttv5", 1, "sensors/dev/a", &lines, &[]);
    publish(&region, 1, "mqttv5", 2, "sensors/dev/b", &lines, &[]);
    // Broker 1, which held the session, dies; the device comes back at broker 3.
    region.brokers[0].kill9();
    let back = device(2, 2 * N);
    // On a failure, what brokers 2 and 3 said of MQTT (the session's new home).
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| finish(back)));
    let got = got.unwrap_or_else(|e| {
        for b in [1usize, 2] {
            let log = region.brokers[b].log_text();
            let mqtt: Vec<&str> = log.lines().filter(|l| l.contains("mqtt")).collect();
            eprintln!("broker {} on MQTT:\n{}", b + 1, mqtt.join("\n"));
        }
        std::panic::resume_unwind(e)
    });
    let mut by_topic: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (t, p) in got {
        // The warm-up again: QoS 1 may deliver once more what the killed broker delivered
        // but had not yet recorded as acknowledged (at most `COMMIT_INTERVAL` of them).
        if p == "warm-up" {
            continue;
        }
        by_topic.entry(t).or_default().push(p.parse().unwrap());
    }
    let want: Vec<usize> = (0..N).collect();
    assert_eq!(
        by_topic.get("sensors/dev/a"),
        Some(&want),
        "QoS 1: all, once, in order"
    );
    assert_eq!(
        by_topic.get("sensors/dev/b"),
        Some(&want),
        "QoS 2: all, once, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_is_not_stored_is_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let region = region(dir.path()).await;
    // Stored once the retained messages are read (a retained PUBLISH right after the
    // region's first start waits for that).
    publish(
        &region,
        0,
        "mqttv311",
        1,
        "sensors/a/state",
        "on\n",
        &["-r"],
    );
    // Its retained copy cannot be written now.
    region
        .client()
        .await
        .delete_topic("mqtt-retained")
        .await
        .unwrap();
    // Gone at every broker (the partition's leader refuses the copy then).
    let deadline = Instant::now() + Duration::from_secs(10);
    for b in &region.brokers {
        let client = b.client().await;
        while client.describe_topic("mqtt-retained").await.is_ok() {
            assert!(Instant::now() < deadline, "the retained topic is not gone");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // 3.1.1 has no refusing PUBACK: the connection is closed unanswered (the client sends
    // it again when it reconnects), never acknowledged.
    let connect: &[u8] = &[
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'r',
    ];
    let mut publish_retained = vec![0x33, 21, 0, 15];
    publish_retained.extend_from_slice(b"sensors/a/state");
    publish_retained.extend_from_slice(&[0, 1, b'o', b'n']);
    let answer = raw(region.mqtt[0].0, connect, &publish_retained);
    assert!(answer.is_empty(), "answered {answer:?}");
    // MQTT 5 says why in the PUBACK (131: implementation specific error).
    let mut v5 = Command::new("mosquitto_pub");
    v5.args([
        "-h",
        "127.0.0.1",
        "-p",
        &mqtt_port(&region, 0),
        "-V",
        "mqttv5",
    ])
    .args(["-q", "1", "-r", "-t", "sensors/a/state", "-m", "on", "-d"]);
    let (code, out, err) = run(v5, None);
    assert!(
        out.contains("received PUBACK (Mid: 1, RC:131)"),
        "{code} {out} {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_publishes_are_stored_once_and_in_order_across_a_leader_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut region = region(dir.path()).await;
    // The partition the name lands on, its leader, and a broker that is not it.
    const NAME: &str = "sensors/flow/meter-1";
    let partition =
        meridian_proto::partition::for_key(NAME.as_bytes(), std::num::NonZeroU32::new(3).unwrap());
    let leader = region.new_leader("sensors", partition, usize::MAX).await;
    let at = (leader + 1) % 3;
    const N: usize = 3000;
    let mut publisher = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &mqtt_port(&region, at),
            "-V",
            "mqttv311",
        ])
        .args(["-q", "1", "-t", NAME, "-l", "-i", "meter-1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub runs (scripts/test.sh installs mosquitto-clients)");
    let mut stdin = publisher.stdin.take().unwrap();
    let feeding = std::thread::spawn(move || {
        for i in 0..N {
            writeln!(stdin, "{i}").unwrap();
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Dropping stdin ends the input: mosquitto_pub waits for every PUBACK, then ends.
    });
    // The partition's leader dies while the device publishes through another broker.
    tokio::time::sleep(Duration::from_millis(500)).await;
    region.brokers[leader].kill9();
    feeding.join().unwrap();
    let out = tokio::task::spawn_blocking(move || publisher.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "mosquitto_pub: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every acknowledged publish is stored once, in the order sent.
    let client = region.brokers[at].client().await;
    let held: Vec<String> = meridian_tests::read_all(&client, "sensors")
        .await
        .remove(&partition)
        .unwrap_or_default()
        .into_iter()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .collect();
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(held.len(), N, "stored {} of {N} publishes", held.len());
    assert_eq!(held, want, "once each, in order");
}
