//! Consumer offsets and mirror marks: what a commit record or a mirrored batch sets, kept in
//! the journal with the data it describes (restored by recovery, rebuilt on truncation,
//! carried forward before retention deletes their record), and the group's queries of them.

use bytes::Bytes;
use meridian_proto::record::{self, RecordHeader, RecordKind};

use super::{LogGroup, OffsetKey, Shared};
use crate::PartitionKey;

/// The committed offset of a group whose positions came from another region: the offset
/// here is derived from the positions when asked.
pub const POSITIONS_ONLY: u64 = u64::MAX;

/// The offset a commit sets to delete the group's commit in a partition (Kafka's
/// OffsetDelete, DeleteGroups): the group has no committed offset there afterwards.
pub const OFFSET_DELETED: u64 = u64::MAX - 1;

/// An origin position a commit sets to say the group has seen nothing of that origin
/// (a reset below everything it had seen there): never a real position (it would need a
/// record index near 2^40), left out of the group's committed positions.
pub const POSITION_CLEARED: u64 = u64::MAX;

/// The values a commit record sets: the group's offset, and one pseudo offset per origin
/// position (`\u{1}p/{group}/{region}`), kept, truncated and carried past retention as
/// offsets are.
pub(super) fn commit_values(
    group: &str,
    key: PartitionKey,
    offset: u64,
    positions: &[(String, u64)],
) -> Vec<(OffsetKey, u64)> {
    let mut out = vec![((group.to_owned(), key.0, key.1), offset)];
    for (region, position) in positions {
        out.push((
            (format!("{MARK_PREFIX}p/{group}/{region}"), key.0, key.1),
            *position,
        ));
    }
    out
}

/// The prefix of the pseudo consumer groups that keep mirror marks. Real group names are
/// letters, digits, `.`, `_` and `-` (`meridian_proto::names`), so none can start with it.
pub(super) const MARK_PREFIX: char = '\u{1}';

/// The pseudo consumer group whose commit moves a partition's start on every replica
/// (Kafka's DeleteRecords): the indexer trims the partition's index to its offset when it
/// makes the record visible, in journal order.
pub const START_MARK: &str = "\u{1}start";

/// The two pseudo offset keys of an origin's mirror marks: the highest seq held, and the
/// highest `through`. Kept as consumer offsets are — restored from the journal, rebuilt on
/// truncation, carried forward before retention deletes their record — so a mark lives in
/// the same record as the data it describes.
pub(super) fn mark_keys(region: &str, group: u32) -> (OffsetKey, OffsetKey) {
    (
        (format!("{MARK_PREFIX}seq/{group}/{region}"), 0, 0),
        (format!("{MARK_PREFIX}through/{group}/{region}"), 0, 0),
    )
}

/// The offset-like values a record carries: a consumer offset commit's offset, a mirrored
/// batch's marks.
pub(super) fn durable_positions(h: &RecordHeader, payload: &Bytes) -> Vec<(OffsetKey, u64)> {
    if h.kind == RecordKind::OffsetCommit {
        return record::decode_offset_commit(payload)
            .map(|(g, o)| {
                let positions = record::decode_commit_positions(payload);
                commit_values(&g, (h.topic_id, h.partition), o, &positions)
            })
            .unwrap_or_default();
    }
    if h.kind != RecordKind::Batch || h.flags & record::FLAG_ORIGIN == 0 {
        return Vec::new();
    }
    match record::split_batch(h.flags, payload) {
        Ok(record::BatchPayload {
            origin: Some(origin),
            ..
        }) => {
            let (seq, through) = mark_keys(&origin.region, origin.group);
            vec![(seq, origin.seq), (through, origin.through)]
        }
        _ => Vec::new(),
    }
}

impl LogGroup {
    /// `(highest seq, highest through)` of the mirrored batches of origin `(region, group)`
    /// this group holds.
    pub fn mirror_mark(&self, region: &str, group: u32) -> Option<(u64, u64)> {
        let (seq, through) = mark_keys(region, group);
        let offsets = self.shared.offsets.lock().expect("offsets lock poisoned");
        Some((
            offsets.get(&seq)?.0,
            offsets.get(&through).map_or(0, |v| v.0),
        ))
    }

    /// The origin positions a consumer group last committed for a partition.
    pub fn committed_positions(&self, group: &str, key: PartitionKey) -> Vec<(String, u64)> {
        let prefix = format!("{MARK_PREFIX}p/{group}/");
        let offsets = self.shared.offsets.lock().expect("offsets lock poisoned");
        let mut out: Vec<(String, u64)> = offsets
            .iter()
            .filter(|((g, t, p), (position, _))| {
                (*t, *p) == key && g.starts_with(&prefix) && *position != POSITION_CLEARED
            })
            .map(|((g, _, _), &(position, _))| (g[prefix.len()..].to_owned(), position))
            .collect();
        out.sort();
        out
    }

    /// The offset a consumer group last committed for a partition.
    pub fn committed_offset(&self, group: &str, key: PartitionKey) -> Option<u64> {
        let offsets = self.shared.offsets.lock().expect("offsets lock poisoned");
        offsets
            .get(&(group.to_owned(), key.0, key.1))
            .map(|&(offset, _)| offset)
            .filter(|&offset| offset != OFFSET_DELETED)
    }

    /// The metadata a group's committer kept with its offset in a partition (Kafka's
    /// OffsetCommit metadata); empty when it kept none.
    pub fn committed_metadata(&self, group: &str, key: PartitionKey) -> String {
        self.shared.commit_metadata(group, key)
    }

    /// Every committed offset: `(group, topic_id, partition, offset)`.
    pub fn committed_offsets(&self) -> Vec<(String, u32, u32, u64)> {
        let offsets = self.shared.offsets.lock().expect("offsets lock poisoned");
        offsets
            .iter()
            .filter(|((group, _, _), _)| !group.starts_with(MARK_PREFIX))
            .map(|((g, t, p), &(o, _))| (g.clone(), *t, *p, o))
            .collect()
    }
}

impl Shared {
    /// The metadata in the record of a group's live commit in a partition, read from the
    /// journal (it is not kept in memory: few commits carry any).
    pub(super) fn commit_metadata(&self, group: &str, key: PartitionKey) -> String {
        let position = self
            .offsets
            .lock()
            .expect("offsets lock poisoned")
            .get(&(group.to_owned(), key.0, key.1))
            .map(|&(_, position)| position);
        let Some(Ok((h, payload))) = position.map(|p| self.journal.read(p)) else {
            return String::new();
        };
        if h.kind != RecordKind::OffsetCommit {
            return String::new();
        }
        record::decode_commit_metadata(&payload)
    }
}
