//! Property tests of a log group against an in-memory model: random appends and offset
//! commits across many partitions (some batches from idempotent producers, whose state
//! must follow what survives), truncations, crashes at random points (unsynced bytes
//! dropped, the last write torn, index files cut short), reopen, compare.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::{
    FlushPolicy, GroupConfig, LogGroup, POSITIONS_ONLY, PartitionKey, ReadError, SeqCheck,
};
use meridian_proto::producer::{PREFIX_LEN, ProducerBatch};

const TOPICS: [(u32, &str); 3] = [(1, "orders"), (2, "payments"), (5, "audit.log")];
const PARTITIONS: u32 = 2;

#[derive(Debug, Clone)]
enum Op {
    Append {
        partition: usize,
        size: usize,
        count: u32,
        /// Written by this idempotent producer.
        producer: Option<i64>,
    },
    Commit {
        partition: usize,
        group: u8,
        offset: u64,
    },
    /// Truncate after the record at this fraction of the acknowledged records.
    Truncate { at: f64 },
    /// Crash and reopen.
    Crash {
        cut: f64,
        garbage: bool,
        index_cut: f64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..6usize, 0..300usize, 1..4u32, proptest::option::of(0..3i64)).prop_map(|(partition, size, count, producer)| Op::Append { partition, size, count, producer }),
        2 => (0..6usize, 0..3u8, 0..50u64).prop_map(|(partition, group, offset)| Op::Commit { partition, group, offset }),
        1 => (0.0..1.0f64).prop_map(|at| Op::Truncate { at }),
        2 => (0.0..1.0f64, any::<bool>(), 0.0..1.0f64).prop_map(|(cut, garbage, index_cut)| Op::Crash { cut, garbage, index_cut }),
    ]
}

/// A single-threaded runtime for a test's appends (the storage tests share it).
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Two worker threads, for appends that must be in flight at once.
pub(crate) fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn partitions() -> Vec<(PartitionKey, String)> {
    TOPICS
        .iter()
        .flat_map(|&(id, name)| (0..PARTITIONS).map(move |p| ((id, p), name.to_owned())))
        .collect()
}

fn config(flush: FlushPolicy) -> GroupConfig {
    GroupConfig {
        segment_bytes: 4096,
        index_entries_per_file: 8,
        flush,
        flush_interval: Duration::from_millis(5),
        retention: None,
        retention_bytes: None,
        retention_check_interval: Duration::from_secs(3600),
        ..GroupConfig::default()
    }
}

/// One record the model knows of, in journal order.
#[derive(Debug, Clone)]
struct Rec {
    key: PartitionKey,
    position: u64,
    end: u64,
    kind: RecKind,
}

#[derive(Debug, Clone)]
enum RecKind {
    Batch {
        payload: Bytes,
        base: u64,
        count: u32,
        producer: Option<ProducerBatch>,
    },
    Commit {
        group: String,
        offset: u64,
    },
}

fn payload(seed: usize, size: usize) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|i| (seed * 31 + i * 7) as u8)
            .collect::<Vec<_>>(),
    )
}

fn run(ops: Vec<Op>, flush: FlushPolicy) -> Result<(), TestCaseError> {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn")
        .try_init();
    let rt = runtime();
    let tmp = tempfile::tempdir_in(if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    })
    .unwrap();
    let dir = tmp.path().join("group-0");
    let keys: Vec<PartitionKey> = partitions().into_iter().map(|(k, _)| k).collect();
    let mut group = LogGroup::open(&dir, config(flush), &partitions()).unwrap();
    let mut model: Vec<Rec> = Vec::new();
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            Op::Append {
                partition,
                size,
                count,
                producer,
            } => {
                let key = keys[partition];
                let data = payload(n, size);
                // A producer continues after its last batch that survived; without one
                // here it may start anywhere.
                let producer = producer.map(|id| {
                    let first = last_producer_batches(&model, key, id)
                        .last()
                        .map_or(1000, |(p, _)| p.last_sequence + 1);
                    ProducerBatch {
                        id,
                        epoch: 0,
                        first_sequence: first,
                        last_sequence: first + count as i32 - 1,
                    }
                });
                let appended = match producer {
                    Some(p) => {
                        prop_assert_eq!(group.check_producer(key, &p), SeqCheck::Write);
                        rt.block_on(group.append_producer(key, data.clone(), count, p, None))
                            .unwrap()
                    }
                    None => rt.block_on(group.append(key, data.clone(), count)).unwrap(),
                };
                let base = model
                    .iter()
                    .rev()
                    .find_map(|r| match (&r.kind, r.key == key) {
                        (RecKind::Batch { base, count, .. }, true) => {
                            Some(base + u64::from(*count))
                        }
                        _ => None,
                    });
                prop_assert_eq!(appended.base_offset, base.unwrap_or(0));
                let prefix = if producer.is_some() { PREFIX_LEN } else { 0 };
                let end =
                    appended.position + (meridian_proto::record::HEADER_LEN + prefix + size) as u64;
                prop_assert_eq!(end, appended.position + u64::from(appended.len));
                model.push(Rec {
                    key,
                    position: appended.position,
                    end,
                    kind: RecKind::Batch {
                        payload: data,
                        base: appended.base_offset,
                        count,
                        producer,
                    },
                });
            }
            Op::Commit {
                partition,
                group: g,
                offset,
            } => {
                let key = keys[partition];
                let name = format!("group-{g}");
                let appended = rt
                    .block_on(group.commit_offset(&name, key, offset))
                    .unwrap();
                let end = appended.position
                    + (meridian_proto::record::HEADER_LEN + 2 + name.len() + 8) as u64;
                model.push(Rec {
                    key,
                    position: appended.position,
                    end,
                    kind: RecKind::Commit {
                        group: name,
                        offset,
                    },
                });
            }
            Op::Truncate { at } => {
                if model.is_empty() {
                    continue;
                }
                let i = ((model.len() as f64) * at) as usize;
                let position = model[i.min(model.len() - 1)].position;
                rt.block_on(group.truncate_after(position)).unwrap();
                model.truncate(i.min(model.len() - 1));
            }
            Op::Crash {
                cut,
                garbage,
                index_cut,
            } => {
                group.crash();
                // Read after the threads stopped: the indexer may sync until the very end.
                let (_, written, synced, _) = group.positions();
                drop(group);
                let at = synced + ((written - synced) as f64 * cut) as u64;
                let changed = tear_journal(&dir, at, written, garbage, n);
                shorten_indexes(&dir, index_cut);
                // Records wholly before the first changed byte survive; recovery cuts the
                // rest (a torn write may leave a record's bytes as they were meant to be).
                model.retain(|r| r.end <= changed);
                group = LogGroup::open(&dir, config(flush), &partitions()).unwrap();
            }
        }
        if n % 7 == 0 {
            check(&rt, &group, &model, &keys)?;
        }
    }
    check(&rt, &group, &model, &keys)?;
    group.close();
    drop(group);
    let group = LogGroup::open(&dir, config(flush), &partitions()).unwrap();
    check(&rt, &group, &model, &keys)?;
    group.close();
    Ok(())
}

