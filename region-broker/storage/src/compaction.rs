//! Log compaction's decisions, without I/O: which messages of a compacted partition are
//! still *live* (the latest of their key, or a tombstone younger than its
//! `delete.retention.ms`), kept as a map from key to its latest offset that the indexer
//! feeds in offset order.
//!
//! A journal is shared by many topics, so compaction never rewrites it. Readers skip what is
//! no longer live (the group filters each batch it reads); the disk is reclaimed by
//! retention, which deletes whole segments once the live messages in them were *carried*
//! forward (copied to the journal's end under their own offsets: `group/compaction.rs`).
//! A compacted topic's data is so written about twice (once, and once more per segment
//! deletion for what is still live), and other topics' never.
//!
//! A transactional message counts once its producer's commit marker is indexed; an aborted
//! one never does. A message without a key is never live, as Kafka's cleaner drops it.
//!
//! The map is bounded (`keys_max` keys per partition): past it compaction gives up on the
//! partition (every message is then live, and retention keeps its segments), with a
//! warning, rather than lose or grow.

use std::collections::HashMap;

use bytes::Bytes;

/// A compacted partition's policy (Kafka's `cleanup.policy=compact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    /// How long a tombstone (a key with no value) is still read after it was written,
    /// in ms: Kafka's `delete.retention.ms` (a day by default).
    pub delete_retention_ms: i64,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            delete_retention_ms: 24 * 3600 * 1000,
        }
    }
}

/// The latest message of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Latest {
    offset: u64,
    append_time_ms: i64,
    tombstone: bool,
}

/// One message as compaction sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen<'a> {
    pub(crate) offset: u64,
    pub(crate) key: Option<&'a Bytes>,
    pub(crate) tombstone: bool,
    pub(crate) append_time_ms: i64,
}

/// A compacted partition's keys and their latest messages.
#[derive(Debug)]
pub(crate) struct KeyMap {
    policy: Compaction,
    latest: HashMap<Bytes, Latest>,
    /// Open transactions' messages, by producer id: they count at the commit marker.
    pending: HashMap<i64, Vec<(Bytes, Latest)>>,
    keys_max: usize,
    /// Past `keys_max`: compaction gave up on the partition; every message is live.
    overflowed: bool,
}

impl KeyMap {
    pub(crate) fn new(policy: Compaction, keys_max: usize) -> KeyMap {
        KeyMap {
            policy,
            latest: HashMap::new(),
            pending: HashMap::new(),
            keys_max,
            overflowed: false,
        }
    }

    pub(crate) fn policy(&self) -> Compaction {
        self.policy
    }

    pub(crate) fn set_policy(&mut self, policy: Compaction) {
        self.policy = policy;
    }

    /// Keys held, and whether compaction gave up on the partition.
    pub(crate) fn stats(&self) -> (usize, bool) {
        (self.latest.len(), self.overflowed)
    }

    /// Takes in a message (in offset order; seeing one again is harmless). With
    /// `transaction`, it is part of that producer's open transaction.
    pub(crate) fn observe(&mut self, m: Seen<'_>, transaction: Option<i64>) {
        let Some(key) = m.key else {
            return;
        };
        let latest = Latest {
            offset: m.offset,
            append_time_ms: m.append_time_ms,
            tombstone: m.tombstone,
        };
        match transaction {
            Some(producer) => {
                let pending = self.pending.entry(producer).or_default();
                // An open transaction's messages are bounded by the same limit.
                if pending.len() < self.keys_max {
                    pending.push((key.clone(), latest));
                } else {
                    self.overflowed = true;
                }
            }
            None => self.apply(key.clone(), latest),
        }
    }

    /// A producer's transaction ended: its messages count when it committed.
    pub(crate) fn end_transaction(&mut self, producer: i64, commit: bool) {
        let Some(messages) = self.pending.remove(&producer) else {
            return;
        };
        if commit {
            for (key, latest) in messages {
                self.apply(key, latest);
            }
        }
    }

    fn apply(&mut self, key: Bytes, latest: Latest) {
        if self.overflowed {
            return;
        }
        if !self.latest.contains_key(&key) && self.latest.len() >= self.keys_max {
            self.overflowed = true;
            self.latest.clear();
            self.pending.clear();
            return;
        }
        let slot = self.latest.entry(key).or_insert(latest);
        if slot.offset <= latest.offset {
            *slot = latest;
        }
    }

    /// Whether the message at `offset` (with `key`, a tombstone or not, written at
    /// `append_time_ms`) is read at `now_ms`.
    pub(crate) fn is_live(&self, offset: u64, key: Option<&[u8]>, now_ms: i64) -> bool {
        if self.overflowed {
            return true;
        }
        let Some(key) = key else {
            return false;
        };
        match self.latest.get(key) {
            Some(l) if l.offset == offset => !self.expired(l, now_ms),
            _ => false,
        }
    }

