//! The consumer-group coordinator's decision core: heartbeats and the clock in, records to
//! write and answers out, no I/O. Every replica can rebuild it from the records; the
//! shell (`super`) writes a record to the log group before it takes effect.
//!
//! The protocol is Kafka's KIP-848 shape, kept small: the coordinator computes a target
//! assignment (with the group's [`Assignor`]) whenever the members or their topics change,
//! and hands partitions over cooperatively. A partition the target takes from a member is
//! first *revoking* there: the member may still commit it, and must stop reading it; it
//! goes to its new member only once the old one says (in a heartbeat) that it no longer
//! owns it, or leaves, or its session lapses. So no partition is ever had by two members,
//! and a member that keeps its partitions across a rebalance keeps reading them.
//!
//! Fencing: a commit is accepted only from a member the coordinator has the partition
//! with (given or revoking). A member whose session lapsed is removed; whatever it sends
//! afterwards names an unknown member and is refused, so a paused process that wakes up
//! cannot commit over its successor.
//!
//! Liveness (when each member was last heard) is in memory only: a new coordinator
//! (leader change, restart) gives every member a fresh session from the moment it loads.
//!
//! A broadcast group ([`Assignor::Broadcast`]) gives every member every partition of its
//! topics. Each member names an instance (a stable name across its restarts) and commits
//! under it (`names::instance_offsets`); the group remembers its instances, so a member
//! that leaves and comes back resumes where it was, until its instance has been idle
//! (no member) for the group's idle time, when the shell deletes its positions and the
//! group forgets it. A group record outlives its members while it has instances.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use meridian_proto::names;
use serde::{Deserialize, Serialize};

pub use super::assign::{Assignor, TopicPartition};

const DAY_MS: u64 = 24 * 3_600_000;

/// How long a broadcast group keeps an idle instance's positions unless its founder says.
pub const INSTANCE_IDLE_DEFAULT_MS: u64 = DAY_MS;

/// Bounds and timings.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Groups a coordinator (one log group) holds at most.
    pub groups_max: usize,
    /// Members of one group at most.
    pub members_max: usize,
    /// The shortest session timeout a member may ask for.
    pub session_min_ms: u32,
    /// The longest.
    pub session_max_ms: u32,
    /// How often members are asked to heartbeat.
    pub heartbeat_ms: u32,
    /// Instances a broadcast group remembers at most (members and idle ones).
    pub instances_max: usize,
    /// The shortest time a broadcast group keeps an idle instance's positions.
    pub instance_idle_min_ms: u64,
    /// The longest.
    pub instance_idle_max_ms: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            groups_max: 10_000,
            members_max: 1_000,
            session_min_ms: 1_000,
            session_max_ms: 300_000,
            heartbeat_ms: 1_000,
            instances_max: 10_000,
            instance_idle_min_ms: 1_000,
            instance_idle_max_ms: 30 * DAY_MS,
        }
    }
}

/// A member as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Its id (given by the coordinator on join).
    pub id: String,
    /// The client id it joined with.
    pub client_id: String,
    /// The topics it subscribes to.
    pub topics: BTreeSet<String>,
    /// Its session timeout.
    pub session_ms: u32,
    /// Its epoch: the group epoch when its partitions last changed.
    pub epoch: i32,
    /// The partitions it may own and read.
    pub assigned: BTreeSet<TopicPartition>,
    /// Partitions taken from it that it has not yet said it gave up: it may commit them,
    /// not read them; no other member gets them meanwhile.
    pub revoking: BTreeSet<TopicPartition>,
    /// Its instance (broadcast groups; empty otherwise).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
}

/// An instance of a broadcast group: whose positions the group keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The topics its member last subscribed to (where its positions are).
    pub topics: BTreeSet<String>,
    /// Since when it has had no member (`None`: it has one).
    pub idle_since_ms: Option<u64>,
}

