//! Offsets and compacted messages kept through retention in a replicated group. Storage deletes a journal segment
//! only once no live offset's commit record sits in it, and in a replicated group it never
//! writes a record itself (raft, or the master, chooses every record and its index). So the
//! leader commits such offsets again through the group's log — as a consumer's commit would
//! travel — and every replica then holds them above the segment, which retention deletes.
//! A compacted partition's live messages in such a segment are carried the same way: the
//! leader writes each again as a `Carried` record through the log (`Command::Carry`).

#[allow(clippy::wildcard_imports)]
use super::*;

/// How often the leader looks for offsets retention is waiting on.
const CARRY_EVERY: Duration = Duration::from_secs(5);

impl HostedGroup {
    /// Spawns the task committing again, on the leader, the offsets retention waits on.
    pub fn keep_offsets_through_retention(self: &Arc<Self>) {
        self.every(CARRY_EVERY, |group| async move {
            carry_held_back_offsets(&group).await;
        });
    }
}

/// One round, on the leader: each held-back offset committed again as it stands.
async fn carry_held_back_offsets(group: &HostedGroup) {
    if group.leading().is_none() {
        return;
    }
    for (key, offset) in group.storage.carries_held_back() {
        if let Err(e) = group.carry(key, offset).await {
            tracing::warn!(log_group = group.id, topic_id = key.0, partition = key.1, offset, error = %e, "carrying a compacted message forward before retention deletes its segment");
            return;
        }
    }
    for (name, key, offset) in group.storage.offsets_held_back() {
        // Committed again only as it stands: a newer commit since the list was made has
        // moved it already (and must not be overwritten with the older offset).
        if group.storage.committed_offset(&name, key) != Some(offset) {
            continue;
        }
        let metadata = group.storage.committed_metadata(&name, key);
        match group
            .commit_offset_with(&name, key, offset, Vec::new(), metadata)
            .await
        {
            Ok(()) => {
                metrics::counter!("meridian_retention_offsets_carried_total").increment(1);
            }
            Err(e) => {
                tracing::warn!(log_group = group.id, name = %name, error = %e, "committing an offset again before retention deletes its segment");
                return;
            }
        }
    }
}

impl HostedGroup {
    /// Writes the compacted message at `offset` of `key` again at the journal's end (a
    /// `Carried` record) the way the group replicates; nothing when it is no longer live.
    pub async fn carry(&self, key: PartitionKey, offset: u64) -> Result<(), LogGroupError> {
        let Some((flags, payload)) = self
            .storage
            .carried_payload(key, offset)
            .map_err(|e| LogGroupError::Replication(e.to_string()))?
        else {
            return Ok(());
        };
        match &self.replication {
            Replication::Standalone => {
                self.storage
                    .append_carried(key, offset, flags, payload)
                    .await?;
            }
            Replication::MasterSlave(ms) => {
                let role = self.master_role(ms)?;
                let appended = self
                    .storage
                    .append_carried(key, offset, flags, payload)
                    .await?;
                self.wait_master_slave(
                    ms,
                    appended.position + u64::from(appended.len),
                    role,
                    Acks::Quorum.into(),
                )
                .await?;
            }
            Replication::Starting | Replication::Raft(_) => {
                self.replicate(Command::Carry {
                    topic_id: key.0,
                    partition: key.1,
                    offset,
                    flags,
                    payload,
                })
                .await?;
            }
        }
        metrics::counter!("meridian_compaction_carried_total").increment(1);
        Ok(())
    }
}