/// The batches of producer `id` on `key` the model holds, oldest first, with their base
/// offsets.
fn last_producer_batches(model: &[Rec], key: PartitionKey, id: i64) -> Vec<(ProducerBatch, u64)> {
    model
        .iter()
        .filter(|r| r.key == key)
        .filter_map(|r| match &r.kind {
            RecKind::Batch {
                producer: Some(p),
                base,
                ..
            } if p.id == id => Some((*p, *base)),
            _ => None,
        })
        .collect()
}

/// Simulates a crash's effect on the journal: bytes from `at` to `written` are lost (zeroed),
/// and with `garbage` the last write is torn into random bytes instead. Returns the first
/// position whose byte changed (`u64::MAX` if none did).
fn tear_journal(dir: &Path, at: u64, written: u64, garbage: bool, seed: usize) -> u64 {
    let mut first_changed = u64::MAX;
    for entry in std::fs::read_dir(dir.join("journal")).unwrap() {
        let path = entry.unwrap().path();
        let start: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let size = file.metadata().unwrap().len();
        let (from, to) = (at.max(start), (written + 64).min(start + size));
        if from < to {
            let bytes: Vec<u8> = if garbage {
                (0..to - from)
                    .map(|i| (seed as u64 * 131 + i * 17 + 1) as u8)
                    .collect()
            } else {
                vec![0; (to - from) as usize]
            };
            let mut before = vec![0; bytes.len()];
            file.read_exact_at(&mut before, from - start).unwrap();
            if let Some(i) = before.iter().zip(&bytes).position(|(a, b)| a != b) {
                first_changed = first_changed.min(from + i as u64);
            }
            file.write_all_at(&bytes, from - start).unwrap();
        }
    }
    first_changed
}

/// Cuts each index file somewhere past what the checkpoint vouches for, possibly leaving a
/// partial entry: entries written after the last checkpoint may or may not have reached disk.
fn shorten_indexes(dir: &Path, fraction: f64) {
    let checkpoint = super::checkpoint::Checkpoint::load(&crate::backend::FileBackend, dir)
        .unwrap()
        .unwrap_or_default();
    let counts: HashMap<(u32, u32), u64> = checkpoint
        .counts
        .iter()
        .map(|&(t, p, c)| ((t, p), c))
        .collect();
    for &(id, name) in &TOPICS {
        for p in 0..PARTITIONS {
            let pdir = dir.join("index").join(name).join(p.to_string());
            let Ok(files) = std::fs::read_dir(&pdir) else {
                continue;
            };
            let trusted = counts.get(&(id, p)).copied().unwrap_or(0);
            for f in files {
                let path = f.unwrap().path();
                let first: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                let len = std::fs::metadata(&path).unwrap().len();
                let keep = trusted.saturating_sub(first).min(8) * 20;
                if len > keep {
                    let new_len = keep + ((len - keep) as f64 * fraction) as u64;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(new_len)
                        .unwrap();
                }
            }
        }
    }
}

