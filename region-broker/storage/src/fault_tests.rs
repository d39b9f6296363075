//! Property tests of a log group on the fault-injecting backend, against a model of what was
//! acknowledged: random appends, cuts, retention, failed writes and syncs of the journal, of
//! the queue-index files and of the checkpoint, a full disk, a power failure at a random
//! durability point (a sync, directory sync, rename or create of any file: between index
//! writes and their sync, between the sync and the checkpoint, after the checkpoint's rename
//! but before its directory sync...), and reopening after a clean close, a process crash or a
//! power cut (every write, creation, removal or rename not made durable is lost). Checked
//! after every reopen and at the end:
//!
//! - every acknowledged append (the `fsync` policy: acknowledged means synced) is readable,
//!   byte for byte, at its offsets, unless a cut or retention removed it;
//! - nothing refused is visible, except an append refused because a sync failed: its bytes
//!   may or may not have reached the disk, so it may survive, whole and in order;
//! - a failed sync is never reported as success, and after one every append is refused until
//!   the group is reopened (no later append succeeds over what may be a hole);
//! - a full disk refuses appends, loses nothing acknowledged, and once space returns (and no
//!   fault is pending) appends succeed again;
//! - an append acknowledged after the power failed (the process did not know yet) may or may
//!   not survive, like one whose sync failed;
//! - recovery never finds an index holding fewer entries than the checkpoint vouches for:
//!   a checkpoint only counts index entries whose sync succeeded.
//!
//! Deterministic tests below sweep a power failure over every durability point of a flush and
//! of recovery, retry a failed index sync, and run a group in memory under a directory that
//! does not exist.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use crate::backend::{Backend, FaultyBackend, MemoryBackend};
use crate::checkpoint::TMP_FILE;
use crate::record::RecordKind;
use crate::tests::runtime;
use crate::{AppendError, FlushPolicy, GroupConfig, LogGroup, PartitionKey, RaftRecord};

const KEYS: [PartitionKey; 2] = [(1, 0), (1, 1)];

#[derive(Debug, Clone)]
enum Op {
    Append {
        partition: usize,
        size: usize,
    },
    /// The `n`th journal write from now fails.
    FailWrite(u64),
    /// The `n`th journal sync from now fails.
    FailSync(u64),
    /// The `n`th write (`sync`: sync) of an index file (`checkpoint`: of the checkpoint)
    /// from now fails; the indexer's flush fails and is retried.
    FailMeta {
        checkpoint: bool,
        sync: bool,
        n: u64,
    },
    /// The power fails at the `n`th durability point from now; the group is crashed, the
    /// power cut and the group reopened before the next operation.
    PowerFails(u64),
    /// Lets the indexer flush a few times.
    Idle,
    DiskFull(bool),
    /// Truncate after the acknowledged record at this fraction of them.
    Cut(f64),
    Retention,
    /// Close (cleanly, or as a crash) and reopen; `power_cut` drops unsynced writes first.
    Reopen {
        crash: bool,
        power_cut: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        14 => (0..2usize, 0..700usize).prop_map(|(partition, size)| Op::Append { partition, size }),
        2 => (1..4u64).prop_map(Op::FailWrite),
        2 => (1..4u64).prop_map(Op::FailSync),
        2 => (any::<bool>(), any::<bool>(), 1..4u64)
            .prop_map(|(checkpoint, sync, n)| Op::FailMeta { checkpoint, sync, n }),
        2 => (1..10u64).prop_map(Op::PowerFails),
        2 => Just(Op::Idle),
        2 => any::<bool>().prop_map(Op::DiskFull),
        1 => (0.0..1.0f64).prop_map(Op::Cut),
        1 => Just(Op::Retention),
        2 => (any::<bool>(), any::<bool>()).prop_map(|(crash, power_cut)| Op::Reopen { crash, power_cut }),
    ]
}

/// An append the model knows of.
#[derive(Debug, Clone)]
struct Batch {
    key: PartitionKey,
    /// Record index (journal order); `None` while the append's fate is unknown.
    index: Option<u64>,
    base: u64,
    payload: Bytes,
}

#[derive(Debug, Default)]
struct Model {
    /// Acknowledged batches, in journal order.
    acked: Vec<Batch>,
    /// Appends refused after a failed sync, in order: they may or may not have been stored.
    maybe: Vec<Batch>,
    /// A sync failed since the group was opened.
    fatal: bool,
    disk_full: bool,
}

