//! Partition assignment: which member of a group each subscribed partition goes to. Pure
//! functions of the members' subscriptions, the topics' partition counts and (for sticky)
//! the previous target; the coordinator hands partitions over cooperatively from there.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A partition: topic and index.
pub type TopicPartition = (String, u32);

/// How partitions are spread over the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Assignor {
    /// Per topic, contiguous ranges over the subscribed members in id order (Kafka's
    /// `range`).
    Range,
    /// Every partition in turn to the next subscribed member (Kafka's `roundrobin`).
    RoundRobin,
    /// Balanced, moving as few partitions as possible from where they were (Kafka's
    /// `cooperative-sticky`).
    Sticky,
    /// Every member gets every partition of its topics (broadcast consumption): no
    /// partition has one owner, so the target is empty and each member's position is
    /// its own (kept under its instance id).
    Broadcast,
}

impl Assignor {
    /// The assignor named `s` (range, round-robin, sticky; empty: sticky).
    pub fn parse(s: &str) -> Result<Assignor, String> {
        match s {
            "range" => Ok(Assignor::Range),
            "round-robin" | "roundrobin" => Ok(Assignor::RoundRobin),
            "" | "sticky" | "cooperative-sticky" => Ok(Assignor::Sticky),
            "broadcast" => Ok(Assignor::Broadcast),
            other => Err(format!(
                "unknown assignor {other:?}: range, round-robin, sticky or broadcast"
            )),
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "round-robin",
            Assignor::Sticky => "sticky",
            Assignor::Broadcast => "broadcast",
        }
    }