fn check(
    rt: &tokio::runtime::Runtime,
    group: &LogGroup,
    model: &[Rec],
    keys: &[PartitionKey],
) -> Result<(), TestCaseError> {
    // Wait until everything durable is indexed.
    let (_, written, _, _) = group.positions();
    let mut visible = group.subscribe();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), visible.wait_for(|&v| v >= written))
            .await
            .expect("indexing stalled")
            .unwrap();
    });
    for &key in keys {
        let expected: Vec<(u64, u32, Bytes)> = model
            .iter()
            .filter(|r| r.key == key)
            .filter_map(|r| match &r.kind {
                RecKind::Batch {
                    payload,
                    base,
                    count,
                    ..
                } => Some((*base, *count, payload.clone())),
                RecKind::Commit { .. } => None,
            })
            .collect();
        let latest = expected.last().map_or(0, |(b, c, _)| b + u64::from(*c));
        prop_assert_eq!(
            group.offsets(key).unwrap(),
            (0, latest),
            "offsets of {:?}",
            key
        );
        let mut got = Vec::new();
        let mut next = 0;
        while next < latest {
            let batches = group.read(key, next, 500).unwrap();
            prop_assert!(!batches.is_empty());
            for b in batches {
                next = b.base_offset + u64::from(b.count);
                got.push((b.base_offset, b.count, b.payload));
            }
        }
        prop_assert_eq!(&got, &expected, "messages of {:?}", key);
        let past_end = group.read(key, latest + 1, 100);
        prop_assert!(
            matches!(past_end, Err(ReadError::OffsetOutOfRange { .. })),
            "read past the end: {:?}",
            past_end
        );
        // Each producer's last five surviving batches are duplicates, the one before them
        // is out of order, its next batch follows; a producer with none may start anywhere.
        for id in 0..3i64 {
            let batches = last_producer_batches(model, key, id);
            let any = ProducerBatch {
                id,
                epoch: 0,
                first_sequence: 7,
                last_sequence: 7,
            };
            let Some((last, _)) = batches.last() else {
                prop_assert_eq!(group.check_producer(key, &any), SeqCheck::Write);
                continue;
            };
            let next = ProducerBatch {
                first_sequence: last.last_sequence + 1,
                last_sequence: last.last_sequence + 1,
                ..*last
            };
            prop_assert_eq!(group.check_producer(key, &next), SeqCheck::Write);
            for (i, (p, base)) in batches.iter().rev().enumerate() {
                let got = group.check_producer(key, p);
                if i < super::BATCHES_KEPT {
                    prop_assert!(
                        matches!(got, SeqCheck::Duplicate { base_offset, .. } if base_offset == *base),
                        "{:?} of {:?}: {:?}",
                        p,
                        key,
                        got
                    );
                } else {
                    prop_assert!(matches!(got, SeqCheck::Refuse(_)), "{:?}: {:?}", p, got);
                }
            }
        }
        for g in 0..3u8 {
            let name = format!("group-{g}");
            let expected = model.iter().rev().find_map(|r| match &r.kind {
                RecKind::Commit { group, offset } if r.key == key && *group == name => {
                    Some(*offset)
                }
                _ => None,
            });
            prop_assert_eq!(
                group.committed_offset(&name, key),
                expected,
                "offset of {} on {:?}",
                name,
                key
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn fsync_group_survives_crashes(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops, FlushPolicy::Fsync)?;
    }

    #[test]
    fn async_group_survives_crashes(ops in proptest::collection::vec(op(), 1..80)) {
        run(ops, FlushPolicy::Async)?;
    }
}

#[test]
fn retention_deletes_whole_segments_trims_indexes_and_keeps_committed_offsets() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group-0");
    let config = GroupConfig {
        retention_bytes: Some(4 * 4096),
        ..config(FlushPolicy::Fsync)
    };
    let group = LogGroup::open(&dir, config.clone(), &partitions()).unwrap();
    let key = (1, 0);
    rt.block_on(group.commit_offset("early", key, 3)).unwrap();
    for i in 0..200 {
        rt.block_on(group.append(key, payload(i, 200), 1)).unwrap();
    }
    let (_, written, _, _) = group.positions();
    rt.block_on(async {
        let mut visible = group.subscribe();
        visible.wait_for(|&v| v >= written).await.unwrap();
    });
    assert!(group.journal_size().1 > 4);
    group.apply_retention().unwrap();
    let (bytes, segments) = group.journal_size();
    assert!(
        bytes <= 5 * 4096 && segments <= 5,
        "{bytes} bytes in {segments} segments after retention"
    );
    let (earliest, latest) = group.offsets(key).unwrap();
    assert!(earliest > 0 && latest == 200, "{earliest}..{latest}");
    assert!(matches!(
        group.read(key, earliest - 1, 10),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    let first = group.read(key, earliest, 10).unwrap();
    assert_eq!(first[0].base_offset, earliest);
    assert_eq!(first[0].payload, payload(earliest as usize, 200));
    // The commit's record was in a deleted segment: it was carried forward.
    assert_eq!(group.committed_offset("early", key), Some(3));
    group.close();
    drop(group);
    let group = LogGroup::open(&dir, config, &partitions()).unwrap();
    assert_eq!(group.offsets(key).unwrap(), (earliest, 200));
    assert_eq!(group.committed_offset("early", key), Some(3));
    group.close();
}

#[test]
fn a_partitions_start_moves_on_its_own_and_stays_moved_after_a_restart() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group-0");
    let group = LogGroup::open(&dir, config(FlushPolicy::Fsync), &partitions()).unwrap();
    let (short, long) = ((1, 0), (2, 1));
    for i in 0..30 {
        rt.block_on(group.append(short, payload(i, 100), 1))
            .unwrap();
        rt.block_on(group.append(long, payload(i, 100), 1)).unwrap();
    }
    let (_, written, _, _) = group.positions();
    wait_visible(&rt, &group, written);
    // One partition's start moves; the other partition sharing the journal keeps all.
    assert_eq!(group.advance_start(short, 20).unwrap(), 20);
    assert_eq!(group.advance_start(short, 5).unwrap(), 20, "never back");
    assert_eq!(group.offsets(short).unwrap(), (20, 30));
    assert_eq!(group.offsets(long).unwrap(), (0, 30));
    assert!(matches!(
        group.read(short, 19, 10),
        Err(ReadError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        group.read(short, 20, 1).unwrap()[0].payload,
        payload(20, 100)
    );
    // By time: nothing is older than the epoch's start; everything is older than the
    // future (the start moves to the end, the next message readable).
    assert_eq!(group.expire_before(short, 0).unwrap(), 20);
    assert_eq!(group.expire_before(short, i64::MAX).unwrap(), 30);
    // Past the end: the end.
    assert_eq!(group.advance_start(short, 1000).unwrap(), 30);
    group.close();
    drop(group);
    let group = LogGroup::open(&dir, config(FlushPolicy::Fsync), &partitions()).unwrap();
    assert_eq!(
        group.offsets(short).unwrap(),
        (30, 30),
        "the start survives a restart"
    );
    assert_eq!(group.offsets(long).unwrap(), (0, 30));
    rt.block_on(group.append(short, payload(30, 100), 1))
        .unwrap();
    let (_, written, _, _) = group.positions();
    wait_visible(&rt, &group, written);
    assert_eq!(
        group.read(short, 30, 1).unwrap()[0].payload,
        payload(30, 100)
    );
    group.close();
}

#[test]
fn a_start_mark_commit_moves_the_start_where_it_is_indexed_and_after_recovery() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group-0");
    let group = LogGroup::open(&dir, config(FlushPolicy::Fsync), &partitions()).unwrap();
    let (deleted, other) = ((1, 0), (2, 1));
    for i in 0..10 {
        rt.block_on(group.append(deleted, payload(i, 100), 1))
            .unwrap();
        rt.block_on(group.append(other, payload(i, 100), 1))
            .unwrap();
    }
    // The record a DeleteRecords writes (replicated as any commit is).
    rt.block_on(group.commit_offset(crate::START_MARK, deleted, 6))
        .unwrap();
    let (_, written, _, _) = group.positions();
    wait_visible(&rt, &group, written);
    assert_eq!(group.offsets(deleted).unwrap(), (6, 10));
    assert_eq!(
        group.offsets(other).unwrap(),
        (0, 10),
        "its neighbour keeps all"
    );
    assert!(
        group.committed_offsets().is_empty(),
        "no consumer group shows for it"
    );
    // Past the end: the end; a later, lower one does not move it back.
    rt.block_on(group.commit_offset(crate::START_MARK, deleted, 99))
        .unwrap();
    rt.block_on(group.commit_offset(crate::START_MARK, deleted, 2))
        .unwrap();
    let (_, written, _, _) = group.positions();
    wait_visible(&rt, &group, written);
    assert_eq!(group.offsets(deleted).unwrap(), (10, 10));
    // Killed before any checkpoint names the start: recovery indexes the records again.
    drop(group);
    let group = LogGroup::open(&dir, config(FlushPolicy::Fsync), &partitions()).unwrap();
    assert_eq!(group.offsets(deleted).unwrap(), (10, 10));
    assert_eq!(group.offsets(other).unwrap(), (0, 10));
    group.close();
}

#[test]
fn a_truncation_interrupted_after_its_intent_is_finished_by_recovery() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group-0");
    let group = LogGroup::open(&dir, config(FlushPolicy::Fsync), &partitions()).unwrap();
    let key = (2, 1);
    let mut positions = Vec::new();
    for i in 0..40 {
        positions.push(
            rt.block_on(group.append(key, payload(i, 150), 2))
                .unwrap()
                .position,
        );
    }
    rt.block_on(group.commit_offset("g", key, 10)).unwrap();
    let cut = positions[25];
    rt.block_on(group.commit_offset("g", key, 60)).unwrap();
    group.close();
    drop(group);
    // The process died right after recording the intent: nothing else was done.
    let mut checkpoint = super::checkpoint::Checkpoint::load(&crate::backend::FileBackend, &dir)
        .unwrap()
        .unwrap();
    checkpoint.truncate_to = Some(cut);
    checkpoint
        .store(&crate::backend::FileBackend, &dir)
        .unwrap();

    let group = LogGroup::open(&dir, config(FlushPolicy::Fsync), &partitions()).unwrap();
    assert_eq!(group.offsets(key).unwrap(), (0, 50));
    assert_eq!(group.positions().1, cut);
    // Both commits were after the cut.
    assert_eq!(group.committed_offset("g", key), None);
    let next = rt.block_on(group.append(key, payload(99, 10), 1)).unwrap();
    assert_eq!((next.base_offset, next.position), (50, cut));
    assert!(
        super::checkpoint::Checkpoint::load(&crate::backend::FileBackend, &dir)
            .unwrap()
            .unwrap()
            .truncate_to
            .is_none()
    );
    group.close();
}

/// Pulls everything durable on `leader` into `follower`, from `from`; returns the end.
fn pull(
    rt: &tokio::runtime::Runtime,
    leader: &LogGroup,
    follower: &LogGroup,
    mut from: u64,
) -> Result<u64, super::AppendError> {
    loop {
        let chunk = leader.read_records(from, 700).unwrap();
        if chunk.records.is_empty() && chunk.next == from {
            return Ok(from);
        }
        let end = rt.block_on(follower.append_records(&chunk))?;
        assert_eq!(end, chunk.next);
        from = chunk.next;
    }
}

fn wait_visible(rt: &tokio::runtime::Runtime, group: &LogGroup, position: u64) {
    let mut visible = group.subscribe();
    rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(10),
            visible.wait_for(|&v| v >= position),
        )
        .await
        .expect("not visible")
        .unwrap();
    });
}

