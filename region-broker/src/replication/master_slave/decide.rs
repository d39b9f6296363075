//! Master-slave replication's decisions, without I/O: what the master may expose as
//! committed, which role change a replica accepts, which role a probe adopts, what a slave
//! does when its master refuses it, whether a pull may be served and when it is answered,
//! and where a diverging slave truncates. `master_slave.rs` is the runtime around them
//! (the pull loop, the role file, the RPCs).

use super::{Role, WaitError};

/// The watermark the master may expose: the position `sync_replicas` slaves hold (the
/// `sync_replicas`-th highest of `held`), never past the master's own durable end;
/// `durable` itself with no slave required. `None` while fewer slaves than required have
/// reported.
pub(crate) fn commit_point(durable: u64, sync_replicas: usize, held: &[u64]) -> Option<u64> {
    if sync_replicas == 0 {
        return Some(durable);
    }
    if held.len() < sync_replicas {
        return None;
    }
    let mut held = held.to_vec();
    held.sort_unstable_by(|a, b| b.cmp(a));
    Some(held[sync_replicas - 1].min(durable))
}

/// Why a replica refuses a role.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleRefused {
    /// The new role's epoch is below the current one.
    #[error("epoch {new} is stale: log group {group} is at epoch {current}")]
    Stale {
        /// The log group.
        group: u32,
        /// The refused epoch.
        new: u64,
        /// The epoch held.
        current: u64,
    },
    /// The epoch already has a master (a change needs a higher epoch).
    #[error("log group {group} already has master {master:?} at epoch {epoch}: use a higher epoch")]
    MasterTaken {
        /// The log group.
        group: u32,
        /// The master held.
        master: Option<u32>,
        /// The epoch held.
        epoch: u64,
    },
    /// The named master is not a broker of the region.
    #[error("broker {0} is not a broker of this region: it cannot be master")]
    NotABroker(u32),
}

/// Whether a replica holding `current` adopts `new`: `Ok(false)` when it already holds it,
/// `Ok(true)` for a newer role (a higher epoch, or the same epoch naming a master where
/// this replica is fenced) whose master is `me` or one of the group's brokers (`known`).
pub(crate) fn accept_role(
    group: u32,
    current: Role,
    new: Role,
    me: u32,
    known: impl Fn(u32) -> bool,
) -> Result<bool, RoleRefused> {
    if new == current {
        return Ok(false);
    }
    if new.epoch < current.epoch {
        return Err(RoleRefused::Stale {
            group,
            new: new.epoch,
            current: current.epoch,
        });
    }
    if new.epoch == current.epoch && current.master.is_some() {
        return Err(RoleRefused::MasterTaken {
            group,
            master: current.master,
            epoch: current.epoch,
        });
    }
    if let Some(m) = new.master
        && m != me
        && !known(m)
    {
        return Err(RoleRefused::NotABroker(m));
    }
    Ok(true)
}

/// The role a probe adopts from its peers' answers: the highest epoch that names a master,
/// or at this replica's epoch a master where it is fenced; `current` when none is newer.
pub(crate) fn newest_role(current: Role, answers: impl IntoIterator<Item = Role>) -> Role {
    let mut best = current;
    for role in answers {
        if role.master.is_some()
            && (role.epoch > best.epoch || (role.epoch == best.epoch && best.master.is_none()))
        {
            best = role;
        }
    }
    best
}

/// A slave following `following` was refused by its master, which holds `theirs`: the role
/// to adopt (a higher epoch with a master), or `None` (the master is behind or fenced: try
/// again later).
pub(crate) fn after_refusal(following: Role, theirs: Role) -> Option<Role> {
    (theirs.epoch > following.epoch && theirs.master.is_some()).then_some(theirs)
}

/// Whether a replica holding `role` serves a pull from a slave following `epoch`: only
/// the master, at the same epoch.
pub(crate) fn serves_pull(role: Role, me: u32, epoch: u64) -> bool {
    role.master == Some(me) && role.epoch == epoch
}