/// A group as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Its name.
    pub name: String,
    /// Bumped whenever the members, their topics or the topics' partitions change.
    pub epoch: i32,
    /// How partitions are spread.
    pub assignor: Assignor,
    /// The members by id.
    pub members: BTreeMap<String, Member>,
    /// Where each partition should be (the assignor's answer at `epoch`); a list of pairs
    /// in JSON, whose map keys are only strings.
    #[serde(with = "pairs")]
    pub target: BTreeMap<TopicPartition, String>,
    /// The partition counts the target was computed with.
    pub partitions: BTreeMap<String, u32>,
    /// A broadcast group's instances by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub instances: BTreeMap<String, Instance>,
    /// How long a broadcast group keeps an idle instance.
    #[serde(default)]
    pub instance_idle_ms: u64,
}

impl Group {
    /// Whether every member has exactly its target (nothing revoking, nothing waiting).
    pub fn is_stable(&self) -> bool {
        if self.assignor == Assignor::Broadcast {
            return self
                .members
                .values()
                .all(|m| m.assigned == self.broadcast_share(m));
        }
        self.members.values().all(|m| {
            m.revoking.is_empty()
                && self.target.iter().filter(|(_, o)| **o == m.id).count() == m.assigned.len()
        })
    }

    /// Who has `tp` (given or revoking).
    fn holder(&self, tp: &TopicPartition) -> Option<&str> {
        self.members
            .values()
            .find(|m| m.assigned.contains(tp) || m.revoking.contains(tp))
            .map(|m| m.id.as_str())
    }

    /// Every partition of a broadcast member's topics.
    fn broadcast_share(&self, m: &Member) -> BTreeSet<TopicPartition> {
        m.topics
            .iter()
            .filter_map(|t| self.partitions.get(t).map(|n| (t, *n)))
            .flat_map(|(t, n)| (0..n).map(move |p| (t.clone(), p)))
            .collect()
    }

    /// Removes a member; a broadcast member's instance turns idle from `now_ms`.
    fn remove_member(&mut self, id: &str, now_ms: u64) {
        if let Some(m) = self.members.remove(id)
            && let Some(i) = self.instances.get_mut(&m.instance)
            && !self.members.values().any(|o| o.instance == m.instance)
        {
            i.idle_since_ms = Some(now_ms);
        }
    }

    /// What the log keeps of the group: the group, or its end once it has neither
    /// members nor instances.
    fn record(self) -> GroupRecord {
        if self.members.is_empty() && self.instances.is_empty() {
            GroupRecord::Delete { name: self.name }
        } else {
            GroupRecord::Put(self)
        }
    }

    /// Recomputes the target and bumps the epoch.
    fn rebalance(&mut self, partitions: &BTreeMap<String, u32>) {
        let subscriptions: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .map(|m| (m.id.clone(), m.topics.clone()))
            .collect();
        self.partitions = partitions
            .iter()
            .filter(|(t, _)| subscriptions.values().any(|s| s.contains(*t)))
            .map(|(t, n)| (t.clone(), *n))
            .collect();
        self.target = self
            .assignor
            .assign(&subscriptions, &self.partitions, &self.target);
        self.epoch += 1;
    }

    /// Moves every member toward the target: what it has beyond its target starts
    /// revoking; what its target adds it gets once no other member has it. A broadcast
    /// member simply has every partition of its topics.
    fn reconcile(&mut self) {
        let ids: Vec<String> = self.members.keys().cloned().collect();
        if self.assignor == Assignor::Broadcast {
            for id in &ids {
                let share = self.broadcast_share(&self.members[id]);
                let m = self.members.get_mut(id).expect("listed");
                if m.assigned != share {
                    m.assigned = share;
                    m.epoch = self.epoch;
                }
            }
            return;
        }
        for id in &ids {
            let target = &self.target;
            let m = self.members.get_mut(id).expect("listed");
            let gone: Vec<TopicPartition> = m
                .assigned
                .iter()
                .filter(|tp| target.get(*tp) != Some(id))
                .cloned()
                .collect();
            if !gone.is_empty() {
                for tp in gone {
                    m.assigned.remove(&tp);
                    m.revoking.insert(tp);
                }
                m.epoch = self.epoch;
            }
        }
        for id in &ids {
            let wanted: Vec<TopicPartition> = self
                .target
                .iter()
                .filter(|(tp, owner)| {
                    **owner == *id
                        && !self.members[id].assigned.contains(*tp)
                        && self.holder(tp).is_none()
                })
                .map(|(tp, _)| tp.clone())
                .collect();
            if !wanted.is_empty() {
                let m = self.members.get_mut(id).expect("listed");
                m.assigned.extend(wanted);
                m.epoch = self.epoch;
            }
        }
    }
}

