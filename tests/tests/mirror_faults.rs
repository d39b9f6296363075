//! A stalled broker stalls only its own log groups: with one broker of the origin region
//! SIGSTOPped (its process hangs, its connections stay open, nothing answers), the mirror
//! follows every log group to its live leader, and what they acknowledge reaches the other
//! region — once each — without waiting minutes for the stalled broker. (In one run it also
//! passed against the earlier client that sent every group's reads through one current
//! broker: it guards the property, it does not reproduce the reported multi-minute stall.)
//!
//! A link that is up but whose receiving region cannot apply what it ships (that region's
//! broker SIGSTOPped) is reported stalled, with why, by the receiving mirror's metrics
//! (what the console shows) and `meridian mirror status`, and delivers everything once the
//! broker is back.
//!
//! And the mirror's QUIC listener is bounded: connections past its limits, in all and per
//! address, are refused while the admitted ones are served.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use meridian_client::{Client, ProducerConfig, Record};
use meridian_tests::mirror::{MirrorProcess, free_udp_addr, issue_certs, link_pair};
use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion, meridian_control};
use meridian_tests::read_all;

const TOPIC: &str = "stall";

/// Every value `client` reads of the topic, by partition.
async fn held(client: &Client) -> BTreeMap<u32, Vec<String>> {
    read_all(client, TOPIC)
        .await
        .into_iter()
        .map(|(p, values)| {
            let values = values
                .into_iter()
                .map(|(_, v)| String::from_utf8(v).unwrap())
                .collect();
            (p, values)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_broker_stalls_only_the_mirroring_of_its_own_log_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    issue_certs(&certs, &["x", "y"]);
    let cp = ControlPlaneProcess::embedded(tmp.path(), &["--region", "x", "--region", "y"]).await;
    let mut x = ManagedRegion::start(tmp.path(), "x", 3, &cp.addr, &[])
        .await
        .unwrap();
    let y = ManagedRegion::start(tmp.path(), "y", 3, &cp.addr, &[])
        .await
        .unwrap();
    // Three replicas per log group: the stalled broker's groups elect other leaders; the
    // mirror must follow each group to its own leader.
    let (code, _, err) = meridian_control(
        &cp.addr,
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "6",
            "--replicas",
            "3",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let _mirrors = link_pair(tmp.path(), &cp.addr, ("x", "y"), &certs);

    let cx = x.client().await;
    // The topic's groups elect their leaders right after it is created.
    let deadline = Instant::now() + Duration::from_secs(30);
    let topic = loop {
        match cx.describe_topic(TOPIC).await {
            Ok(t) => break t,
            Err(e) => assert!(Instant::now() < deadline, "describe {TOPIC}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The broker to stall: the preferred leader of partition 0's log group.
    let placements = x.groups().await;
    let g0 = topic.partitions[0].log_group;
    let stalled = placements
        .iter()
        .find(|pl| pl.id == g0)
        .and_then(|pl| pl.replicas.first().copied())
        .expect("partition 0's log group is placed");

    // Mirroring works before the stall.
    let producer = cx.producer(ProducerConfig::default());
    let mut sent = Vec::new();
    for p in 0..6 {
        let v = format!("before-{p}");
        producer
            .send(Record::new(TOPIC, v.clone()).partition(p))
            .await
            .await
            .unwrap();
        sent.push((p, v));
    }
    let cy = y.client().await;
    let wait_for = async |sent: &[(u32, String)], limit: Duration| -> Option<Duration> {
        let start = Instant::now();
        loop {
            let in_y = held(&cy).await;
            let all = sent
                .iter()
                .all(|(p, v)| in_y.get(p).is_some_and(|vs| vs.contains(v)));
            if all {
                return Some(start.elapsed());
            }
            if start.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    wait_for(&sent, Duration::from_secs(60))
        .await
        .expect("mirrored before the stall");

    // Stall that broker; write to every partition through a client of the live brokers
    // (the stalled broker's groups elect new leaders).
    x.brokers[stalled as usize - 1].stop();
    let live_brokers: Vec<String> = x
        .brokers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u32 + 1 != stalled)
        .map(|(_, b)| b.addr.to_string())
        .collect();
    let at_live = Client::connect(&live_brokers.join(",")).await.unwrap();
    let producer = at_live.producer(ProducerConfig::default());
    // Until its groups elect new leaders, a produce may still go to the stalled broker:
    // such a send is given up after a few seconds and not counted (not acknowledged).
    let mut after = Vec::new();
    let mut given_up = 0;
    for i in 0..300u32 {
        let p = i % 6;
        let v = format!("during-{i}");
        let send = producer
            .send(Record::new(TOPIC, v.clone()).partition(p))
            .await;
        match tokio::time::timeout(Duration::from_secs(3), send).await {
            Ok(Ok(_)) => after.push((p, v)),
            Ok(Err(_)) | Err(_) => given_up += 1,
        }
    }
    assert!(
        after.len() >= 200,
        "{} acknowledged, {given_up} given up: writes go on once the groups have live leaders",
        after.len()
    );
    // Not 45 s per stuck request and several minutes in all, as when every group's
    // shipping went through the stalled broker first: each group follows its own leader.
    let took = wait_for(&after, Duration::from_secs(40)).await;
    let took = took.unwrap_or_else(|| {
        panic!("what live log groups acknowledged did not reach y within 40 s of a stall")
    });
    eprintln!(
        "with broker {stalled} of x stalled, the live groups' writes reached y {:.1} s after the last",
        took.as_secs_f64()
    );

    // Once each.
    x.brokers[stalled as usize - 1].signal(libc::SIGCONT);
    let in_y = held(&cy).await;
    for (p, values) in &in_y {
        let unique: HashSet<&String> = values.iter().collect();
        assert_eq!(
            unique.len(),
            values.len(),
            "partition {p} holds a value twice"
        );
    }
    let _ = &mut x;
}

/// A peer mirror of region `region` dialling from `local` (an address on loopback).
fn peer_endpoint(certs: &std::path::Path, region: &str, local: &str) -> quinn::Endpoint {
    let identity = meridian_mirror::tls::Identity::load(
        &certs.join("ca.pem"),
        &certs.join(format!("{region}.pem")),
        &certs.join(format!("{region}.key")),
    )
    .unwrap();
    let transport = meridian_mirror::tls::transport(&Default::default()).unwrap();
    let mut endpoint = quinn::Endpoint::client(format!("{local}:0").parse().unwrap()).unwrap();
    endpoint.set_default_client_config(identity.client_config(transport).unwrap());
    endpoint
}

async fn dial(
    endpoint: &quinn::Endpoint,
    to: std::net::SocketAddr,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let name = meridian_mirror::tls::server_name("y");
    tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(to, &name).unwrap(),
    )
    .await
    .expect("a refused or admitted connection is answered at once")
}

/// Dials until a connection is taken (20 s at most, else fails saying `never`).
async fn dial_until(
    endpoint: &quinn::Endpoint,
    to: std::net::SocketAddr,
    never: &str,
) -> quinn::Connection {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match dial(endpoint, to).await {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "{never}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_listener_refuses_connections_past_its_limits_and_serves_the_rest() {
    use meridian_proto::mirror::{Frame, VERSION};
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    issue_certs(&certs, &["x", "y"]);
    let listen = free_udp_addr();
    // No control plane: the listener serves (and refuses) without one.
    let control = meridian_tests::free_addr().to_string();
    let mirror = MirrorProcess::start(
        tmp.path(),
        "y",
        &control,
        listen,
        &[],
        &certs,
        &[
            "--connections-max",
            "3",
            "--connections-per-address-max",
            "2",
        ],
    );
    let (one, two, three) = (
        peer_endpoint(&certs, "x", "127.0.0.1"),
        peer_endpoint(&certs, "x", "127.0.0.2"),
        peer_endpoint(&certs, "x", "127.0.0.3"),
    );
    let first = dial_until(&one, listen, "the mirror never took a connection").await;
    let second = dial(&one, listen).await.expect("a second from one address");
    let refused = dial(&one, listen).await;
    assert!(
        matches!(refused, Err(quinn::ConnectionError::ConnectionClosed(_))),
        "a third from one address is refused: {refused:?}"
    );
    let other = dial(&two, listen)
        .await
        .expect("another address still gets in");
    // Refusals are logged at most once a second: this one gets its own line.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused = dial(&three, listen).await;
    assert!(refused.is_err(), "a fourth in all is refused: {refused:?}");
    assert_eq!(
        mirror
            .metric("meridian_mirror_connections_refused_total")
            .await,
        2.0
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = mirror.log_text();
        if log.contains("the limit per client address (connections_per_address_max)")
            && log.contains("the listener's limit (connections_max)")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "each refusal names the key to raise: {log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The admitted connections are served: a stream claiming the mirror's own region is
    // answered with a refusal frame, as the protocol says.
    let (mut send, mut recv) = other.open_bi().await.unwrap();
    let hello = Frame::Hello {
        version: VERSION,
        region: "y".into(),
        group: 1,
        topic: 0,
    };
    meridian_mirror::frames::write(&mut send, &hello)
        .await
        .unwrap();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        meridian_mirror::frames::read(&mut recv),
    )
    .await
    .expect("answered");
    assert!(
        matches!(answer, Ok(Some(Frame::Refuse { .. }))),
        "{answer:?}"
    );

    // A closed connection gives its place back.
    first.close(0u32.into(), b"done");
    let again = dial_until(
        &one,
        listen,
        "the closed connection's place never came back",
    )
    .await;
    drop((second, again, other));
}

/// The largest `meridian_mirror_stalled_seconds` a mirror reports for streams from
/// `origin`, with its reason.
async fn stalled(mirror: &MirrorProcess, origin: &str) -> (f64, String) {
    let page = meridian_tests::http_get(mirror.metrics, "/metrics")
        .await
        .unwrap_or_default();
    let mut worst = (0.0, String::new());
    for line in page.lines() {
        let Some(rest) = line.strip_prefix("meridian_mirror_stalled_seconds{") else {
            continue;
        };
        if !rest.contains(&format!("origin=\"{origin}\"")) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next().unwrap().parse().unwrap();
        let reason = rest
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_default();
        if value > worst.0 {
            worst = (value, reason.to_owned());
        }
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_up_whose_receiver_cannot_apply_reports_stalled_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let regions = meridian_tests::mirror::TwoRegions::start(tmp.path(), &[], &[]).await;
    regions.create_topic(TOPIC, 1).await;
    let (mx, my) = regions.link(tmp.path(), &[]);
    let (x, y) = (regions.x.client().await, regions.y.client().await);
    let producer = x.producer(ProducerConfig::default());
    let send = |from: u32| {
        let producer = &producer;
        async move {
            for i in from..from + 10 {
                producer
                    .send(Record::new(TOPIC, format!("m{i}")))
                    .await
                    .await
                    .unwrap();
            }
        }
    };
    send(0).await;
    meridian_tests::wait_until_held(&y, TOPIC, 10, Duration::from_secs(30)).await;
    assert_eq!(stalled(&my, "x").await.0, 0.0);
    let (code, health) = cluster_health(&regions.control.addr, &mx, &my);
    assert_eq!(code, 0, "{health}");
    assert!(health.contains("healthy: nothing is wrong"), "{health}");

    regions.y.brokers[0].signal(libc::SIGSTOP);
    send(10).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let (secs, reason) = loop {
        let (secs, reason) = stalled(&my, "x").await;
        if secs >= 10.0 {
            break (secs, reason);
        }
        assert!(
            Instant::now() < deadline,
            "never reported stalled ({secs} s)"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(reason, "unavailable", "{secs} s");
    assert_eq!(
        mx.metric("meridian_mirror_link_up").await,
        1.0,
        "the link itself stays up"
    );
    // The CLI says so too, naming why.
    let status = mirror_status(&regions.control.addr, &mx, &my);
    let line = status
        .lines()
        .find(|l| l.starts_with("x → y"))
        .unwrap_or_else(|| panic!("no x → y line:\n{status}"));
    assert!(
        line.contains("stalled for") && line.contains("its brokers do not answer"),
        "{status}"
    );
    // `meridian cluster health` names the stalled link, and the broker once its lease
    // lapses, each with what to do; it exits non-zero meanwhile.
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let (code, health) = cluster_health(&regions.control.addr, &mx, &my);
        if health.contains("broker 1 of region y is not live") {
            assert_ne!(code, 0, "{health}");
            break health;
        }
        assert!(Instant::now() < deadline, "{health}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        health.contains("PROBLEM mirror link x → y: stalled for")
            && health.contains("fix: start it again"),
        "{health}"
    );

    regions.y.brokers[0].signal(libc::SIGCONT);
    meridian_tests::wait_until_held(&y, TOPIC, 20, Duration::from_secs(60)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while stalled(&my, "x").await.0 > 0.0 {
        assert!(
            Instant::now() < deadline,
            "still reported stalled after delivering"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = held(&y).await;
    let values: Vec<&String> = held.values().flatten().collect();
    let unique: HashSet<&&String> = values.iter().collect();
    assert_eq!(
        (values.len(), unique.len()),
        (20, 20),
        "each once: {values:?}"
    );
    let status = mirror_status(&regions.control.addr, &mx, &my);
    for link in ["x → y", "y → x"] {
        let line = status
            .lines()
            .find(|l| l.starts_with(link))
            .unwrap_or_else(|| panic!("no {link} line:\n{status}"));
        assert!(line.ends_with("  up"), "{status}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, health) = cluster_health(&regions.control.addr, &mx, &my);
        if code == 0 {
            assert!(health.contains("healthy: nothing is wrong"), "{health}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still unhealthy after SIGCONT: {health}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `meridian cluster health` with the two mirrors: its exit code and what it printed.
fn cluster_health(control: &str, mx: &MirrorProcess, my: &MirrorProcess) -> (i32, String) {
    let mirrors = format!("x={},y={}", mx.metrics, my.metrics);
    let (code, out, err) = meridian_control(control, &["cluster", "health", "--mirror", &mirrors]);
    (code, format!("{out}{err}"))
}

/// `meridian mirror status` of the two mirrors: its table.
fn mirror_status(control: &str, mx: &MirrorProcess, my: &MirrorProcess) -> String {
    let (x, y) = (format!("x={}", mx.metrics), format!("y={}", my.metrics));
    let (code, out, err) = meridian_control(
        control,
        &[
            "mirror", "status", "--mirror", &x, "--mirror", &y, "--over", "200ms",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    out
}