fn config(backend: &Arc<FaultyBackend>) -> GroupConfig {
    config_flushing(backend, Duration::from_millis(5))
}

fn config_flushing(backend: &Arc<FaultyBackend>, flush_interval: Duration) -> GroupConfig {
    GroupConfig {
        segment_bytes: 4096,
        index_entries_per_file: 8,
        flush: FlushPolicy::Fsync,
        flush_interval,
        retention: None,
        retention_bytes: Some(3 * 4096),
        retention_check_interval: Duration::from_secs(3600),
        backend: backend.clone() as Arc<dyn Backend>,
        ..GroupConfig::default()
    }
}

fn payload(seed: usize, size: usize) -> Bytes {
    Bytes::from(
        (0..size)
            .map(|i| (seed * 131 + i * 7) as u8)
            .collect::<Vec<_>>(),
    )
}

fn partitions() -> Vec<(PartitionKey, String)> {
    KEYS.iter().map(|&k| (k, "orders".to_owned())).collect()
}

/// Forgets acknowledged batches retention deleted.
fn trim(group: &LogGroup, model: &mut Model) {
    for key in KEYS {
        let (earliest, _) = group.offsets(key).unwrap();
        model.acked.retain(|b| b.key != key || b.base >= earliest);
    }
}

/// Checks the group holds what the model says; the uncertain appends that survived become
/// acknowledged (recovery made them durable).
fn check(group: &LogGroup, model: &mut Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(
        group.indexes_rebuilt(),
        0,
        "recovery found an index with fewer entries than its checkpoint"
    );
    let mut survivors = Vec::new();
    trim(group, model);
    for key in KEYS {
        let (earliest, latest) = group.offsets(key).unwrap();
        let expected: Vec<&Batch> = model.acked.iter().filter(|b| b.key == key).collect();
        let maybe: Vec<&Batch> = model.maybe.iter().filter(|b| b.key == key).collect();
        let mut read = Vec::new();
        let mut next = earliest;
        while next < latest {
            let batches = group.read(key, next, 1 << 20).unwrap();
            prop_assert!(!batches.is_empty(), "no batch at {next} below {latest}");
            for b in batches {
                next = b.base_offset + u64::from(b.count);
                read.push(b);
            }
        }
        prop_assert!(
            read.len() >= expected.len() && read.len() <= expected.len() + maybe.len(),
            "partition {key:?}: {} batches readable, {} acknowledged, {} uncertain",
            read.len(),
            expected.len(),
            maybe.len()
        );
        for (i, b) in read.iter().enumerate() {
            let (want_payload, want_base) = match expected.get(i) {
                Some(e) => (&e.payload, Some(e.base)),
                None => (&maybe[i - expected.len()].payload, None),
            };
            prop_assert_eq!(&b.payload, want_payload, "partition {:?} batch {}", key, i);
            prop_assert_eq!(b.count, 1);
            if let Some(base) = want_base {
                prop_assert_eq!(b.base_offset, base);
            }
            if i >= expected.len() {
                survivors.push(Batch {
                    key,
                    index: Some(b.index),
                    base: b.base_offset,
                    payload: b.payload.clone(),
                });
            }
        }
    }
    survivors.sort_by_key(|b| b.index);
    model.acked.extend(survivors);
    model.acked.sort_by_key(|b| b.index);
    model.maybe.clear();
    Ok(())
}

