//! The compaction benchmark (issue 18), on one log group's storage in `--dir`, in one run:
//!
//! - **append and index**: `--updates` messages of 100 B over `--keys` keys, in batches of
//!   100, into a compacted partition (the indexer feeds its key map) and into a plain one
//!   (the anchor), each until visible;
//! - **read**: each partition read from its start to its end: messages scanned per second
//!   (the compacted read leaves out every superseded message);
//! - **carry**: retention deleting the compacted group's oldest segments, carrying the live
//!   messages in them forward first (the second half of the updates goes to half of the
//!   keys, so the other half's latest values sit in old segments); carried messages per
//!   second against the anchor of appending as many one-message batches to a plain
//!   partition.
//!
//! `cargo build --release -p meridian-bench && target/release/compaction-bench`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use meridian_proto::batch::{self, Message};
use meridian_region_broker::storage::compaction::Compaction;
use meridian_region_broker::storage::{FlushPolicy, GroupConfig, LogGroup, PartitionKey};

#[derive(Debug, Parser)]
#[command(about = "Log compaction: append and index, read, and carry throughput")]
struct Args {
    /// Updates written to each partition.
    #[arg(long, default_value_t = 1_000_000)]
    updates: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u64,
    /// Where the groups keep their files.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
}

const KEY: PartitionKey = (1, 0);
const BATCH: u64 = 100;

fn key_of(i: u64, args: &Args) -> u64 {
    if i < args.updates / 2 {
        i % args.keys
    } else {
        i % (args.keys / 2)
    }
}

fn open(dir: &std::path::Path, retention_bytes: Option<u64>) -> anyhow::Result<LogGroup> {
    let config = GroupConfig {
        segment_bytes: 4 << 20,
        flush: FlushPolicy::Async,
        retention: None,
        retention_bytes,
        retention_check_interval: Duration::from_secs(3600),
        ..GroupConfig::default()
    };
    Ok(LogGroup::open(dir, config, &[(KEY, "t".to_owned())])?)
}

/// Appends the updates in batches of [`BATCH`], 16 in flight; seconds until visible.
async fn append_all(group: &LogGroup, args: &Args) -> anyhow::Result<f64> {
    let start = Instant::now();
    let value = Bytes::from(vec![b'v'; 100]);
    let mut i = 0;
    while i < args.updates {
        let mut pending = Vec::new();
        for _ in 0..16 {
            if i >= args.updates {
                break;
            }
            let messages: Vec<Message> = (i..(i + BATCH).min(args.updates))
                .map(|j| Message {
                    key: Some(Bytes::from(format!("key-{:08}", key_of(j, args)))),
                    value: Some(value.clone()),
                    headers: Vec::new(),
                    timestamp_ms: 0,
                })
                .collect();
            i += messages.len() as u64;
            let count = messages.len() as u32;
            pending.push(group.append(KEY, Bytes::from(batch::encode_batch(&messages)), count));
        }
        for p in pending {
            p.await?;
        }
    }
    let (_, written, _, _) = group.positions();
    group.subscribe().wait_for(|&v| v >= written).await?;
    Ok(start.elapsed().as_secs_f64())
}

/// Reads the partition to its end: (messages returned, seconds).
fn read_all(group: &LogGroup) -> anyhow::Result<(u64, f64)> {
    let start = Instant::now();
    let (mut next, latest) = group.offsets(KEY)?;
    let mut n = 0;
    while next < latest {
        let batches = group.read(KEY, next, 1 << 20)?;
        let Some(last) = batches.last() else {
            break;
        };
        next = last.base_offset + u64::from(last.count);
        n += batches
            .iter()
            .map(|b| u64::from(b.count) - b.removed.len() as u64)
            .sum::<u64>();
    }
    Ok((n, start.elapsed().as_secs_f64()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir_in(&args.dir)?;
    let plain = open(&tmp.path().join("plain"), None)?;
    // Retention keeps about a quarter of what is written.
    let keep = (args.updates * 130 / 4).max(8 << 20);
    let compacted = std::sync::Arc::new(open(&tmp.path().join("compacted"), Some(keep))?);
    compacted.set_compaction(KEY, Some(Compaction::default()))?;

    // A first run warms the disk and the page cache, so neither measured run pays it.
    let warm = open(&tmp.path().join("warm"), None)?;
    append_all(&warm, &args).await?;
    warm.close();
    drop(warm);
    let plain_s = append_all(&plain, &args).await?;
    let compacted_s = append_all(&compacted, &args).await?;
    let rate = |s: f64| args.updates as f64 / s;
    println!("| measurement | messages/s | anchor messages/s | ratio | notes |");
    println!("| --- | ---: | ---: | ---: | --- |");
    println!(
        "| append and index {} x 100 B over {} keys | {:.0} | {:.0} | {:.2} | anchor: the same into a plain partition |",
        args.updates,
        args.keys,
        rate(compacted_s),
        rate(plain_s),
        plain_s / compacted_s
    );

    let (plain_n, plain_read) = read_all(&plain)?;
    let (live, compacted_read) = read_all(&compacted)?;
    anyhow::ensure!(plain_n == args.updates, "the plain read returned {plain_n}");
    anyhow::ensure!(
        live == args.keys,
        "the compacted read returned {live} of {} keys",
        args.keys
    );
    println!(
        "| read from start to end (messages scanned/s) | {:.0} | {:.0} | {:.2} | {live} live messages returned; anchor: the plain partition, all returned |",
        rate(compacted_read),
        rate(plain_read),
        plain_read / compacted_read
    );

    // Retention down to `keep`: the live messages in the deleted segments are carried.
    let (bytes_before, segments_before) = compacted.journal_size();
    let start = Instant::now();
    let c = compacted.clone();
    tokio::task::spawn_blocking(move || c.apply_retention()).await??;
    let carry_s = start.elapsed().as_secs_f64();
    let carried = compacted.carried_total();
    let (bytes_after, segments_after) = compacted.journal_size();
    let (after, after_read) = read_all(&compacted)?;
    anyhow::ensure!(
        after == args.keys,
        "after retention the read returned {after}"
    );
    anyhow::ensure!(carried > 0, "nothing was carried");
    // The anchor: as many one-message appends to a plain partition.
    let anchor = open(&tmp.path().join("anchor"), None)?;
    let message = batch::encode_batch(&[Message {
        key: Some(Bytes::from_static(b"key-00000000")),
        value: Some(Bytes::from(vec![b'v'; 100])),
        headers: Vec::new(),
        timestamp_ms: 0,
    }]);
    let start = Instant::now();
    for _ in 0..carried {
        anchor.append(KEY, Bytes::from(message.clone()), 1).await?;
    }
    let anchor_s = start.elapsed().as_secs_f64();
    println!(
        "| carry live messages past deleted segments | {:.0} | {:.0} | {:.2} | {carried} carried; {segments_before} → {segments_after} segments ({} → {} MiB) in {carry_s:.2} s; read after: {:.0} messages scanned/s; anchor: {carried} one-message appends |",
        carried as f64 / carry_s,
        carried as f64 / anchor_s,
        anchor_s / carry_s,
        bytes_before >> 20,
        bytes_after >> 20,
        args.updates as f64 / after_read,
    );
    for g in [&plain, &*compacted, &anchor] {
        g.close();
    }
    Ok(())
}
