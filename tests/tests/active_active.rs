//! Three regions linked by real mirror processes through link proxies (UDP, added latency),
//! producers writing to one topic in every region at once: after quiescence every region
//! holds the same messages, none twice, in each origin partition's order — also after a
//! region's links are cut for 30 s under load, and after a mirror is killed mid-stream.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meridian_client::{Client, ProducerConfig, Record};
use meridian_tests::link_proxy::{Impairment, LinkProxy};
use meridian_tests::mirror::{MirrorProcess, free_udp_addr, issue_certs};
use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion, meridian_control};
use meridian_tests::read_all;

const REGIONS: [&str; 3] = ["ap", "eu", "us"];
const TOPIC: &str = "events";

struct Mesh {
    regions: Vec<ManagedRegion>,
    clients: Vec<Client>,
    mirrors: Vec<MirrorProcess>,
    /// (from, to) → the proxy `from`'s mirror dials to reach `to`'s.
    links: HashMap<(usize, usize), LinkProxy>,
    /// Every acknowledged message: value → (origin region, partition).
    sent: HashMap<String, (usize, u32)>,
}

impl Mesh {
    fn cut(&self, region: usize, cut: bool) {
        for ((a, b), proxy) in &self.links {
            if *a == region || *b == region {
                proxy.cut(cut);
            }
        }
    }