/// What the log holds: a group's whole state after a change, or its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupRecord {
    /// The group as it is now.
    Put(Group),
    /// The group has no members left.
    Delete {
        /// Its name.
        name: String,
    },
}

impl GroupRecord {
    /// The group it is about.
    pub fn name(&self) -> &str {
        match self {
            GroupRecord::Put(g) => &g.name,
            GroupRecord::Delete { name } => name,
        }
    }
}

/// One heartbeat (a join has no member id, a leave epoch -1).
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    /// The group.
    pub group: String,
    /// The member (empty to join).
    pub member_id: String,
    /// 0 to join, -1 to leave, else the epoch last answered.
    pub member_epoch: i32,
    /// Its client id.
    pub client_id: String,
    /// Its topics (`None`: unchanged).
    pub topics: Option<BTreeSet<String>>,
    /// The partitions it owns now (`None`: not said).
    pub owned: Option<BTreeSet<TopicPartition>>,
    /// The assignor (a join's; empty: sticky).
    pub assignor: String,
    /// Its session timeout (a join's).
    pub session_ms: u32,
    /// Its instance (a broadcast group's member's, on join).
    pub instance_id: String,
    /// How long a broadcast group keeps an idle instance's positions (its founder's;
    /// 0: [`INSTANCE_IDLE_DEFAULT_MS`]).
    pub instance_idle_ms: u64,
}

/// The answer to a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its id.
    pub member_id: String,
    /// Its epoch (-1 once it left).
    pub member_epoch: i32,
    /// What it may own now.
    pub assignment: BTreeSet<TopicPartition>,
}

/// Why a heartbeat or commit is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// Not a member (never was, left, or its session lapsed).
    #[error(
        "member {member:?} is not in consumer group {group:?} (its session lapsed, or it left): join again"
    )]
    UnknownMember {
        /// The group.
        group: String,
        /// The member.
        member: String,
    },
    /// An epoch the coordinator never gave this member.
    #[error("member {member:?} sent epoch {sent}, but its epoch is {current}")]
    FencedEpoch {
        /// The member.
        member: String,
        /// What it sent.
        sent: i32,
        /// Its epoch.
        current: i32,
    },
    /// The partition is not the member's.
    #[error(
        "partition {topic}/{partition} is not assigned to member {member:?} of consumer group {group:?} (it moved to another member)"
    )]
    NotAssigned {
        /// The group.
        group: String,
        /// The member.
        member: String,
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
    },
    /// A request out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// A bound reached.
    #[error("{0}")]
    Full(String),
}

/// A decision: the record to write first (if the group changes) and the answer.
#[derive(Debug)]
pub struct Decision {
    /// Written, then applied, before the answer holds.
    pub write: Option<GroupRecord>,
    /// The answer.
    pub answer: Result<Answer, GroupError>,
}

/// The groups of one coordinator.
#[derive(Debug, Default)]
pub struct Membership {
    limits: Limits,
    groups: BTreeMap<String, Group>,
    /// When each (group, member) was last heard (ms); in memory only.
    seen: HashMap<(String, String), u64>,
}

impl Membership {
    /// An empty coordinator.
    pub fn new(limits: Limits) -> Membership {
        Membership {
            limits,
            ..Membership::default()
        }
    }

    /// How often members should heartbeat.
    pub fn heartbeat_ms(&self) -> u32 {
        self.limits.heartbeat_ms
    }

    /// A group.
    pub fn get(&self, name: &str) -> Option<&Group> {
        self.groups.get(name)
    }

