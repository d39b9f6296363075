//! The Kafka listener's bounds, against a real broker: connections per client address and
//! in all are limited (a connection past a limit is closed at once, the others go on being
//! served), idle connections and requests whose bytes stop arriving half-way are closed
//! after the idle timeout, and the broker serves new clients throughout; all connections
//! together hold at most `kafka.request_memory_max` bytes of request frames.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use meridian_tests::{BrokerProcess, free_addr};

/// A connection to `to` from the local address `from` (127.0.0.x), as a blocking stream.
fn connect_bound(from: [u8; 4], to: SocketAddr) -> TcpStream {
    tokio::runtime::Handle::current().block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(SocketAddr::from((from, 0)))
            .expect("binding a loopback address");
        let stream = socket
            .connect(to)
            .await
            .expect("connecting to the Kafka listener");
        let stream = stream.into_std().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream
    })
}

/// Whether the broker closed `stream` (a read sees EOF or a reset within `wait`).
fn closed_by_broker(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

/// An ApiVersions request answered on `stream`: the broker serves this connection.
fn api_versions_answered(stream: &mut TcpStream) -> bool {
    use bytes::{Buf, BufMut};
    // ApiVersions v0: length, api key 18, version 0, correlation id 1, client id "t".
    let mut frame = bytes::BytesMut::new();
    frame.put_i32(2 + 2 + 4 + 2 + 1);
    frame.put_i16(18);
    frame.put_i16(0);
    frame.put_i32(1);
    frame.put_i16(1);
    frame.put_slice(b"t");
    if stream.write_all(&frame).is_err() {
        return false;
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut len = [0u8; 4];
    if stream.read_exact(&mut len).is_err() {
        return false;
    }
    let mut answer = vec![0u8; (&len[..]).get_i32() as usize];
    stream.read_exact(&mut answer).is_ok() && (&answer[..4]).get_i32() == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_connections_are_bounded_and_idle_ones_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let kafka = free_addr();
    let kafka_flag = kafka.to_string();
    let _broker = BrokerProcess::start(
        tmp.path(),
        &[
            "--kafka-listen",
            &kafka_flag,
            "--kafka-connections-per-address-max",
            "20",
            "--kafka-connections-max",
            "30",
            "--kafka-idle-timeout-ms",
            "2000",
        ],
    )
    .await
    .unwrap();
    tokio::task::spawn_blocking(move || {
        // Twenty from one address are served; the twenty-first is closed at once.
        let mut first: Vec<TcpStream> = (0..20)
            .map(|_| connect_bound([127, 0, 0, 1], kafka))
            .collect();
        assert!(api_versions_answered(&mut first[19]));
        let mut over = connect_bound([127, 0, 0, 1], kafka);
        assert!(
            closed_by_broker(&mut over, Duration::from_secs(5)),
            "a connection past the per-address limit is closed"
        );
        // Another address is served: ten more fill the listener's thirty.
        let mut second: Vec<TcpStream> = (0..10)
            .map(|_| connect_bound([127, 0, 0, 2], kafka))
            .collect();
        assert!(api_versions_answered(&mut second[9]));
        let mut third = connect_bound([127, 0, 0, 3], kafka);
        assert!(
            closed_by_broker(&mut third, Duration::from_secs(5)),
            "a connection past the listener's limit is closed"
        );
        // A request whose bytes stop half-way is closed after the idle timeout.
        let mut half = second.pop().unwrap();
        half.write_all(&[0, 0, 0, 100]).unwrap();
        half.write_all(&[0u8; 10]).unwrap();
        assert!(
            closed_by_broker(&mut half, Duration::from_secs(10)),
            "a half-sent request is closed"
        );
        // Idle connections are closed after the idle timeout, and give their places back:
        // a new client from the first address is served.
        for s in first.iter_mut().chain(second.iter_mut()) {
            assert!(
                closed_by_broker(s, Duration::from_secs(10)),
                "an idle connection is closed"
            );
        }
        let mut again = connect_bound([127, 0, 0, 1], kafka);
        assert!(
            api_versions_answered(&mut again),
            "served again once the idle ones closed"
        );
    })
    .await
    .unwrap();
}

/// The consumer groups a broker's coordinator knows, by name and state (gRPC
/// ListConsumerGroups).
async fn groups(broker: &BrokerProcess) -> Vec<(String, String)> {
    let mut client =
        meridian_proto::v1::broker_client::BrokerClient::connect(format!("http://{}", broker.addr))
            .await
            .unwrap();
    let mut out: Vec<(String, String)> = client
        .list_consumer_groups(meridian_proto::v1::ListConsumerGroupsRequest {})
        .await
        .unwrap()
        .into_inner()
        .groups
        .into_iter()
        .map(|g| (g.name, g.state))
        .collect();
    out.sort();
    out
}

/// A kcat consumer of `topic` in `group`, its output thrown away.
fn kcat_member(kafka: SocketAddr, group: &str, topic: &str) -> std::process::Child {
    std::process::Command::new("kcat")
        .args(["-b", &kafka.to_string(), "-G", group, "-q", topic])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kcat")
}

/// Waits (up to 30 s) until the broker's groups are `want`.
async fn until_groups(broker: &BrokerProcess, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = groups(broker).await;
        if now == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "groups {now:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The coordinator's memory is bounded: past `kafka.groups_max` a new group is refused
/// (COORDINATOR_NOT_AVAILABLE, which a client retries), and a group whose last member left
/// is forgotten after `kafka.empty_group_expiry_ms`, making room for the waiting one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_kafka_groups_are_forgotten_and_groups_are_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let kafka = free_addr();
    let kafka_flag = kafka.to_string();
    let broker = BrokerProcess::start(
        tmp.path(),
        &[
            "--kafka-listen",
            &kafka_flag,
            "--kafka-groups-max",
            "1",
            "--kafka-empty-group-expiry-ms",
            "1000",
        ],
    )
    .await
    .unwrap();
    broker.client().await.create_topic("jobs", 2).await.unwrap();
    let mut first = kcat_member(kafka, "first", "jobs");
    until_groups(&broker, &[("first", "Stable")]).await;
    // The limit is reached: the second group is refused and keeps asking.
    let mut second = kcat_member(kafka, "second", "jobs");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        groups(&broker).await,
        vec![("first".to_owned(), "Stable".to_owned())],
        "a group past kafka.groups_max is refused"
    );
    assert!(
        broker
            .log_text()
            .contains("refused a new Kafka consumer group"),
        "the refusal is logged"
    );
    // The first member leaves (SIGINT: kcat closes its consumer): the group is forgotten
    // after the expiry, and the second group gets its place.
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(first.id() as i32, libc::SIGINT) };
    let _ = first.wait();
    until_groups(&broker, &[("second", "Stable")]).await;
    let _ = second.kill();
    let _ = second.wait();
}

