//! One program, one run, every figure beside its anchor on the same machine:
//!
//! (a) the disk itself: sequential writes of the journal's own group-commit size, each
//!     followed by fdatasync (and, for the async rows, without the sync);
//! (b) journal appends through `LogGroup` with group commit (fsync) and with async flush,
//!     100 B and 1 KiB messages, into 1 and 1,000 topics;
//! (c) gRPC produce and fetch against one in-process broker over loopback TCP, with
//!     p50/p99 latency.
//!
//! Rows (b), (d) and (e) also say how busy the cores were during the measurement and
//! what CPU each MB cost the whole process (`getrusage`): on this shared 2-core machine a
//! row whose process keeps both cores busy is CPU-bound, whatever its ratio to the disk.
//!
//! Figures are printed as a Markdown table with ratios to (a); bench/README.md holds the
//! last run. Absolute numbers on a shared 2-core machine are noisy: read the ratios.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use hdrhistogram::Histogram;
use meridian_bench::{CpuUse, raw_disk};
use meridian_proto::batch::{Message, encode_batch};
use meridian_proto::v1;
use meridian_region_broker::broker::{Broker, Strategy};
use meridian_region_broker::config::Config;
use meridian_region_broker::grpc::GrpcService;
use meridian_region_broker::storage::{FlushPolicy, GroupConfig, LogGroup, PartitionKey};

#[derive(Debug, Parser)]
#[command(about = "Meridian benchmarks: disk anchor, journal appends, gRPC produce/fetch")]
struct Args {
    /// Directory on the disk to measure (not tmpfs).
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Appends in flight at once (concurrent producers).
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Run only the replication rows (d).
    #[arg(long)]
    only_replication: bool,
    /// Run only the many-groups fsync rows (e).
    #[arg(long)]
    only_sync: bool,
    /// Run only the journal rows (b) of this message size (100 or 1024).
    #[arg(long)]
    only_journal: Option<usize>,
}

/// Messages per append in the producer-batch journal rows: a Kafka producer lingering a
/// few milliseconds sends 100 B messages batched by at least this many.
const PRODUCER_BATCH: usize = 16;

struct Row {
    name: String,
    mb_s: f64,
    msgs_s: f64,
    anchor_mb_s: f64,
    note: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    meridian_region_broker::storage::raise_open_file_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let base = tempfile::tempdir_in(&args.dir)
        .with_context(|| format!("creating a directory in {}", args.dir.display()))?;
    let mut rows = Vec::new();
    let duration = Duration::from_secs_f64(args.seconds);

