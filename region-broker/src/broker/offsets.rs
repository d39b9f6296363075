//! Offsets: listing a partition's offsets, consumer groups' committed offsets (written
//! through the partition's log group, with the origin positions a multi-region consumer
//! has seen) and the offset a consumer that read elsewhere resumes at here.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use meridian_proto::names;
use meridian_proto::settings::TimestampType;

use super::{Broker, BrokerError, Committed, HostedGroup, OffsetQuery, Positions};
use crate::storage::{LogGroup, PartitionKey};

impl Broker {
    /// Looks up an offset of a partition; with a time — the producer's, or the broker's
    /// append time on a topic whose `timestamp_type` says so — also returns the time found.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        query: OffsetQuery,
    ) -> Result<(u64, Option<i64>), BrokerError> {
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        self.require_leader(topic.groups[partition as usize])?;
        let group = group.storage();
        // Read your writes: what was acknowledged before this call is in the answer.
        group.caught_up(Duration::from_secs(1)).await;
        let (earliest, latest) = group.offsets(key).map_err(BrokerError::Read)?;
        Ok(match query {
            OffsetQuery::Earliest => (earliest, None),
            OffsetQuery::Latest => (latest, None),
            OffsetQuery::LastStable => (
                group.stable_offsets(key).map_err(BrokerError::Read)?.2,
                None,
            ),
            OffsetQuery::Time(t) => {
                let storage = group.clone();
                let by_append = topic.timestamp_type == TimestampType::AppendTime;
                tokio::task::spawn_blocking(move || {
                    if by_append {
                        storage.offset_for_time(key, t).map_err(BrokerError::Read)
                    } else {
                        first_at_create_time(&storage, key, t)
                    }
                })
                .await
                .map_err(|e| BrokerError::Replication(format!("the time search failed: {e}")))??
                .map_or((latest, None), |(offset, time)| (offset, Some(time)))
            }
        })
    }

    /// Commits a consumer group's position in a partition (through the journal), with the
    /// origin positions it has seen below it.
    pub async fn commit_offset(
        &self,
        consumer_group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        positions: Positions,
        metadata: &str,
    ) -> Result<(), BrokerError> {
        if metadata.len() > crate::storage::record::COMMIT_METADATA_MAX {
            return Err(BrokerError::MetadataTooLarge(metadata.len()));
        }
        if offset == crate::storage::POSITIONS_ONLY || offset == crate::storage::OFFSET_DELETED {
            return Err(BrokerError::Invalid(format!(
                "offset {offset} is reserved: commit the offset of the next message to read"
            )));
        }
        validate_positions(&positions)?;
        names::validate_offsets_owner(consumer_group)
            .map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        // A commit that names no positions (a Kafka client's, a transaction's offsets) to a
        // raft group (the multi-region kind) is made portable here, where the messages
        // are: another region resumes it by them. The leader first holds and applied
        // everything written before it led, so the walk sees every message below.
        let named = !positions.is_empty();
        let mut positions = if !named && group.raft().is_some() {
            self.require_leader(group.id())?;
            group
                .ensure_applied_in_term()
                .await
                .map_err(|e| self.group_error(e))?;
            let (storage, region) = (group.storage().clone(), self.config.region.clone());
            let name = consumer_group.to_owned();
            tokio::task::spawn_blocking(move || {
                positions_before(&storage, &region, &name, key, offset)
            })
            .await
            .map_err(|e| BrokerError::Replication(format!("the position walk failed: {e}")))??
        } else {
            positions
        };
        if !named {
            // A commit naming no positions says where the group is, whatever it saw before:
            // an origin it had seen that lies wholly above the offset (a reset back) is
            // cleared, or its consumers would skip those messages as seen.
            for (origin, _) in group.storage().committed_positions(consumer_group, key) {
                if !positions.iter().any(|(r, _)| *r == origin) {
                    positions.push((origin, crate::storage::POSITION_CLEARED));
                }
            }
        }
        self.write_commit(&group, consumer_group, key, offset, positions, metadata)
            .await
    }

    /// The log group holding a consumer group's offsets in a partition, and the partition's
    /// key, when this broker leads it (the group's name checked first).
    fn group_partition_here(
        &self,
        consumer_group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<(std::sync::Arc<HostedGroup>, PartitionKey), BrokerError> {
        names::validate_offsets_owner(consumer_group)
            .map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        self.require_leader(group.id())?;
        Ok((group, key))
    }

    /// Deletes a consumer group's commit in a partition this broker leads (its offset and
    /// the origin positions it had seen); whether there was one.
    pub async fn delete_offset(
        &self,
        consumer_group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<bool, BrokerError> {
        let (group, key) = self.group_partition_here(consumer_group, topic, partition)?;
        let storage = group.storage();
        let positions: Positions = storage
            .committed_positions(consumer_group, key)
            .into_iter()
            .map(|(origin, _)| (origin, crate::storage::POSITION_CLEARED))
            .collect();
        if storage.committed_offset(consumer_group, key).is_none() && positions.is_empty() {
            return Ok(false);
        }
        self.write_commit(
            &group,
            consumer_group,
            key,
            crate::storage::OFFSET_DELETED,
            positions,
            "",
        )
        .await?;
        Ok(true)
    }

    /// [`Broker::delete_offset`] at the partition's leader, wherever it is.
    pub(crate) async fn delete_offset_anywhere(
        &self,
        consumer_group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<bool, BrokerError> {
        match self.delete_offset(consumer_group, topic, partition).await {
            Err(BrokerError::NotLeader { .. }) => self
                .region_client()
                .await
                .map_err(|e| BrokerError::Replication(e.to_string()))?
                .delete_offset(consumer_group, topic, partition)
                .await
                .map_err(|e| BrokerError::Replication(e.to_string())),
            other => other,
        }
    }

    /// Deletes `consumer_group`'s commits in every partition of every topic (Kafka's
    /// DeleteGroups; `meridian group delete`); how many there were. Refused while the
    /// group has members here (native or Kafka's classic ones are the caller's to check).
    pub async fn delete_group_offsets(&self, consumer_group: &str) -> Result<usize, BrokerError> {
        if self.has_native_group(consumer_group).await {
            return Err(BrokerError::Invalid(format!(
                "consumer group {consumer_group:?} has active members: stop its consumers, then delete it"
            )));
        }
        let mut deleted = 0;
        for topic in self.topics() {
            for p in 0..topic.groups.len() as u32 {
                if self
                    .delete_offset_anywhere(consumer_group, &topic.name, p)
                    .await?
                {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// A consumer group's offset committed at the partition's leader, wherever it is (a
    /// commit the caller has checked: a coordinator's).
    pub(super) async fn commit_anywhere(
        &self,
        consumer_group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        positions: Positions,
        metadata: &str,
    ) -> Result<(), BrokerError> {
        match self
            .commit_offset(
                consumer_group,
                topic,
                partition,
                offset,
                positions.clone(),
                metadata,
            )
            .await
        {
            Err(BrokerError::NotLeader { .. }) => {
                let region = self
                    .region_client()
                    .await
                    .map_err(|e| BrokerError::Replication(e.to_string()))?;
                region
                    .commit_with_metadata(
                        &meridian_region_client::Stay,
                        consumer_group,
                        topic,
                        partition,
                        offset,
                        &positions.into_iter().collect(),
                        metadata,
                    )
                    .await
                    .map_err(|e| BrokerError::Replication(e.to_string()))
            }
            other => other,
        }
    }

    /// Writes a commit record the way the log group replicates.
    pub(super) async fn write_commit(
        &self,
        group: &HostedGroup,
        consumer_group: &str,
        key: PartitionKey,
        offset: u64,
        positions: Positions,
        metadata: &str,
    ) -> Result<(), BrokerError> {
        group
            .commit_offset_with(consumer_group, key, offset, positions, metadata.to_owned())
            .await
            .map_err(|e| self.group_error(e))
    }

    /// A consumer group's committed position in a partition.
    pub async fn committed_offset(
        &self,
        consumer_group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Committed, BrokerError> {
        let (hosted, key) = self.group_partition_here(consumer_group, topic, partition)?;
        // A leader new in its term may not have applied (or made visible) the commits
        // made before it led: a consumer resuming right after a failover would start
        // where its group had never committed (from its reset point, losing or repeating
        // what lies between).
        hosted
            .ensure_applied_in_term()
            .await
            .map_err(|e| self.group_error(e))?;
        let group = hosted.storage();
        group.caught_up(Duration::from_secs(1)).await;
        let positions = group.committed_positions(consumer_group, key);
        let offset = match group.committed_offset(consumer_group, key) {
            Some(crate::storage::POSITIONS_ONLY) => Some(self.offset_in(group, key, &positions)?),
            other => other,
        };
        let metadata = group.committed_metadata(consumer_group, key);
        Ok(Committed {
            offset,
            positions,
            metadata,
        })
    }

    /// The first offset of a partition holding a message that `positions` do not cover:
    /// where a consumer that read elsewhere resumes here.
    pub async fn offset_for_positions(
        &self,
        topic: &str,
        partition: u32,
        positions: &Positions,
    ) -> Result<u64, BrokerError> {
        validate_positions(positions)?;
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        self.require_leader(topic.groups[partition as usize])?;
        self.offset_in(group.storage(), key, positions)
    }

    /// Walks the partition from its earliest message to the first one not covered.
    fn offset_in(
        &self,
        group: &LogGroup,
        key: PartitionKey,
        positions: &Positions,
    ) -> Result<u64, BrokerError> {
        use meridian_proto::origin::position;
        let seen: HashMap<&str, u64> = positions.iter().map(|(r, p)| (r.as_str(), *p)).collect();
        let (mut next, latest) = group.offsets(key).map_err(BrokerError::Read)?;
        while next < latest {
            let batches = group.read(key, next, 1 << 20).map_err(BrokerError::Read)?;
            if batches.is_empty() {
                break;
            }
            for b in batches {
                if b.is_marker() {
                    next = b.base_offset + u64::from(b.count);
                    continue;
                }
                let (region, seq) = match &b.origin {
                    Some(o) => (o.region.as_str(), o.seq),
                    None => (self.config.region.as_str(), b.index),
                };
                let first = position(seq, 0);
                let unseen = match seen.get(region) {
                    None => 0,
                    Some(&limit) if limit < first => 0,
                    Some(&limit) => limit - first + 1,
                };
                if unseen < u64::from(b.count) {
                    return Ok((b.base_offset + unseen).max(next));
                }
                next = b.base_offset + u64::from(b.count);
            }
        }
        Ok(next.max(latest))
    }
}

/// The origin positions of a partition's messages before `offset` (`region`: this one's):
/// per origin, the
/// position of its last message there — what a consumer that read up to `offset` has
/// seen.
/// Walks from the group's previous commit when that lies at or below `offset` (a commit
/// costs the messages read since the last one), else — a group's first commit here, or one
/// below the previous — from the earliest message.
fn positions_before(
    group: &LogGroup,
    region: &str,
    consumer_group: &str,
    key: PartitionKey,
    offset: u64,
) -> Result<Positions, BrokerError> {
    use meridian_proto::origin::position;
    let (earliest, latest) = group.offsets(key).map_err(BrokerError::Read)?;
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut next = earliest;
    if let Some(previous) = group.committed_offset(consumer_group, key)
        && previous != crate::storage::POSITIONS_ONLY
        && previous <= offset
    {
        // Below the earliest, retention deleted what lay between: its positions are in
        // the previous commit's already.
        next = previous.max(earliest);
        seen.extend(group.committed_positions(consumer_group, key));
    }
    let end = offset.min(latest);
    'walk: while next < end {
        let batches = group.read(key, next, 1 << 20).map_err(BrokerError::Read)?;
        if batches.is_empty() {
            break;
        }
        for b in batches {
            if b.base_offset >= end {
                break 'walk;
            }
            let before = (end - b.base_offset).min(u64::from(b.count));
            if !b.is_marker() && before > 0 {
                let (region, seq) = match b.origin {
                    Some(o) => (o.region, o.seq),
                    None => (region.to_string(), b.index),
                };
                let p = position(seq, (before - 1) as u32);
                let held = seen.entry(region).or_insert(0);
                *held = (*held).max(p);
            }
            next = b.base_offset + u64::from(b.count);
        }
    }
    Ok(seen.into_iter().collect())
}

/// The first message of a partition whose producer timestamp (Kafka's CreateTime) is at
/// or after `t`, and that timestamp — what Kafka's ListOffsets by time answers. Producer
/// timestamps need not grow with offsets, so the append-time index only bounds the search:
/// no message is stamped more than [`super::TIMESTAMP_AHEAD_MAX_MS`] after its append (the
/// produce path refuses it), so none appended before `t` minus that bound can qualify; the
/// messages from there on are read in order.
fn first_at_create_time(
    group: &LogGroup,
    key: PartitionKey,
    t: i64,
) -> Result<Option<(u64, i64)>, BrokerError> {
    let bound = t.saturating_sub(super::TIMESTAMP_AHEAD_MAX_MS);
    let Some((mut next, _)) = group
        .offset_for_time(key, bound)
        .map_err(BrokerError::Read)?
    else {
        return Ok(None);
    };
    let (_, latest) = group.offsets(key).map_err(BrokerError::Read)?;
    while next < latest {
        let batches = group.read(key, next, 1 << 20).map_err(BrokerError::Read)?;
        if batches.is_empty() {
            break;
        }
        for b in batches {
            next = b.base_offset + u64::from(b.count);
            if b.is_marker() {
                continue;
            }
            let messages = meridian_proto::batch::decode_batch(&b.payload, b.count as usize)
                .map_err(|e| {
                    BrokerError::Invalid(format!(
                        "stored batch at offset {} does not decode: {e}",
                        b.base_offset
                    ))
                })?;
            if let Some((i, m)) = messages
                .iter()
                .enumerate()
                .find(|(_, m)| m.timestamp_ms >= t)
            {
                return Ok(Some((b.base_offset + i as u64, m.timestamp_ms)));
            }
        }
    }
    Ok(None)
}

/// Refuses origin positions a commit cannot carry.
pub(super) fn validate_positions(positions: &Positions) -> Result<(), BrokerError> {
    if positions.len() > 64 {
        return Err(BrokerError::Invalid(format!(
            "{} origin positions: at most 64 regions",
            positions.len()
        )));
    }
    for (region, _) in positions {
        if region.is_empty() || region.len() > meridian_proto::origin::REGION_MAX {
            return Err(BrokerError::Invalid(
                "an origin position's region must be 1 to 249 bytes".into(),
            ));
        }
    }
    Ok(())
}
