//! The Kafka-protocol benchmark: Meridian brokers driven by third-party Kafka clients, set
//! beside Apache Kafka 3.9's figures measured on this kind of machine (issue 6).
//!
//! - **produce throughput**: kcat (librdkafka, Debian's package) producing `--records`
//!   records of 100 B or 1 KiB from a file (prepared before the clock starts) into a topic of
//!   3 partitions, acks=1 or acks=all, librdkafka's default batching; the time from start to
//!   kcat's exit (it waits for every delivery report). Every record is then counted back.
//! - **consume throughput**: kcat reading the same topic from the beginning to its end.
//! - **latency**: the Python confluent-kafka client (librdkafka) producing 1 KiB or 100 B
//!   records at a steady `--rate` for `--latency-seconds` with linger.ms=0; per record, the
//!   time from `produce()` to its delivery report (p50, p99).
//!
//! - **leader kill** (`--leader-kill`): the idempotent acks=all confluent-kafka producer
//!   of the fault tests (`tests/kafka_clients/confluent_idempotent.py`, 100,000 records)
//!   while partition 0's leader is killed -9, then restarted: the longest time without any
//!   acknowledgement, when it ended, and the count lost or duplicated (both must be 0).
//! - **the disk anchor**: after each produce run, the brokers' mean journal write per group
//!   commit (`meridian_group_commit_bytes` from their /metrics) is written to a file under
//!   `--dir` with an fdatasync after each write, for 3 s; each row's MB/s is printed as a
//!   ratio to that (Apache Kafka cannot be installed here, so the disk is the anchor that runs
//!   beside us; Kafka's recorded figures are printed too).
//!
//! Clusters: one broker (replication factor 1), and a region of three brokers replicating
//! every log group by raft (replication factor 3), all on loopback, each broker with its own
//! data directory under `--dir`.
//!
//! `cargo build --release --workspace && target/release/kafka-bench --python .venv/bin/python`

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use clap::Parser;
use meridian_tests::{BrokerProcess, Region, free_addr, wait_until_held};

#[derive(Debug, Parser)]
#[command(about = "Kafka-protocol throughput and latency with kcat and confluent-kafka")]
struct Args {
    /// Records per produce run.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Records per second of the latency runs.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Seconds of each latency run.
    #[arg(long, default_value_t = 5)]
    latency_seconds: u64,
    /// Where the brokers keep their data and the record files go.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// The Python with confluent-kafka (scripts/test.sh makes `.venv`).
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
    /// Broker flush policy: fsync (group commit before the ack) or async.
    #[arg(long, default_value = "fsync")]
    flush: String,
    /// Only the one-broker cluster.
    #[arg(long)]
    one_node_only: bool,
    /// Only the three-broker cluster.
    #[arg(long, conflicts_with = "one_node_only")]
    three_nodes_only: bool,
    /// Only the leader kill: how long an idempotent acks=all producer goes without an
    /// acknowledgement when a partition leader of a three-broker region is killed -9.
    #[arg(long)]
    leader_kill: bool,
    /// Only the cost of security: one broker with a plaintext Kafka listener beside one
    /// whose listener speaks TLS and asks for SASL SCRAM-SHA-512, the same loads, the same
    /// run.
    #[arg(long)]
    security: bool,
    /// Only the cost of encoding fetches: one broker storing Kafka batches as produced
    /// beside one storing Meridian messages (`kafka.store_batches = false`), the same
    /// records (uncompressed and lz4), consumed by kcat.
    #[arg(long)]
    stored_batches: bool,
}

/// Apache Kafka 3.9, this kind of machine (2 cores, client on the same machine, Kafka's
/// ProducerPerformance, 1M records, 3 partitions; noisy ±40%): records/s.
fn kafka_reference(nodes: u32, size: usize, acks: &str) -> Option<f64> {
    match (nodes, size, acks) {
        (1, 1024, "all") => Some(207_000.0),
        (1, 100, "all") => Some(675_000.0),
        (3, 1024, "all") => Some(43_000.0),
        _ => None,
    }
}

