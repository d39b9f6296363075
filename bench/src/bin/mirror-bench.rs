//! The mirror benchmark: two regions of real processes (control plane, one broker each,
//! one mirror each) linked through the test link proxy, measured the same way on a plain
//! loopback link (the anchor) and on a long, lossy one:
//!
//! - **lag**: a producer in region a at a steady rate; a consumer in region b; per message,
//!   the time from its acknowledgement in a to its arrival at the consumer in b (p50, p99);
//! - **drain**: a burst produced in a as fast as the producer goes; how fast b holds it all
//!   (mirror throughput), beside how fast a acknowledged it (the anchor of the ratio);
//! - **RPO / RTO**: a routed producer writing to a at a steady rate; region a killed
//!   (`kill -9` of its broker and its mirror): RPO = messages acknowledged in a that b does
//!   not hold (and how many milliseconds of writes that is); RTO = time from the kill to the
//!   producer's first acknowledgement in b.
//!
//! `cargo build --release --workspace && target/release/mirror-bench` (the binaries must be
//! beside it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use meridian_client::{Client, ConsumerConfig, ProducerConfig, Record, StartFrom};
use meridian_tests::link_proxy::{Impairment, LinkProxy};
use meridian_tests::mirror::{MirrorProcess, free_udp_addr, issue_certs};
use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion, meridian_control};

const TOPIC: &str = "bench";

#[derive(Debug, Parser)]
#[command(about = "Mirror lag, throughput, RPO and RTO through a link proxy")]
struct Args {
    /// One-way delay added each way (the round trip is twice this).
    #[arg(long, default_value_t = 25)]
    latency_ms: u64,
    /// Datagrams lost each way, in percent.
    #[arg(long, default_value_t = 1.0)]
    loss_percent: f64,
    /// Messages per second for the lag and failover runs.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of steady load for the lag run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    size: usize,
    /// Messages in the drain burst.
    #[arg(long, default_value_t = 30_000)]
    burst: usize,
    /// Brokers per region (3 makes every log group a raft group, as `meridian up` does).
    #[arg(long, default_value_t = 1)]
    brokers: u32,
    /// Only the loopback rows (the anchor), not the impaired link.
    #[arg(long)]
    only_loopback: bool,
}

struct Platform {
    control: String,
    regions: Vec<ManagedRegion>,
    mirrors: Vec<MirrorProcess>,
    _proxies: Vec<LinkProxy>,
    _cp: ControlPlaneProcess,
    _dir: tempfile::TempDir,
}

async fn platform(
    impairment: Option<Impairment>,
    congestion: &str,
    brokers: u32,
) -> anyhow::Result<Platform> {
    let dir = tempfile::tempdir()?;
    let certs = dir.path().join("certs");
    issue_certs(&certs, &["a", "b"]);
    let cp = ControlPlaneProcess::embedded(
        dir.path(),
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
    let mut regions = Vec::new();
    for r in ["a", "b"] {
        regions.push(ManagedRegion::start(dir.path(), r, brokers, &cp.addr, &[]).await?);
    }
    let (code, _, err) = meridian_control(
        &cp.addr,
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "4",
            "--replicas",
            &brokers.to_string(),
        ],
    );
    anyhow::ensure!(code == 0, "topic create: {err}");
    let listen = [free_udp_addr(), free_udp_addr()];
    let mut proxies = Vec::new();
    let mut dial: [SocketAddr; 2] = listen;
    if let Some(imp) = impairment {
        for (i, target) in listen.iter().enumerate() {
            let p = LinkProxy::start(*target, imp).await?;
            dial[i] = p.addr;
            proxies.push(p);
        }
    }
    let names = ["a", "b"];
    let mirrors = (0..2)
        .map(|i| {
            MirrorProcess::start(
                dir.path(),
                names[i],
                &cp.addr,
                listen[i],
                &[(names[1 - i].to_owned(), dial[1 - i])],
                &certs,
                &["--congestion", congestion],
            )
        })
        .collect();
    Ok(Platform {
        control: cp.addr.clone(),
        regions,
        mirrors,
        _proxies: proxies,
        _cp: cp,
        _dir: dir,
    })
}

fn value(i: u64, size: usize) -> Vec<u8> {
    let mut v = format!("{i:012}").into_bytes();
    v.resize(size.max(12), b'.');
    v
}