    /// Where each partition of the members' topics goes. `members` maps member id to its
    /// topics; `partitions` gives each topic's partition count (a topic missing there is
    /// not assigned); `previous` is the last target (sticky keeps what it can of it).
    pub fn assign(
        self,
        members: &BTreeMap<String, BTreeSet<String>>,
        partitions: &BTreeMap<String, u32>,
        previous: &BTreeMap<TopicPartition, String>,
    ) -> BTreeMap<TopicPartition, String> {
        let subscribers = |topic: &str| -> Vec<&String> {
            members
                .iter()
                .filter(|(_, topics)| topics.contains(topic))
                .map(|(id, _)| id)
                .collect()
        };
        let topics: BTreeSet<&String> = members.values().flatten().collect();
        let all: Vec<TopicPartition> = topics
            .iter()
            .filter_map(|t| partitions.get(*t).map(|n| (t, *n)))
            .flat_map(|(t, n)| (0..n).map(move |p| ((*t).clone(), p)))
            .collect();
        let mut out = BTreeMap::new();
        match self {
            Assignor::Broadcast => {}
            Assignor::Range => {
                for topic in topics {
                    let Some(&n) = partitions.get(topic) else {
                        continue;
                    };
                    let subs = subscribers(topic);
                    if subs.is_empty() {
                        continue;
                    }
                    let (per, extra) = (n as usize / subs.len(), n as usize % subs.len());
                    let mut p = 0u32;
                    for (i, m) in subs.iter().enumerate() {
                        let take = per + usize::from(i < extra);
                        for _ in 0..take {
                            out.insert((topic.clone(), p), (*m).clone());
                            p += 1;
                        }
                    }
                }
            }
            Assignor::RoundRobin => {
                let ids: Vec<&String> = members.keys().collect();
                let mut next = 0usize;
                for tp in all {
                    // The next member in turn that subscribes to the topic.
                    for step in 0..ids.len() {
                        let m = ids[(next + step) % ids.len()];
                        if members[m].contains(&tp.0) {
                            out.insert(tp.clone(), m.clone());
                            next = (next + step + 1) % ids.len();
                            break;
                        }
                    }
                }
            }
            Assignor::Sticky => {
                // Each member's fair share: the total over the members, the remainder one
                // each to the first members.
                let n = members.len().max(1);
                let (per, extra) = (all.len() / n, all.len() % n);
                let quota: BTreeMap<&String, usize> = members
                    .keys()
                    .enumerate()
                    .map(|(i, m)| (m, per + usize::from(i < extra)))
                    .collect();
                let mut load: BTreeMap<&String, usize> = members.keys().map(|m| (m, 0)).collect();
                let mut unplaced = Vec::new();
                // Keep what each member had, up to its share.
                for tp in &all {
                    match previous.get(tp).and_then(|m| members.get_key_value(m)) {
                        Some((m, topics)) if topics.contains(&tp.0) && load[m] < quota[m] => {
                            *load.get_mut(m).expect("a member") += 1;
                            out.insert(tp.clone(), m.clone());
                        }
                        _ => unplaced.push(tp.clone()),
                    }
                }
                // The rest to the least loaded member that subscribes.
                for tp in unplaced {
                    let least = load
                        .iter()
                        .filter(|(m, _)| members[**m].contains(&tp.0))
                        .min_by_key(|(m, l)| (**l, **m))
                        .map(|(m, _)| *m);
                    if let Some(m) = least {
                        *load.get_mut(m).expect("a member") += 1;
                        out.insert(tp, m.clone());
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn members(ids: &[&str], topics: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        ids.iter()
            .map(|m| {
                (
                    m.to_string(),
                    topics.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    }

    fn counts(target: &BTreeMap<TopicPartition, String>) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for m in target.values() {
            *out.entry(m.clone()).or_default() += 1;
        }
        out
    }

    #[test]
    fn range_gives_contiguous_runs_the_first_members_one_more() {
        let t = Assignor::Range.assign(
            &members(&["a", "b"], &["t"]),
            &[("t".into(), 5)].into(),
            &BTreeMap::new(),
        );
        let owners: Vec<&str> = (0..5).map(|p| t[&("t".into(), p)].as_str()).collect();
        assert_eq!(owners, ["a", "a", "a", "b", "b"]);
    }

    #[test]
    fn round_robin_alternates_and_skips_members_not_subscribed() {
        let mut m = members(&["a", "b"], &["t"]);
        m.insert("c".into(), ["u".to_string()].into());
        let t = Assignor::RoundRobin.assign(
            &m,
            &[("t".into(), 4), ("u".into(), 1)].into(),
            &BTreeMap::new(),
        );
        let owners: Vec<&str> = (0..4).map(|p| t[&("t".into(), p)].as_str()).collect();
        assert_eq!(owners, ["a", "b", "a", "b"]);
        assert_eq!(t[&("u".into(), 0)], "c");
    }

    #[test]
    fn sticky_moves_only_what_a_new_member_needs() {
        let partitions: BTreeMap<String, u32> = [("t".into(), 6)].into();
        let before =
            Assignor::Sticky.assign(&members(&["a", "b"], &["t"]), &partitions, &BTreeMap::new());
        assert_eq!(
            counts(&before).values().copied().collect::<Vec<_>>(),
            [3, 3]
        );
        let after =
            Assignor::Sticky.assign(&members(&["a", "b", "c"], &["t"]), &partitions, &before);
        assert_eq!(
            counts(&after).values().copied().collect::<Vec<_>>(),
            [2, 2, 2]
        );
        let moved = before.iter().filter(|(tp, m)| after[*tp] != **m).count();
        assert_eq!(
            moved, 2,
            "only c's two partitions move: {before:?} -> {after:?}"
        );
    }

    proptest! {
        /// Every assignor places every partition of a subscribed topic exactly once, on a
        /// member that subscribes to it; sticky and round-robin over one topic are balanced
        /// to within one.
        #[test]
        fn every_partition_once_to_a_subscriber(
            n_members in 1usize..7,
            n_partitions in 0u32..40,
            previous_owner in proptest::collection::vec(0usize..9, 40),
            which in 0usize..3,
        ) {
            let ids: Vec<String> = (0..n_members).map(|i| format!("m{i}")).collect();
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let m = members(&refs, &["t"]);
            let partitions: BTreeMap<String, u32> = [("t".into(), n_partitions)].into();
            let previous: BTreeMap<TopicPartition, String> = (0..n_partitions)
                .map(|p| (("t".to_string(), p), format!("m{}", previous_owner[p as usize])))
                .collect();
            let assignor = [Assignor::Range, Assignor::RoundRobin, Assignor::Sticky][which];
            let t = assignor.assign(&m, &partitions, &previous);
            prop_assert_eq!(t.len(), n_partitions as usize);
            for (tp, owner) in &t {
                prop_assert!(tp.1 < n_partitions);
                prop_assert!(m.contains_key(owner));
            }
            let c = counts(&t);
            let (lo, hi) = (
                (0..n_members).map(|i| c.get(&ids[i]).copied().unwrap_or(0)).min().unwrap(),
                c.values().copied().max().unwrap_or(0),
            );
            prop_assert!(hi - lo <= 1, "unbalanced: {:?}", c);
            // Sticky keeps a balanced assignment as it is; one more member takes only its
            // share, every other partition stays where it was.
            if assignor == Assignor::Sticky {
                prop_assert_eq!(&assignor.assign(&m, &partitions, &t), &t);
                let mut more = m.clone();
                more.insert("new".into(), ["t".to_string()].into());
                let after = assignor.assign(&more, &partitions, &t);
                let moved = t.iter().filter(|(tp, o)| after[*tp] != **o).count();
                let share = n_partitions as usize / (n_members + 1);
                prop_assert!(moved <= share + 1, "{} moved for a share of {}", moved, share);
            }
        }
    }
}