/// Whether a long-poll pull is answered now: records are there, the master's watermark
/// is ahead of the slave's, or the wait is over.
pub(crate) fn pull_answered(
    records: bool,
    master_watermark: u64,
    slave_watermark: u64,
    waited_out: bool,
) -> bool {
    records || master_watermark > slave_watermark || waited_out
}

/// Whether the master or a fenced replica asks its peers for a newer role: at first, while
/// fenced, and when no slave has pulled for a while (`slaves_idle`: it may have been failed
/// over while it was down).
pub(crate) fn should_probe(role: Role, probed: bool, slaves_idle: bool) -> bool {
    !probed || role.master.is_none() || slaves_idle
}

/// A producer waits for a record written at `epoch` ending at `end`, on master `me`; with
/// the role and watermark now: done, failed (the role changed: it may or may not be
/// committed), or `None` (wait on).
pub(crate) fn commit_wait(
    role: Role,
    watermark: u64,
    me: u32,
    epoch: u64,
    end: u64,
) -> Option<Result<(), WaitError>> {
    if let Err(changed) = still_master(role, me, epoch) {
        return Some(Err(changed));
    }
    (watermark >= end).then_some(Ok(()))
}

/// A producer's wait on master `me` for a record written at `epoch` goes on only while the
/// role is still `me` at `epoch`.
pub(crate) fn still_master(role: Role, me: u32, epoch: u64) -> Result<(), WaitError> {
    if role.epoch != epoch || role.master != Some(me) {
        return Err(WaitError::RoleChanged(role));
    }
    Ok(())
}