    fn expired(&self, l: &Latest, now_ms: i64) -> bool {
        l.tombstone && now_ms.saturating_sub(l.append_time_ms) >= self.policy.delete_retention_ms
    }

    /// Forgets the keys whose tombstone's time is up; returns how many.
    pub(crate) fn expire_tombstones(&mut self, now_ms: i64) -> usize {
        let before = self.latest.len();
        let policy = self.policy;
        self.latest.retain(|_, l| {
            !(l.tombstone && now_ms.saturating_sub(l.append_time_ms) >= policy.delete_retention_ms)
        });
        before - self.latest.len()
    }

    /// Offsets of open transactions' messages (they may become live at a commit).
    pub(crate) fn pending_offsets(&self) -> Vec<u64> {
        self.pending
            .values()
            .flat_map(|messages| messages.iter().map(|(_, l)| l.offset))
            .collect()
    }

    /// Offsets of the live messages (`None`: compaction gave up, every message is live).
    pub(crate) fn live_offsets(&self, now_ms: i64) -> Option<Vec<u64>> {
        if self.overflowed {
            return None;
        }
        let mut live: Vec<u64> = self
            .latest
            .values()
            .filter(|l| !self.expired(l, now_ms))
            .map(|l| l.offset)
            .collect();
        live.sort_unstable();
        Some(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(offset: u64, key: &Bytes, tombstone: bool, t: i64) -> Seen<'_> {
        Seen {
            offset,
            key: Some(key),
            tombstone,
            append_time_ms: t,
        }
    }

    #[test]
    fn the_latest_value_of_each_key_is_live_and_nothing_older() {
        let (a, b) = (Bytes::from_static(b"a"), Bytes::from_static(b"b"));
        let mut m = KeyMap::new(Compaction::default(), 10);
        m.observe(seen(0, &a, false, 0), None);
        m.observe(seen(1, &b, false, 0), None);
        m.observe(seen(2, &a, false, 0), None);
        // Seen again (a rebuild meeting a batch twice): nothing moves back.
        m.observe(seen(0, &a, false, 0), None);
        assert!(!m.is_live(0, Some(b"a"), 0));
        assert!(m.is_live(1, Some(b"b"), 0));
        assert!(m.is_live(2, Some(b"a"), 0));
        assert!(!m.is_live(3, None, 0), "a keyless message is never live");
        assert_eq!(m.live_offsets(0), Some(vec![1, 2]));
    }

    #[test]
    fn tombstones_are_read_for_delete_retention_then_the_key_is_gone() {
        let a = Bytes::from_static(b"a");
        let mut m = KeyMap::new(
            Compaction {
                delete_retention_ms: 100,
            },
            10,
        );
        m.observe(seen(0, &a, false, 0), None);
        m.observe(seen(1, &a, true, 1000), None);
        assert!(!m.is_live(0, Some(b"a"), 1050));
        assert!(m.is_live(1, Some(b"a"), 1050));
        assert!(!m.is_live(1, Some(b"a"), 1100));
        assert_eq!(m.expire_tombstones(1050), 0);
        assert_eq!(m.expire_tombstones(1100), 1);
        assert_eq!(m.stats(), (0, false));
        assert_eq!(m.live_offsets(1100), Some(vec![]));
    }

    #[test]
    fn transactions_count_at_their_commit_and_aborted_ones_never() {
        let a = Bytes::from_static(b"a");
        let mut m = KeyMap::new(Compaction::default(), 10);
        m.observe(seen(0, &a, false, 0), None);
        m.observe(seen(1, &a, false, 0), Some(7));
        m.observe(seen(2, &a, false, 0), Some(8));
        assert!(
            m.is_live(0, Some(b"a"), 0),
            "open transactions do not count yet"
        );
        m.end_transaction(8, false);
        assert!(m.is_live(0, Some(b"a"), 0));
        m.end_transaction(7, true);
        assert!(m.is_live(1, Some(b"a"), 0));
        assert!(!m.is_live(2, Some(b"a"), 0));
        m.end_transaction(7, true);
        assert!(m.is_live(1, Some(b"a"), 0));
    }

    #[test]
    fn past_its_bound_the_map_gives_up_and_everything_is_live() {
        let keys: Vec<Bytes> = (0..4).map(|i| Bytes::from(vec![i])).collect();
        let mut m = KeyMap::new(Compaction::default(), 3);
        for (i, k) in keys.iter().enumerate() {
            m.observe(seen(i as u64, k, false, 0), None);
        }
        assert_eq!(m.stats(), (0, true));
        assert!(m.is_live(0, Some(&[0]), 0));
        assert_eq!(m.live_offsets(0), None);
    }
}