#[test]
fn a_replica_pulls_records_by_position_and_shows_only_committed_ones() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        replicated: true,
        ..config(FlushPolicy::Fsync)
    };
    let leader = LogGroup::open(&tmp.path().join("leader"), config.clone(), &partitions()).unwrap();
    let follower =
        LogGroup::open(&tmp.path().join("follower"), config.clone(), &partitions()).unwrap();
    let keys: Vec<PartitionKey> = partitions().into_iter().map(|(k, _)| k).collect();
    let mut records = Vec::new();
    for i in 0..120 {
        let key = keys[i % keys.len()];
        let appended = rt
            .block_on(leader.append(key, payload(i, 50 + i % 200), 1))
            .unwrap();
        records.push((key, appended));
        if i % 10 == 0 {
            rt.block_on(leader.commit_offset("g", key, i as u64))
                .unwrap();
        }
    }
    // Durable but not committed: invisible.
    assert_eq!(leader.offsets(keys[0]).unwrap(), (0, 0));
    let written = leader.positions().1;
    assert_eq!(pull(&rt, &leader, &follower, 0).unwrap(), written);
    assert_eq!(
        follower.positions().1,
        written,
        "replicas must hold records at the same positions"
    );
    assert!(
        leader.journal_size().1 > 3,
        "the test must cross segment boundaries"
    );

    // Commit the first 60 records on both: exactly those become visible.
    let half = records[60].1.position;
    for g in [&leader, &follower] {
        g.set_watermark(half);
        wait_visible(&rt, g, half);
        let visible: u64 = keys.iter().map(|&k| g.offsets(k).unwrap().1).sum();
        assert_eq!(visible, 60);
    }
    for g in [&leader, &follower] {
        g.set_watermark(written);
        wait_visible(&rt, g, written);
    }
    for &(key, appended) in &records {
        let batch = &follower.read(key, appended.base_offset, 1).unwrap()[0];
        let leader_batch = &leader.read(key, appended.base_offset, 1).unwrap()[0];
        assert_eq!(batch.payload, leader_batch.payload);
        assert_eq!(batch.append_time_ms, leader_batch.append_time_ms);
    }
    assert_eq!(
        follower.committed_offset("g", keys[0]),
        leader.committed_offset("g", keys[0])
    );
    assert!(follower.committed_offset("g", keys[0]).is_some());

    // The same chunk twice does not continue the history: refused, nothing written.
    let chunk = leader.read_records(0, 700).unwrap();
    assert!(matches!(
        rt.block_on(follower.append_records(&chunk)),
        Err(super::AppendError::Diverged { .. })
    ));
    // Committed records are never truncated.
    assert!(rt.block_on(follower.truncate_after(half)).is_err());

    // A divergent uncommitted tail (an old leader's) is cut back to where the replicas agree.
    rt.block_on(follower.append(keys[1], payload(1000, 30), 2))
        .unwrap();
    for i in 0..5 {
        rt.block_on(leader.append(keys[2], payload(2000 + i, 40), 1))
            .unwrap();
    }
    assert!(matches!(
        pull(&rt, &leader, &follower, written),
        Err(super::AppendError::Diverged { .. })
    ));
    rt.block_on(follower.truncate_after(written)).unwrap();
    let end = pull(&rt, &leader, &follower, written).unwrap();
    assert_eq!(
        (end, follower.positions().1),
        (leader.positions().1, leader.positions().1)
    );
    for g in [&leader, &follower] {
        g.set_watermark(end);
        wait_visible(&rt, g, end);
    }
    assert_eq!(
        follower.offsets(keys[2]).unwrap(),
        leader.offsets(keys[2]).unwrap()
    );
    assert_eq!(
        follower.offsets(keys[1]).unwrap(),
        leader.offsets(keys[1]).unwrap()
    );
    leader.close();
    follower.close();

    // After a restart a replica shows what was committed at its last checkpoint.
    let follower = LogGroup::open(&tmp.path().join("follower"), config, &partitions()).unwrap();
    assert_eq!(follower.positions().1, end);
    assert_eq!(follower.positions().3, end);
    follower.close();
}