    if args.only_sync {
        for row in rt.block_on(many_groups_rows(base.path(), args.in_flight, duration))? {
            rows.push(row);
        }
        print_table(&rows, &args);
        return Ok(());
    }
    let sizes = match (args.only_replication, args.only_journal) {
        (true, _) => vec![],
        (false, Some(size)) => vec![size],
        (false, None) => vec![100usize, 1024],
    };
    // One message per append into 1 and 1,000 topics; then 100 B messages as a producer
    // batches them (16 to an append), into 1 topic.
    let cases = sizes.iter().flat_map(|&size| {
        let single = [1u32, 1000]
            .into_iter()
            .map(move |topics| (size, 1, topics));
        let batched = (size == 100).then_some((size, PRODUCER_BATCH, 1));
        single.chain(batched)
    });
    for (size, per_append, topics) in cases {
        for &flush in &[FlushPolicy::Fsync, FlushPolicy::Async] {
            let dir = base
                .path()
                .join(format!("journal-{size}-{per_append}-{topics}-{flush:?}"));
            let r = rt.block_on(journal_append(
                &dir,
                size,
                per_append,
                topics,
                flush,
                args.in_flight,
                duration,
            ))?;
            let commit_bytes = (r.bytes_per_commit as usize).max(4096);
            let anchor = raw_disk(
                &base.path().join("raw"),
                commit_bytes,
                flush == FlushPolicy::Fsync,
                duration,
            )?;
            eprintln!(
                "journal {size} B ({per_append} per append) x {topics} topics {flush:?}: {:.1} MB/s, raw {anchor:.1} MB/s",
                r.mb_s
            );
            rows.push(Row {
                    name: format!(
                        "(b) journal append, {size} B{}, {topics} topic{}, {}",
                        if per_append > 1 {
                            format!(" in batches of {per_append}")
                        } else {
                            String::new()
                        },
                        if topics > 1 { "s" } else { "" },
                        flush_name(flush)
                    ),
                    mb_s: r.mb_s,
                    msgs_s: r.msgs_s,
                    anchor_mb_s: anchor,
                    note: format!(
                        "{:.0} records ({:.0} KiB) per commit; the journal writes {:.1} MB/s with record headers ({:.2} of the anchor); {}; anchor: {} KiB writes{}",
                        r.records_per_commit,
                        r.bytes_per_commit / 1024.0,
                        r.written_mb_s,
                        r.written_mb_s / anchor,
                        r.cpu,
                        commit_bytes / 1024,
                        if flush == FlushPolicy::Fsync {
                            " + fdatasync"
                        } else {
                            ", no sync"
                        }
                    ),
                });
        }
    }
    if args.only_journal.is_some() {
        print_table(&rows, &args);
        return Ok(());
    }
    let anchor = raw_disk(&base.path().join("raw"), 256 << 10, true, duration)?;
    let grpc_rows = if args.only_replication {
        Vec::new()
    } else {
        rt.block_on(grpc(base.path(), duration))?
    };
    for r in grpc_rows {
        rows.push(Row {
            anchor_mb_s: anchor,
            note: format!("{}; anchor: 256 KiB writes + fdatasync", r.note),
            ..r
        });
    }
    for (brokers, strategy, flush) in [
        (1u32, Strategy::Raft, FlushPolicy::Fsync),
        (3, Strategy::Raft, FlushPolicy::Fsync),
        (3, Strategy::Raft, FlushPolicy::Async),
        (3, Strategy::MasterSlave, FlushPolicy::Fsync),
        (3, Strategy::MasterSlave, FlushPolicy::Async),
    ] {
        let dir = base
            .path()
            .join(format!("region-{brokers}-{strategy:?}-{flush:?}"));
        let r = rt.block_on(replicated_produce(&dir, brokers, strategy, flush, duration))?;
        eprintln!("{}: {:.1} MB/s", r.name, r.mb_s);
        rows.push(Row {
            anchor_mb_s: anchor,
            note: format!("{}; anchor: 256 KiB writes + fdatasync", r.note),
            ..r
        });
    }
    if !args.only_replication {
        rows.extend(rt.block_on(many_groups_rows(base.path(), args.in_flight, duration))?);
    }
    print_table(&rows, &args);
    Ok(())
}

