//! The repair loop's decisions, without I/O: given a snapshot of one region (its record,
//! live brokers and log groups with their store versions), the time, when this process took
//! office and the grace period, [`Reconciler::decide`] returns the [`Action`]s the runtime
//! in `reconcile.rs` carries out, in order. The only state kept between ticks is when each
//! missing broker was first seen gone.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use crate::metadata::{Group, RegionState as Health, Strategy};
use crate::state::{self, RegionState};

/// One thing the runtime must do. Actions on one log group come in order; when a record
/// write finds the record moved on (another writer), the runtime skips that group's
/// remaining actions this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Mark the region down (its brokers all lost their leases), with this reason.
    MarkRegionDown {
        /// What happened, for people.
        reason: String,
    },
    /// Mark the region up again (every log group has a leader).
    MarkRegionUp,
    /// Step 1 of a replacement: the group record gains `new` and notes `(dead, new)`.
    AddReplacement {
        /// The log group.
        group: u32,
        /// The broker whose replica leaves.
        dead: u32,
        /// The broker that gains a replica.
        new: u32,
        /// Why: a lost broker or a rebalance.
        why: Why,
    },
    /// Step 2: the group's raft leader adds `add` and removes `remove`.
    ChangeReplicas {
        /// The log group.
        group: u32,
        /// The broker joining.
        add: u32,
        /// The broker leaving.
        remove: u32,
    },
    /// Step 3, or the undoing of a replacement whose new broker died: the record drops
    /// `broker` and its replacement note.
    DropReplica {
        /// The log group.
        group: u32,
        /// The broker leaving the record.
        broker: u32,
        /// Whether this completes a replacement (`broker` was the dead one) or undoes it
        /// (`broker` was the new one, gone too).
        completes: bool,
    },
}

/// Why a replica moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Its broker's lease has been gone past the grace period.
    Lost,
    /// Its broker holds two or more replicas more than the least loaded one.
    Rebalance,
}

/// The repair loop's memory between ticks: when each missing broker was first seen gone.
#[derive(Debug, Default, Clone)]
pub struct Reconciler {
    gone_since: BTreeMap<(String, u32), Instant>,
}

impl Reconciler {
    /// Forgets what it saw (this process stopped leading).
    pub fn clear(&mut self) {
        self.gone_since.clear();
    }

    /// What to do in `region` at `now`, for a leader in office since `since` that replaces
    /// brokers gone for `grace` (counted from when it took office at the earliest).
    pub fn decide(
        &mut self,
        region: &RegionState,
        now: Instant,
        since: Instant,
        grace: Duration,
    ) -> Vec<Action> {
        let mut actions = health(region, now, since, grace);
        let busy = self.repair(region, now, since, grace, &mut actions);
        if !busy {
            // Nothing to repair: let an idle broker take a replica, one at a time.
            rebalance(region, &mut actions);
        }
        actions
    }

    /// Replaces the replicas of brokers gone longer than `grace`; whether anything needed
    /// repair (or a replacement was under way).
    fn repair(
        &mut self,
        region: &RegionState,
        now: Instant,
        since: Instant,
        grace: Duration,
        actions: &mut Vec<Action>,
    ) -> bool {
        let name = &region.name;
        let mut busy = false;
        self.gone_since
            .retain(|(r, b), _| r != name || !region.brokers.contains_key(b));
        let load = state::replicas_per_broker(region);
        for (group, _) in region.groups.values() {
            if group.strategy != Strategy::Raft {
                continue;
            }
            if let Some((dead, new)) = group.replacing {
                busy = true;
                finish(region, group.id, dead, new, actions);
                continue;
            }
            let Some(&dead) = group
                .replicas
                .iter()
                .find(|b| !region.brokers.contains_key(b))
            else {
                continue;
            };
            busy = true;
            let first = (*self.gone_since.entry((name.clone(), dead)).or_insert(now)).max(since);
            if now.saturating_duration_since(first) < grace {
                continue;
            }
            if !has_quorum(region, &group.replicas) {
                // A membership change is a raft write: without a majority of the replicas
                // alive it cannot commit, and asking for it every tick only fails again (a
                // one-replica group whose broker stopped). It waits for the brokers to
                // return; `meridian log-group list` shows it leaderless meanwhile.
                tracing::debug!(region = %name, group = group.id, dead, "too few live replicas to change the log group's membership");
                continue;
            }
            let Some((&new, _)) = load
                .iter()
                .filter(|(b, _)| !group.replicas.contains(b))
                .min_by_key(|&(b, n)| (*n, *b))
            else {
                tracing::debug!(region = %name, group = group.id, dead, "no spare live broker to restore the log group's replication factor");
                continue;
            };
            actions.push(Action::AddReplacement {
                group: group.id,
                dead,
                new,
                why: Why::Lost,
            });
            finish(region, group.id, dead, new, actions);
        }
        busy
    }
}