#[test]
fn a_replicated_group_waits_for_a_topic_it_does_not_know_yet() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        replicated: true,
        ..config(FlushPolicy::Fsync)
    };
    let group = LogGroup::open(&tmp.path().join("g"), config, &[]).unwrap();
    // Records of topic 7 arrive before this replica applied the topic's creation, then
    // records of topic 8, which was deleted.
    rt.block_on(group.append((7, 0), payload(1, 20), 2))
        .unwrap();
    rt.block_on(group.append((8, 0), payload(2, 20), 1))
        .unwrap();
    let end = rt
        .block_on(group.append((7, 0), payload(3, 20), 1))
        .unwrap();
    let written = group.positions().1;
    group.set_watermark(written);
    std::thread::sleep(Duration::from_millis(50));
    // Nothing past the first unknown record is visible yet: skipping it would lose it.
    assert_eq!(group.positions().3, 0);
    group.add_partition((7, 0), "late").unwrap();
    // Now the indexer moves on to the deleted topic's record and waits there.
    wait_visible(&rt, &group, 1);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        group.positions().3 < end.position,
        "passed a record of an unknown topic"
    );
    group.retire_topic(8);
    wait_visible(&rt, &group, written);
    assert_eq!(group.offsets((7, 0)).unwrap(), (0, 3));
    group.close();
}

/// A replicated group in `dir` whose retention keeps 4 KiB.
fn replicated_with_retention(dir: &Path) -> LogGroup {
    let config = GroupConfig {
        replicated: true,
        retention_bytes: Some(4096),
        ..config(FlushPolicy::Fsync)
    };
    LogGroup::open(&dir.join("g"), config, &partitions()).unwrap()
}

#[test]
fn a_replicated_group_deletes_only_below_its_retention_floor() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let group = replicated_with_retention(tmp.path());
    let mut ends = Vec::new();
    for i in 0..100 {
        let a = rt
            .block_on(group.append((1, 0), payload(i, 200), 1))
            .unwrap();
        ends.push(a.position + u64::from(a.len));
    }
    let written = group.positions().1;
    group.set_watermark(written);
    wait_visible(&rt, &group, written);
    let before = group.journal_size();
    assert!(before.1 > 4);
    group.apply_retention().unwrap();
    assert_eq!(
        group.journal_size(),
        before,
        "nothing is covered by a snapshot yet: a lagging replica may need every record"
    );
    // Raft purged up to the 40th record: only segments wholly below it may go.
    let floor = ends[39];
    group.set_retention_floor(floor);
    group.apply_retention().unwrap();
    let (start, ..) = group.positions();
    assert!(start > 0 && start <= floor, "start {start}, floor {floor}");
    assert!(group.journal_size().1 < before.1);
    group.close();
}

