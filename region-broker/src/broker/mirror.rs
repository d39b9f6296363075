//! What mirrors need of a broker: the committed local-origin batches of a log group in
//! record order (what an origin region ships), an idempotent append of a batch that came
//! from another region (what a target region receives), and the marks that say how far an
//! origin's batches are held.
//!
//! Idempotence: a mirrored batch carries its origin `(region, group, seq, through)` in the
//! record itself, and the group keeps, per origin, the highest seq and `through` it holds
//! (`LogGroup::mirror_mark`, restored from the journal like consumer offsets). The leader
//! serializes the appends of one origin, makes sure everything in its log is applied
//! (a linearizable read), and writes a batch only if its seq is above the mark: a batch
//! sent again after a lost answer or a restarted link is acknowledged as a duplicate, never
//! written twice. Batches of one origin reach a target group in seq order, so "above the
//! mark" is exactly "not held yet".

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::mirror::{ShippedBatch, ShippedTxn};
use meridian_proto::origin::Origin;
use meridian_proto::record::{FLAG_ORIGIN, RecordKind};

use super::{Broker, BrokerError, Topic};
use crate::storage::transactions::{TxnPart, TxnStatus};

/// A batch another region's mirror ships here, for [`Broker::append_mirrored`].
#[derive(Debug, Clone)]
pub struct MirroredIn {
    /// Its topic here.
    pub topic_id: u32,
    /// Its partition.
    pub partition: u32,
    /// Where it was first written.
    pub origin: Origin,
    /// Messages in it.
    pub count: u32,
    /// The encoded message batch, as the origin stored it (a commit marker's bytes when
    /// `txn` says it is one).
    pub payload: Bytes,
    /// A committed transaction's batch or commit marker, with its producer in the origin.
    pub txn: Option<ShippedTxn>,
}

/// The producer id a transaction of `origin`'s producer `id` has in this region: bit 62
/// set — this region's own transactional producers have ids below it (milliseconds above
/// ten bits of broker id) — over 62 bits of a hash (FNV-1a) of the origin's name and id, so
/// two origins' producers share one with odds of 2^-62 a pair. (The SDK's idempotent
/// producers pick random ids at or above 2^62, with the same odds, and write outside
/// transactions.)
fn mirrored_producer_id(origin: &str, id: i64) -> i64 {
    let hash = origin
        .bytes()
        .chain([0])
        .chain(id.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    (1 << 62) | (hash & ((1 << 62) - 1)) as i64
}

/// The answer to a mirrored append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorAppended {
    /// The batch was already held (its seq is at or below the origin's mark).
    pub duplicate: bool,
    /// Offset of its first message, when written now.
    pub base_offset: Option<u64>,
}

/// A consumer group's commit with origin positions, made in this region: shipped so the
/// group can move to another region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalCommit {
    /// Its record index.
    pub seq: u64,
    /// Consumer group.
    pub group: String,
    /// Topic id.
    pub topic_id: u32,
    /// Partition.
    pub partition: u32,
    /// What the group has seen of each origin.
    pub positions: super::Positions,
}

/// What a read of local records found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalRecords {
    /// Committed local-origin batches.
    pub batches: Vec<ShippedBatch>,
    /// Consumer commits with origin positions.
    pub commits: Vec<LocalCommit>,
    /// The record index to read from next.
    pub next: u64,
}

impl Broker {
    fn topic_by_id(&self, id: u32) -> Result<Topic, BrokerError> {
        self.catalog
            .read()
            .expect("catalog lock poisoned")
            .topics()
            .find(|t| t.id == id)
            .cloned()
            .ok_or_else(|| {
                BrokerError::Invalid(format!(
                    "no topic with id {id} here: the topic is not (yet) in this region"
                ))
            })
    }