/// Closes the group (cleanly, or as a crash), cuts the power if asked or if it failed, and
/// reopens it with no fault armed; checks it against the model.
fn reopen(
    group: LogGroup,
    backend: &Arc<FaultyBackend>,
    dir: &Path,
    model: &mut Model,
    crash: bool,
    power_cut: bool,
) -> Result<LogGroup, TestCaseError> {
    if crash {
        group.crash();
    } else {
        group.close();
    }
    backend.clear_faults();
    model.disk_full = false;
    if power_cut || backend.power_failed() {
        backend.power_cut();
    }
    drop(group);
    let group = LogGroup::open(dir, config(backend), &partitions()).unwrap();
    model.fatal = false;
    check(&group, model)?;
    Ok(group)
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group");
    let journal = dir.join("journal");
    let backend = FaultyBackend::new();
    let mut group = LogGroup::open(&dir, config(&backend), &partitions()).unwrap();
    let mut model = Model::default();
    for (n, op) in ops.into_iter().enumerate() {
        if backend.power_failed() {
            // The machine is down: what the process did since is moot.
            group = reopen(group, &backend, &dir, &mut model, true, true)?;
        }
        match op {
            Op::Append { partition, size } => {
                let key = KEYS[partition];
                let data = payload(n, size);
                let before = backend.injected_under(&journal);
                let healthy = !backend.armed_under(&journal) && !model.disk_full && !model.fatal;
                let result = rt.block_on(group.append(key, data.clone(), 1));
                let after = backend.injected_under(&journal);
                match result {
                    Ok(appended) => {
                        prop_assert!(!model.fatal, "an append succeeded after a failed sync");
                        prop_assert_eq!(after.1, before.1, "a failed sync was reported as success");
                        prop_assert_eq!(after.0, before.0, "a failed write was acknowledged");
                        let next = model
                            .acked
                            .iter()
                            .rfind(|b| b.key == key)
                            .map_or(appended.base_offset, |b| b.base + 1);
                        prop_assert_eq!(appended.base_offset, next);
                        let batch = Batch {
                            key,
                            index: Some(appended.index),
                            base: appended.base_offset,
                            payload: data,
                        };
                        if backend.power_failed() {
                            // Its sync may have come after the power failed.
                            model.maybe.push(Batch {
                                index: None,
                                ..batch
                            });
                        } else {
                            model.acked.push(batch);
                        }
                    }
                    Err(e) => {
                        prop_assert!(!healthy, "append refused on a healthy disk: {e}");
                        // A sync failed during this append (its own, or the cut of a failed
                        // write): the group refuses writes from now on.
                        let sync_failed = after.1 > before.1;
                        model.fatal |= sync_failed;
                        match &e {
                            AppendError::Fatal { .. } => {
                                prop_assert!(
                                    model.fatal,
                                    "refused as fatal without a failed sync: {e}"
                                );
                                if sync_failed {
                                    // Written, then the sync failed: on the disk or not.
                                    model.maybe.push(Batch {
                                        key,
                                        index: None,
                                        base: 0,
                                        payload: data,
                                    });
                                }
                            }
                            AppendError::DiskFull { .. } => {
                                prop_assert!(model.disk_full, "disk full reported: {e}");
                            }
                            AppendError::Io { .. } => {
                                prop_assert!(after.0 > before.0, "unexpected write error: {e}");
                            }
                            other => prop_assert!(false, "unexpected error: {other}"),
                        }
                    }
                }
            }
            Op::FailWrite(n) => backend.fail_write_under(&journal, n),
            Op::FailSync(n) => backend.fail_sync_under(&journal, n),
            Op::FailMeta {
                checkpoint,
                sync,
                n,
            } => {
                let target = if checkpoint {
                    dir.join(TMP_FILE)
                } else {
                    dir.join("index")
                };
                if sync {
                    backend.fail_sync_under(&target, n);
                } else {
                    backend.fail_write_under(&target, n);
                }
            }
            Op::PowerFails(n) => backend.fail_power_in(n),
            Op::Idle => std::thread::sleep(Duration::from_millis(15)),
            Op::DiskFull(full) => {
                backend.set_disk_full(full);
                model.disk_full = full;
            }
            Op::Cut(at) => {
                // Cutting writes and syncs too; this test injects faults only into appends
                // and the indexer's flushes.
                backend.clear_faults();
                model.disk_full = false;
                if backend.power_failed() {
                    group = reopen(group, &backend, &dir, &mut model, true, true)?;
                }
                if model.acked.is_empty() {
                    continue;
                }
                let keep = ((model.acked.len() - 1) as f64 * at) as usize;
                let index = model.acked[keep].index.expect("acknowledged");
                rt.block_on(group.truncate_after_index(Some(index)))
                    .unwrap();
                // Truncating after the last acknowledged record is a no-op (the group keeps
                // no position for a refused one), so uncertain records are cut only with an
                // acknowledged record after them.
                if keep + 1 < model.acked.len() {
                    model.acked.truncate(keep + 1);
                    model.maybe.clear();
                }
            }
            Op::Retention => {
                backend.clear_faults();
                model.disk_full = false;
                if backend.power_failed() {
                    group = reopen(group, &backend, &dir, &mut model, true, true)?;
                }
                rt.block_on(group.caught_up(Duration::from_secs(5)));
                group.apply_retention().unwrap();
                trim(&group, &mut model);
                let (start, ..) = group.positions();
                let (bytes, _) = group.journal_size();
                // Retention leaves at most the limit plus the segment being written.
                prop_assert!(
                    bytes <= 4 * 4096,
                    "journal of {bytes} bytes kept, from {start}"
                );
            }
            Op::Reopen { crash, power_cut } => {
                group = reopen(group, &backend, &dir, &mut model, crash, power_cut)?;
            }
        }
    }
    let group = reopen(group, &backend, &dir, &mut model, true, true)?;
    group.close();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_appends_survive_faults_and_power_cuts(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops)?;
    }
}