#[test]
fn a_replica_behind_the_retained_journal_resets_and_pulls_from_the_start() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let leader_config = GroupConfig {
        retention_bytes: Some(3 * 4096),
        ..config(FlushPolicy::Fsync)
    };
    let leader = LogGroup::open(&tmp.path().join("leader"), leader_config, &partitions()).unwrap();
    // Partition (1, 0) gets records throughout; (1, 1) only early, so retention deletes
    // all of its records and the replica must learn its next offset from the leader.
    for i in 0..10 {
        rt.block_on(leader.append((1, 1), payload(i, 100), 1))
            .unwrap();
    }
    rt.block_on(leader.commit_offset("g", (1, 0), 7)).unwrap();
    for i in 0..120 {
        rt.block_on(leader.append((1, 0), payload(i, 200), 2))
            .unwrap();
    }
    wait_visible(&rt, &leader, leader.positions().1);
    leader.apply_retention().unwrap();
    let start = leader.positions().0;
    assert!(start > 0, "retention deleted nothing");
    let follower_config = GroupConfig {
        replicated: true,
        ..config(FlushPolicy::Fsync)
    };
    let dir = tmp.path().join("follower");
    let follower = LogGroup::open(&dir, follower_config.clone(), &partitions()).unwrap();
    // An old record the follower had: the reset drops it.
    rt.block_on(follower.append((2, 0), payload(1, 50), 1))
        .unwrap();
    let ends = leader.partition_ends_at(start).unwrap();
    assert_eq!(ends[&(1, 1)], 10);
    rt.block_on(follower.reset_to(start, ends)).unwrap();
    assert_eq!(follower.positions().1, start);
    let end = pull(&rt, &leader, &follower, start).unwrap();
    follower.set_watermark(end);
    wait_visible(&rt, &follower, end);
    let check_same = |follower: &LogGroup| {
        for key in [(1, 0), (1, 1), (2, 0)] {
            assert_eq!(
                follower.offsets(key).unwrap(),
                leader.offsets(key).unwrap(),
                "offsets of {key:?}"
            );
        }
        let (earliest, _) = leader.offsets((1, 0)).unwrap();
        let a = leader.read((1, 0), earliest, 1 << 20).unwrap();
        let b = follower.read((1, 0), earliest, 1 << 20).unwrap();
        assert_eq!(a.len(), b.len());
        for (a, b) in a.iter().zip(&b) {
            assert_eq!((a.base_offset, &a.payload), (b.base_offset, &b.payload));
        }
        assert_eq!(follower.committed_offset("g", (1, 0)), Some(7));
    };
    check_same(&follower);
    // It goes on replicating, and a partition with no retained record continues at the
    // leader's offset.
    rt.block_on(leader.append((1, 1), payload(99, 100), 1))
        .unwrap();
    // The leader indexes asynchronously: compare once its index shows the record too.
    wait_visible(&rt, &leader, leader.positions().1);
    let end = pull(&rt, &leader, &follower, end).unwrap();
    follower.set_watermark(end);
    wait_visible(&rt, &follower, end);
    assert_eq!(follower.offsets((1, 1)).unwrap(), (10, 11));
    check_same(&follower);
    // And it recovers as it was.
    follower.close();
    drop(follower);
    let follower = LogGroup::open(&dir, follower_config, &partitions()).unwrap();
    follower.set_watermark(end);
    wait_visible(&rt, &follower, end);
    check_same(&follower);
    assert_eq!(follower.positions().0, start);
    follower.close();
    leader.close();
}

