//! A log group's transaction state, end to end: transactional batches and markers written
//! through the group, the last stable offset and aborted ranges it derives, and the same
//! state after a crash and recovery, after a truncation, on a replica's verbatim copies, and
//! after retention.

use std::time::Duration;

use bytes::Bytes;
use meridian_proto::producer::ProducerBatch;
use meridian_proto::record::TxnMarker;

use crate::tests::runtime;
use crate::transactions::{Aborted, TxnPart};
use crate::{FlushPolicy, GroupConfig, LogGroup, PartitionKey};

const KEY: PartitionKey = (1, 0);

fn partitions() -> Vec<(PartitionKey, String)> {
    vec![(KEY, "orders".into()), ((1, 1), "orders".into())]
}

fn config() -> GroupConfig {
    GroupConfig {
        segment_bytes: 4096,
        index_entries_per_file: 8,
        flush: FlushPolicy::Fsync,
        flush_interval: Duration::from_millis(5),
        retention: None,
        retention_bytes: None,
        retention_check_interval: Duration::from_secs(3600),
        ..GroupConfig::default()
    }
}

fn producer(id: i64, first: i32) -> ProducerBatch {
    ProducerBatch {
        id,
        epoch: 0,
        first_sequence: first,
        last_sequence: first + 1,
    }
}

fn marker(commit: bool) -> Bytes {
    let mut out = Vec::new();
    TxnMarker {
        commit,
        coordinator_epoch: 1,
    }
    .encode(&mut out);
    Bytes::from(out)
}

/// Waits until everything written is visible.
fn settle(rt: &tokio::runtime::Runtime, group: &LogGroup) {
    rt.block_on(group.caught_up(Duration::from_secs(5)));
}

/// The group's whole transaction state for [`KEY`], as a reader sees it.
fn state(group: &LogGroup) -> (u64, Vec<Aborted>, Vec<(i64, u64)>) {
    let open = group.open_transactions(KEY);
    // The produce path's question agrees with the list.
    assert!(
        open.iter()
            .all(|&(p, _)| group.has_open_transaction(KEY, p))
    );
    assert!(!group.has_open_transaction(KEY, i64::MAX));
    (
        group.stable_offsets(KEY).unwrap().2,
        group.aborted_in(KEY, 0, u64::MAX),
        open,
    )
}

/// Writes: producer 1 commits offsets 0-1 (marker 2); producer 2 aborts 3-4 (marker 7) around
/// a plain batch 5-6; producer 3 leaves 8-9 open.
fn write_three_transactions(rt: &tokio::runtime::Runtime, group: &LogGroup) {
    let data = Bytes::from_static(b"messages");
    let txn = Some(TxnPart::Batch);
    let mark = Some(TxnPart::Marker);
    rt.block_on(async {
        group
            .append_producer(KEY, data.clone(), 2, producer(1, 0), txn)
            .await
            .unwrap();
        group
            .append_producer(KEY, marker(true), 1, producer(1, 0), mark)
            .await
            .unwrap();
        group
            .append_producer(KEY, data.clone(), 2, producer(2, 0), txn)
            .await
            .unwrap();
        group.append(KEY, data.clone(), 2).await.unwrap();
        group
            .append_producer(KEY, marker(false), 1, producer(2, 0), mark)
            .await
            .unwrap();
        group
            .append_producer(KEY, data.clone(), 2, producer(3, 0), txn)
            .await
            .unwrap();
    });
    settle(rt, group);
}

fn expected() -> (u64, Vec<Aborted>, Vec<(i64, u64)>) {
    (
        8,
        vec![Aborted {
            producer_id: 2,
            first_offset: 3,
            marker_offset: 7,
        }],
        vec![(3, 8)],
    )
}

#[test]
fn transactions_are_followed_through_recovery_truncation_and_copies() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("leader");
    let group = LogGroup::open(&dir, config(), &partitions()).unwrap();
    write_three_transactions(&rt, &group);
    assert_eq!(state(&group), expected());
    assert_eq!(
        group.offsets(KEY).unwrap(),
        (0, 10),
        "markers take an offset"
    );

    // What a read returns says which batches are markers and whose.
    let read = group.read(KEY, 0, 1 << 20).unwrap();
    let kinds: Vec<(u64, Option<TxnPart>, Option<i64>)> = read
        .iter()
        .map(|b| (b.base_offset, b.txn, b.producer.map(|p| p.id)))
        .collect();
    assert_eq!(
        kinds,
        [
            (0, Some(TxnPart::Batch), Some(1)),
            (2, Some(TxnPart::Marker), Some(1)),
            (3, Some(TxnPart::Batch), Some(2)),
            (5, None, None),
            (7, Some(TxnPart::Marker), Some(2)),
            (8, Some(TxnPart::Batch), Some(3)),
        ]
    );
    assert!(read[1].is_marker() && !read[0].is_marker());
    assert!(!TxnMarker::decode(&read[4].payload).unwrap().commit);
    // A marker carries no sequence: the producer's next batch is not a duplicate of it.
    assert_eq!(
        group.check_producer(KEY, &producer(1, 2)),
        crate::SeqCheck::Write
    );

    // A replica's verbatim copies derive the same state.
    let copy_dir = tmp.path().join("copy");
    let copy = LogGroup::open(
        &copy_dir,
        GroupConfig {
            replicated: true,
            ..config()
        },
        &partitions(),
    )
    .unwrap();
    let (_, end, _, _) = group.positions();
    let mut position = 0;
    while position < end {
        let chunk = group.read_records(position, 1 << 20).unwrap();
        position = rt.block_on(copy.append_records(&chunk)).unwrap();
    }
    copy.set_watermark(end);
    settle(&rt, &copy);
    assert_eq!(state(&copy), expected());

    // Recovery after a crash rebuilds it from the journal.
    group.crash();
    drop(group);
    let group = LogGroup::open(&dir, config(), &partitions()).unwrap();
    settle(&rt, &group);
    assert_eq!(state(&group), expected());

    // Truncating the abort marker away reopens producer 2's transaction.
    let marker_index = read[4].index;
    let cut = group.end_of_record(marker_index - 1).unwrap();
    rt.block_on(group.truncate_after(cut)).unwrap();
    settle(&rt, &group);
    assert_eq!(
        state(&group),
        (3, vec![], vec![(2, 3)]),
        "the abort was cut"
    );
    group.close();
    copy.close();
}

