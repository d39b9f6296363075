//! Offsets kept through retention in a replicated group. Storage deletes a journal segment
//! only once no live offset's commit record sits in it, and in a replicated group it never
//! writes a record itself (raft, or the master, chooses every record and its index). So the
//! leader commits such offsets again through the group's log — as a consumer's commit would
//! travel — and every replica then holds them above the segment, which retention deletes.

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
    for (name, key, offset) in group.storage.offsets_held_back() {
        // Committed again only as it stands: a newer commit since the list was made has
        // moved it already (and must not be overwritten with the older offset).
        if group.storage.committed_offset(&name, key) != Some(offset) {
            continue;
        }
        match group.commit_offset(&name, key, offset, Vec::new()).await {
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