/// Whether a majority of `replicas` are live brokers of the region: what a raft group needs
/// to commit anything, a change of its membership included.
fn has_quorum(region: &RegionState, replicas: &[u32]) -> bool {
    let live = replicas
        .iter()
        .filter(|b| region.brokers.contains_key(b))
        .count();
    live * 2 > replicas.len()
}

/// Fails a region over when it holds log groups and none of its brokers holds a lease (their
/// leases ran out: the region is dead or cut off), once this process has led for `grace`
/// (a new leader first lets brokers renew); brings a region it failed back once every
/// log group there has a leader again. A region an operator failed stays down until an
/// operator restores it.
fn health(region: &RegionState, now: Instant, since: Instant, grace: Duration) -> Vec<Action> {
    let Some(record) = &region.record else {
        return Vec::new();
    };
    if record.down.as_ref().is_some_and(|d| d.by_operator) {
        return Vec::new();
    }
    let up = record.state == Health::Up;
    if up
        && region.brokers.is_empty()
        && !region.groups.is_empty()
        && now.saturating_duration_since(since) >= grace
    {
        return vec![Action::MarkRegionDown {
            reason: "every broker of the region lost its lease".into(),
        }];
    }
    if !up && !region.brokers.is_empty() {
        let led: BTreeSet<u32> = region
            .brokers
            .values()
            .flat_map(|b| b.leading.keys().copied())
            .collect();
        if region.groups.keys().all(|g| led.contains(g)) {
            return vec![Action::MarkRegionUp];
        }
    }
    Vec::new()
}

/// Moves one raft replica from the broker holding the most to the one holding the fewest,
/// when they differ by two or more: a new (or returning) broker takes load gradually, one
/// group at a time, each move a full replacement (the new replica catches up before the
/// old one leaves).
fn rebalance(region: &RegionState, actions: &mut Vec<Action>) {
    let load = state::replicas_per_broker(region);
    let (Some((&most, &high)), Some((&fewest, &low))) = (
        load.iter()
            .max_by_key(|&(b, n)| (*n, std::cmp::Reverse(*b))),
        load.iter().min_by_key(|&(b, n)| (*n, *b)),
    ) else {
        return;
    };
    if high < low + 2 {
        return;
    }
    // A group `most` holds and `fewest` does not; rather one `most` does not lead.
    let Some((group, _)) = region
        .groups
        .values()
        .filter(|(g, _)| {
            g.strategy == Strategy::Raft
                && !g.pinned
                && g.replicas.contains(&most)
                && !g.replicas.contains(&fewest)
        })
        .min_by_key(|(g, _)| region.leader(g.id).map(|(l, _)| l) == Some(most))
    else {
        return;
    };
    actions.push(Action::AddReplacement {
        group: group.id,
        dead: most,
        new: fewest,
        why: Why::Rebalance,
    });
    finish(region, group.id, most, fewest, actions);
}

/// An operator's move of log group `group`'s replica from broker `from` to `to`: the
/// group's record with the replacement noted (step 1; the loop does steps 2 and 3) and the
/// group pinned, so the balancing moves other groups rather than undo it; or why not.
pub fn operator_move(
    region: &RegionState,
    group: u32,
    from: u32,
    to: u32,
) -> Result<Group, String> {
    let name = &region.name;
    let Some((g, _)) = region.groups.get(&group) else {
        return Err(format!("region {name} has no log group {group}"));
    };
    if g.strategy != Strategy::Raft {
        return Err(format!(
            "log group {group} replicates master-slave: its replicas are fixed; fail it over instead"
        ));
    }
    if let Some((old, new)) = g.replacing {
        return Err(format!(
            "log group {group} is already moving a replica (broker {old} to {new}): wait for it"
        ));
    }
    if !g.replicas.contains(&from) {
        return Err(format!(
            "broker {from} holds no replica of log group {group} (its replicas: {:?})",
            g.replicas
        ));
    }
    if g.replicas.contains(&to) {
        return Err(format!(
            "broker {to} already holds a replica of log group {group}"
        ));
    }
    if !region.brokers.contains_key(&to) {
        return Err(format!(
            "broker {to} is not a live broker of region {name} (see meridian broker list)"
        ));
    }
    let mut next = g.with_replacement(from, to);
    next.pinned = true;
    Ok(next)
}