    /// Every group.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    /// Applies a written record.
    pub fn apply(&mut self, record: GroupRecord) {
        match record {
            GroupRecord::Put(g) => {
                self.seen.retain(|(group, member), _| {
                    *group != g.name || g.members.contains_key(member)
                });
                self.groups.insert(g.name.clone(), g);
            }
            GroupRecord::Delete { name } => {
                self.seen.retain(|(group, _), _| *group != name);
                self.groups.remove(&name);
            }
        }
    }

    /// Decides a heartbeat at `now_ms`, `partitions` being the partition counts of the
    /// topics it subscribes to (and the group's). A heartbeat that changes nothing writes
    /// nothing; it only renews the member's session (in memory, at once).
    pub fn heartbeat(
        &mut self,
        hb: Heartbeat,
        partitions: &BTreeMap<String, u32>,
        now_ms: u64,
    ) -> Decision {
        let refused = |e| Decision {
            write: None,
            answer: Err(e),
        };
        let unknown = || GroupError::UnknownMember {
            group: hb.group.clone(),
            member: hb.member_id.clone(),
        };
        let mut group = match self.groups.get(&hb.group) {
            Some(g) => g.clone(),
            None if hb.member_id.is_empty() || hb.member_epoch == 0 => {
                if self.groups.len() >= self.limits.groups_max {
                    return refused(GroupError::Full(format!(
                        "this coordinator holds {} consumer groups, its limit: members of idle groups must leave first",
                        self.groups.len()
                    )));
                }
                let assignor = match Assignor::parse(&hb.assignor) {
                    Ok(a) => a,
                    Err(e) => return refused(GroupError::Invalid(e)),
                };
                let instance_idle_ms = match (assignor, hb.instance_idle_ms) {
                    (Assignor::Broadcast, 0) => INSTANCE_IDLE_DEFAULT_MS,
                    (Assignor::Broadcast, ms) => {
                        let (lo, hi) = (
                            self.limits.instance_idle_min_ms,
                            self.limits.instance_idle_max_ms,
                        );
                        if !(lo..=hi).contains(&ms) {
                            return refused(GroupError::Invalid(format!(
                                "instance idle time {ms} ms is outside {lo}..={hi} ms"
                            )));
                        }
                        ms
                    }
                    _ => 0,
                };
                Group {
                    name: hb.group.clone(),
                    epoch: 0,
                    assignor,
                    members: BTreeMap::new(),
                    target: BTreeMap::new(),
                    partitions: BTreeMap::new(),
                    instances: BTreeMap::new(),
                    instance_idle_ms,
                }
            }
            None => return refused(unknown()),
        };
        let broadcast = group.assignor == Assignor::Broadcast;
        let before = group.clone();
        // A join: no id (the coordinator names it), or epoch 0 with an id the member chose
        // (KIP-848 v1 clients do); a known id joining again starts over, owning nothing.
        let joining = hb.member_id.is_empty() || hb.member_epoch == 0;
        if joining {
            // Broadcast or not is the group's nature: a member asking for the other kind
            // would read what it does not expect.
            if let Ok(asked) = Assignor::parse(&hb.assignor)
                && !hb.assignor.is_empty()
                && (asked == Assignor::Broadcast) != broadcast
            {
                return refused(GroupError::Invalid(format!(
                    "consumer group {:?} uses assignor {}, not {}: a group is broadcast or not for its whole life (use another group name)",
                    hb.group,
                    group.assignor.name(),
                    asked.name()
                )));
            }
            if broadcast {
                if let Err(e) = names::validate("instance", &hb.instance_id) {
                    return refused(GroupError::Invalid(format!(
                        "a member of broadcast group {:?} names its instance (a name it keeps across restarts): {e}",
                        hb.group
                    )));
                }
                if !group.instances.contains_key(&hb.instance_id)
                    && group.instances.len() >= self.limits.instances_max
                {
                    return refused(GroupError::Full(format!(
                        "broadcast group {:?} remembers {} instances, the limit (idle ones are forgotten after {} ms)",
                        hb.group,
                        group.instances.len(),
                        group.instance_idle_ms
                    )));
                }
            }
            if group.members.contains_key(&hb.member_id) {
                group.remove_member(&hb.member_id, now_ms);
                group.rebalance(partitions);
            }
        }
        let id = if joining {
            // A join.
            let (lo, hi) = (self.limits.session_min_ms, self.limits.session_max_ms);
            if !(lo..=hi).contains(&hb.session_ms) {
                return refused(GroupError::Invalid(format!(
                    "session timeout {} ms is outside {lo}..={hi} ms",
                    hb.session_ms
                )));
            }
            if group.members.len() >= self.limits.members_max {
                return refused(GroupError::Full(format!(
                    "consumer group {:?} has {} members, the limit",
                    hb.group,
                    group.members.len()
                )));
            }
            let topics = hb.topics.clone().unwrap_or_default();
            if topics.is_empty() {
                return refused(GroupError::Invalid(
                    "a member joins with at least one topic".into(),
                ));
            }
            // Unique across the group's whole life: its epoch only grows while it has
            // members, and the time tells apart a group deleted and made again.
            let id = if hb.member_id.is_empty() {
                format!("{}-{}-{now_ms}", hb.client_id, group.epoch + 1)
            } else {
                hb.member_id.clone()
            };
            let instance = if broadcast {
                // One member per instance: a restarted process replaces the one it was
                // (Kafka's static membership does the same); the old one is fenced.
                let old: Vec<String> = group
                    .members
                    .values()
                    .filter(|m| m.instance == hb.instance_id)
                    .map(|m| m.id.clone())
                    .collect();
                for o in old {
                    group.remove_member(&o, now_ms);
                }
                group.instances.insert(
                    hb.instance_id.clone(),
                    Instance {
                        topics: topics.clone(),
                        idle_since_ms: None,
                    },
                );
                hb.instance_id.clone()
            } else {
                String::new()
            };
            group.members.insert(
                id.clone(),
                Member {
                    id: id.clone(),
                    client_id: hb.client_id.clone(),
                    topics,
                    session_ms: hb.session_ms,
                    epoch: 0,
                    assigned: BTreeSet::new(),
                    revoking: BTreeSet::new(),
                    instance,
                },
            );
            group.rebalance(partitions);
            // Its first epoch is the group's, never 0: a heartbeat at 0 is a join.
            group.members.get_mut(&id).expect("just added").epoch = group.epoch;
            id
        } else {
            let Some(m) = group.members.get_mut(&hb.member_id) else {
                return refused(unknown());
            };
            if hb.member_epoch > m.epoch {
                return refused(GroupError::FencedEpoch {
                    member: hb.member_id.clone(),
                    sent: hb.member_epoch,
                    current: m.epoch,
                });
            }
            if hb.member_epoch < 0 {
                group.remove_member(&hb.member_id, now_ms);
                group.rebalance(partitions);
            } else {
                // Revocations it finished: those it no longer owns — said at its current
                // epoch, so after it heard of them (a heartbeat sent before the revocation
                // reached it may list a partition as not yet taken up, not as given up).
                if let Some(owned) = hb.owned.as_ref().filter(|_| hb.member_epoch >= m.epoch) {
                    m.revoking.retain(|tp| owned.contains(tp));
                }
                let resubscribed = hb
                    .topics
                    .as_ref()
                    .is_some_and(|t| !t.is_empty() && *t != m.topics);
                if let Some(t) = hb.topics.as_ref().filter(|_| resubscribed) {
                    m.topics = t.clone();
                    if let Some(i) = group.instances.get_mut(&m.instance) {
                        i.topics.extend(t.iter().cloned());
                    }
                }
                let grown = group
                    .partitions
                    .iter()
                    .any(|(t, n)| partitions.get(t).is_some_and(|now| now != n));
                if resubscribed || grown {
                    group.rebalance(partitions);
                }
            }
            hb.member_id.clone()
        };
        group.reconcile();
        self.seen.insert((hb.group.clone(), id.clone()), now_ms);
        let answer = match group.members.get(&id) {
            Some(m) => Answer {
                member_id: id.clone(),
                member_epoch: m.epoch,
                assignment: m.assigned.clone(),
            },
            None => Answer {
                member_id: id.clone(),
                member_epoch: -1,
                assignment: BTreeSet::new(),
            },
        };
        let write = (group != before).then(|| group.record());
        Decision {
            write,
            answer: Ok(answer),
        }
    }