/// A record written before a failed sync, found by recovery after a clean restart, stays
/// durable: its segment's end marker was never synced, so a power cut used to drop it and
/// recovery cut everything after it, records acknowledged since the restart included.
#[test]
fn a_record_recovered_after_a_failed_sync_survives_a_power_cut() {
    let mut ops: Vec<Op> = [307, 351, 241, 540, 189, 543, 364, 392]
        .iter()
        .map(|&size| Op::Append { partition: 0, size })
        .collect();
    ops.extend([
        // The next group commit's sync passes; the one after, which rolls to a new segment,
        // fails syncing the segment it filled.
        Op::FailSync(2),
        Op::Append {
            partition: 0,
            size: 184,
        },
        Op::Append {
            partition: 0,
            size: 418,
        },
        Op::Reopen {
            crash: false,
            power_cut: false,
        },
        Op::Append {
            partition: 1,
            size: 100,
        },
        // `run` ends with a crash and a power cut, then checks.
    ]);
    run(ops).unwrap();
}

/// Appends `count` batches alternating between the partitions; every one is acknowledged.
fn append_acked(rt: &tokio::runtime::Runtime, group: &LogGroup, model: &mut Model, count: usize) {
    for i in 0..count {
        let key = KEYS[i % 2];
        let data = payload(model.acked.len() * 7 + i, 300);
        let appended = rt.block_on(group.append(key, data.clone(), 1)).unwrap();
        model.acked.push(Batch {
            key,
            index: Some(appended.index),
            base: appended.base_offset,
            payload: data,
        });
    }
}

/// With the sync stage, the writer writes the next commit while a sync runs. A failed sync
/// must refuse the commits written behind it too, though their own syncs would succeed:
/// they follow bytes whose fate is unknown. Appends in flight on a slow disk, the third
/// journal sync fails; after a clean reopen (the failed commit's bytes are still in the
/// page cache, so recovery finds them) every acknowledged batch is read, and all come
/// before every batch refused for the failed sync.
#[test]
fn a_failed_sync_refuses_the_commits_written_behind_it() {
    let rt = crate::tests::multi_thread_runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group");
    let backend = FaultyBackend::new();
    let config = GroupConfig {
        segment_bytes: 1 << 20,
        retention_bytes: None,
        ..config(&backend)
    };
    let group = Arc::new(LogGroup::open(&dir, config.clone(), &partitions()).unwrap());
    backend.set_sync_delay(Duration::from_millis(20));
    backend.fail_sync_under(&dir.join("journal"), 3);
    let results = rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..400usize {
            let group = group.clone();
            tasks.push(tokio::spawn(async move {
                // Spread over the stretch of a few syncs, so commits overlap syncs.
                tokio::time::sleep(Duration::from_micros(250 * i as u64)).await;
                let data = Bytes::from(format!("message {i}"));
                (data.clone(), group.append(KEYS[0], data, 1).await)
            }));
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        results
    });
    let acked: Vec<Bytes> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(d, _)| d.clone())
        .collect();
    let refused: Vec<Bytes> = results
        .iter()
        .filter_map(|(d, r)| match r {
            Err(AppendError::Fatal { .. }) => Some(d.clone()),
            Err(e) => panic!("refused other than for the failed sync: {e}"),
            Ok(_) => None,
        })
        .collect();
    assert!(
        !acked.is_empty() && refused.len() > 1,
        "{} acknowledged, {} refused",
        acked.len(),
        refused.len()
    );
    Arc::into_inner(group).unwrap().close();
    backend.clear_faults();
    backend.set_sync_delay(Duration::ZERO);
    let group = LogGroup::open(&dir, config, &partitions()).unwrap();
    let (_, latest) = group.offsets(KEYS[0]).unwrap();
    let mut at = std::collections::HashMap::new();
    let mut next = 0;
    while next < latest {
        for b in group.read(KEYS[0], next, 1 << 20).unwrap() {
            next = b.base_offset + u64::from(b.count);
            at.insert(b.payload.clone(), b.base_offset);
        }
    }
    let last_acked = acked
        .iter()
        .map(|d| {
            *at.get(d)
                .unwrap_or_else(|| panic!("acknowledged {d:?} lost"))
        })
        .max()
        .unwrap();
    let first_refused = refused.iter().filter_map(|d| at.get(d)).min();
    assert!(
        first_refused.is_some_and(|&f| f > last_acked),
        "batch at offset {last_acked} acknowledged, a batch refused for a failed sync before it at {first_refused:?}"
    );
}