/// (e) 16 log groups appending at once with fsync: one fdatasync per group per commit vs
/// the broker's sync batcher (one syncfs for every group waiting), in the same run.
async fn many_groups_rows(
    base: &Path,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<Vec<Row>> {
    const GROUPS: u32 = 16;
    let mut rows = Vec::new();
    let mut per_group = 0.0;
    for batched in [false, true] {
        let dir = base.join(format!("groups-{batched}"));
        let r = many_groups(&dir, GROUPS, in_flight, batched, duration).await?;
        eprintln!(
            "{GROUPS} groups, batched fsyncs {batched}: {:.1} MB/s",
            r.mb_s
        );
        if !batched {
            per_group = r.mb_s;
        }
        rows.push(Row {
            name: format!(
                "(e) journal append, 1024 B, {GROUPS} groups, fsync, {}",
                if batched {
                    "batched (one syncfs for all waiting groups)"
                } else {
                    "one fdatasync per group commit"
                }
            ),
            mb_s: r.mb_s,
            msgs_s: r.msgs_s,
            anchor_mb_s: per_group,
            note: format!(
                "{:.0} records per group commit; {}; anchor: the per-group row of this run",
                r.records_per_commit, r.cpu
            ),
        });
    }
    Ok(rows)
}

async fn many_groups(
    dir: &Path,
    groups: u32,
    in_flight: usize,
    batched: bool,
    duration: Duration,
) -> anyhow::Result<AppendResult> {
    std::fs::create_dir_all(dir)?;
    let sync = batched
        .then(|| meridian_region_broker::storage::SyncBatcher::start(dir))
        .transpose()?;
    let config = GroupConfig {
        flush: FlushPolicy::Fsync,
        retention: None,
        sync,
        ..GroupConfig::default()
    };
    let mut opened = Vec::new();
    for g in 0..groups {
        let partitions = vec![((1, g), "bench".to_owned())];
        opened.push(Arc::new(LogGroup::open(
            &dir.join(g.to_string()),
            config.clone(),
            &partitions,
        )?));
    }
    let payload = Bytes::from(encode_batch(&[Message {
        value: Some(Bytes::from(vec![7u8; 1000])),
        timestamp_ms: 1,
        ..Message::default()
    }]));
    let appended = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for w in 0..in_flight {
        let group = opened[w % opened.len()].clone();
        let payload = payload.clone();
        let appended = appended.clone();
        let key = (1, (w % opened.len()) as u32);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                group.append(key, payload.clone(), 1).await.expect("append");
                appended.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    let cpu = CpuUse::start();
    for t in tasks {
        t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = appended.load(Ordering::Relaxed) as f64;
    let cpu = cpu.note(n * 1024.0 / 1e6);
    let commits: u64 = opened.iter().map(|g| g.commit_stats().0).sum();
    for g in opened {
        tokio::task::spawn_blocking(move || g.close()).await?;
    }
    std::fs::remove_dir_all(dir)?;
    Ok(AppendResult {
        mb_s: n * 1024.0 / secs / 1e6,
        msgs_s: n / secs,
        records_per_commit: n / commits.max(1) as f64,
        bytes_per_commit: 0.0,
        written_mb_s: 0.0,
        cpu,
    })
}

fn flush_name(f: FlushPolicy) -> &'static str {
    match f {
        FlushPolicy::Fsync => "fsync (group commit)",
        FlushPolicy::Async => "async flush",
    }
}

struct AppendResult {
    mb_s: f64,
    msgs_s: f64,
    records_per_commit: f64,
    bytes_per_commit: f64,
    /// What the journal wrote (record headers included), MB/s.
    written_mb_s: f64,
    /// The process's CPU over the measurement.
    cpu: String,
}

/// Journal appends of `size`-byte messages, `per_append` to each (1: one message per
/// append; more: a producer's batch, as a Kafka producer lingering sends them).
async fn journal_append(
    dir: &Path,
    size: usize,
    per_append: usize,
    topics: u32,
    flush: FlushPolicy,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<AppendResult> {
    let partitions: Vec<(PartitionKey, String)> = (0..topics)
        .map(|t| ((t + 1, 0), format!("topic-{t}")))
        .collect();
    let config = GroupConfig {
        flush,
        retention: None,
        ..GroupConfig::default()
    };
    let group = Arc::new(LogGroup::open(dir, config, &partitions)?);
    let message = Message {
        value: Some(Bytes::from(vec![7u8; size - 24])),
        timestamp_ms: 1,
        ..Message::default()
    };
    let payload = Bytes::from(encode_batch(&vec![message; per_append]));
    let count = per_append as u32;
    let appended = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for w in 0..in_flight {
        let group = group.clone();
        let payload = payload.clone();
        let appended = appended.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w as u32;
            while Instant::now() < deadline {
                let key = (i % topics + 1, 0);
                group
                    .append(key, payload.clone(), count)
                    .await
                    .expect("append");
                appended.fetch_add(1, Ordering::Relaxed);
                i = i.wrapping_add(in_flight as u32);
            }
        }));
    }
    let started = Instant::now();
    let cpu = CpuUse::start();
    for t in tasks {
        t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = appended.load(Ordering::Relaxed) as f64;
    let cpu = cpu.note(n * (per_append * size) as f64 / 1e6);
    let (commits, bytes) = group.commit_stats();
    let g = group.clone();
    tokio::task::spawn_blocking(move || g.close()).await?;
    std::fs::remove_dir_all(dir)?;
    let messages = n * per_append as f64;
    Ok(AppendResult {
        mb_s: messages * size as f64 / secs / 1e6,
        msgs_s: messages / secs,
        records_per_commit: n / commits.max(1) as f64,
        bytes_per_commit: bytes as f64 / commits.max(1) as f64,
        written_mb_s: bytes as f64 / secs / 1e6,
        cpu,
    })
}

/// gRPC produce (batches of 100 x 1 KiB, 8 in flight) then fetch of everything produced.
async fn grpc(dir: &Path, duration: Duration) -> anyhow::Result<Vec<Row>> {
    let config = Config {
        data_dir: dir.join("broker"),
        log_groups: 4,
        ..Config::default()
    };
    let broker = Arc::new(tokio::task::spawn_blocking(move || Broker::open(config)).await??);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tonic::transport::Server::builder()
        .add_service(GrpcService::server(broker.clone(), None, None))
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        );
    let server = tokio::spawn(server);
    broker.create_topic("bench", 4).await?;
    let client = v1::broker_client::BrokerClient::connect(format!("http://{addr}"))
        .await?
        .max_decoding_message_size(usize::MAX);

    let batch: Vec<v1::Message> = (0..100)
        .map(|_| v1::Message {
            value: Bytes::from(vec![3u8; 1000]),
            ..v1::Message::default()
        })
        .collect();
    let started = Instant::now();
    let (produced, produce_hist) = produce_load(vec![client.clone(); 4], &batch, duration).await?;
    let produce_secs = started.elapsed().as_secs_f64();

    // Fetch everything back, one task per partition.
    let mut tasks = Vec::new();
    for p in 0..4u32 {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let (mut offset, mut n) = (0u64, 0u64);
            loop {
                let t = Instant::now();
                let r = v1::FetchRequest {
                    topic: "bench".into(),
                    partition: p,
                    offset,
                    max_bytes: 1 << 20,
                    max_wait_ms: 0,
                };
                let got = client.fetch(r).await.expect("fetch").into_inner();
                hist.record(t.elapsed().as_micros() as u64).expect("record");
                match got.messages.last() {
                    Some(last) => {
                        offset = last.offset + 1;
                        n += got.messages.len() as u64;
                    }
                    None => return (n, hist),
                }
            }
        }));
    }
    let started = Instant::now();
    let (fetched, fetch_hist) = join_counts(tasks).await?;
    let fetch_secs = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        fetched == produced,
        "fetched {fetched} of {produced} messages"
    );
    server.abort();
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.close()).await?;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(vec![
        Row {
            name: "(c) gRPC produce, 100 x 1 KiB per request, 8 in flight, fsync".into(),
            mb_s: produced as f64 * 1000.0 / produce_secs / 1e6,
            msgs_s: produced as f64 / produce_secs,
            anchor_mb_s: 0.0,
            note: format!(
                "latency per request p50 {:.2} ms, p99 {:.2} ms",
                ms(&produce_hist, 0.5),
                ms(&produce_hist, 0.99)
            ),
        },
        Row {
            name: "(c) gRPC fetch, 1 MiB per request, 4 partitions".into(),
            mb_s: fetched as f64 * 1000.0 / fetch_secs / 1e6,
            msgs_s: fetched as f64 / fetch_secs,
            anchor_mb_s: 0.0,
            note: format!(
                "latency per request p50 {:.2} ms, p99 {:.2} ms",
                ms(&fetch_hist, 0.5),
                ms(&fetch_hist, 0.99)
            ),
        },
    ])
}

