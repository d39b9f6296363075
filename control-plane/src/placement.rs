//! Placement: which log groups a new topic's partitions go to in a region, and which brokers
//! hold the replicas of any log group it needs created. Pure functions over the region's
//! state, so they are tested exhaustively without a store.
//!
//! Rules: a partition goes to a group of the topic's strategy and replication factor whose
//! replicas are all live; a region keeps at least as many such groups as the topic has
//! partitions, up to one per live broker, so partitions (and raft leaders) spread over the
//! brokers; partitions go to the group with the fewest partitions; a new group's replicas
//! are the live brokers holding the fewest replicas, the first of them its preferred leader
//! (a master-slave group's master). A topic that joined the region after its creation is
//! placed on groups of its own (`dedicated`), which no other topic is ever placed on.

use std::collections::{BTreeMap, BTreeSet};

use crate::metadata::{Group, Strategy};

/// What placing a topic in one region decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Log groups to create first.
    pub new_groups: Vec<Group>,
    /// The log group of each partition.
    pub partitions: Vec<u32>,
}

/// Places `partitions` partitions needing `strategy` groups of `replication_factor`
/// replicas, given the region's live `brokers`, its `groups`, and how many partitions each
/// group holds (`load`): on groups shared by topics, or with `dedicated` on groups holding
/// that topic alone. `None` when the region has too few live brokers.
pub fn place(
    partitions: u32,
    strategy: Strategy,
    replication_factor: u32,
    dedicated: Option<u32>,
    brokers: &BTreeSet<u32>,
    groups: &[Group],
    load: &BTreeMap<u32, usize>,
) -> Option<Placement> {
    let rf = replication_factor as usize;
    if rf == 0 || rf > brokers.len() {
        return None;
    }
    let usable = |g: &Group| {
        g.strategy == strategy
            && g.topic == dedicated
            && g.replicas.len() == rf
            && g.replicas.iter().all(|b| brokers.contains(b))
    };
    let mut candidates: Vec<u32> = groups.iter().filter(|g| usable(g)).map(|g| g.id).collect();
    // Replicas each live broker holds, for choosing new groups' replicas.
    let mut replicas: BTreeMap<u32, usize> = brokers.iter().map(|&b| (b, 0)).collect();
    for g in groups {
        for b in &g.replicas {
            if let Some(n) = replicas.get_mut(b) {
                *n += 1;
            }
        }
    }
    // Groups each live broker is the preferred leader of (the first replica).
    let mut leads: BTreeMap<u32, usize> = brokers.iter().map(|&b| (b, 0)).collect();
    for g in groups {
        if let Some(n) = g.replicas.first().and_then(|b| leads.get_mut(b)) {
            *n += 1;
        }
    }
    let wanted = (partitions as usize).min(brokers.len()).max(1);
    let mut next_id = groups.iter().map(|g| g.id + 1).max().unwrap_or(0);
    let mut new_groups = Vec::new();
    while candidates.len() < wanted {
        let mut by_load: Vec<(usize, u32)> = replicas.iter().map(|(&b, &n)| (n, b)).collect();
        by_load.sort_unstable();
        let mut chosen: Vec<u32> = by_load.iter().take(rf).map(|&(_, b)| b).collect();
        // The preferred leader: the chosen broker leading the fewest groups, so leaders
        // (and the produce load they carry) spread as replicas do.
        chosen.sort_by_key(|b| (leads[b], replicas[b], *b));
        *leads.get_mut(&chosen[0]).expect("a live broker") += 1;
        for b in &chosen {
            *replicas.get_mut(b).expect("a live broker") += 1;
        }
        new_groups.push(Group {
            id: next_id,
            strategy,
            replicas: chosen,
            changes: 0,
            replacing: None,
            pinned: false,
            topic: dedicated,
        });
        candidates.push(next_id);
        next_id += 1;
    }
    let mut assigned: BTreeMap<u32, usize> = candidates
        .iter()
        .map(|g| (*g, load.get(g).copied().unwrap_or(0)))
        .collect();
    let mut out = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        let (&group, _) = assigned
            .iter()
            .min_by_key(|&(&g, &n)| (n, g))
            .expect("at least one candidate group");
        *assigned.get_mut(&group).expect("listed") += 1;
        out.push(group);
    }
    Some(Placement {
        new_groups,
        partitions: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Strategy;
    use proptest::prelude::{any, prop_assert, prop_assert_eq, proptest};

    fn apply(groups: &mut Vec<Group>, load: &mut BTreeMap<u32, usize>, p: &Placement) {
        groups.extend(p.new_groups.iter().cloned());
        for g in &p.partitions {
            *load.entry(*g).or_default() += 1;
        }
    }

    #[test]
    fn too_few_brokers_is_refused() {
        let brokers: BTreeSet<u32> = [1, 2].into();
        assert_eq!(
            place(3, Strategy::Raft, 3, None, &brokers, &[], &BTreeMap::new()),
            None
        );
    }

    #[test]
    fn a_dead_brokers_groups_are_not_used() {
        let groups = vec![Group {
            id: 0,
            strategy: Strategy::Raft,
            replicas: vec![1, 2, 9],
            changes: 0,
            replacing: None,
            pinned: false,
            topic: None,
        }];
        let brokers: BTreeSet<u32> = [1, 2, 3].into();
        let p = place(
            1,
            Strategy::Raft,
            3,
            None,
            &brokers,
            &groups,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(p.new_groups.len(), 1);
        assert_eq!(p.partitions, vec![1]);
    }

    #[test]
    fn preferred_leaders_spread_over_the_brokers() {
        let brokers: BTreeSet<u32> = [1, 2, 3].into();
        let p = place(3, Strategy::Raft, 3, None, &brokers, &[], &BTreeMap::new()).unwrap();
        let leaders: BTreeSet<u32> = p.new_groups.iter().map(|g| g.replicas[0]).collect();
        assert_eq!(leaders, brokers, "{:?}", p.new_groups);
    }

    #[test]
    fn a_dedicated_topic_gets_groups_of_its_own_and_keeps_them() {
        let brokers: BTreeSet<u32> = [1, 2, 3].into();
        let mut groups = Vec::new();
        let mut load = BTreeMap::new();
        let shared = place(3, Strategy::Raft, 3, None, &brokers, &groups, &load).unwrap();
        apply(&mut groups, &mut load, &shared);
        // Topic 7 joins: new groups, though three shared ones would do.
        let own = place(2, Strategy::Raft, 3, Some(7), &brokers, &groups, &load).unwrap();
        assert_eq!(own.new_groups.len(), 2);
        assert!(own.new_groups.iter().all(|g| g.topic == Some(7)));
        assert!(own.partitions.iter().all(|g| *g >= 3));
        apply(&mut groups, &mut load, &own);
        // A shared topic never lands on them, and topic 7's next partition does.
        let next = place(3, Strategy::Raft, 3, None, &brokers, &groups, &load).unwrap();
        assert!(next.new_groups.is_empty());
        assert!(next.partitions.iter().all(|g| *g < 3));
        let more = place(1, Strategy::Raft, 3, Some(7), &brokers, &groups, &load).unwrap();
        assert!(more.new_groups.is_empty());
        assert!(more.partitions[0] >= 3);
    }

    proptest! {
        /// Topics placed one after another: every group has distinct live replicas of the
        /// right count; each partition goes to a group of its kind with the fewest (a group
        /// given one ends at most one above every group of its kind — partitions placed
        /// earlier never move, so a topic placed on new groups can leave the kind's loads
        /// further apart: 1, 2, 2 and 5 partitions on five brokers end as 3, 2, 2, 2, 1);
        /// and replicas within one of each other over the brokers.
        #[test]
        fn placements_stay_valid_and_balanced(
            brokers in 1u32..7,
            topics in proptest::collection::vec((1u32..12, any::<bool>(), 1u32..4), 1..8),
        ) {
            let live: BTreeSet<u32> = (1..=brokers).collect();
            let mut groups = Vec::new();
            let mut load = BTreeMap::new();
            for (partitions, ms, rf) in topics {
                let strategy = if ms { Strategy::MasterSlave } else { Strategy::Raft };
                match place(partitions, strategy, rf, None, &live, &groups, &load) {
                    None => prop_assert!(rf > brokers),
                    Some(p) => {
                        prop_assert_eq!(p.partitions.len(), partitions as usize);
                        for g in &p.new_groups {
                            let distinct: BTreeSet<u32> = g.replicas.iter().copied().collect();
                            prop_assert_eq!(distinct.len(), rf as usize);
                            prop_assert!(distinct.is_subset(&live));
                        }
                        apply(&mut groups, &mut load, &p);
                        for g in &p.partitions {
                            let group = groups.iter().find(|x| x.id == *g).unwrap();
                            prop_assert_eq!(group.strategy, strategy);
                            prop_assert_eq!(group.replicas.len(), rf as usize);
                        }
                        let fewest = groups
                            .iter()
                            .filter(|g| g.strategy == strategy && g.replicas.len() == rf as usize)
                            .map(|g| load.get(&g.id).copied().unwrap_or(0))
                            .min()
                            .unwrap();
                        for g in &p.partitions {
                            prop_assert!(
                                load[g] <= fewest + 1,
                                "group {} ends with {} partitions, the kind's fewest is {}",
                                g, load[g], fewest
                            );
                        }
                    }
                }
            }
            let mut per_broker: BTreeMap<u32, usize> = live.iter().map(|&b| (b, 0)).collect();
            for g in &groups {
                for b in &g.replicas {
                    *per_broker.get_mut(b).unwrap() += 1;
                }
            }
            let (min, max) = (per_broker.values().min().unwrap(), per_broker.values().max().unwrap());
            prop_assert!(max - min <= 1, "replicas per broker {:?}", per_broker);
        }
    }
}