fn key_of(v: &[u8]) -> u64 {
    std::str::from_utf8(&v[..12])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Messages held by a region's topic (sum of partition ends).
async fn held(client: &Client) -> u64 {
    client
        .describe_topic(TOPIC)
        .await
        .map(|t| t.partitions.iter().map(|p| p.latest_offset).sum())
        .unwrap_or(0)
}

/// A consumer from the end of `TOPIC` in `region`, noting when each message arrives.
async fn arrivals(
    region: &Client,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<(
    Arc<Mutex<HashMap<u64, Instant>>>,
    tokio::task::JoinHandle<()>,
)> {
    let arrived: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let mut consumer = region.consumer(ConsumerConfig {
        start: StartFrom::End,
        ..ConsumerConfig::default()
    });
    consumer.subscribe(TOPIC).await?;
    let task = {
        let arrived = arrived.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(batch) = consumer.poll(Duration::from_millis(200)).await {
                    let now = Instant::now();
                    let mut arrived = arrived.lock().unwrap();
                    for m in batch {
                        arrived.insert(key_of(m.value.as_deref().unwrap_or_default()), now);
                    }
                }
            }
        })
    };
    Ok((arrived, task))
}

/// (p50, p99) in ms of acknowledgement → arrival, over every acknowledged message.
fn lag_quantiles(
    acked: &HashMap<u64, Instant>,
    arrived: &HashMap<u64, Instant>,
) -> anyhow::Result<(f64, f64)> {
    let mut h = hdrhistogram::Histogram::<u64>::new(3)?;
    for (k, t) in acked.iter() {
        if let Some(r) = arrived.get(k) {
            h.record(r.saturating_duration_since(*t).as_micros() as u64)?;
        }
    }
    anyhow::ensure!(
        h.len() == acked.len() as u64,
        "{} of {} messages arrived",
        h.len(),
        acked.len()
    );
    Ok((
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    ))
}