#[test]
fn retention_forgets_aborted_ranges_it_deleted() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        retention_bytes: Some(2 * 4096),
        ..config()
    };
    let group = LogGroup::open(tmp.path(), config, &partitions()).unwrap();
    write_three_transactions(&rt, &group);
    // Producer 3 commits, then plain batches fill segments until retention deletes the
    // transactions' records.
    rt.block_on(group.append_producer(KEY, marker(true), 1, producer(3, 0), Some(TxnPart::Marker)))
        .unwrap();
    for _ in 0..60 {
        rt.block_on(group.append((1, 1), Bytes::from(vec![7u8; 200]), 1))
            .unwrap();
    }
    settle(&rt, &group);
    assert_eq!(group.stable_offsets(KEY).unwrap().2, 11);
    assert_eq!(group.aborted_in(KEY, 0, u64::MAX).len(), 1);
    group.apply_retention().unwrap();
    let (earliest, latest) = group.offsets(KEY).unwrap();
    assert!(earliest > 7, "retention kept offset {earliest}");
    assert_eq!(latest, 11);
    assert!(group.aborted_in(KEY, 0, u64::MAX).is_empty());
    assert_eq!(group.stable_offsets(KEY).unwrap().2, 11);
    group.close();
}

#[test]
fn a_marker_fences_its_producers_older_epochs_here_through_recovery() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let group = LogGroup::open(tmp.path(), config(), &partitions()).unwrap();
    let data = Bytes::from_static(b"messages");
    let at = |epoch: i16, first: i32| ProducerBatch {
        id: 9,
        epoch,
        first_sequence: first,
        last_sequence: first + 1,
    };
    rt.block_on(group.append_producer(KEY, data.clone(), 2, at(0, 0), Some(TxnPart::Batch)))
        .unwrap();
    // The coordinator timed the transaction out: its abort marker carries epoch 1.
    rt.block_on(group.append_producer(KEY, marker(false), 1, at(1, 0), Some(TxnPart::Marker)))
        .unwrap();
    let zombie = at(0, 2);
    let fenced = |g: &LogGroup| {
        matches!(
            g.check_producer(KEY, &zombie),
            crate::SeqCheck::Refuse(crate::SeqRefusal::Fenced { current: 1, .. })
        )
    };
    assert!(fenced(&group), "{:?}", group.check_producer(KEY, &zombie));
    // The producer, initialized again (epoch 2), starts over at sequence 0.
    assert_eq!(group.check_producer(KEY, &at(2, 0)), crate::SeqCheck::Write);
    // A producer this partition never saw is fenced by its marker too.
    let other = ProducerBatch { id: 10, ..at(3, 0) };
    rt.block_on(group.append_producer((1, 1), marker(true), 1, other, Some(TxnPart::Marker)))
        .unwrap();
    assert!(matches!(
        group.check_producer((1, 1), &ProducerBatch { id: 10, ..at(2, 5) }),
        crate::SeqCheck::Refuse(crate::SeqRefusal::Fenced { .. })
    ));
    // Recovery rebuilds the fence from the journal.
    settle(&rt, &group);
    group.crash();
    drop(group);
    let group = LogGroup::open(tmp.path(), config(), &partitions()).unwrap();
    assert!(fenced(&group));
    group.close();
}

/// A marker mirrored from another region (its origin before the marker, as the raft path
/// writes it) ends the transaction as a local one does.
#[test]
fn a_mirrored_marker_is_read_past_its_origin() {
    use meridian_proto::origin::Origin;
    use meridian_proto::record::{self, RecordHeader, RecordKind};

    use crate::transactions::{Marker, TxnEvent};
    let mut payload = Vec::new();
    Origin {
        region: "far".into(),
        group: 3,
        seq: 9,
        through: 9,
    }
    .encode(&mut payload);
    TxnMarker {
        commit: true,
        coordinator_epoch: 2,
    }
    .encode(&mut payload);
    let header = |flags| RecordHeader {
        len: 0,
        kind: RecordKind::Batch,
        flags,
        topic_id: 1,
        partition: 0,
        count: 1,
        term: 1,
        index: 5,
        append_time_ms: 0,
        base_offset: 40,
    };
    let producer = ProducerBatch {
        id: 7,
        epoch: 1,
        first_sequence: 0,
        last_sequence: 0,
    };
    let mirrored = header(record::FLAG_CONTROL | record::FLAG_ORIGIN | record::FLAG_PRODUCER);
    assert_eq!(
        TxnEvent::of(&mirrored, &producer, &payload),
        Some(TxnEvent::Marker {
            producer_id: 7,
            epoch: 1,
            marker: Marker::Commit,
            offset: 40,
        })
    );
    // Without the flag the origin is not skipped: not a marker.
    let local = header(record::FLAG_CONTROL | record::FLAG_PRODUCER);
    assert_eq!(TxnEvent::of(&local, &producer, &payload), None);
}