/// The power fails at each durability point in turn (index file creations, the index sync,
/// the checkpoint's sync, rename and directory sync; the journal syncs of recovery), of the
/// flush a clean close makes or of the one recovery makes, with index entries the previous
/// checkpoint vouches for and new ones past it: after the power cut, recovery finds every
/// acknowledged record and never an index shorter than its checkpoint.
#[test]
fn a_power_failure_at_any_durability_point_of_a_flush_loses_nothing() {
    let rt = runtime();
    let dir = PathBuf::from("/nonexistent/fault-tests/group");
    for during_recovery in [false, true] {
        let mut fired = 0;
        for point in 1..=16 {
            let backend = FaultyBackend::new();
            // No timed flush: only closing and recovery flush.
            let config = || config_flushing(&backend, Duration::from_secs(3600));
            let mut model = Model::default();
            let mut group = LogGroup::open(&dir, config(), &partitions()).unwrap();
            for round in 0..3 {
                append_acked(&rt, &group, &mut model, 13);
                if round != 1 {
                    group.close();
                } else if during_recovery {
                    group.close();
                    drop(group);
                    backend.fail_power_in(point);
                    group = LogGroup::open(&dir, config(), &partitions()).unwrap();
                    group.crash();
                } else {
                    backend.fail_power_in(point);
                    group.close();
                }
                fired += u32::from(backend.power_failed());
                backend.clear_faults();
                backend.power_cut();
                drop(group);
                group = LogGroup::open(&dir, config(), &partitions()).unwrap();
                check(&group, &mut model).unwrap_or_else(|e| {
                    panic!("power failure at point {point} (recovery: {during_recovery}): {e}")
                });
            }
            group.close();
        }
        assert!(fired >= 5, "the power failed at only {fired} points");
    }
}

