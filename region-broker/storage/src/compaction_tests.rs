//! Compaction in a shared journal: reads see each key's latest value only, retention
//! carries live messages past the segments it deletes (other topics' data untouched), and
//! what survives holds across a restart and a rebuild of the index from the journal.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::batch::{self, Message};

use super::compaction::Compaction;
use super::{FlushPolicy, GroupConfig, LogGroup, PartitionKey};
use crate::tests::runtime;

const COMPACTED: PartitionKey = (1, 0);
const PLAIN: PartitionKey = (2, 0);

fn partitions() -> Vec<(PartitionKey, String)> {
    vec![(COMPACTED, "table".into()), (PLAIN, "events".into())]
}

fn config() -> GroupConfig {
    GroupConfig {
        segment_bytes: 8192,
        index_entries_per_file: 64,
        flush: FlushPolicy::Fsync,
        flush_interval: Duration::from_millis(5),
        retention: None,
        retention_bytes: Some(4 * 8192),
        retention_check_interval: Duration::from_secs(3600),
        ..GroupConfig::default()
    }
}

fn message(key: &str, value: Option<String>) -> Message {
    Message {
        key: Some(Bytes::from(key.to_owned())),
        value: value.map(Bytes::from),
        headers: Vec::new(),
        timestamp_ms: 1,
    }
}

/// Every message a read of the whole partition returns: offset → (key, value).
fn read_all(group: &LogGroup, key: PartitionKey) -> BTreeMap<u64, (String, Option<String>)> {
    let (earliest, latest) = group.offsets(key).unwrap();
    let mut out = BTreeMap::new();
    let mut next = earliest;
    while next < latest {
        let batches = group.read(key, next, 4096).unwrap();
        let Some(last) = batches.last() else {
            break;
        };
        next = last.base_offset + u64::from(last.count);
        for b in batches {
            let messages = batch::decode_batch(&b.payload, b.count as usize).unwrap();
            for (i, m) in messages.into_iter().enumerate() {
                if b.removed.contains(&(i as u32)) {
                    continue;
                }
                let k = String::from_utf8(m.key.unwrap().to_vec()).unwrap();
                let v = m.value.map(|v| String::from_utf8(v.to_vec()).unwrap());
                out.insert(b.base_offset + i as u64, (k, v));
            }
        }
    }
    out
}

fn wait_indexed(group: &LogGroup) {
    let (_, written, _, _) = group.positions();
    let rt = runtime();
    rt.block_on(async {
        let mut visible = group.subscribe();
        visible.wait_for(|&v| v >= written).await.unwrap();
    });
}

fn open(dir: &Path) -> LogGroup {
    let group = LogGroup::open(dir, config(), &partitions()).unwrap();
    group
        .set_compaction(COMPACTED, Some(Compaction::default()))
        .unwrap();
    group
}

#[test]
fn compaction_keeps_the_latest_value_per_key_through_retention_restarts_and_rebuilds() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("group-0");
    let group = open(&dir);
    // 40 keys updated 30 times each, some batches of several messages; every seventh key
    // deleted at the end (a tombstone). Another topic shares the journal.
    let mut expected: BTreeMap<String, (u64, Option<String>)> = BTreeMap::new();
    let mut offset = 0;
    // Keys written once, first: retention must carry them.
    for s in 0..10 {
        let key = format!("s{s}");
        let value = (s != 3).then(|| format!("static-{s}"));
        rt.block_on(group.append(
            COMPACTED,
            Bytes::from(batch::encode_batch(&[message(&key, value.clone())])),
            1,
        ))
        .unwrap();
        expected.insert(key, (offset, value));
        offset += 1;
    }
    for round in 0..30 {
        for chunk in (0..40).collect::<Vec<_>>().chunks(4) {
            let messages: Vec<Message> = chunk
                .iter()
                .map(|k| {
                    message(
                        &format!("k{k}"),
                        Some(format!("v{round}-{k}-{}", "x".repeat(40))),
                    )
                })
                .collect();
            for m in &messages {
                let k = String::from_utf8(m.key.clone().unwrap().to_vec()).unwrap();
                let v = m
                    .value
                    .clone()
                    .map(|v| String::from_utf8(v.to_vec()).unwrap());
                expected.insert(k, (offset, v));
                offset += 1;
            }
            let appended = rt
                .block_on(group.append(
                    COMPACTED,
                    Bytes::from(batch::encode_batch(&messages)),
                    messages.len() as u32,
                ))
                .unwrap();
            assert_eq!(appended.base_offset + messages.len() as u64, offset);
            rt.block_on(group.append(PLAIN, Bytes::from(vec![b'e'; 100]), 1))
                .unwrap();
        }
    }
    for k in (0..40).step_by(7) {
        let key = format!("k{k}");
        rt.block_on(group.append(
            COMPACTED,
            Bytes::from(batch::encode_batch(&[message(&key, None)])),
            1,
        ))
        .unwrap();
        expected.insert(key, (offset, None));
        offset += 1;
    }
    wait_indexed(&group);
    let want: BTreeMap<u64, (String, Option<String>)> = expected
        .iter()
        .map(|(k, (o, v))| (*o, (k.clone(), v.clone())))
        .collect();
    assert_eq!(
        read_all(&group, COMPACTED),
        want,
        "compacted reads before retention"
    );

    let segments_before = group.journal_size().1;
    group.apply_retention().unwrap();
    wait_indexed(&group);
    let (bytes, segments) = group.journal_size();
    assert!(
        segments < segments_before && bytes <= 5 * 8192,
        "retention deleted segments: {segments_before} → {segments} ({bytes} bytes)"
    );
    assert_eq!(read_all(&group, COMPACTED), want, "after retention");
    let (earliest, latest) = group.offsets(COMPACTED).unwrap();
    assert_eq!(latest, offset);
    assert_eq!(earliest, 0, "the first message is live, carried");
    let (plain_earliest, _) = group.offsets(PLAIN).unwrap();
    assert!(plain_earliest > 0, "the other topic's old messages went");

    // A restart, then a rebuild of the compacted index from the journal alone.
    group.close();
    drop(group);
    let group = open(&dir);
    assert_eq!(read_all(&group, COMPACTED), want, "after a restart");
    assert_eq!(group.offsets(COMPACTED).unwrap(), (earliest, latest));
    group.close();
    drop(group);
    std::fs::remove_dir_all(dir.join("index").join("table")).unwrap();
    let group = open(&dir);
    assert_eq!(
        read_all(&group, COMPACTED),
        want,
        "after rebuilding the index"
    );
    assert_eq!(group.offsets(COMPACTED).unwrap().1, latest);

    // New writes go on at the next offset, and retention goes on carrying.
    let appended = rt
        .block_on(group.append(
            COMPACTED,
            Bytes::from(batch::encode_batch(&[message("k1", Some("last".into()))])),
            1,
        ))
        .unwrap();
    assert_eq!(appended.base_offset, latest);
    let mut want = want;
    want.retain(|_, (k, _)| k != "k1");
    want.insert(latest, ("k1".into(), Some("last".into())));
    for i in 0..200 {
        rt.block_on(group.append(PLAIN, Bytes::from(vec![b'f'; 100 + i % 7]), 1))
            .unwrap();
    }
    wait_indexed(&group);
    group.apply_retention().unwrap();
    wait_indexed(&group);
    assert_eq!(read_all(&group, COMPACTED), want, "after more retention");
    group.close();
}