/// gRPC produce (100 x 1 KiB per request, 8 in flight) against a region of `brokers`
/// in-process brokers (raft over loopback gRPC when more than one), each on its own ports
/// and data directory.
async fn replicated_produce(
    dir: &Path,
    brokers: u32,
    strategy: Strategy,
    flush: FlushPolicy,
    duration: Duration,
) -> anyhow::Result<Row> {
    use meridian_region_broker::config::{MasterSlaveGroup, Peer};
    use meridian_region_broker::replication::transport::RaftTransportService;
    let master_slave = strategy == Strategy::MasterSlave && brokers > 1;
    let free = || std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr());
    let addrs: Vec<(std::net::SocketAddr, std::net::SocketAddr)> = (0..brokers)
        .map(|_| Ok((free()?, free()?)))
        .collect::<std::io::Result<_>>()?;
    let peers: Vec<Peer> = if brokers > 1 {
        addrs
            .iter()
            .enumerate()
            .map(|(i, (g, r))| Peer {
                id: i as u32 + 1,
                raft: r.to_string(),
                grpc: g.to_string(),
                kafka: None,
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut running = Vec::new();
    let mut servers = Vec::new();
    for (i, (grpc_addr, raft_addr)) in addrs.iter().enumerate() {
        let mut config = Config {
            broker_id: i as u32 + 1,
            data_dir: dir.join(format!("b{}", i + 1)),
            // Master-slave: groups 1-4 (group 0, the catalog's, is always raft), so the
            // topic's four partitions get four groups as under raft.
            log_groups: if master_slave { 5 } else { 4 },
            ..Config::default()
        };
        config.storage.flush = flush;
        config.replication.raft_listen = Some(*raft_addr);
        config.replication.peers = peers.clone();
        if master_slave {
            config.replication.master_slave = (1..5)
                .map(|group| MasterSlaveGroup {
                    group,
                    master: group % brokers + 1,
                })
                .collect();
        }
        let broker = Arc::new(tokio::task::spawn_blocking(move || Broker::open(config)).await??);
        if brokers > 1 {
            let transport = RaftTransportService::default();
            let listener = tokio::net::TcpListener::bind(raft_addr).await?;
            broker.start_replication(&transport).await?;
            servers.push(tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(transport.server())
                    .serve_with_incoming(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                    ),
            ));
        }
        let listener = tokio::net::TcpListener::bind(grpc_addr).await?;
        servers.push(tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(GrpcService::server(broker.clone(), None, None))
                .serve_with_incoming(
                    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                ),
        ));
        running.push(broker);
    }
    let bootstrap = addrs
        .iter()
        .map(|(g, _)| g.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let client = meridian_client::Client::connect(&bootstrap).await?;
    client
        .create_topic_with("bench", 4, strategy.as_str())
        .await?;
    // Each partition's leader, found by asking every broker.
    let batch: Vec<v1::Message> = (0..100)
        .map(|_| v1::Message {
            value: Bytes::from(vec![3u8; 1000]),
            ..v1::Message::default()
        })
        .collect();
    let mut leaders = Vec::new();
    for p in 0..4u32 {
        let mut found = None;
        for _ in 0..100 {
            for (g, _) in &addrs {
                let mut c = v1::broker_client::BrokerClient::connect(format!("http://{g}")).await?;
                let r = v1::ProduceRequest {
                    topic: "bench".into(),
                    partition: p,
                    messages: batch[..1].to_vec(),
                    acks: 0,
                    epoch: 0,
                    producer: None,
                    transactional: false,
                    transactional_id: String::new(),
                    deliver_at_ms: 0,
                };
                if c.produce(r).await.is_ok() {
                    found = Some(c);
                    break;
                }
            }
            if found.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        leaders.push(found.ok_or_else(|| anyhow::anyhow!("no leader for partition {p}"))?);
    }
    let started = Instant::now();
    let cpu = CpuUse::start();
    let (produced, hist) = produce_load(leaders, &batch, duration).await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu.note(produced as f64 * 1000.0 / 1e6);
    for b in &running {
        b.stop_replication().await;
    }
    for s in servers {
        s.abort();
    }
    for b in running {
        tokio::task::spawn_blocking(move || b.close()).await?;
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let what = if brokers > 1 {
        format!("replication factor {brokers} ({})", strategy.as_str())
    } else {
        "replication factor 1".to_owned()
    };
    Ok(Row {
        name: format!("(d) gRPC produce, {what}, {}", flush_name(flush)),
        mb_s: produced as f64 * 1000.0 / secs / 1e6,
        msgs_s: produced as f64 / secs,
        anchor_mb_s: 0.0,
        note: format!(
            "100 x 1 KiB per request, 8 in flight; latency p50 {:.2} ms, p99 {:.2} ms; {cpu}",
            ms(0.5),
            ms(0.99)
        ),
    })
}

/// Eight concurrent producers, two per partition, sending `batch` to partition p through
/// `clients[p]` for `duration`; returns messages sent and request latencies.
async fn produce_load(
    clients: Vec<v1::broker_client::BrokerClient<tonic::transport::Channel>>,
    batch: &[v1::Message],
    duration: Duration,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let partition = w % clients.len() as u32;
        let mut client = clients[partition as usize].clone();
        let batch = batch.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = v1::ProduceRequest {
                    topic: "bench".into(),
                    partition,
                    messages: batch.clone(),
                    acks: v1::Acks::Quorum as i32,
                    epoch: 0,
                    producer: None,
                    transactional: false,
                    transactional_id: String::new(),
                    deliver_at_ms: 0,
                };
                client.produce(r).await.expect("produce");
                hist.record(t.elapsed().as_micros() as u64).expect("record");
                n += batch.len() as u64;
            }
            (n, hist)
        }));
    }
    join_counts(tasks).await
}