/// Steps 2 and 3 of a replacement (or its undoing when the new broker died too: the next
/// tick chooses again).
fn finish(region: &RegionState, group: u32, dead: u32, new: u32, actions: &mut Vec<Action>) {
    if !region.brokers.contains_key(&new) {
        actions.push(Action::DropReplica {
            group,
            broker: new,
            completes: false,
        });
        return;
    }
    actions.push(Action::ChangeReplicas {
        group,
        add: new,
        remove: dead,
    });
    actions.push(Action::DropReplica {
        group,
        broker: dead,
        completes: true,
    });
}

impl Group {
    /// This record with `new` added and the replacement of `old` noted (step 1).
    pub fn with_replacement(&self, old: u32, new: u32) -> Group {
        let mut record = self.clone();
        record.replicas.push(new);
        record.changes += 1;
        record.replacing = Some((old, new));
        record
    }

    /// This record with `broker` out of its replicas and no replacement under way.
    pub fn without(&self, broker: u32) -> Group {
        let mut record = self.clone();
        record.replicas.retain(|b| *b != broker);
        record.replacing = None;
        record.changes += 1;
        record
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{Broker, Down, Region};

    const GRACE: Duration = Duration::from_secs(10);

    /// A time far enough from the clock's origin that tests may count back from it.
    fn start() -> Instant {
        Instant::now() + GRACE * 100
    }

    fn broker(id: u32, leading: &[u32]) -> Broker {
        Broker {
            id,
            region: "eu".into(),
            grpc: format!("127.0.0.1:{}", 7000 + id),
            raft: format!("127.0.0.1:{}", 8000 + id),
            kafka: String::new(),
            version: String::new(),
            leading: leading.iter().map(|&g| (g, 1)).collect(),
            applied_version: 0,
        }
    }

    fn group(id: u32, strategy: Strategy, replicas: &[u32]) -> Group {
        Group {
            id,
            strategy,
            replicas: replicas.to_vec(),
            changes: 0,
            replacing: None,
            pinned: false,
            topic: None,
        }
    }

    fn region(live: &[u32], groups: Vec<Group>) -> RegionState {
        RegionState {
            name: "eu".into(),
            record: Some(Region {
                name: "eu".into(),
                state: Health::Up,
                down: None,
            }),
            brokers: live.iter().map(|&b| (b, broker(b, &[]))).collect(),
            groups: groups.into_iter().map(|g| (g.id, (g, 5))).collect(),
            assignments: BTreeMap::new(),
        }
    }

    fn replace(group: u32, dead: u32, new: u32, why: Why) -> Vec<Action> {
        vec![
            Action::AddReplacement {
                group,
                dead,
                new,
                why,
            },
            Action::ChangeReplicas {
                group,
                add: new,
                remove: dead,
            },
            Action::DropReplica {
                group,
                broker: dead,
                completes: true,
            },
        ]
    }

    #[test]
    fn an_operator_moves_a_replica_the_loop_then_carries_out() {
        let r = region(
            &[1, 2, 3],
            vec![
                group(1, Strategy::Raft, &[1, 2]),
                group(2, Strategy::Raft, &[1, 3]),
                group(3, Strategy::MasterSlave, &[1, 2]),
            ],
        );
        let moved = operator_move(&r, 1, 1, 3).unwrap();
        assert_eq!(
            (moved.replicas.clone(), moved.replacing),
            (vec![1, 2, 3], Some((1, 3)))
        );
        // The loop finishes it: 3 joins, 1 leaves.
        let mut after = r.clone();
        after.groups.insert(1, (moved, 6));
        let now = Instant::now();
        let actions = Reconciler::default().decide(&after, now, now, GRACE);
        assert_eq!(actions, replace(1, 1, 3, Why::Lost)[1..]);
        // Refused, each saying why.
        for (g, from, to, why) in [
            (9, 1, 3, "no log group 9"),
            (3, 1, 2, "master-slave"),
            (1, 3, 2, "holds no replica"),
            (1, 1, 2, "already holds"),
            (1, 1, 7, "not a live broker"),
        ] {
            let e = operator_move(&r, g, from, to).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
        // Pinned: the balancing leaves it where the operator put it and moves another.
        let mut done = after.clone();
        let mut placed = done.groups[&1].0.without(1);
        assert!(placed.pinned);
        placed.replicas = vec![2, 3];
        done.groups.insert(1, (placed, 7));
        done.groups
            .insert(4, (group(4, Strategy::Raft, &[2, 3]), 5));
        done.groups
            .insert(5, (group(5, Strategy::Raft, &[2, 3]), 5));
        // Broker 1 holds 2 (groups 2, 3), brokers 2 and 3 four each: an unpinned group
        // moves to broker 1, never group 1.
        let actions = Reconciler::default().decide(&done, now, now, GRACE);
        assert!(
            matches!(
                actions.first(),
                Some(Action::AddReplacement { group, new: 1, why: Why::Rebalance, .. }) if *group != 1
            ),
            "{actions:?}"
        );
    }

    #[test]
    fn a_balanced_healthy_region_needs_nothing() {
        let r = region(&[1, 2, 3], vec![group(1, Strategy::Raft, &[1, 2, 3])]);
        let now = Instant::now();
        assert_eq!(Reconciler::default().decide(&r, now, now, GRACE), vec![]);
    }

    #[test]
    fn a_dead_broker_is_replaced_only_after_the_grace_period() {
        let r = region(&[1, 2, 4], vec![group(1, Strategy::Raft, &[1, 2, 3])]);
        let mut rec = Reconciler::default();
        let t0 = start();
        // Leader long in office, broker 3 first seen gone now: wait.
        let since = t0 - GRACE * 10;
        assert_eq!(rec.decide(&r, t0, since, GRACE), vec![]);
        assert_eq!(
            rec.decide(&r, t0 + GRACE - Duration::from_millis(1), since, GRACE),
            vec![]
        );
        // Past the grace period: broker 4 (no replica) takes the place of 3.
        assert_eq!(
            rec.decide(&r, t0 + GRACE, since, GRACE),
            replace(1, 3, 4, Why::Lost)
        );
    }

    #[test]
    fn a_leader_just_in_office_waits_the_grace_period_from_taking_office() {
        let r = region(&[1, 2, 4], vec![group(1, Strategy::Raft, &[1, 2, 3])]);
        let mut rec = Reconciler::default();
        let t0 = start();
        // Seen gone long ago by this process, but it took office only at t0.
        let seen = rec.decide(&r, t0, t0, GRACE);
        assert_eq!(seen, vec![]);
        assert_eq!(rec.decide(&r, t0 + GRACE / 2, t0, GRACE), vec![]);
        assert_eq!(
            rec.decide(&r, t0 + GRACE, t0, GRACE),
            replace(1, 3, 4, Why::Lost)
        );
    }

    #[test]
    fn a_broker_that_returns_is_forgotten_and_its_clock_starts_again() {
        let groups = vec![group(1, Strategy::Raft, &[1, 2, 3])];
        let mut rec = Reconciler::default();
        let t0 = start();
        let since = t0 - GRACE * 10;
        assert_eq!(
            rec.decide(&region(&[1, 2, 4], groups.clone()), t0, since, GRACE),
            vec![]
        );
        // Broker 3 is back at t0 + grace/2, gone again right after.
        let back = t0 + GRACE / 2;
        assert_eq!(
            rec.decide(&region(&[1, 2, 3, 4], groups.clone()), back, since, GRACE),
            vec![]
        );
        let gone = region(&[1, 2, 4], groups);
        assert_eq!(rec.decide(&gone, back, since, GRACE), vec![]);
        assert_eq!(rec.decide(&gone, t0 + GRACE, since, GRACE), vec![]);
        assert_eq!(
            rec.decide(&gone, back + GRACE, since, GRACE),
            replace(1, 3, 4, Why::Lost)
        );
    }

    #[test]
    fn no_spare_broker_means_no_replacement_and_no_rebalance() {
        let r = region(&[1, 2], vec![group(1, Strategy::Raft, &[1, 2, 3])]);
        let mut rec = Reconciler::default();
        let t0 = start();
        let since = t0 - GRACE * 10;
        rec.decide(&r, t0, since, GRACE);
        assert_eq!(rec.decide(&r, t0 + GRACE * 2, since, GRACE), vec![]);
    }

    #[test]
    fn the_replacement_goes_to_the_least_loaded_live_broker() {
        let r = region(
            &[1, 2, 4, 5],
            vec![
                group(1, Strategy::Raft, &[1, 2, 3]),
                group(2, Strategy::Raft, &[1, 4]),
            ],
        );
        // 4 holds one replica, 5 none: 5 gets it.
        assert_eq!(after_grace(&r), replace(1, 3, 5, Why::Lost));
    }

    /// What a leader of long standing decides once the gone brokers were gone for `GRACE`.
    fn after_grace(r: &RegionState) -> Vec<Action> {
        let mut rec = Reconciler::default();
        let t0 = start();
        let since = t0 - GRACE * 10;
        rec.decide(r, t0, since, GRACE);
        rec.decide(r, t0 + GRACE, since, GRACE)
    }

    #[test]
    fn a_replica_is_replaced_only_while_a_majority_of_the_group_lives() {
        let r = region(
            &[1, 5, 6],
            vec![
                // Its only replica stopped: nothing can change its membership.
                group(1, Strategy::Raft, &[2]),
                // Two of three gone, and one of two: no majority either.
                group(2, Strategy::Raft, &[1, 2, 3]),
                group(3, Strategy::Raft, &[1, 4]),
                // One of three gone: replaced.
                group(4, Strategy::Raft, &[1, 5, 7]),
            ],
        );
        assert_eq!(after_grace(&r), replace(4, 7, 6, Why::Lost));
    }

    #[test]
    fn a_replacement_half_done_after_step_one_is_finished() {
        let mut g = group(1, Strategy::Raft, &[1, 2, 3, 4]);
        g.replacing = Some((3, 4));
        let r = region(&[1, 2, 4], vec![g]);
        let now = Instant::now();
        // A new leader finishes it at once: no grace period for a replacement under way.
        assert_eq!(
            Reconciler::default().decide(&r, now, now, GRACE),
            replace(1, 3, 4, Why::Lost)[1..].to_vec()
        );
    }

    #[test]
    fn a_replacement_half_done_after_step_two_repeats_step_two_then_three() {
        // Raft already changed the membership, the record still lists the dead broker: step
        // two is repeated (the broker answers it idempotently) and step three done.
        let mut g = group(1, Strategy::Raft, &[1, 2, 3, 4]);
        g.replacing = Some((3, 4));
        g.changes = 3;
        let r = region(&[1, 2, 4], vec![g.clone()]);
        let now = Instant::now();
        let actions = Reconciler::default().decide(&r, now, now, GRACE);
        assert_eq!(
            actions,
            vec![
                Action::ChangeReplicas {
                    group: 1,
                    add: 4,
                    remove: 3
                },
                Action::DropReplica {
                    group: 1,
                    broker: 3,
                    completes: true
                },
            ]
        );
        let done = g.without(3);
        assert_eq!(done.replicas, vec![1, 2, 4]);
        assert_eq!(done.replacing, None);
        assert_eq!(done.changes, 4);
    }

    #[test]
    fn a_replacement_whose_new_broker_died_is_undone() {
        let mut g = group(1, Strategy::Raft, &[1, 2, 3, 4]);
        g.replacing = Some((3, 4));
        let r = region(&[1, 2, 5], vec![g.clone()]);
        let now = Instant::now();
        assert_eq!(
            Reconciler::default().decide(&r, now, now, GRACE),
            vec![Action::DropReplica {
                group: 1,
                broker: 4,
                completes: false
            }]
        );
        assert_eq!(g.without(4).replicas, vec![1, 2, 3]);
    }

    #[test]
    fn step_one_adds_the_new_broker_and_notes_the_replacement() {
        let g = group(1, Strategy::Raft, &[1, 2, 3]).with_replacement(3, 4);
        assert_eq!(g.replicas, vec![1, 2, 3, 4]);
        assert_eq!(g.replacing, Some((3, 4)));
        assert_eq!(g.changes, 1);
    }

    #[test]
    fn an_imbalance_of_two_moves_one_replica_preferring_a_group_it_does_not_lead() {
        // Broker 1 holds 3, broker 3 holds 1: move one of 1's replicas to 3.
        let mut r = region(
            &[1, 2, 3],
            vec![
                group(1, Strategy::Raft, &[1, 2]),
                group(2, Strategy::Raft, &[1, 2]),
                group(3, Strategy::Raft, &[1, 3]),
            ],
        );
        r.brokers.insert(1, broker(1, &[1]));
        r.brokers.insert(2, broker(2, &[2]));
        let now = Instant::now();
        assert_eq!(
            Reconciler::default().decide(&r, now, now, GRACE),
            replace(2, 1, 3, Why::Rebalance)
        );
    }

    #[test]
    fn an_imbalance_of_one_is_left_alone() {
        // 2 vs 1 replicas: not worth a move.
        let r = region(
            &[1, 2],
            vec![
                group(1, Strategy::Raft, &[1, 2]),
                group(2, Strategy::Raft, &[1]),
            ],
        );
        let now = Instant::now();
        assert_eq!(Reconciler::default().decide(&r, now, now, GRACE), vec![]);
    }

    #[test]
    fn no_rebalance_while_a_repair_is_waiting() {
        let r = region(
            &[1, 2, 4],
            vec![
                group(1, Strategy::Raft, &[1, 2, 3]),
                group(2, Strategy::Raft, &[1, 2]),
                group(3, Strategy::Raft, &[1, 2]),
            ],
        );
        let now = Instant::now();
        // 1 and 2 hold three each, 4 none; but 3's replica awaits its grace period.
        assert_eq!(Reconciler::default().decide(&r, now, now, GRACE), vec![]);
    }

    #[test]
    fn master_slave_groups_are_neither_repaired_nor_moved() {
        let r = region(
            &[1, 2, 4],
            vec![
                group(1, Strategy::MasterSlave, &[1, 2, 3]),
                group(2, Strategy::MasterSlave, &[1, 2]),
                group(3, Strategy::MasterSlave, &[1, 2]),
            ],
        );
        let mut rec = Reconciler::default();
        let t0 = start();
        let since = t0 - GRACE * 10;
        assert_eq!(rec.decide(&r, t0, since, GRACE), vec![]);
        assert_eq!(rec.decide(&r, t0 + GRACE * 2, since, GRACE), vec![]);
    }

    #[test]
    fn a_region_with_no_leases_goes_down_once_the_leader_has_led_for_the_grace_period() {
        let r = region(&[], vec![group(1, Strategy::Raft, &[1, 2, 3])]);
        let mut rec = Reconciler::default();
        let t0 = start();
        assert_eq!(rec.decide(&r, t0, t0, GRACE), vec![]);
        assert_eq!(
            rec.decide(&r, t0 + GRACE, t0, GRACE),
            vec![Action::MarkRegionDown {
                reason: "every broker of the region lost its lease".into()
            }]
        );
        // Without log groups there is nothing to fail over.
        let empty = region(&[], vec![]);
        assert_eq!(rec.decide(&empty, t0 + GRACE, t0, GRACE), vec![]);
    }

    fn down(r: &mut RegionState, by_operator: bool) {
        let record = r.record.as_mut().unwrap();
        record.state = Health::Down;
        record.down = Some(Down {
            by_operator,
            reason: "test".into(),
            since_ms: 0,
        });
    }

    #[test]
    fn a_region_comes_back_once_every_log_group_has_a_leader() {
        let mut r = region(
            &[1, 2],
            vec![
                group(1, Strategy::Raft, &[1, 2]),
                group(2, Strategy::MasterSlave, &[2, 1]),
            ],
        );
        down(&mut r, false);
        r.brokers.insert(1, broker(1, &[1]));
        let now = Instant::now();
        let mut rec = Reconciler::default();
        assert_eq!(rec.decide(&r, now, now, GRACE), vec![]);
        r.brokers.insert(2, broker(2, &[2]));
        assert_eq!(rec.decide(&r, now, now, GRACE), vec![Action::MarkRegionUp]);
    }

    #[test]
    fn a_region_an_operator_failed_stays_down_and_an_up_one_is_not_marked_again() {
        let mut r = region(&[1], vec![group(1, Strategy::Raft, &[1])]);
        r.brokers.insert(1, broker(1, &[1]));
        let now = Instant::now();
        let mut rec = Reconciler::default();
        assert_eq!(rec.decide(&r, now, now, GRACE), vec![]);
        down(&mut r, true);
        assert_eq!(rec.decide(&r, now, now, GRACE), vec![]);
        let mut gone = region(&[], vec![group(1, Strategy::Raft, &[1])]);
        down(&mut gone, false);
        assert_eq!(rec.decide(&gone, now + GRACE, now, GRACE), vec![]);
    }

    #[test]
    fn a_region_without_a_record_is_not_marked() {
        let mut r = region(&[], vec![group(1, Strategy::Raft, &[1])]);
        r.record = None;
        let now = Instant::now();
        assert_eq!(
            Reconciler::default().decide(&r, now + GRACE, now, GRACE),
            vec![]
        );
    }
}
