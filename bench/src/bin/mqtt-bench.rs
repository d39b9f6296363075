//! The MQTT benchmark (issue 16): a Meridian broker's MQTT listener beside mosquitto
//! (Debian's, started here on loopback, in memory), the same load generator (rumqttc's
//! client) against both, in one run:
//!
//! - **throughput**: one publisher sends `--messages` messages of 100 B to one topic as
//!   fast as its window allows, read by 1 and by `--fan-out` subscribers; messages/s from
//!   the first send until every subscriber has every message, at QoS 0 and QoS 1.
//! - **latency**: QoS 1 at a steady `--rate` for `--seconds`: publish to delivery, p50/p99.
//! - **memory**: the server's anonymous resident memory (RssAnon) with `--idle`
//!   connections held open (each a CONNECT answered by CONNACK), per connection.
//!
//! Meridian writes each message to its journal (fsync per group commit) and acknowledges a
//! QoS 1 PUBLISH once it is stored; mosquitto runs without persistence. The ratio is
//! Meridian over mosquitto.
//!
//! `cargo build --release --workspace && target/release/mqtt-bench`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use meridian_bench::rss_anon;
use meridian_tests::{BrokerProcess, free_addr};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Parser)]
#[command(about = "MQTT: Meridian beside mosquitto, the same client against both")]
struct Args {
    /// Messages per throughput run.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Subscribers of the fan-out runs.
    #[arg(long, default_value_t = 10)]
    fan_out: usize,
    /// Messages a second of the latency run.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Seconds of the latency run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Idle connections held for the memory row.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Where the broker keeps its data.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
}