#[test]
fn groups_sharing_a_sync_batcher_append_concurrently_and_recover() {
    let rt = multi_thread_runtime();
    let tmp = tempfile::tempdir().unwrap();
    let batcher = super::SyncBatcher::start(tmp.path()).unwrap();
    let config = GroupConfig {
        sync: Some(batcher.clone()),
        ..config(FlushPolicy::Fsync)
    };
    let groups: Vec<std::sync::Arc<LogGroup>> = (0..4)
        .map(|g| {
            std::sync::Arc::new(
                LogGroup::open(
                    &tmp.path().join(format!("g{g}")),
                    config.clone(),
                    &partitions(),
                )
                .unwrap(),
            )
        })
        .collect();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for (g, group) in groups.iter().enumerate() {
            for p in 0..2u32 {
                let group = group.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..50 {
                        group
                            .append((1, p), payload(g * 1000 + i, 300), 1)
                            .await
                            .unwrap();
                    }
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    // Every append was acknowledged after the shared sync; the groups reopen with all.
    for group in &groups {
        group.crash();
    }
    drop(groups);
    for g in 0..4 {
        let group = LogGroup::open(
            &tmp.path().join(format!("g{g}")),
            config.clone(),
            &partitions(),
        )
        .unwrap();
        for p in 0..2u32 {
            assert_eq!(
                group.offsets((1, p)).unwrap(),
                (0, 50),
                "group {g} partition {p}"
            );
        }
        group.close();
    }
    batcher.stop();
}

/// A mirrored batch reads back with its origin and without the prefix; the group keeps the
/// origin's marks, which survive a restart, a truncation (rebuilt from what is left) and
/// retention deleting the record that set them (carried forward like offsets), and never
/// show as consumer offsets.
#[test]
fn mirrored_batches_keep_their_origin_and_marks() {
    use meridian_proto::origin::Origin;
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group-0");
    let config = GroupConfig {
        retention_bytes: Some(4 * 4096),
        ..config(FlushPolicy::Fsync)
    };
    let group = LogGroup::open(&dir, config.clone(), &partitions()).unwrap();
    let key = (1, 0);
    let origin = |seq: u64| Origin {
        region: "us-east".into(),
        group: 4,
        seq,
        through: seq - 1,
    };
    rt.block_on(group.append(key, payload(0, 50), 1)).unwrap();
    rt.block_on(group.append_mirrored(key, &origin(10), &payload(1, 60), 1))
        .unwrap();
    let mid = rt
        .block_on(group.append_mirrored(key, &origin(12), &payload(2, 70), 1))
        .unwrap();
    let (_, written, _, _) = group.positions();
    wait_visible(&rt, &group, written);
    let read = group.read(key, 0, 1 << 20).unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(
        (read[0].origin.as_ref(), &read[0].payload),
        (None, &payload(0, 50))
    );
    assert_eq!(read[1].origin, Some(origin(10)));
    assert_eq!(read[1].payload, payload(1, 60));
    assert_eq!(read[2].origin, Some(origin(12)));
    assert_eq!(group.mirror_mark("us-east", 4), Some((12, 11)));
    assert_eq!(group.mirror_mark("us-east", 5), None);
    assert!(group.committed_offsets().is_empty());

    // Recovery restores the marks from the journal.
    group.close();
    drop(group);
    let group = LogGroup::open(&dir, config.clone(), &partitions()).unwrap();
    assert_eq!(group.mirror_mark("us-east", 4), Some((12, 11)));
    // A truncation removing the last mirrored batch takes its mark back.
    rt.block_on(group.truncate_after(mid.position)).unwrap();
    assert_eq!(group.mirror_mark("us-east", 4), Some((10, 9)));

    // Retention deletes the segment holding the marks' record: they are carried forward.
    for i in 0..200 {
        rt.block_on(group.append((1, 1), payload(i, 200), 1))
            .unwrap();
    }
    let (_, written, _, _) = group.positions();
    wait_visible(&rt, &group, written);
    group.apply_retention().unwrap();
    assert!(
        matches!(
            group.read(key, 0, 10),
            Err(ReadError::OffsetOutOfRange { .. })
        ),
        "the mirrored batch's segment is gone"
    );
    assert_eq!(group.mirror_mark("us-east", 4), Some((10, 9)));
    group.close();
    drop(group);
    let group = LogGroup::open(&dir, config, &partitions()).unwrap();
    assert_eq!(group.mirror_mark("us-east", 4), Some((10, 9)));
    group.close();
}

#[test]
fn commits_keep_origin_positions_through_recovery_and_retention() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group-0");
    let config = GroupConfig {
        retention_bytes: Some(4 * 4096),
        ..config(FlushPolicy::Fsync)
    };
    let group = LogGroup::open(&dir, config.clone(), &partitions()).unwrap();
    let key = (1, 0);
    let positions = vec![("eu".to_owned(), 5 << 24), ("us".to_owned(), (9 << 24) | 3)];
    rt.block_on(group.append(key, payload(0, 50), 1)).unwrap();
    rt.block_on(group.commit_positions("billing", key, 1, positions.clone()))
        .unwrap();
    // Another group's and another partition's positions are their own.
    rt.block_on(group.commit_positions("audit", key, 1, vec![("eu".to_owned(), 1 << 24)]))
        .unwrap();
    assert_eq!(group.committed_positions("billing", key), positions);
    assert_eq!(group.committed_positions("billing", (1, 1)), vec![]);
    assert_eq!(group.committed_offset("billing", key), Some(1));
    // The pseudo offsets never show as consumer groups.
    let mut groups: Vec<String> = group
        .committed_offsets()
        .into_iter()
        .map(|(g, ..)| g)
        .collect();
    groups.sort();
    assert_eq!(groups, ["audit", "billing"]);

    // Positions merged from another region: no local offset.
    let merged = vec![("eu".to_owned(), 7 << 24), ("us".to_owned(), (9 << 24) | 3)];
    rt.block_on(group.commit_positions("billing", key, POSITIONS_ONLY, merged.clone()))
        .unwrap();
    group.close();
    drop(group);
    let group = LogGroup::open(&dir, config.clone(), &partitions()).unwrap();
    assert_eq!(group.committed_positions("billing", key), merged);
    assert_eq!(group.committed_offset("billing", key), Some(POSITIONS_ONLY));

    // Retention deletes the commit's segment: offset and positions are carried forward.
    for i in 0..200 {
        rt.block_on(group.append((1, 1), payload(i, 200), 1))
            .unwrap();
    }
    let (_, written, _, _) = group.positions();
    wait_visible(&rt, &group, written);
    group.apply_retention().unwrap();
    assert!(group.positions().0 > 0, "retention deleted a segment");
    group.close();
    drop(group);
    let group = LogGroup::open(&dir, config, &partitions()).unwrap();
    assert_eq!(group.committed_positions("billing", key), merged);
    assert_eq!(group.committed_offset("billing", key), Some(POSITIONS_ONLY));
    group.close();
}

#[test]
fn producer_state_is_the_same_on_replicas_after_recovery_retention_and_reset() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let leader_config = GroupConfig {
        retention_bytes: Some(3 * 4096),
        ..config(FlushPolicy::Fsync)
    };
    let leader_dir = tmp.path().join("leader");
    let leader = LogGroup::open(&leader_dir, leader_config.clone(), &partitions()).unwrap();
    let batch = |id, first| ProducerBatch {
        id,
        epoch: 0,
        first_sequence: first,
        last_sequence: first + 1,
    };
    // Producer 1 writes early only (retention will delete its records), producer 2 throughout.
    for i in 0..6 {
        rt.block_on(leader.append_producer(
            (1, 1),
            payload(i, 100),
            2,
            batch(1, i as i32 * 2),
            None,
        ))
        .unwrap();
    }
    for i in 0..120 {
        rt.block_on(leader.append_producer(
            (1, 0),
            payload(i, 200),
            2,
            batch(2, i as i32 * 2),
            None,
        ))
        .unwrap();
    }
    assert_eq!(leader.producer_states(), 2);
    let follower_config = GroupConfig {
        replicated: true,
        ..config(FlushPolicy::Fsync)
    };
    let follower_dir = tmp.path().join("follower");
    let follower = LogGroup::open(&follower_dir, follower_config.clone(), &partitions()).unwrap();
    // A slave's verbatim copies carry the producers: the same state.
    let end = pull(&rt, &leader, &follower, 0).unwrap();
    assert!(follower.producers_equal(&leader));
    assert!(matches!(
        follower.check_producer((1, 1), &batch(1, 10)),
        SeqCheck::Duplicate {
            base_offset: 10,
            ..
        }
    ));
    // A truncation rebuilds it from what is left: the last batch is new again.
    let last = follower.record_header_by_index(126).unwrap().unwrap();
    assert_eq!(last.flags, meridian_proto::record::FLAG_PRODUCER);
    let cut = follower.end_of_record(125).unwrap();
    rt.block_on(follower.truncate_after(cut)).unwrap();
    assert_eq!(
        follower.check_producer((1, 0), &batch(2, 238)),
        SeqCheck::Write
    );
    pull(&rt, &leader, &follower, cut).unwrap();
    assert!(follower.producers_equal(&leader));
    // Recovery after a crash restores it.
    follower.crash();
    drop(follower);
    let follower = LogGroup::open(&follower_dir, follower_config, &partitions()).unwrap();
    assert!(follower.producers_equal(&leader));
    // Retention forgets the batches it deleted, as a recovery from the new start would.
    follower.set_watermark(end);
    wait_visible(&rt, &leader, end);
    leader.apply_retention().unwrap();
    let start = leader.positions().0;
    assert!(start > 0, "retention deleted nothing");
    assert_eq!(leader.producer_states(), 1);
    assert_eq!(leader.check_producer((1, 1), &batch(1, 0)), SeqCheck::Write);
    leader.close();
    drop(leader);
    let leader = LogGroup::open(&leader_dir, leader_config, &partitions()).unwrap();
    assert_eq!(leader.producer_states(), 1);
    // A reset drops it all; pulling again rebuilds the leader's.
    let ends = leader.partition_ends_at(start).unwrap();
    rt.block_on(follower.reset_to(start, ends)).unwrap();
    assert_eq!(follower.producer_states(), 0);
    pull(&rt, &leader, &follower, start).unwrap();
    assert!(follower.producers_equal(&leader));
    follower.close();
    leader.close();
}