    /// Appends batches mirrored from one origin group, in its order, each unless held.
    /// Appends the leading run of them that lies in the first one's log group (at least
    /// that one) and answers for that run: the caller sends the rest again. A batch that
    /// does not decode ends the run before it, or is refused when it is the first.
    pub async fn append_mirrored(
        &self,
        batches: Vec<MirroredIn>,
    ) -> Result<Vec<MirrorAppended>, BrokerError> {
        let Some(first) = batches.first() else {
            return Ok(Vec::new());
        };
        let (region, origin_group) = (first.origin.region.clone(), first.origin.group);
        if region == self.config.region {
            return Err(BrokerError::Invalid(format!(
                "a batch of origin {region} cannot be mirrored into its own region"
            )));
        }
        if region.is_empty() || region.len() > meridian_proto::origin::REGION_MAX {
            return Err(BrokerError::Invalid(
                "the origin region name must be 1 to 249 bytes".into(),
            ));
        }
        let topic = self.topic_by_id(first.topic_id)?;
        let (group, _) = self.locate(&topic, first.partition)?;
        let g = group.id();
        group
            .require_raft("mirroring into master-slave topics is not supported yet")
            .map_err(|e| self.group_error(e))?;
        self.require_leader(g)?;
        let mut last_seq = 0;
        for b in &batches {
            if b.origin.region != region || b.origin.group != origin_group {
                return Err(BrokerError::Invalid(format!(
                    "one call appends batches of one origin group ({region}/{origin_group}), not of {}/{}",
                    b.origin.region, b.origin.group
                )));
            }
            if b.origin.seq <= last_seq {
                return Err(BrokerError::Invalid(format!(
                    "mirrored batches must come in increasing seq: {} after {last_seq}",
                    b.origin.seq
                )));
            }
            last_seq = b.origin.seq;
        }
        let mut run = Vec::with_capacity(batches.len());
        for b in batches {
            let in_group = self
                .topic_by_id(b.topic_id)
                .and_then(|t| self.locate(&t, b.partition))
                .ok()
                .filter(|(gr, _)| gr.id() == g);
            let decodes = || match b.txn {
                // Checked first: a marker carries its producer too.
                Some(t) if !t.producer.is_valid() => Err(BrokerError::Invalid(
                    "a mirrored transaction's producer has a negative id, epoch or sequence".into(),
                )),
                Some(ShippedTxn { marker: true, .. }) => {
                    match meridian_proto::record::TxnMarker::decode(&b.payload) {
                        Ok(m) if m.commit && b.count == 1 => Ok(()),
                        Ok(_) => Err(BrokerError::Invalid(
                            "a mirrored transaction marker must be one commit marker".into(),
                        )),
                        Err(e) => Err(BrokerError::Invalid(format!(
                            "the mirrored transaction marker does not decode: {e}"
                        ))),
                    }
                }
                _ => meridian_proto::batch::decode_batch(&b.payload, b.count as usize)
                    .map(|_| ())
                    .map_err(|e| {
                        BrokerError::Invalid(format!("the mirrored batch does not decode: {e}"))
                    }),
            };
            let key = match in_group {
                Some((_, key)) if decodes().is_ok() => key,
                _ if run.is_empty() => {
                    decodes()?;
                    return Err(BrokerError::Invalid(format!(
                        "topic {} partition {} is not in log group {g}",
                        b.topic_id, b.partition
                    )));
                }
                _ => break,
            };
            let txn = b.txn.map(|t| {
                let producer = meridian_proto::producer::ProducerBatch {
                    id: mirrored_producer_id(&region, t.producer.id),
                    ..t.producer
                };
                let part = if t.marker {
                    TxnPart::Marker
                } else {
                    TxnPart::Batch
                };
                (producer, part)
            });
            run.push(crate::log_group::MirroredBatch {
                key,
                origin: b.origin,
                count: b.count,
                payload: b.payload,
                txn,
            });
        }
        let lock = self.mirror_lock(g, &run[0].origin);
        let _one_at_a_time = lock.lock().await;
        let counts: Vec<u32> = run.iter().map(|b| b.count).collect();
        let written = group
            .append_mirrored((region.as_str(), origin_group), run)
            .await
            .map_err(|e| self.group_error(e))?;
        Ok(written
            .into_iter()
            .zip(counts)
            .map(|(w, count)| match w {
                None => MirrorAppended {
                    duplicate: true,
                    base_offset: None,
                },
                Some(base_offset) => {
                    metrics::counter!("meridian_mirror_in_messages_total")
                        .increment(u64::from(count));
                    MirrorAppended {
                        duplicate: false,
                        base_offset,
                    }
                }
            })
            .collect())
    }