    /// Produces `n` messages in every region at once (keys spread them over partitions).
    async fn produce_everywhere(&mut self, phase: &str, n: usize) {
        let mut tasks = Vec::new();
        for (r, client) in self.clients.iter().enumerate() {
            let producer = client.producer(ProducerConfig::default());
            let phase = phase.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..n {
                    let value = format!("{}-{phase}-{i}", REGIONS[r]);
                    let meta = producer
                        .send(Record::new(TOPIC, value.clone()).key(format!("k{}", i % 7)))
                        .await
                        .await
                        .unwrap_or_else(|e| panic!("produce in {}: {e}", REGIONS[r]));
                    acked.push((value, meta.partition));
                }
                acked
            }));
        }
        for (r, t) in tasks.into_iter().enumerate() {
            for (value, partition) in t.await.unwrap() {
                self.sent.insert(value, (r, partition));
            }
        }
    }

    /// Waits until every region holds every acknowledged message, then checks: the same
    /// set everywhere, no duplicate, each origin partition's order kept.
    async fn check_converged(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let total = self.sent.len() as u64;
        for (r, client) in self.clients.iter().enumerate() {
            loop {
                let held: u64 = match client.describe_topic(TOPIC).await {
                    Ok(info) => info.partitions.iter().map(|p| p.latest_offset).sum(),
                    Err(_) => 0,
                };
                if held >= total {
                    break;
                }
                if Instant::now() > deadline {
                    for m in &self.mirrors {
                        eprintln!("--- mirror {} log ---\n{}", m.region, m.log_text());
                    }
                    panic!(
                        "{} holds {held} of {total} messages after {limit:?}",
                        REGIONS[r]
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let mut per_region: Vec<BTreeMap<u32, Vec<String>>> = Vec::new();
        for client in &self.clients {
            let all = read_all(client, TOPIC).await;
            per_region.push(
                all.into_iter()
                    .map(|(p, v)| {
                        (
                            p,
                            v.into_iter()
                                .map(|(_, m)| String::from_utf8(m).unwrap())
                                .collect(),
                        )
                    })
                    .collect(),
            );
        }
        let want: HashSet<&String> = self.sent.keys().collect();
        for (r, parts) in per_region.iter().enumerate() {
            let values: Vec<&String> = parts.values().flatten().collect();
            let set: HashSet<&String> = values.iter().copied().collect();
            assert_eq!(values.len(), set.len(), "{} holds duplicates", REGIONS[r]);
            assert_eq!(
                set, want,
                "{} does not hold exactly what was acknowledged",
                REGIONS[r]
            );
            for (value, (origin, partition)) in &self.sent {
                assert!(
                    parts.get(partition).is_some_and(|v| v.contains(value)),
                    "{value} (origin {}, partition {partition}) is in another partition in {}",
                    REGIONS[*origin],
                    REGIONS[r]
                );
            }
            // Order per origin partition: the origin's own order.
            for (o, origin_parts) in per_region.iter().enumerate() {
                let prefix = format!("{}-", REGIONS[o]);
                for (p, origin_values) in origin_parts {
                    let of = |v: &Vec<String>| -> Vec<String> {
                        v.iter()
                            .filter(|m| m.starts_with(&prefix))
                            .cloned()
                            .collect()
                    };
                    assert_eq!(
                        of(&parts[p]),
                        of(origin_values),
                        "{}'s messages of partition {p} are out of order in {}",
                        REGIONS[o],
                        REGIONS[r]
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_regions_converge_through_cuts_and_mirror_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    issue_certs(&certs, &REGIONS);
    let mut cp_flags = Vec::new();
    for r in REGIONS {
        cp_flags.extend(["--region", r]);
    }
    let cp = ControlPlaneProcess::embedded(tmp.path(), &cp_flags).await;
    let mut regions = Vec::new();
    for r in REGIONS {
        regions.push(
            ManagedRegion::start(tmp.path(), r, 1, &cp.addr, &[])
                .await
                .unwrap(),
        );
    }
    let (code, _, err) = meridian_control(
        &cp.addr,
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "3",
            "--replicas",
            "1",
            "--regions",
            "ap,eu,us",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let listen: Vec<SocketAddr> = REGIONS.iter().map(|_| free_udp_addr()).collect();
    let wan = Impairment {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(2),
        ..Impairment::default()
    };
    let mut links = HashMap::new();
    for a in 0..3 {
        for (b, target) in listen.iter().enumerate() {
            if a != b {
                links.insert((a, b), LinkProxy::start(*target, wan).await.unwrap());
            }
        }
    }
    let mut mirrors = Vec::new();
    for a in 0..3 {
        let peers: Vec<(String, SocketAddr)> = (0..3)
            .filter(|b| *b != a)
            .map(|b| (REGIONS[b].to_owned(), links[&(a, b)].addr))
            .collect();
        mirrors.push(MirrorProcess::start(
            tmp.path(),
            REGIONS[a],
            &cp.addr,
            listen[a],
            &peers,
            &certs,
            &["--idle-timeout-ms", "3000", "--keep-alive-ms", "500"],
        ));
    }
    let mut clients = Vec::new();
    for r in &regions {
        clients.push(r.client().await);
    }
    let mut mesh = Mesh {
        regions,
        clients,
        mirrors,
        links,
        sent: HashMap::new(),
    };

    // Producers in all regions at once.
    mesh.produce_everywhere("concurrent", 200).await;
    mesh.check_converged(Duration::from_secs(60)).await;

    // Cut every link of ap for 30 s while every region produces; then heal.
    mesh.cut(0, true);
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(30) {
        mesh.produce_everywhere(&format!("cut{round}"), 40).await;
        round += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Nothing crossed the cut: eu lacks ap's messages of the cut.
    let eu_holds: u64 = mesh.clients[1]
        .describe_topic(TOPIC)
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.latest_offset)
        .sum();
    assert!(
        eu_holds < mesh.sent.len() as u64,
        "eu holds {eu_holds} of {} messages while ap is cut off",
        mesh.sent.len()
    );
    mesh.cut(0, false);
    mesh.check_converged(Duration::from_secs(90)).await;
    assert!(
        mesh.mirrors[0]
            .metric("meridian_mirror_connects_total")
            .await
            >= 3.0,
        "ap's mirror redialled after the cut"
    );

    // kill -9 eu's mirror mid-stream, produce on, restart it: exactly once.
    let producing = {
        let clients = mesh.clients.clone();
        tokio::spawn(async move {
            let producer = clients[1].producer(ProducerConfig::default());
            let mut acked = Vec::new();
            for i in 0..300 {
                let value = format!("eu-kill-{i}");
                let meta = producer
                    .send(Record::new(TOPIC, value.clone()).key(format!("k{}", i % 7)))
                    .await
                    .await
                    .expect("produce in eu");
                acked.push((value, meta.partition));
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    mesh.mirrors[1].kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    mesh.mirrors[1].spawn();
    for (value, partition) in producing.await.unwrap() {
        mesh.sent.insert(value, (1, partition));
    }
    mesh.check_converged(Duration::from_secs(60)).await;
    assert_eq!(
        mesh.mirrors[0]
            .metric("meridian_mirror_apply_errors_total")
            .await,
        0.0,
        "no append failed in ap"
    );
    for m in &mut mesh.mirrors {
        assert!(
            m.terminate(),
            "mirror {} stops cleanly on SIGTERM",
            m.region
        );
    }
    drop(mesh.regions);
}

/// Two mirrors in one region share its link through a lease: one ships; when it is killed
/// mid-stream the other takes the link over, and the peer region's mirror, given both
/// addresses, reaches the survivor. Every message arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_mirror_takes_over_the_link_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let regions = meridian_tests::mirror::TwoRegions::start(tmp.path(), &[], &[]).await;
    regions.create_topic("ha", 2).await;
    let (cp, certs, x, y) = (&regions.control, &regions.certs, &regions.x, &regions.y);
    let (lx1, lx2, ly) = (free_udp_addr(), free_udp_addr(), free_udp_addr());
    let flags = [
        "--idle-timeout-ms",
        "3000",
        "--keep-alive-ms",
        "500",
        "--claim-ttl-ms",
        "2000",
    ];
    let mut xs: Vec<MirrorProcess> = [lx1, lx2]
        .iter()
        .map(|l| {
            MirrorProcess::start(
                tmp.path(),
                "x",
                &cp.addr,
                *l,
                &[("y".into(), ly)],
                certs,
                &flags,
            )
        })
        .collect();
    let peers_of_y = format!("x={lx1},{lx2}");
    let mut y_flags: Vec<&str> = flags.to_vec();
    y_flags.extend(["--peer", &peers_of_y]);
    let _ym = MirrorProcess::start(tmp.path(), "y", &cp.addr, ly, &[], certs, &y_flags);
    let holder = async |xs: &[MirrorProcess]| -> Option<usize> {
        let mut held = Vec::new();
        for (i, m) in xs.iter().enumerate() {
            if m.metric("meridian_mirror_link_held").await == 1.0 {
                held.push(i);
            }
        }
        (held.len() == 1).then(|| held[0])
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let first = loop {
        if let Some(h) = holder(&xs).await {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "no single mirror of x holds the link"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (cx, cy) = (x.client().await, y.client().await);
    let produce = |client: Client, prefix: &'static str, n: usize| {
        tokio::spawn(async move {
            let producer = client.producer(ProducerConfig::default());
            let mut acked = Vec::new();
            for i in 0..n {
                let v = format!("{prefix}-{i}");
                producer
                    .send(Record::new("ha", v.clone()).key(format!("k{}", i % 3)))
                    .await
                    .await
                    .expect("produce");
                acked.push(v);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            acked
        })
    };
    let (px, py) = (produce(cx.clone(), "x", 500), produce(cy.clone(), "y", 300));
    tokio::time::sleep(Duration::from_secs(1)).await;
    xs[first].kill9();
    let deadline = Instant::now() + Duration::from_secs(20);
    let other = 1 - first;
    while xs[other].metric("meridian_mirror_link_held").await != 1.0 {
        assert!(
            Instant::now() < deadline,
            "the surviving mirror never took the link"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut sent: Vec<String> = px.await.unwrap();
    sent.extend(py.await.unwrap());
    let want: HashSet<String> = sent.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for (name, client) in [("x", &cx), ("y", &cy)] {
        loop {
            let values: Vec<String> = read_all(client, "ha")
                .await
                .into_values()
                .flatten()
                .map(|(_, v)| String::from_utf8(v).unwrap())
                .collect();
            let set: HashSet<String> = values.iter().cloned().collect();
            assert_eq!(set.len(), values.len(), "{name} holds duplicates");
            if set == want {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} holds {} of {} messages",
                set.intersection(&want).count(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    xs.clear();
}