    /// Whether `member` may commit `tp` in `group` now.
    pub fn check_commit(
        &self,
        group: &str,
        member: &str,
        member_epoch: i32,
        tp: &TopicPartition,
    ) -> Result<(), GroupError> {
        let m = self
            .groups
            .get(group)
            .and_then(|g| g.members.get(member))
            .ok_or_else(|| GroupError::UnknownMember {
                group: group.to_owned(),
                member: member.to_owned(),
            })?;
        if member_epoch > m.epoch {
            return Err(GroupError::FencedEpoch {
                member: member.to_owned(),
                sent: member_epoch,
                current: m.epoch,
            });
        }
        if !m.assigned.contains(tp) && !m.revoking.contains(tp) {
            return Err(GroupError::NotAssigned {
                group: group.to_owned(),
                member: member.to_owned(),
                topic: tp.0.clone(),
                partition: tp.1,
            });
        }
        Ok(())
    }

    /// Where `member` of `group` commits: the group's name, or a broadcast member's
    /// instance's own place (`None`: no such member).
    pub fn offsets_owner(&self, group: &str, member: &str) -> Option<String> {
        let g = self.groups.get(group)?;
        let m = g.members.get(member)?;
        Some(if g.assignor == Assignor::Broadcast {
            names::instance_offsets(group, &m.instance)
        } else {
            group.to_owned()
        })
    }

