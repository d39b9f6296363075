//! A replica joining a log group stands for election only once it has caught up.
//!
//! A new replica receives the group's log from its start, membership entries included,
//! and openraft takes each as the membership as soon as it is appended. Among them may be
//! an old configuration in which this very broker was the only voter (it led the group
//! before, was replaced, and is now added back): openraft then elects it at once, alone
//! (`is_single_campaigner` in its election tick), beside the real leader. Two leaders of
//! one group, the new one serving a shorter log: readers saw fewer records than were
//! acknowledged. So a joining replica starts with elections off and turns them on when its
//! log reaches what the leader has committed; from there on every membership it appends is
//! current. The mark survives a restart, so a replica stopped half way does not campaign
//! on the stale membership it holds.

use std::io;
use std::path::{Path, PathBuf};

use openraft::type_config::async_runtime::WatchReceiver;

use crate::replication::transport::GroupRaft;

/// Present in a group's directory while its replica is joining.
pub const MARK_FILE: &str = "raft-joining";

/// Whether a replica whose log ends at `last_log_index` has caught up with a leader that
/// committed up to `cluster_committed` (its last append told it so). Not before it has
/// heard of any commit: an empty replica has not seen where the log ends.
pub fn caught_up(last_log_index: Option<u64>, cluster_committed: Option<u64>) -> bool {
    match (last_log_index, cluster_committed) {
        (Some(last), Some(committed)) => last >= committed,
        _ => false,
    }
}

/// Whether the replica in `dir` joins its group: it is not the one initializing the
/// membership, and holds nothing yet (`empty`) or was joining when it stopped.
pub fn is_joining(dir: &Path, initializes: bool, empty: bool) -> bool {
    !initializes && (empty || dir.join(MARK_FILE).exists())
}

/// Marks the replica in `dir` as joining, durably: a mark lost to a power cut after the
/// replica appended part of the log would let it campaign on a stale membership again.
pub fn mark(dir: &Path) -> io::Result<PathBuf> {
    use std::io::Write;
    let path = dir.join(MARK_FILE);
    let mut file = std::fs::File::create(&path)?;
    file.write_all(b"joining: elections off until caught up\n")?;
    file.sync_all()?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Turns elections on once the replica has caught up, and removes the mark; ends with the
/// raft (a replica stopped before it caught up stays marked).
pub async fn until_caught_up(raft: GroupRaft, mark: PathBuf, group: u32) {
    let mut metrics = raft.metrics();
    loop {
        let (last, committed) = {
            let m = metrics.borrow_watched();
            (m.last_log_index, m.cluster_committed.map(|c| c.index))
        };
        if caught_up(last, committed) {
            raft.runtime_config().elect(true);
            if let Err(e) = std::fs::remove_file(&mark)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(group, error = %e, "cannot remove the joining mark: elections stay off after a restart until caught up again");
            }
            tracing::info!(
                group,
                last_log_index = last,
                "the new replica caught up with the group's log: it may stand for election"
            );
            return;
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_is_caught_up_only_at_the_leaders_commit() {
        // Nothing heard yet, or the stale head of the log: not yet.
        assert!(!caught_up(None, None));
        assert!(!caught_up(Some(7), None));
        assert!(!caught_up(None, Some(95)));
        assert!(!caught_up(Some(7), Some(95)));
        // At or past the commit the leader announced.
        assert!(caught_up(Some(95), Some(95)));
        assert!(caught_up(Some(101), Some(95)));
    }

    #[test]
    fn the_initializer_never_joins_and_the_mark_outlives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_joining(dir.path(), true, true));
        assert!(is_joining(dir.path(), false, true));
        // A replica that holds a log and no mark restarts as a member.
        assert!(!is_joining(dir.path(), false, false));
        mark(dir.path()).unwrap();
        assert!(is_joining(dir.path(), false, false));
    }
}