fn client(id: &str, port: u16) -> (AsyncClient, EventLoop) {
    let mut o = MqttOptions::new(id, "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(60));
    o.set_inflight(100);
    o.set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(o, 10_000)
}

/// A subscriber counting what it receives (and recording latency from the timestamp in
/// the payload's first 8 bytes, µs since `epoch`, when `latency` is given).
async fn subscriber(
    id: String,
    port: u16,
    qos: QoS,
    received: Arc<AtomicU64>,
    latency: Option<(Instant, Arc<std::sync::Mutex<Histogram<u64>>>)>,
) -> AsyncClient {
    let (c, mut events) = client(&id, port);
    c.subscribe("bench/t", qos).await.expect("subscribe queued");
    let (subscribed, ready) = tokio::sync::oneshot::channel();
    let mut subscribed = Some(subscribed);
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(s) = subscribed.take() {
                        let _ = s.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    received.fetch_add(1, Ordering::Relaxed);
                    if let Some((epoch, h)) = &latency
                        && p.payload.len() >= 8
                    {
                        let mut sent = [0u8; 8];
                        sent.copy_from_slice(&p.payload[..8]);
                        let sent = u64::from_le_bytes(sent);
                        let now = epoch.elapsed().as_micros() as u64;
                        let _ = h.lock().unwrap().record(now.saturating_sub(sent));
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let _ = tokio::time::timeout(Duration::from_secs(10), ready).await;
    // Meridian starts a subscription's feed before its SUBACK; a moment more for both.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c
}

async fn publisher(id: &str, port: u16) -> AsyncClient {
    let (c, mut events) = client(id, port);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    c
}

/// Messages/s of one publisher to `subscribers` subscribers, until all have all.
async fn throughput(port: u16, qos: QoS, subscribers: usize, messages: u64, tag: &str) -> f64 {
    let received = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    for i in 0..subscribers {
        subs.push(subscriber(format!("{tag}-sub-{i}"), port, qos, received.clone(), None).await);
    }
    let publisher = publisher(&format!("{tag}-pub"), port).await;
    let payload = vec![0x5au8; 100];
    let want = messages * subscribers as u64;
    let started = Instant::now();
    for _ in 0..messages {
        publisher
            .publish("bench/t", qos, false, payload.clone())
            .await
            .expect("publish queued");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    if got < want {
        eprintln!("{tag}: {got} of {want} delivered in 120 s");
    }
    for s in subs {
        let _ = s.disconnect().await;
    }
    let _ = publisher.disconnect().await;
    got as f64 / subscribers as f64 / secs
}

/// p50 and p99 (ms) of QoS 1 delivery at a steady rate.
async fn latency(port: u16, rate: u64, seconds: u64, tag: &str) -> (f64, f64) {
    let epoch = Instant::now();
    let h = Arc::new(std::sync::Mutex::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
    ));
    let received = Arc::new(AtomicU64::new(0));
    let sub = subscriber(
        format!("{tag}-lat-sub"),
        port,
        QoS::AtLeastOnce,
        received.clone(),
        Some((epoch, h.clone())),
    )
    .await;
    let publisher = publisher(&format!("{tag}-lat-pub"), port).await;
    let total = rate * seconds;
    let gap = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    for i in 0..total {
        tokio::time::sleep_until(start + gap * i as u32).await;
        let mut payload = (epoch.elapsed().as_micros() as u64).to_le_bytes().to_vec();
        payload.resize(100, 0);
        publisher
            .publish("bench/t", QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish queued");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = sub.disconnect().await;
    let _ = publisher.disconnect().await;
    let h = h.lock().unwrap();
    (
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
    )
}

/// Bytes of the server's RssAnon per idle connection, with `n` held open.
async fn idle_memory(port: u16, pid: u32, n: usize, tag: &str) -> f64 {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_anon(pid);
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("{tag}-idle-{i}");
        let mut connect = vec![0x10u8, 0, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0x02, 0x58];
        connect.extend_from_slice(&[(id.len() >> 8) as u8, id.len() as u8]);
        connect.extend_from_slice(id.as_bytes());
        connect[1] = (connect.len() - 2) as u8;
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        s.write_all(&connect).await.expect("CONNECT");
        let mut ack = [0u8; 4];
        s.read_exact(&mut ack).await.expect("CONNACK");
        held.push(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_anon(pid);
    drop(held);
    after.saturating_sub(before) as f64 / n as f64
}

struct Row {
    what: String,
    meridian: f64,
    mosquitto: f64,
}

fn start_mosquitto(dir: &std::path::Path, port: u16) -> anyhow::Result<Child> {
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             max_inflight_messages 100\nmax_queued_messages 1000000\nlog_dest none\n"
        ),
    )?;
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting mosquitto (apt-get install mosquitto): {e}"))?;
    std::thread::sleep(Duration::from_millis(500));
    Ok(child)
}

/// Raises this process's open-file limit to its hard limit (the servers started here
/// inherit it): the idle row holds 10,000 connections on each side.
fn raise_open_files() {
    // SAFETY: getrlimit and setrlimit read and write the struct passed, nothing else.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_open_files();
    let tmp = tempfile::Builder::new()
        .prefix("mqtt-bench")
        .tempdir_in(&args.dir)?;
    let mqtt = free_addr();
    let broker =
        BrokerProcess::start(&tmp.path().join("b"), &["--mqtt-listen", &mqtt.to_string()]).await?;
    broker.client().await.create_topic("bench", 3).await?;
    let mosquitto_port = free_addr().port();
    let mut mosquitto = start_mosquitto(tmp.path(), mosquitto_port)?;
    let targets = [
        ("meridian", mqtt.port(), broker.pid() as u32),
        ("mosquitto", mosquitto_port, mosquitto.id()),
    ];
    let mut rows = Vec::new();
    for (qos, q) in [(QoS::AtMostOnce, 0), (QoS::AtLeastOnce, 1)] {
        for subs in [1, args.fan_out] {
            let mut r = [0.0; 2];
            for (i, (name, port, _)) in targets.iter().enumerate() {
                r[i] = throughput(
                    *port,
                    qos,
                    subs,
                    args.messages,
                    &format!("{name}-q{q}-{subs}"),
                )
                .await;
                eprintln!("QoS {q}, 1 → {subs}: {name} {:.0} messages/s", r[i]);
            }
            rows.push(Row {
                what: format!("QoS {q} throughput, 1 → {subs}, messages/s per subscriber"),
                meridian: r[0],
                mosquitto: r[1],
            });
        }
    }
    let mut lat = [(0.0, 0.0); 2];
    for (i, (name, port, _)) in targets.iter().enumerate() {
        lat[i] = latency(*port, args.rate, args.seconds, name).await;
        eprintln!(
            "QoS 1 latency at {}/s: {name} p50 {:.2} ms, p99 {:.2} ms",
            args.rate, lat[i].0, lat[i].1
        );
    }
    rows.push(Row {
        what: format!("QoS 1 latency at {}/s, p50 ms", args.rate),
        meridian: lat[0].0,
        mosquitto: lat[1].0,
    });
    rows.push(Row {
        what: format!("QoS 1 latency at {}/s, p99 ms", args.rate),
        meridian: lat[0].1,
        mosquitto: lat[1].1,
    });
    let mut mem = [0.0; 2];
    for (i, (name, port, pid)) in targets.iter().enumerate() {
        mem[i] = idle_memory(*port, *pid, args.idle, name).await;
        eprintln!("memory per idle connection: {name} {:.0} bytes", mem[i]);
    }
    rows.push(Row {
        what: format!("memory per idle connection ({} held), bytes", args.idle),
        meridian: mem[0],
        mosquitto: mem[1],
    });
    println!("| row | Meridian | mosquitto | Meridian / mosquitto |");
    println!("| --- | ---: | ---: | ---: |");
    for r in rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.2} |",
            r.what,
            r.meridian,
            r.mosquitto,
            r.meridian / r.mosquitto
        );
    }
    let _ = mosquitto.kill();
    let _ = mosquitto.wait();
    Ok(())
}