/// Where a slave whose last record `(index, _)` diverges from the source truncates: after
/// the source's last index whose term is at most the slave's (`last_of_term`), never past
/// `index`; one record earlier when that is `index` itself (same index and term at another
/// position: a damaged replica steps back); `None` keeps nothing.
pub(crate) fn truncation_point(last_of_term: Option<u64>, index: u64) -> Option<u64> {
    match last_of_term.map(|a| a.min(index)) {
        Some(a) if a == index => index.checked_sub(1),
        after => after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(epoch: u64, master: Option<u32>) -> Role {
        Role { epoch, master }
    }

    #[test]
    fn the_watermark_is_what_the_required_slaves_hold_capped_by_the_masters_durable_end() {
        // No slave required: the master's durable end.
        assert_eq!(commit_point(500, 0, &[]), Some(500));
        // One required: the most advanced slave.
        assert_eq!(commit_point(500, 1, &[100, 300, 200]), Some(300));
        // Two required: the second most advanced.
        assert_eq!(commit_point(500, 2, &[100, 300, 200]), Some(200));
        // A slave ahead of the master's durable end (async flush on the master): capped.
        assert_eq!(commit_point(250, 1, &[300]), Some(250));
        // Too few slaves have reported: nothing can be committed yet.
        assert_eq!(commit_point(500, 2, &[300]), None);
        assert_eq!(commit_point(500, 1, &[]), None);
    }

    #[test]
    fn a_stale_epoch_is_refused() {
        let known = |b| b == 2 || b == 3;
        assert_eq!(
            accept_role(7, role(5, Some(1)), role(4, Some(2)), 1, known),
            Err(RoleRefused::Stale {
                group: 7,
                new: 4,
                current: 5
            })
        );
        // The same role again is no change.
        assert_eq!(
            accept_role(7, role(5, Some(1)), role(5, Some(1)), 1, known),
            Ok(false)
        );
    }

    #[test]
    fn an_epoch_with_a_master_needs_a_higher_epoch_to_change() {
        let known = |b| b == 2;
        assert_eq!(
            accept_role(7, role(5, Some(1)), role(5, Some(2)), 1, known),
            Err(RoleRefused::MasterTaken {
                group: 7,
                master: Some(1),
                epoch: 5
            })
        );
        // A fenced replica takes a master at its own epoch (the second step of a failover).
        assert_eq!(
            accept_role(7, role(5, None), role(5, Some(2)), 1, known),
            Ok(true)
        );
        // Fencing: a higher epoch without a master.
        assert_eq!(
            accept_role(7, role(5, Some(1)), role(6, None), 1, known),
            Ok(true)
        );
        assert_eq!(
            accept_role(7, role(5, Some(1)), role(6, Some(1)), 1, known),
            Ok(true)
        );
    }

    #[test]
    fn only_a_broker_of_the_region_may_be_master() {
        assert_eq!(
            accept_role(7, role(5, Some(1)), role(6, Some(9)), 1, |b| b == 2),
            Err(RoleRefused::NotABroker(9))
        );
    }

    #[test]
    fn a_probe_adopts_the_newest_role_that_names_a_master() {
        let current = role(5, Some(1));
        assert_eq!(newest_role(current, []), current);
        // Older epochs and fenced answers are ignored.
        assert_eq!(
            newest_role(current, [role(4, Some(2)), role(7, None), role(5, Some(3))]),
            current
        );
        assert_eq!(
            newest_role(
                current,
                [role(6, Some(2)), role(8, Some(3)), role(7, Some(1))]
            ),
            role(8, Some(3))
        );
        // A fenced replica takes the master of its own epoch.
        assert_eq!(
            newest_role(role(5, None), [role(5, Some(2))]),
            role(5, Some(2))
        );
    }

    #[test]
    fn a_refused_slave_follows_a_newer_master_only() {
        assert_eq!(
            after_refusal(role(5, Some(1)), role(6, Some(2))),
            Some(role(6, Some(2)))
        );
        // The master is fenced (a failover under way), or behind: wait and retry.
        assert_eq!(after_refusal(role(5, Some(1)), role(6, None)), None);
        assert_eq!(after_refusal(role(5, Some(1)), role(4, Some(1))), None);
        assert_eq!(after_refusal(role(5, Some(1)), role(5, Some(1))), None);
    }

    #[test]
    fn only_the_master_at_the_slaves_epoch_serves_pulls() {
        assert!(serves_pull(role(5, Some(1)), 1, 5));
        assert!(!serves_pull(role(5, Some(1)), 1, 4));
        assert!(!serves_pull(role(5, Some(2)), 1, 5));
        assert!(!serves_pull(role(5, None), 1, 5));
    }

    #[test]
    fn a_long_poll_answers_on_records_a_newer_watermark_or_the_deadline() {
        assert!(!pull_answered(false, 100, 100, false));
        assert!(pull_answered(true, 100, 100, false));
        assert!(pull_answered(false, 101, 100, false));
        assert!(pull_answered(false, 100, 100, true));
    }

    #[test]
    fn probing_happens_first_while_fenced_and_when_slaves_are_idle() {
        assert!(should_probe(role(5, Some(1)), false, false));
        assert!(!should_probe(role(5, Some(1)), true, false));
        assert!(should_probe(role(5, Some(1)), true, true));
        assert!(should_probe(role(5, None), true, false));
    }

    #[test]
    fn a_commit_wait_ends_on_the_watermark_or_a_role_change() {
        assert_eq!(commit_wait(role(5, Some(1)), 99, 1, 5, 100), None);
        assert_eq!(commit_wait(role(5, Some(1)), 100, 1, 5, 100), Some(Ok(())));
        assert_eq!(
            commit_wait(role(6, Some(1)), 100, 1, 5, 100),
            Some(Err(WaitError::RoleChanged(role(6, Some(1)))))
        );
        assert_eq!(
            commit_wait(role(5, Some(2)), 100, 1, 5, 100),
            Some(Err(WaitError::RoleChanged(role(5, Some(2)))))
        );
    }

    #[test]
    fn a_diverging_slave_truncates_after_the_last_record_of_an_older_or_equal_term() {
        // The source's last record of term <= the slave's is 7; the slave's last is 10.
        assert_eq!(truncation_point(Some(7), 10), Some(7));
        // Never past the slave's own last record.
        assert_eq!(truncation_point(Some(12), 10), Some(9));
        // Same index and term at another position: one step back.
        assert_eq!(truncation_point(Some(10), 10), Some(9));
        assert_eq!(truncation_point(Some(0), 0), None);
        // No record of such a term at the source: keep nothing.
        assert_eq!(truncation_point(None, 10), None);
    }
}
