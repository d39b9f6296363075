//! A partition's bytes in a shared journal, and a topic's `retention.bytes`: each record
//! counted once (a batch's messages share one), kept up to date by appends, starts moved
//! and restarts, and the start moved past whole records until the partition holds no more
//! than its limit — the other partition sharing the journal untouched.

use std::time::Duration;

use bytes::Bytes;

use super::{FlushPolicy, GroupConfig, LogGroup, PartitionKey};

const A: PartitionKey = (1, 0);
const B: PartitionKey = (2, 0);

fn config() -> GroupConfig {
    GroupConfig {
        segment_bytes: 1 << 20,
        index_entries_per_file: 16,
        flush: FlushPolicy::Fsync,
        flush_interval: Duration::from_millis(5),
        retention: None,
        retention_check_interval: Duration::from_secs(3600),
        ..GroupConfig::default()
    }
}

#[test]
fn partition_bytes_count_each_record_once_and_retention_bytes_keeps_the_newest() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("g");
    let partitions = vec![(A, "a".to_owned()), (B, "b".to_owned())];
    let group = LogGroup::open(&dir, config(), &partitions).unwrap();
    // 20 records of A of 5 messages each (one record per batch), and B beside them.
    let mut sizes = Vec::new();
    for i in 0..20 {
        let appended = rt
            .block_on(group.append(A, Bytes::from(vec![b'a'; 100 + i]), 5))
            .unwrap();
        sizes.push(u64::from(appended.len));
        rt.block_on(group.append(B, Bytes::from(vec![b'b'; 300]), 1))
            .unwrap();
    }
    let (_, written, _, _) = group.positions();
    rt.block_on(async {
        group.subscribe().wait_for(|&v| v >= written).await.unwrap();
    });
    let total: u64 = sizes.iter().sum();
    assert_eq!(group.partition_bytes(A).unwrap(), total);
    // Counted once, then kept up to date by appends.
    let appended = rt
        .block_on(group.append(A, Bytes::from(vec![b'a'; 50]), 2))
        .unwrap();
    sizes.push(u64::from(appended.len));
    rt.block_on(async {
        group
            .subscribe()
            .wait_for(|&v| v >= appended.position + u64::from(appended.len))
            .await
            .unwrap();
    });
    let total: u64 = sizes.iter().sum();
    assert_eq!(group.partition_bytes(A).unwrap(), total);

    // Keep at most the newest 5 records' bytes (plus nothing of a sixth).
    let keep: u64 = sizes[sizes.len() - 5..].iter().sum();
    let start = group.retain_bytes(A, keep + 10).unwrap();
    assert_eq!(start, 16 * 5, "whole records went, the newest 5 stayed");
    assert_eq!(group.partition_bytes(A).unwrap(), keep);
    assert_eq!(
        group.retain_bytes(A, keep + 10).unwrap(),
        start,
        "no further"
    );
    // A start in the middle of a record keeps the record's bytes.
    group.advance_start(A, start + 2).unwrap();
    assert_eq!(group.partition_bytes(A).unwrap(), keep);
    assert_eq!(
        group.offsets(B).unwrap(),
        (0, 20),
        "the other partition keeps all"
    );
    group.close();
    drop(group);
    // After a restart: counted again from the index, the moved start kept.
    let group = LogGroup::open(&dir, config(), &partitions).unwrap();
    assert_eq!(group.offsets(A).unwrap().0, start + 2);
    assert_eq!(group.partition_bytes(A).unwrap(), keep);
    group.close();
}