/// Waits for tasks that each return a message count and a latency histogram; sums both.
async fn join_counts(
    tasks: Vec<tokio::task::JoinHandle<(u64, Histogram<u64>)>>,
) -> anyhow::Result<(u64, Histogram<u64>)> {
    let mut total = 0;
    let mut hist = Histogram::<u64>::new(3)?;
    for t in tasks {
        let (n, h) = t.await?;
        total += n;
        hist.add(h)?;
    }
    Ok((total, hist))
}

fn print_table(rows: &[Row], args: &Args) {
    println!("| measurement | MB/s | messages/s | anchor (a) MB/s | ratio to (a) | notes |");
    println!("| --- | ---: | ---: | ---: | ---: | --- |");
    for r in rows {
        println!(
            "| {} | {:.1} | {:.0} | {:.1} | {:.2} | {} |",
            r.name,
            r.mb_s,
            r.msgs_s,
            r.anchor_mb_s,
            r.mb_s / r.anchor_mb_s,
            r.note
        );
    }
    let find = |s: &str| rows.iter().find(|r| r.name == s).map(|r| r.mb_s);
    for size in [100, 1024] {
        for flush in [FlushPolicy::Fsync, FlushPolicy::Async] {
            let one = find(&format!(
                "(b) journal append, {size} B, 1 topic, {}",
                flush_name(flush)
            ));
            let many = find(&format!(
                "(b) journal append, {size} B, 1000 topics, {}",
                flush_name(flush)
            ));
            if let (Some(one), Some(many)) = (one, many) {
                println!(
                    "\n1,000 topics vs 1 topic, {size} B, {}: {:.2}",
                    flush_name(flush),
                    many / one
                );
            }
        }
    }
    println!(
        "\n({} s per measurement, {} appends in flight, directory {})",
        args.seconds,
        args.in_flight,
        args.dir.display()
    );
}