/// A failed sync of the index files is retried by the next flush even when nothing new was
/// written: a checkpoint counting the entries it did not make durable would send recovery,
/// after a power cut, to an index shorter than the checkpoint (found by these tests: the
/// flush skipped the sync once its "written" flag had been consumed by the failed one).
#[test]
fn a_failed_index_sync_is_retried_before_a_checkpoint_counts_its_entries() {
    let rt = runtime();
    let dir = PathBuf::from("/nonexistent/fault-tests/group");
    let index = dir.join("index");
    let backend = FaultyBackend::new();
    let mut model = Model::default();
    let group = LogGroup::open(&dir, config(&backend), &partitions()).unwrap();
    backend.fail_sync_under(&index, 1);
    append_acked(&rt, &group, &mut model, 10);
    let waited = std::time::Instant::now();
    while backend.injected_under(&index).1 == 0 {
        assert!(waited.elapsed() < Duration::from_secs(10), "no index sync");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Several flushes, with nothing new to write.
    std::thread::sleep(Duration::from_millis(60));
    group.crash();
    backend.power_cut();
    drop(group);
    let group = LogGroup::open(&dir, config(&backend), &partitions()).unwrap();
    check(&group, &mut model).unwrap();
    group.close();
}

/// A group on the memory backend touches no real file: its directory does not exist before
/// or after, and its journal, index files and checkpoint are all in the backend.
#[test]
fn a_group_in_memory_creates_no_file() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("absent").join("group");
    let backend = MemoryBackend::new();
    let config = GroupConfig {
        segment_bytes: 4096,
        index_entries_per_file: 8,
        flush_interval: Duration::from_millis(5),
        retention: None,
        retention_bytes: Some(2 * 4096),
        backend: backend.clone() as Arc<dyn Backend>,
        ..GroupConfig::default()
    };
    let mut parts = partitions();
    parts.push(((2, 0), "audit".to_owned()));
    let group = LogGroup::open(&dir, config.clone(), &parts).unwrap();
    let mut model = Model::default();
    append_acked(&rt, &group, &mut model, 40);
    let keep = model.acked.len() - 5;
    let index = model.acked[keep].index.unwrap();
    rt.block_on(group.truncate_after_index(Some(index)))
        .unwrap();
    model.acked.truncate(keep + 1);
    rt.block_on(group.append((2, 0), payload(1, 100), 1))
        .unwrap();
    rt.block_on(group.commit_offset("readers", KEYS[0], 3))
        .unwrap();
    group.add_partition((3, 0), "fresh").unwrap();
    rt.block_on(group.append((3, 0), payload(2, 100), 1))
        .unwrap();
    group.remove_topic(2, "audit").unwrap();
    rt.block_on(group.caught_up(Duration::from_secs(5)));
    group.apply_retention().unwrap();
    group.close();
    drop(group);

    parts.pop();
    parts.push(((3, 0), "fresh".to_owned()));
    let group = LogGroup::open(&dir, config.clone(), &parts).unwrap();
    check(&group, &mut model).unwrap();
    assert!(!model.acked.is_empty());
    assert_eq!(group.offsets((3, 0)).unwrap(), (0, 1));
    group.close();

    assert!(!tmp.path().join("absent").exists());
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
    let paths = backend.paths();
    let has = |under: &str, ext: &str| {
        paths
            .iter()
            .any(|p| p.starts_with(dir.join(under)) && p.extension().is_some_and(|e| e == ext))
    };
    assert!(paths.contains(&dir.join("checkpoint.json")), "{paths:?}");
    assert!(has("journal", "log") && has("index/orders/0", "idx") && has("index/fresh/0", "idx"));
    assert!(!paths.iter().any(|p| p.starts_with(dir.join("index/audit"))));
}

/// Sets or clears the kind of full disk asked for: every write and create refused, or only
/// new files (the journal fills its preallocated segment, then cannot get the next one).
fn fill(backend: &FaultyBackend, new_files_only: bool, full: bool) {
    if new_files_only {
        backend.set_no_room_for_new_files(full);
    } else {
        backend.set_disk_full(full);
    }
}

/// A full disk refuses appends with `DiskFull` and never poisons the group: once space
/// returns, appends succeed again without reopening it, and nothing acknowledged is lost
/// (checked after a crash and a power cut).
#[test]
fn a_full_disk_refuses_appends_until_space_returns_then_they_succeed() {
    let rt = runtime();
    let dir = PathBuf::from("/nonexistent/fault-tests/group");
    for new_files_only in [false, true] {
        let backend = FaultyBackend::new();
        let mut model = Model::default();
        let group = LogGroup::open(&dir, config(&backend), &partitions()).unwrap();
        append_acked(&rt, &group, &mut model, 5);
        fill(&backend, new_files_only, true);
        // 300-byte batches, 4 KiB segments: the segment being written fills within 13.
        let mut refused = 0;
        for i in 0..40 {
            let key = KEYS[i % 2];
            let data = payload(1000 + i, 300);
            match rt.block_on(group.append(key, data.clone(), 1)) {
                Ok(appended) => model.acked.push(Batch {
                    key,
                    index: Some(appended.index),
                    base: appended.base_offset,
                    payload: data,
                }),
                Err(AppendError::DiskFull { .. }) => refused += 1,
                Err(e) => panic!("a full disk refused an append otherwise: {e}"),
            }
        }
        assert!(
            refused >= 25,
            "only {refused} of 40 appends refused on a full disk (new files only: {new_files_only})"
        );
        fill(&backend, new_files_only, false);
        // Several segments more: the next segment is preallocated now.
        append_acked(&rt, &group, &mut model, 30);
        group.crash();
        backend.power_cut();
        drop(group);
        let group = LogGroup::open(&dir, config(&backend), &partitions()).unwrap();
        check(&group, &mut model).unwrap();
        append_acked(&rt, &group, &mut model, 3);
        group.close();
    }
}