#[test]
fn an_expired_tombstone_and_what_it_deleted_are_gone() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let group = LogGroup::open(&tmp.path().join("g"), config(), &partitions()).unwrap();
    group
        .set_compaction(
            COMPACTED,
            Some(Compaction {
                delete_retention_ms: 0,
            }),
        )
        .unwrap();
    for m in [
        message("a", Some("1".into())),
        message("b", Some("2".into())),
        message("a", None),
    ] {
        rt.block_on(group.append(COMPACTED, Bytes::from(batch::encode_batch(&[m])), 1))
            .unwrap();
    }
    wait_indexed(&group);
    let read = read_all(&group, COMPACTED);
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[&1], ("b".into(), Some("2".into())));
    group
        .set_compaction(
            COMPACTED,
            Some(Compaction {
                delete_retention_ms: 0,
            }),
        )
        .unwrap();
    assert_eq!(group.compaction_stats(COMPACTED), Some((1, false)));
    group.close();
}

#[test]
fn a_message_read_from_its_copy_is_read_once_and_in_order() {
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let group = open(&tmp.path().join("g"));
    let messages: Vec<Message> = (0..5)
        .map(|i| message(&format!("k{i}"), Some(format!("v{i}"))))
        .collect();
    rt.block_on(group.append(COMPACTED, Bytes::from(batch::encode_batch(&messages)), 5))
        .unwrap();
    wait_indexed(&group);
    // Offset 2 copied forward while its batch is still held (between retention rounds).
    let (flags, payload) = group.carried_payload(COMPACTED, 2).unwrap().unwrap();
    rt.block_on(group.append_carried(COMPACTED, 2, flags, payload))
        .unwrap();
    wait_indexed(&group);
    assert_eq!(group.carried_total(), 1);
    let mut read = Vec::new();
    let batches = group.read(COMPACTED, 0, 1 << 20).unwrap();
    for b in &batches {
        let decoded = batch::decode_batch(&b.payload, b.count as usize).unwrap();
        for (i, m) in decoded.into_iter().enumerate() {
            if !b.removed.contains(&(i as u32)) {
                read.push((b.base_offset + i as u64, m.value.unwrap()));
            }
        }
    }
    let want: Vec<(u64, Bytes)> = (0..5).map(|i| (i, Bytes::from(format!("v{i}")))).collect();
    assert_eq!(read, want, "each offset once, in order: {batches:?}");
    // Read from the middle too.
    let from_3: Vec<u64> = group
        .read(COMPACTED, 3, 1 << 20)
        .unwrap()
        .iter()
        .flat_map(|b| {
            (0..b.count)
                .filter(|i| !b.removed.contains(i))
                .map(|i| b.base_offset + u64::from(i))
                .collect::<Vec<_>>()
        })
        .filter(|&o| o >= 3)
        .collect();
    assert_eq!(from_3, vec![3, 4]);
    group.close();
}