/// Steady load in a, a consumer in a (the anchor: local delivery) and one in b: (p50, p99)
/// of ack-in-a → arrival, in ms, in b and in a.
async fn lag(p: &Platform, args: &Args) -> anyhow::Result<((f64, f64), (f64, f64))> {
    let (a, b) = (p.regions[0].client().await, p.regions[1].client().await);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (in_b, consuming_b) = arrivals(&b, stop.clone()).await?;
    let (in_a, consuming_a) = arrivals(&a, stop.clone()).await?;
    let producer = a.producer(ProducerConfig::default());
    let acked: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let total = args.rate * args.seconds;
    let tick = Duration::from_millis(10).max(Duration::from_secs(1) / args.rate.max(1) as u32);
    let per_tick = (args.rate / 100).max(1);
    let mut waits = Vec::new();
    let start = Instant::now();
    let mut i = 0;
    while i < total {
        for _ in 0..per_tick {
            let fut = producer
                .send(Record::new(TOPIC, value(i, args.size)).key(format!("{}", i % 16)))
                .await;
            let acked = acked.clone();
            let n = i;
            waits.push(tokio::spawn(async move {
                if fut.await.is_ok() {
                    acked.lock().unwrap().insert(n, Instant::now());
                }
            }));
            i += 1;
        }
        let next = start + tick * (i / per_tick) as u32;
        tokio::time::sleep_until(next.into()).await;
    }
    for w in waits {
        w.await?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let all_in = |arrived: &Arc<Mutex<HashMap<u64, Instant>>>| {
        arrived.lock().unwrap().len() >= acked.lock().unwrap().len()
    };
    while !(all_in(&in_a) && all_in(&in_b)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    consuming_a.await?;
    consuming_b.await?;
    let acked = acked.lock().unwrap();
    Ok((
        lag_quantiles(&acked, &in_b.lock().unwrap())?,
        lag_quantiles(&acked, &in_a.lock().unwrap())?,
    ))
}

/// A burst in a: (MB/s acknowledged in a, MB/s held in b), both from the first send.
async fn drain(p: &Platform, args: &Args) -> anyhow::Result<(f64, f64)> {
    let (a, b) = (p.regions[0].client().await, p.regions[1].client().await);
    let base = held(&b).await;
    let producer = a.producer(ProducerConfig::default());
    let start = Instant::now();
    let mut futs = Vec::with_capacity(args.burst);
    for i in 0..args.burst as u64 {
        futs.push(
            producer
                .send(Record::new(TOPIC, value(i, args.size)).key(format!("{}", i % 16)))
                .await,
        );
    }
    for f in futs {
        f.await?;
    }
    let acked = start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while held(&b).await < base + args.burst as u64 {
        anyhow::ensure!(Instant::now() < deadline, "b did not catch up in 300 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mirrored = start.elapsed();
    let mb = (args.burst * args.size) as f64 / 1e6;
    Ok((mb / acked.as_secs_f64(), mb / mirrored.as_secs_f64()))
}

/// A routed producer in a at a steady rate; a is killed: (RPO messages, RPO ms, RTO).
async fn failover(mut p: Platform, args: &Args) -> anyhow::Result<(usize, f64, Duration)> {
    let (client, _) = Client::connect_routed(&p.control, TOPIC, Some("a")).await?;
    let acked: Arc<Mutex<Vec<(u64, Instant, String)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producing = {
        let (acked, stop, client) = (acked.clone(), stop.clone(), client.clone());
        let (rate, size) = (args.rate, args.size);
        tokio::spawn(async move {
            let producer = client.producer(ProducerConfig::default());
            let start = Instant::now();
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let fut = producer
                    .send(Record::new(TOPIC, value(i, size)).key(format!("{}", i % 16)))
                    .await;
                let (acked, client) = (acked.clone(), client.clone());
                let n = i;
                tokio::spawn(async move {
                    if fut.await.is_ok() {
                        let region = client.region().unwrap_or_default();
                        acked.lock().unwrap().push((n, Instant::now(), region));
                    }
                });
                i += 1;
                tokio::time::sleep_until(
                    (start + Duration::from_secs_f64(i as f64 / rate as f64)).into(),
                )
                .await;
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(5)).await;
    let killed = Instant::now();
    for b in &mut p.regions[0].brokers {
        b.kill9();
    }
    p.mirrors[0].kill9();
    let deadline = killed + Duration::from_secs(60);
    let rto = loop {
        if let Some(t) = acked
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t, r)| r == "b" && *t > killed)
            .map(|(_, t, _)| *t)
            .min()
        {
            break t - killed;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the producer did not fail over in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    producing.await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let b = p.regions[1].client().await;
    let in_b: std::collections::HashSet<u64> = meridian_tests::read_all(&b, TOPIC)
        .await
        .into_values()
        .flatten()
        .map(|(_, v)| key_of(&v))
        .collect();
    let acked = acked.lock().unwrap();
    let lost: Vec<&(u64, Instant, String)> = acked
        .iter()
        .filter(|(k, t, r)| r == "a" && *t <= killed && !in_b.contains(k))
        .collect();
    let window = lost
        .iter()
        .map(|(_, t, _)| killed.saturating_duration_since(*t))
        .max()
        .unwrap_or_default();
    Ok((lost.len(), window.as_secs_f64() * 1000.0, rto))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wan = Impairment {
        latency: Duration::from_millis(args.latency_ms),
        loss: args.loss_percent / 100.0,
        ..Impairment::default()
    };
    let link = format!(
        "{} ms RTT, {}% loss",
        2 * args.latency_ms,
        args.loss_percent
    );
    println!(
        "| link | congestion | lag p50 ms | lag p99 ms | local p50 / p99 ms | at msg/s | burst acked in a MB/s | burst held in b MB/s | ratio b/a |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (name, imp, cc) in [
        ("loopback (anchor)", None, "bbr"),
        (link.as_str(), Some(wan), "bbr"),
        (link.as_str(), Some(wan), "cubic"),
    ] {
        if args.only_loopback && imp.is_some() {
            continue;
        }
        let p = platform(imp, cc, args.brokers).await?;
        let ((p50, p99), (l50, l99)) = lag(&p, &args).await?;
        let (a_mbs, b_mbs) = drain(&p, &args).await?;
        println!(
            "| {name} | {cc} | {p50:.1} | {p99:.1} | {l50:.1} / {l99:.1} | {} | {a_mbs:.1} | {b_mbs:.1} | {:.2} |",
            args.rate,
            b_mbs / a_mbs
        );
    }
    println!();
    println!("| link | RPO messages | RPO ms of writes | RTO ms | at msg/s |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, imp) in [("loopback (anchor)", None), (link.as_str(), Some(wan))] {
        if args.only_loopback && imp.is_some() {
            continue;
        }
        let p = platform(imp, "bbr", args.brokers).await?;
        let (rpo, rpo_ms, rto) = failover(p, &args).await?;
        println!(
            "| {name} | {rpo} | {rpo_ms:.0} | {:.0} | {} |",
            rto.as_secs_f64() * 1000.0,
            args.rate
        );
    }
    println!(
        "\n({} B messages, 4 partitions, {} broker(s) per region and replicas; lag over {} s at {} msg/s; burst of {} messages)",
        args.size, args.brokers, args.seconds, args.rate, args.burst
    );
    Ok(())
}