    /// Merges a consumer group's origin positions committed in another region into this
    /// region's: each origin's highest. Written (as a commit whose offset is derived from
    /// the positions) only when something moved forward; whether it did. Merging is
    /// idempotent, so a commit shipped twice changes nothing the second time.
    pub async fn merge_positions(
        &self,
        consumer_group: &str,
        topic_id: u32,
        partition: u32,
        positions: super::Positions,
    ) -> Result<bool, BrokerError> {
        meridian_proto::names::validate_offsets_owner(consumer_group)
            .map_err(|e| BrokerError::Invalid(e.to_string()))?;
        super::validate_positions(&positions)?;
        let topic = self.topic_by_id(topic_id)?;
        let (group, key) = self.locate(&topic, partition)?;
        let g = group.id();
        group
            .require_raft("origin positions are kept by raft groups only")
            .map_err(|e| self.group_error(e))?;
        self.require_leader(g)?;
        let lock = self
            .mirror_locks
            .lock()
            .expect("mirror locks poisoned")
            .entry((g, format!("positions/{consumer_group}"), partition))
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        group
            .ensure_applied_in_term()
            .await
            .map_err(|e| self.group_error(e))?;
        let current = group.storage().committed_positions(consumer_group, key);
        let mut merged: std::collections::BTreeMap<String, u64> = current.iter().cloned().collect();
        for (region, position) in positions {
            let p = merged.entry(region).or_insert(0);
            *p = (*p).max(position);
        }
        let merged: super::Positions = merged.into_iter().collect();
        // Nothing new, unless the group has no commit here yet: then even "nothing seen"
        // is one (it resumes at the partition's start).
        if merged == current
            && group
                .storage()
                .committed_offset(consumer_group, key)
                .is_some()
        {
            return Ok(false);
        }
        self.write_commit(
            &group,
            consumer_group,
            key,
            crate::storage::POSITIONS_ONLY,
            merged,
            "",
        )
        .await
        .inspect_err(|_| group.forget_applied())?;
        Ok(true)
    }

    fn mirror_lock(&self, group: u32, origin: &Origin) -> Arc<tokio::sync::Mutex<()>> {
        self.mirror_locks
            .lock()
            .expect("mirror locks poisoned")
            .entry((group, origin.region.clone(), origin.group))
            .or_default()
            .clone()
    }

    /// For each log group this broker leads: how far origin `(region, group)` is held —
    /// `(log group, highest seq, highest through)`.
    pub fn mirror_marks(&self, region: &str, origin_group: u32) -> Vec<(u32, u64, u64)> {
        self.log_groups()
            .into_iter()
            .filter(|(g, _)| self.require_leader(*g).is_ok())
            .filter_map(|(g, group)| {
                group
                    .storage()
                    .mirror_mark(region, origin_group)
                    .map(|(seq, through)| (g, seq, through))
            })
            .collect()
    }

    /// The committed local-origin batches of log group `g` from record index `from` on (0:
    /// from the first record retention kept — a region that holds nothing of the group yet
    /// starts there; with `skip_deleted`, a `from` retention deleted starts there too
    /// instead of being refused), about `max_bytes`, waiting up to `max_wait` for one; also
    /// the index to read from next. Served by the group's leader.
    pub async fn read_local(
        &self,
        g: u32,
        from: u64,
        skip_deleted: bool,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<LocalRecords, BrokerError> {
        let group = self.hosted(g)?;
        self.require_leader(g)?;
        let group = group.storage();
        let deadline = tokio::time::Instant::now() + max_wait.min(Duration::from_secs(30));
        let mut visible = group.subscribe();
        loop {
            visible.borrow_and_update();
            let first = group.record_bounds().map_or(1, |(first, _)| first);
            let start = match from {
                0 => first,
                from if skip_deleted => from.max(first),
                from => from,
            };
            let found = local_records(group, start, max_bytes)?;
            if !found.batches.is_empty()
                || !found.commits.is_empty()
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(found);
            }
            if tokio::time::timeout_at(deadline, visible.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return Err(BrokerError::Append(crate::storage::AppendError::Closed));
            }
        }
    }
}