/// Request memory has a broker-wide cap, not only a per-connection one: eight connections
/// each sending half of a 60 MiB frame (240 MiB in all; before the cap they added 262 MB
/// to the broker) add at most `kafka.request_memory_max` (64 MiB here): past it a
/// connection waits, before its frame is read, for what the others release. Once they are
/// gone, the broker serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_memory_is_capped_across_all_kafka_connections() {
    const FRAME: usize = 60 << 20;
    const SENT: usize = 30 << 20;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("broker.toml");
    std::fs::write(
        &config,
        format!("[kafka]\nrequest_memory_max = {}\n", 64 << 20),
    )
    .unwrap();
    let kafka = free_addr();
    let kafka_flag = kafka.to_string();
    let broker = BrokerProcess::start(
        &tmp.path().join("broker"),
        &[
            "--kafka-listen",
            &kafka_flag,
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let pid = broker.pid();
    let before = meridian_tests::peak_rss(pid);
    let held: Vec<TcpStream> = tokio::task::spawn_blocking(move || {
        let senders: Vec<std::thread::JoinHandle<TcpStream>> = (0..8u8)
            .map(|i| {
                let mut s = connect_bound([127, 0, 0, 10 + i], kafka);
                std::thread::spawn(move || {
                    use bytes::BufMut;
                    let mut head = bytes::BytesMut::new();
                    head.put_i32(FRAME as i32);
                    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
                    let _ = s.write_all(&head);
                    let chunk = vec![0x5au8; 1 << 20];
                    for _ in 0..SENT / chunk.len() {
                        // A connection past the budget is not read: its writes time out.
                        if s.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    s
                })
            })
            .collect();
        senders.into_iter().map(|t| t.join().unwrap()).collect()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let added = meridian_tests::peak_rss(pid).saturating_sub(before);
    eprintln!(
        "8 connections sent {} MiB of frames; the broker's peak memory grew {} MiB",
        (8 * SENT) >> 20,
        added >> 20
    );
    assert!(
        added < 100 << 20,
        "request frames added {} MiB, past the 64 MiB cap",
        added >> 20
    );
    drop(held);
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let mut fresh = connect_bound([127, 0, 0, 1], kafka);
            if api_versions_answered(&mut fresh) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the broker did not serve again once the senders left"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
}