/// Retention in a raft group never writes a record raft did not choose: a consumer's offset
/// committed below the deleted segments is kept by the replication layer (through raft),
/// not re-appended by storage with an index raft will use next.
#[test]
fn retention_in_a_replicated_group_keeps_raft_indexes_to_raft() {
    use crate::RaftRecord;
    use crate::record::RecordKind;
    use meridian_proto::record;
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let group = replicated_with_retention(tmp.path());
    let key = partitions()[0].0;
    let batch = |index: u64| RaftRecord {
        term: 1,
        index,
        kind: RecordKind::Batch,
        flags: 0,
        producer: None,
        key,
        count: 1,
        base_offset: 0,
        payload: payload(index as usize, 200),
    };
    let commit = RaftRecord {
        term: 1,
        index: 1,
        kind: RecordKind::OffsetCommit,
        flags: 0,
        producer: None,
        key,
        count: 0,
        base_offset: 3,
        payload: Bytes::from(record::encode_commit("readers", 3, &[])),
    };
    rt.block_on(group.append_raft(vec![commit.clone()]))
        .unwrap();
    let mut ends = Vec::new();
    for index in 2..=100 {
        let a = rt.block_on(group.append_raft(vec![batch(index)])).unwrap();
        ends.push(a[0].position + u64::from(a[0].len));
    }
    let written = group.positions().1;
    group.set_watermark(written);
    wait_visible(&rt, &group, written);
    group.set_retention_floor(ends[60]);
    let size = group.journal_size();
    group.apply_retention().unwrap();
    // Nothing written, nothing deleted: the commit's segment waits for the layer above.
    assert_eq!(group.journal_size(), size);
    assert_eq!(group.last_record().map(|(i, _)| i), Some(100));
    assert_eq!(
        group.offsets_held_back(),
        [("readers".to_owned(), key, 3)],
        "the offset to commit again"
    );
    // Raft's next entry is 101, whatever retention did: here the commit again.
    let again = RaftRecord {
        index: 101,
        ..commit.clone()
    };
    rt.block_on(group.append_raft(vec![again]))
        .expect("raft's next index is still free");
    let written = group.positions().1;
    group.set_watermark(written);
    wait_visible(&rt, &group, written);
    group.apply_retention().unwrap();
    assert!(group.journal_size().1 < size.1, "retention goes on");
    assert!(group.offsets_held_back().is_empty());
    assert_eq!(group.committed_offset("readers", key), Some(3));
    assert_eq!(group.last_record().map(|(i, _)| i), Some(101));
    group.close();
}