    /// Broadcast instances idle past their group's idle time at `now_ms`: `(group,
    /// instance, its topics)`. The shell deletes their positions, then
    /// [`Membership::forget_instance`].
    pub fn idle_instances(&self, now_ms: u64) -> Vec<(String, String, BTreeSet<String>)> {
        self.groups
            .values()
            .flat_map(|g| {
                g.instances
                    .iter()
                    .filter(move |(_, i)| {
                        i.idle_since_ms
                            .is_some_and(|since| now_ms.saturating_sub(since) > g.instance_idle_ms)
                    })
                    .map(move |(name, i)| (g.name.clone(), name.clone(), i.topics.clone()))
            })
            .collect()
    }

    /// The record that forgets an idle instance (`None`: it is not idle, or unknown).
    pub fn forget_instance(&self, group: &str, instance: &str) -> Option<GroupRecord> {
        let mut g = self.groups.get(group)?.clone();
        g.instances
            .get(instance)
            .filter(|i| i.idle_since_ms.is_some())?;
        g.instances.remove(instance);
        Some(g.record())
    }

    /// The records that remove members silent past their session at `now_ms` (a member
    /// never heard since this coordinator loaded counts from `now_ms`).
    pub fn expire(&mut self, now_ms: u64) -> Vec<GroupRecord> {
        let mut out = Vec::new();
        for g in self.groups.values() {
            let mut changed = g.clone();
            for m in g.members.values() {
                let seen = *self
                    .seen
                    .entry((g.name.clone(), m.id.clone()))
                    .or_insert(now_ms);
                if now_ms.saturating_sub(seen) > u64::from(m.session_ms) {
                    changed.remove_member(&m.id, now_ms);
                }
            }
            if changed.members.len() != g.members.len() {
                if !changed.members.is_empty() {
                    let partitions = changed.partitions.clone();
                    changed.rebalance(&partitions);
                    changed.reconcile();
                }
                out.push(changed.record());
            }
        }
        out
    }
}

/// A map as a list of pairs (for keys JSON cannot name).
mod pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<K: Serialize, V: Serialize, S: Serializer>(
        map: &BTreeMap<K, V>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(map.iter())
    }

    pub(super) fn deserialize<'de, K, V, D>(d: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        K: Deserialize<'de> + Ord,
        V: Deserialize<'de>,
        D: Deserializer<'de>,
    {
        Ok(Vec::<(K, V)>::deserialize(d)?.into_iter().collect())
    }
}

#[cfg(test)]
mod tests;
