//! Topics' own retention in journals they share. A log group's journal holds many topics;
//! its segments can go only when every topic in them is done with them. So two things
//! follow each topic's retention, every `storage.retention_check_interval_ms`:
//!
//! - the journal keeps its segments as long as the longest of its topics' retentions, and
//!   never less than the broker's `storage.retention` (what internal records, offsets and
//!   transactions, were kept for before topics had their own) — the disk cost of a short
//!   topic beside a long one is the long one's;
//! - a topic whose retention is shorter stops serving its older messages at once: each of
//!   its partitions' starts moves past the messages appended before its cutoff
//!   (`LogGroup::expire_before`, kept across restarts), exactly, not a segment at a time.
//!
//! A topic's `retention.bytes` moves each partition's start past its oldest records
//! while it holds more (`LogGroup::retain_bytes`: whole records, not segments, counted by
//! the partition's index); the journal's segments follow the rule above.
//!
//! A compacted topic (`cleanup.policy` compact) does not hold the journal's segments: its
//! live messages are carried past the ones that go (`meridian_storage::compaction`), so
//! only `compact,delete` topics' retention counts. Each pass also tells storage which
//! partitions are compacted, and how long their tombstones are read.
//!
//! Each replica does this by its own clock, as Kafka's replicas each apply retention.
//!
//! Kafka's DeleteRecords moves a partition's start too, but on every replica at once: the
//! leader writes a [`START_MARK`] commit through the log group's replication, and each
//! replica trims the partition where it makes that record visible.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Broker, BrokerError, now_ms};
use crate::storage::compaction::Compaction;
use crate::storage::{PartitionKey, START_MARK};

/// A retention as topics and the broker spell it: empty (the broker's), `none` (forever,
/// -1) or a duration; in ms.
pub(crate) fn parse(text: &str) -> Result<Option<i64>, String> {
    match text {
        "" => Ok(None),
        t => meridian_proto::settings::retention_ms(t).map(Some),
    }
}

/// A partition's cleanup: its retention in ms (`None`: compact only), its retention in
/// bytes, and its compaction.
type Cleanup = (PartitionKey, Option<i64>, Option<u64>, Option<Compaction>);

/// The longer of two retentions in ms (-1: forever, longer than any).
fn longer(a: i64, b: i64) -> i64 {
    if a < 0 || b < 0 { -1 } else { a.max(b) }
}

impl Broker {
    /// One pass over the log groups this broker hosts (see the module's doc).
    pub fn apply_topic_retention(&self) {
        let broker_default = parse(&self.config.storage.retention)
            .ok()
            .flatten()
            .unwrap_or(-1);
        let now = now_ms();
        // Each group's partitions: their topics' retention (`None`: a compact-only topic,
        // whose live messages are carried past the segments that go) and compaction.
        let mut in_group: BTreeMap<u32, Vec<Cleanup>> = BTreeMap::new();
        for t in self.topics() {
            let retention = t
                .retention_deletes()
                .then(|| t.retention_ms.unwrap_or(broker_default));
            let compaction = t.compaction();
            let bytes = t.retention_deletes().then(|| t.retention_bytes()).flatten();
            for (p, &g) in t.groups.iter().enumerate() {
                in_group.entry(g).or_default().push((
                    (t.id, p as u32),
                    retention,
                    bytes,
                    compaction,
                ));
            }
        }
        for (g, hosted) in self.log_groups() {
            let storage = hosted.storage();
            let partitions = in_group.remove(&g).unwrap_or_default();
            let keep = partitions
                .iter()
                .filter_map(|&(_, r, _, _)| r)
                .fold(broker_default, longer);
            storage.set_segment_retention((keep >= 0).then(|| Duration::from_millis(keep as u64)));
            for (key, retention, bytes, compaction) in partitions {
                if let Err(e) = storage.set_compaction(key, compaction) {
                    tracing::warn!(log_group = g, topic_id = key.0, partition = key.1, error = %e, "a compacted partition's keys could not be built; retried next pass");
                }
                if let Some((keys, true)) = storage.compaction_stats(key) {
                    tracing::warn!(
                        log_group = g,
                        topic_id = key.0,
                        partition = key.1,
                        keys,
                        "a compacted partition has more keys than storage.compaction_keys_max: it is kept whole (not compacted) and keeps its segments"
                    );
                }
                if let Some(max) = bytes
                    && let Err(e) = storage.retain_bytes(key, max)
                {
                    tracing::warn!(log_group = g, topic_id = key.0, partition = key.1, error = %e, "a topic's retention.bytes did not move its start; retried next pass");
                }
                let Some(retention) = retention.filter(|r| *r >= 0) else {
                    continue;
                };
                // One search-and-move under the partition's index lock: a message appended
                // between a search and a separate move would be passed unread.
                let cutoff = now.saturating_sub(retention);
                if let Err(e) = storage.expire_before(key, cutoff) {
                    tracing::warn!(log_group = g, topic_id = key.0, partition = key.1, error = %e, "a topic's retention did not move its start; retried next pass");
                }
            }
        }
    }

    /// Deletes a partition's messages below `offset` (Kafka's DeleteRecords; -1: all it
    /// holds) on every replica of the log group; returns the partition's start after it.
    pub async fn delete_records(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
    ) -> Result<u64, BrokerError> {
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        self.require_leader(group.id())?;
        let storage = group.storage();
        // Read your writes: what was acknowledged before this call may be deleted.
        storage.caught_up(Duration::from_secs(1)).await;
        let (earliest, latest) = storage.offsets(key).map_err(BrokerError::Read)?;
        let to = match offset {
            -1 => latest,
            o if o < 0 => {
                return Err(BrokerError::Invalid(format!(
                    "offset {o}: delete below an offset, or -1 for everything held"
                )));
            }
            o if o as u64 > latest => {
                return Err(BrokerError::OffsetOutOfRange {
                    topic: topic.name.clone(),
                    partition,
                    offset: o as u64,
                    earliest,
                    latest,
                });
            }
            o => o as u64,
        };
        if to <= earliest {
            return Ok(earliest);
        }
        group
            .commit_offset(START_MARK, key, to, Vec::new())
            .await
            .map_err(|e| self.group_error(e))?;
        // Visible here once the indexer has reached the record (it is committed now).
        storage.caught_up(Duration::from_secs(5)).await;
        Ok(storage.offsets(key).map_err(BrokerError::Read)?.0.max(to))
    }

    /// Applies topics' retention every `storage.retention_check_interval_ms`.
    pub async fn run_topic_retention(self: std::sync::Arc<Self>) {
        let every = Duration::from_millis(self.config.storage.retention_check_interval_ms.max(100));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let broker = self.clone();
            // Index searches and trims touch files: off the async workers.
            let _ = tokio::task::spawn_blocking(move || broker.apply_topic_retention()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_parse_and_the_longer_of_two_is_forever_when_either_is() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("none").unwrap(), Some(-1));
        assert_eq!(parse("2s").unwrap(), Some(2000));
        assert!(parse("soon").is_err());
        assert_eq!(longer(1000, 5000), 5000);
        assert_eq!(longer(-1, 5000), -1);
        assert_eq!(longer(1000, -1), -1);
    }
}