/// Kafka's p99 at a steady 10k records/s of 1 KiB on one node: 16–20 ms.
const KAFKA_P99_10K_MS: f64 = 18.0;

struct Row {
    nodes: u32,
    size: usize,
    acks: &'static str,
    produce_rps: f64,
    consume_rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    latency_rate: f64,
    /// Seconds from kcat's last acknowledgement until every record was readable.
    settle: f64,
    /// The brokers' mean journal write per group commit during the produce run.
    write_bytes: f64,
    /// The disk's write+fdatasync MB/s at that write size, measured after the run.
    disk_mbs: f64,
}

/// The sum and count of `meridian_group_commit_bytes` over the brokers at `metrics`.
async fn commit_bytes(metrics: &[SocketAddr]) -> (f64, f64) {
    let (mut sum, mut count) = (0.0, 0.0);
    for addr in metrics {
        let Ok(text) = meridian_tests::http_get(*addr, "/metrics").await else {
            continue;
        };
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            match name {
                "meridian_group_commit_bytes_sum" => sum += value,
                "meridian_group_commit_bytes_count" => count += value,
                _ => {}
            }
        }
    }
    (sum, count)
}

fn records_file(dir: &Path, size: usize, n: u64) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("kafka-bench-{size}-{n}.txt"));
    if path
        .metadata()
        .is_ok_and(|m| m.len() == (size as u64 + 1) * n)
    {
        return Ok(path);
    }
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
    let mut line = vec![b'x'; size];
    line.push(b'\n');
    for i in 0..n {
        // A distinct prefix per record, so no two are the same bytes.
        let tag = format!("{i:010}");
        line[..tag.len().min(size)].copy_from_slice(&tag.as_bytes()[..tag.len().min(size)]);
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(path)
}

fn kcat_produce(bootstrap: &str, topic: &str, acks: &str, file: &Path) -> anyhow::Result<f64> {
    kcat_produce_with(bootstrap, topic, acks, file, &[])
}

/// [`kcat_produce`] with librdkafka settings `extra` (`key=value`).
fn kcat_produce_with(
    bootstrap: &str,
    topic: &str,
    acks: &str,
    file: &Path,
    extra: &[String],
) -> anyhow::Result<f64> {
    let start = Instant::now();
    let out = Command::new("kcat")
        .args(["-P", "-b", bootstrap, "-t", topic])
        .args(["-X", &format!("acks={acks}")])
        .args(extra.iter().flat_map(|x| ["-X", x.as_str()]))
        .arg("-l")
        .arg(file)
        .stdin(Stdio::null())
        .output()?;
    let elapsed = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success() && !err.contains("ailed"),
        "kcat -P failed ({}): {err}",
        out.status
    );
    Ok(elapsed)
}