/// The replica paths heal too: verbatim copies of a leader's records (master-slave pulls,
/// snapshot shipping) and raft entries are refused while the replica's disk is full, a raft
/// batch possibly in part (what was stored before the disk filled stays), and go on from
/// where the replica's journal ends once space returns. The replica ends up with the
/// leader's records, each once.
#[test]
fn replica_appends_refused_on_a_full_disk_resume_once_space_returns() {
    let rt = runtime();
    let leader_backend = FaultyBackend::new();
    let leader_dir = PathBuf::from("/nonexistent/fault-tests/leader");
    let leader = LogGroup::open(&leader_dir, config(&leader_backend), &partitions()).unwrap();
    let mut model = Model::default();
    append_acked(&rt, &leader, &mut model, 60);
    let leader_end = leader.positions().1;
    for new_files_only in [false, true] {
        // Verbatim copies.
        let backend = FaultyBackend::new();
        let dir = PathBuf::from("/nonexistent/fault-tests/replica");
        let replica = LogGroup::open(&dir, config(&backend), &partitions()).unwrap();
        let copy = |replica: &LogGroup| -> Result<bool, AppendError> {
            let from = replica.positions().1;
            let chunk = leader.read_records(from, 1024).unwrap();
            if chunk.records.is_empty() {
                return Ok(false);
            }
            rt.block_on(replica.append_records(&chunk))?;
            Ok(true)
        };
        for _ in 0..5 {
            copy(&replica).unwrap();
        }
        fill(&backend, new_files_only, true);
        let mut refused = 0;
        for _ in 0..20 {
            match copy(&replica) {
                Ok(_) => {}
                Err(AppendError::DiskFull { .. }) => refused += 1,
                Err(e) => panic!("a full disk refused a copy otherwise: {e}"),
            }
        }
        assert!(refused >= 5, "only {refused} copies refused on a full disk");
        fill(&backend, new_files_only, false);
        while copy(&replica).unwrap() {}
        assert_eq!(replica.positions().1, leader_end);
        let (a, b) = (
            leader.read_records(0, 1 << 20).unwrap(),
            replica.read_records(0, 1 << 20).unwrap(),
        );
        assert_eq!(
            a.records, b.records,
            "the replica's journal is the leader's"
        );
        replica.close();
        drop(replica);
        let replica = LogGroup::open(&dir, config(&backend), &partitions()).unwrap();
        check(&replica, &mut model).unwrap();
        replica.close();

        // Raft entries, retried from the first one the journal does not hold.
        let backend = FaultyBackend::new();
        let dir = PathBuf::from("/nonexistent/fault-tests/raft");
        let replica = LogGroup::open(&dir, config(&backend), &partitions()).unwrap();
        let entry = |index: u64| RaftRecord {
            term: 3,
            index,
            kind: RecordKind::Batch,
            flags: 0,
            producer: None,
            key: KEYS[index as usize % 2],
            count: 1,
            base_offset: 0,
            payload: payload(index as usize, 300),
        };
        let append =
            |from: u64, to: u64| rt.block_on(replica.append_raft((from..to).map(entry).collect()));
        append(1, 6).unwrap();
        fill(&backend, new_files_only, true);
        let mut refused = 0;
        for _ in 0..5 {
            let next = replica.last_record().map_or(1, |(i, _)| i + 1);
            match append(next, 40) {
                Ok(_) => panic!("40 entries appended on a full disk"),
                Err(AppendError::DiskFull { .. }) => refused += 1,
                Err(e) => panic!("a full disk refused raft entries otherwise: {e}"),
            }
        }
        assert_eq!(refused, 5);
        fill(&backend, new_files_only, false);
        let next = replica.last_record().map_or(1, |(i, _)| i + 1);
        append(next, 40).unwrap();
        for index in 1..40 {
            let (h, payload_read) = replica.record_by_index(index).unwrap().unwrap();
            assert_eq!((h.index, h.term), (index, 3));
            assert!(payload_read.ends_with(&entry(index).payload));
        }
        assert_eq!(replica.last_record(), Some((39, 3)));
        replica.close();
    }
    leader.close();
}