/// Committed local-origin batches (and consumer commits with positions) from record index
/// `from`: skips other records, mirrored batches and positions merged from elsewhere;
/// stops at the commit watermark, at `max_bytes` (after one batch), or at the journal's
/// end.
fn local_records(
    group: &crate::storage::LogGroup,
    from: u64,
    max_bytes: usize,
) -> Result<LocalRecords, BrokerError> {
    let Some((first, last)) = group.record_bounds() else {
        return Ok(LocalRecords {
            next: from,
            ..LocalRecords::default()
        });
    };
    if from < first {
        return Err(BrokerError::Invalid(format!(
            "record {from} was deleted by retention: the journal starts at record {first}"
        )));
    }
    let watermark = group.watermark();
    let (mut out, mut commits, mut bytes, mut next) = (Vec::new(), Vec::new(), 0, from);
    while next <= last && (out.is_empty() || bytes < max_bytes) {
        match group.end_of_record(next) {
            Some(end) if end <= watermark => {}
            _ => break,
        }
        let Some((h, payload)) = group.record_by_index(next).map_err(BrokerError::Read)? else {
            break;
        };
        // Past this record, unless it waits for its transaction (below).
        next += 1;
        if h.kind == RecordKind::OffsetCommit {
            // A cleared origin (a reset back) does not ship: the other regions keep each
            // origin's highest, so a reset holds only where it was made. A commit that has
            // seen nothing ships too: where the group has no commit, it then starts at the
            // partition's start, not at its reset point (which may be the end, skipping
            // what was written for it since).
            let positions: Vec<(String, u64)> =
                meridian_proto::record::decode_commit_positions(&payload)
                    .into_iter()
                    .filter(|(_, p)| *p != crate::storage::POSITION_CLEARED)
                    .collect();
            if let Some((group_name, offset)) =
                meridian_proto::record::decode_offset_commit(&payload)
                && offset != crate::storage::POSITIONS_ONLY
            {
                commits.push(LocalCommit {
                    seq: h.index,
                    group: group_name,
                    topic_id: h.topic_id,
                    partition: h.partition,
                    positions,
                });
            }
            continue;
        }
        // Mirrored batches go back nowhere (waiting for the marker of one from afar must
        // not hold this region's own), and a coordinator's records are its region's own.
        if h.kind != RecordKind::Batch
            || h.flags & FLAG_ORIGIN != 0
            || h.topic_id >= super::INTERNAL_TOPIC_ID_MIN
        {
            continue;
        }
        let parts = meridian_proto::record::split_batch(h.flags, &payload).map_err(|e| {
            BrokerError::Invalid(format!(
                "record {} of the journal does not decode: {e}",
                h.index
            ))
        })?;
        // A committed transaction ships as one: its batches, then its commit marker, with
        // their producer. Shipping waits at the first batch of one still open, keeping
        // order; an aborted one never ships, nor does an abort marker. Otherwise an
        // idempotent producer's prefix stays here: the messages alone ship.
        let txn = match (TxnPart::of(h.flags), parts.producer) {
            (None, _) => None,
            (Some(part), Some(producer)) => {
                let ships = match part {
                    TxnPart::Batch => {
                        let key = (h.topic_id, h.partition);
                        match group.transaction_status(key, producer.id, h.base_offset) {
                            // A topic deleted or removed from this region took its
                            // transactions' states with it: its batch no longer ships
                            // (waiting would hold every other topic of the group).
                            TxnStatus::Open if group.is_retired(h.topic_id) => false,
                            TxnStatus::Open => {
                                next -= 1;
                                break;
                            }
                            TxnStatus::Aborted => false,
                            TxnStatus::Committed => true,
                        }
                    }
                    TxnPart::Marker => meridian_proto::record::TxnMarker::decode(&parts.batch)
                        .is_ok_and(|m| m.commit),
                };
                if !ships {
                    continue;
                }
                Some(ShippedTxn {
                    marker: part == TxnPart::Marker,
                    producer,
                })
            }
            // The writer never stores a transaction's record without its producer.
            (Some(_), None) => continue,
        };
        let payload = parts.batch;
        // What the entry takes in a frame besides its payload (51 bytes at most), so a
        // read of many small ones (markers are 8 bytes) stays within a frame.
        bytes += 51;
        bytes += payload.len();
        out.push(ShippedBatch {
            seq: h.index,
            topic_id: h.topic_id,
            partition: h.partition,
            count: h.count,
            append_time_ms: h.append_time_ms,
            payload,
            txn,
        });
    }
    Ok(LocalRecords {
        batches: out,
        commits,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::mirrored_producer_id;

    #[test]
    fn mirrored_producer_ids_are_apart_from_local_ones_and_other_regions() {
        // A local id: milliseconds since the epoch above ten bits of broker id.
        let local = (1_780_000_000_000_i64 << 10) | 3;
        let (x, y) = (
            mirrored_producer_id("x", local),
            mirrored_producer_id("y", local),
        );
        assert!(x > 0 && y > 0, "valid producer ids are not negative");
        assert_ne!(x, y);
        assert_ne!(x, local);
        assert!(x >= 1 << 62 && local < 1 << 52);
        assert_ne!(
            mirrored_producer_id("x", local + 1024),
            x,
            "one per origin producer"
        );
        assert_eq!(
            mirrored_producer_id("x", local),
            x,
            "the same in every call"
        );
    }
}