/// Reads `topic` from the beginning to its end; (records, seconds).
fn kcat_consume(bootstrap: &str, topic: &str) -> anyhow::Result<(u64, f64)> {
    let start = Instant::now();
    let mut child = Command::new("kcat")
        .args([
            "-C",
            "-b",
            bootstrap,
            "-t",
            topic,
            "-o",
            "beginning",
            "-e",
            "-q",
        ])
        .args(["-f", "%p\n"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped");
    let mut n = 0;
    let mut reader = std::io::BufReader::with_capacity(1 << 20, stdout);
    let mut line = Vec::new();
    while reader.read_until(b'\n', &mut line)? > 0 {
        n += 1;
        line.clear();
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "kcat -C failed ({status})");
    Ok((n, start.elapsed().as_secs_f64()))
}

fn latency(
    args: &Args,
    bootstrap: &str,
    topic: &str,
    size: usize,
    acks: &str,
) -> anyhow::Result<(f64, f64, f64)> {
    latency_with(args, bootstrap, topic, size, acks, &[])
}

/// [`latency`] with librdkafka settings `extra` (`key=value`).
fn latency_with(
    args: &Args,
    bootstrap: &str,
    topic: &str,
    size: usize,
    acks: &str,
    extra: &[String],
) -> anyhow::Result<(f64, f64, f64)> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka_latency.py");
    let out = Command::new(&args.python)
        .arg(&script)
        .args([bootstrap, topic, &size.to_string(), acks])
        .args([args.rate.to_string(), args.latency_seconds.to_string()])
        .args(extra)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "kafka_latency.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| -> f64 {
        text.split(&format!("\"{key}\": "))
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    anyhow::ensure!(
        text.contains("\"errors\": []"),
        "delivery errors in the latency run: {text}"
    );
    Ok((get("p50_ms"), get("p99_ms"), get("rate")))
}

async fn cluster_rows(args: &Args, nodes: u32, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir_in(&args.dir)?;
    let flags = ["--flush", args.flush.as_str()];
    let (bootstrap, client, one, region) = if nodes == 1 {
        let kafka: SocketAddr = free_addr();
        let listen = kafka.to_string();
        let mut all = vec!["--kafka-listen", listen.as_str()];
        all.extend(flags);
        let broker = BrokerProcess::start(&dir.path().join("broker"), &all).await?;
        let client = broker.client().await;
        (kafka.to_string(), client, Some(broker), None)
    } else {
        let region = Region::start_with_kafka(dir.path(), nodes, &flags).await?;
        let bootstrap = region
            .kafka
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let client = region.client().await;
        (bootstrap, client, None, Some(region))
    };
    let metrics: Vec<SocketAddr> = one
        .iter()
        .chain(region.iter().flat_map(|r| r.brokers.iter()))
        .map(|b| b.metrics)
        .collect();
    for size in [100usize, 1024] {
        let file = records_file(&args.dir, size, args.records)?;
        for acks in ["1", "all"] {
            let topic = format!("bench-{size}-{acks}");
            create_topic(&client, &topic).await?;
            eprintln!(
                "{nodes} node(s), {size} B, acks={acks}: producing {} records with kcat ...",
                args.records
            );
            let before = commit_bytes(&metrics).await;
            let produce = kcat_produce(&bootstrap, &topic, acks, &file)?;
            let after = commit_bytes(&metrics).await;
            let write_bytes = (after.0 - before.0) / (after.1 - before.1).max(1.0);
            eprintln!(
                "  the disk alone at {:.1} KiB writes + fdatasync ...",
                write_bytes / 1024.0
            );
            let disk_mbs = meridian_bench::raw_disk(
                &dir.path().join("anchor"),
                (write_bytes as usize).max(512),
                true,
                std::time::Duration::from_secs(3),
            )?;
            // acks=1 answers before replication: consumers see records once a quorum
            // holds them (the high watermark), as with Kafka.
            let settle = Instant::now();
            wait_until_held(
                &client,
                &topic,
                args.records,
                std::time::Duration::from_secs(300),
            )
            .await;
            let settle = settle.elapsed().as_secs_f64();
            eprintln!("  consuming them back ...");
            let (n, consume) = kcat_consume(&bootstrap, &topic)?;
            anyhow::ensure!(
                n == args.records,
                "{topic}: {n} records read back of {} produced",
                args.records
            );
            eprintln!("  latency at {} records/s ...", args.rate);
            let lat_topic = format!("lat-{size}-{acks}");
            create_topic(&client, &lat_topic).await?;
            let (p50, p99, rate) = latency(args, &bootstrap, &lat_topic, size, acks)?;
            rows.push(Row {
                nodes,
                size,
                acks,
                produce_rps: args.records as f64 / produce,
                consume_rps: n as f64 / consume,
                settle,
                p50_ms: p50,
                p99_ms: p99,
                latency_rate: rate,
                write_bytes,
                disk_mbs,
            });
        }
    }
    Ok(())
}

/// An idempotent producer across a leader's kill -9: (longest time without an
/// acknowledgement, seconds after the kill it ended, records acknowledged).
async fn leader_kill(args: &Args) -> anyhow::Result<(f64, f64, u64)> {
    const COUNT: u64 = 100_000;
    let dir = tempfile::tempdir_in(&args.dir)?;
    let mut region = Region::start_with_kafka(dir.path(), 3, &["--flush", &args.flush]).await?;
    let client = region.client().await;
    create_topic(&client, "kill").await?;
    let bootstrap: Vec<String> = region.kafka.iter().map(ToString::to_string).collect();
    let started = dir.path().join("started");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/kafka_clients/confluent_idempotent.py");
    let mut producer = Command::new(&args.python)
        .arg(script)
        .args([
            bootstrap.join(","),
            "kill".into(),
            "3".into(),
            COUNT.to_string(),
            started.display().to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()?;
    while !started.exists() {
        anyhow::ensure!(
            producer.try_wait()?.is_none(),
            "the producer stopped before starting"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let victim = loop {
        if let Some(l) = region.leader_of("kill", 0).await {
            break l;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    region.brokers[victim].kill9();
    loop {
        if region
            .leader_of("kill", 0)
            .await
            .is_some_and(|l| l != victim)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    region.brokers[victim].restart().await?;
    let out = tokio::task::spawn_blocking(move || producer.wait_with_output()).await??;
    let out = String::from_utf8_lossy(&out.stdout);
    let line = out
        .lines()
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| anyhow::anyhow!("the producer printed no report: {out}"))?;
    let report: serde_json::Value = serde_json::from_str(line)?;
    let acked: u64 = (0..3)
        .map(|p| {
            report["acked"][p.to_string()]
                .as_array()
                .map_or(0, Vec::len) as u64
        })
        .sum();
    let held: u64 = meridian_tests::read_all(&client, "kill")
        .await
        .values()
        .map(|m| m.len() as u64)
        .sum();
    anyhow::ensure!(
        acked == COUNT && held == COUNT,
        "{acked} acknowledged and {held} held of {COUNT}: {}",
        report["errors"]
    );
    Ok((
        report["max_gap_s"].as_f64().unwrap_or(f64::NAN),
        report["max_gap_ended_s"].as_f64().unwrap_or(f64::NAN),
        acked,
    ))
}

/// Plaintext beside TLS + SASL SCRAM-SHA-512: one broker each, the same produce and
/// latency loads, acks=all; rows of (mode, size, produce records/s, p50 ms, p99 ms).
async fn security_rows(args: &Args) -> anyhow::Result<Vec<(&'static str, usize, f64, f64, f64)>> {
    let dir = tempfile::tempdir_in(&args.dir)?;
    let certs = dir.path().join("certs");
    let meridian = meridian_tests::binary("meridian");
    let status = Command::new(&meridian)
        .args(["certs", "--dir"])
        .arg(&certs)
        .args(["--server", "kafka", "--names", "127.0.0.1"])
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "meridian certs failed");
    let config = dir.path().join("secure.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\ntls_cert = {:?}\ntls_key = {:?}\nsasl_mechanisms = [\"SCRAM-SHA-512\"]\n",
            certs.join("kafka.pem"),
            certs.join("kafka.key")
        ),
    )?;
    let mut rows = Vec::new();
    for (mode, secure) in [("plaintext", false), ("TLS + SCRAM-SHA-512", true)] {
        let kafka = free_addr().to_string();
        let mut flags = vec![
            "--kafka-listen",
            kafka.as_str(),
            "--flush",
            args.flush.as_str(),
        ];
        let config = config.display().to_string();
        if secure {
            flags.extend(["--config", config.as_str()]);
        }
        let mut broker =
            BrokerProcess::start(&dir.path().join(mode.replace(' ', "")), &flags).await?;
        let extra: Vec<String> = if secure {
            let mut set = Command::new(&meridian)
                .args([
                    "--broker",
                    &broker.addr.to_string(),
                    "user",
                    "set",
                    "bench",
                    "--password-stdin",
                ])
                .stdin(Stdio::piped())
                .spawn()?;
            set.stdin
                .take()
                .expect("piped")
                .write_all(b"bench-secret\n")?;
            anyhow::ensure!(set.wait()?.success(), "meridian user set failed");
            vec![
                "security.protocol=SASL_SSL".into(),
                "sasl.mechanisms=SCRAM-SHA-512".into(),
                "sasl.username=bench".into(),
                "sasl.password=bench-secret".into(),
                format!("ssl.ca.location={}", certs.join("ca.pem").display()),
            ]
        } else {
            Vec::new()
        };
        let client = broker.client().await;
        for size in [100usize, 1024] {
            let topic = format!("sec-{size}");
            create_topic(&client, &topic).await?;
            let file = records_file(&args.dir, size, args.records)?;
            eprintln!("{mode}: producing {} records of {size} B ...", args.records);
            let secs = kcat_produce_with(&kafka, &topic, "all", &file, &extra)?;
            eprintln!("{mode}: latency at {} records/s ...", args.rate);
            let (p50, p99, _) = latency_with(args, &kafka, &topic, size, "all", &extra)?;
            rows.push((mode, size, args.records as f64 / secs, p50, p99));
        }
        broker.terminate();
    }
    Ok(rows)
}

/// Consume throughput of a broker serving stored batches as produced beside one encoding
/// every fetch again: (mode, record size, codec, records/s of the best of three reads).
async fn stored_batch_rows(
    args: &Args,
) -> anyhow::Result<Vec<(&'static str, usize, &'static str, f64)>> {
    let dir = tempfile::tempdir_in(&args.dir)?;
    let encoded = dir.path().join("encoded.toml");
    std::fs::write(&encoded, "[kafka]\nstore_batches = false\n")?;
    let encoded = encoded.display().to_string();
    let mut rows = Vec::new();
    for (mode, config) in [
        ("encoded per fetch", Some(encoded.as_str())),
        ("stored as produced", None),
    ] {
        let kafka = free_addr().to_string();
        let mut flags = vec!["--kafka-listen", kafka.as_str(), "--flush", "async"];
        if let Some(c) = config {
            flags.extend(["--config", c]);
        }
        let mut broker =
            BrokerProcess::start(&dir.path().join(mode.replace(' ', "-")), &flags).await?;
        let client = broker.client().await;
        for size in [100usize, 1024] {
            for codec in ["none", "lz4"] {
                let topic = format!("stored-{size}-{codec}");
                create_topic(&client, &topic).await?;
                let file = records_file(&args.dir, size, args.records)?;
                kcat_produce_with(
                    &kafka,
                    &topic,
                    "1",
                    &file,
                    &[format!("compression.codec={codec}")],
                )?;
                wait_until_held(
                    &client,
                    &topic,
                    args.records,
                    std::time::Duration::from_secs(120),
                )
                .await;
                let mut best = 0f64;
                for _ in 0..3 {
                    let (n, secs) = kcat_consume(&kafka, &topic)?;
                    anyhow::ensure!(n == args.records, "{mode}: read {n} of {}", args.records);
                    best = best.max(n as f64 / secs);
                }
                eprintln!("{mode}: {size} B, {codec}: {best:.0} records/s");
                rows.push((mode, size, codec, best));
            }
        }
        broker.terminate();
    }
    Ok(rows)
}

async fn create_topic(client: &meridian_client::Client, topic: &str) -> anyhow::Result<()> {
    for attempt in 0.. {
        match client.create_topic(topic, 3).await {
            Ok(_) => return Ok(()),
            // A region electing its first leaders.
            Err(e) if attempt < 50 => {
                eprintln!("  creating {topic}: {e}; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.python.exists(),
        "{} not found: pass --python with confluent-kafka installed (scripts/test.sh builds .venv)",
        args.python.display()
    );
    if args.leader_kill {
        println!(
            "| run | longest time without an acknowledgement | it ended, s after the kill | acknowledged = held (none lost or twice) |"
        );
        println!("| ---: | ---: | ---: | ---: |");
        for run in 1..=3 {
            let (gap, ended, acked) = leader_kill(&args).await?;
            println!("| {run} | {gap:.2} s | {ended:.2} s | {acked} |");
        }
        return Ok(());
    }
    if args.stored_batches {
        let rows = stored_batch_rows(&args).await?;
        println!("| fetch | record | compression | consume records/s | MB/s | ratio to encoded |");
        println!("| --- | ---: | --- | ---: | ---: | ---: |");
        for (mode, size, codec, rps) in &rows {
            let encoded = rows
                .iter()
                .find(|r| r.0 == "encoded per fetch" && r.1 == *size && r.2 == *codec)
                .map_or(f64::NAN, |r| r.3);
            println!(
                "| {mode} | {size} B | {codec} | {rps:.0} | {:.1} | {:.2} |",
                rps * *size as f64 / 1e6,
                rps / encoded
            );
        }
        return Ok(());
    }
    if args.security {
        let rows = security_rows(&args).await?;
        println!(
            "| listener | record | acks | produce records/s | MB/s | ratio to plaintext | p50 / p99 ms at {} records/s |",
            args.rate
        );
        println!("| --- | ---: | --- | ---: | ---: | ---: | ---: |");
        for (mode, size, rps, p50, p99) in &rows {
            let plain = rows
                .iter()
                .find(|r| r.0 == "plaintext" && r.1 == *size)
                .map_or(f64::NAN, |r| r.2);
            println!(
                "| {mode} | {size} B | all | {rps:.0} | {:.1} | {:.2} | {p50:.2} / {p99:.2} |",
                rps * *size as f64 / 1e6,
                rps / plain
            );
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    if !args.three_nodes_only {
        cluster_rows(&args, 1, &mut rows).await?;
    }
    if !args.one_node_only {
        cluster_rows(&args, 3, &mut rows).await?;
    }
    println!(
        "| cluster | record | acks | produce records/s | MB/s | write per commit KiB | disk MB/s at that write + fdatasync | ratio to disk | Kafka 3.9 records/s | ratio to Kafka | all readable after | consume records/s | p50 / p99 ms at {} records/s |",
        args.rate
    );
    println!(
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &rows {
        let reference = kafka_reference(r.nodes, r.size, r.acks);
        let cluster = if r.nodes == 1 {
            "1 broker, RF 1".to_owned()
        } else {
            format!("{} brokers, RF {}", r.nodes, r.nodes)
        };
        println!(
            "| {cluster} | {} B | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} | {} | {} | {:.2} s | {:.0} | {:.2} / {:.2}{} |",
            r.size,
            r.acks,
            r.produce_rps,
            r.produce_rps * r.size as f64 / 1e6,
            r.write_bytes / 1024.0,
            r.disk_mbs,
            r.produce_rps * r.size as f64 / 1e6 / r.disk_mbs,
            reference.map_or("—".to_owned(), |k| format!("{k:.0}")),
            reference.map_or("—".to_owned(), |k| format!("{:.2}", r.produce_rps / k)),
            r.settle,
            r.consume_rps,
            r.p50_ms,
            r.p99_ms,
            if (r.latency_rate - args.rate as f64).abs() > args.rate as f64 * 0.05 {
                format!(" (reached {:.0}/s)", r.latency_rate)
            } else {
                String::new()
            }
        );
    }
    if let Some(r) = rows
        .iter()
        .find(|r| r.nodes == 1 && r.size == 1024 && r.acks == "all")
        && args.rate == 10_000
    {
        println!();
        println!(
            "p99 at 10k records/s of 1 KiB, one node, acks=all: {:.2} ms; Kafka 3.9: 16–20 ms; ratio (Kafka / Meridian) {:.2}",
            r.p99_ms,
            KAFKA_P99_10K_MS / r.p99_ms
        );
    }
    println!(
        "\n({} records per produce run, flush {}, data under {})",
        args.records,
        args.flush,
        args.dir.display()
    );
    Ok(())
}
