//! The Kafka group coordinator (the classic, client-assigned protocol): members join, the
//! coordinator waits until every known member has rejoined (or its rebalance timeout
//! passes), names a leader and a protocol, the leader assigns partitions (range,
//! round-robin, cooperative-sticky: whatever the clients agree on) and SyncGroup hands each
//! member its share; heartbeats keep members in and tell them of a rebalance; a member
//! whose session lapses is removed. State is in memory: after a broker restart members
//! rejoin (their committed offsets are in the journal).
//!
//! Memory is bounded: a group with no members for `kafka.empty_group_expiry_ms` is
//! forgotten (Kafka drops an empty group's metadata the same way; its committed offsets
//! stay in the journal, they are not the coordinator's), and at most `kafka.groups_max`
//! groups are known at once: a JoinGroup for a new group past it is answered
//! COORDINATOR_NOT_AVAILABLE, which clients retry (a limit that frees itself as empty groups
//! expire must not be fatal to a consumer, as GROUP_MAX_SIZE_REACHED is — and that code
//! speaks of members in one group, not of groups).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Kafka error codes of the group protocol.
pub(crate) mod code {
    pub(crate) const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub(crate) const ILLEGAL_GENERATION: i16 = 22;
    pub(crate) const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub(crate) const UNKNOWN_MEMBER_ID: i16 = 25;
    pub(crate) const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub(crate) const REBALANCE_IN_PROGRESS: i16 = 27;
    pub(crate) const MEMBER_ID_REQUIRED: i16 = 79;
    pub(crate) const NON_EMPTY_GROUP: i16 = 68;
    pub(crate) const GROUP_ID_NOT_FOUND: i16 = 69;
    pub(crate) const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
}

/// How long a new group waits for more members before its first generation (Kafka's
/// `group.initial.rebalance.delay.ms` is 3 s; a short one keeps tests and demos quick).
const INITIAL_DELAY: Duration = Duration::from_millis(300);
/// The longest a rebalance waits for members to rejoin.
const REBALANCE_MAX: Duration = Duration::from_secs(30);

/// A join's outcome.
#[derive(Debug, Clone, Default)]
pub(crate) struct Joined {
    pub(crate) error: i16,
    pub(crate) generation: i32,
    pub(crate) protocol: String,
    pub(crate) leader: String,
    pub(crate) member_id: String,
    /// For the leader: every member with its metadata for the chosen protocol.
    pub(crate) members: Vec<(String, Bytes)>,
}

/// A sync's outcome: an error code and the member's assignment.
pub(crate) type Synced = (i16, Bytes);

#[derive(Debug)]
struct Member {
    client_id: String,
    protocols: Vec<(String, Bytes)>,
    session: Duration,
    rebalance: Duration,
    last_seen: Instant,
    assignment: Bytes,
    rejoined: bool,
}

impl Member {
    /// What the member said with `protocol` when it joined (empty if it did not offer it).
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, b)| b.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    Joining,
    Syncing,
    Stable,
}

#[derive(Debug)]
struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: String,
    leader: String,
    members: BTreeMap<String, Member>,
    joiners: Vec<(String, oneshot::Sender<Joined>)>,
    syncers: Vec<(String, oneshot::Sender<Synced>)>,
    /// Bumped at every rebalance start, so a stale timer does nothing.
    round: u64,
    /// When the group last became empty (made, or its last member gone).
    empty_since: Instant,
}

/// Whether a group is forgotten now: empty (no member, none joining) for `expiry` since
/// `empty_since`.
fn forgotten(
    state: State,
    members: usize,
    empty_since: Instant,
    now: Instant,
    expiry: Duration,
) -> bool {
    state == State::Empty && members == 0 && now.saturating_duration_since(empty_since) >= expiry
}

impl Group {
    fn new() -> Group {
        Group {
            empty_since: Instant::now(),
            state: State::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: String::new(),
            leader: String::new(),
            members: BTreeMap::new(),
            joiners: Vec::new(),
            syncers: Vec::new(),
            round: 0,
        }
    }

    /// No member is left: the group is Empty from now on.
    fn become_empty(&mut self) {
        self.state = State::Empty;
        self.joiners.clear();
        self.empty_since = Instant::now();
    }

    /// Starts a rebalance (members learn of it by heartbeat and rejoin); returns the
    /// round and how long to wait for them at most.
    fn start_rebalance(&mut self) -> (u64, Duration) {
        self.state = State::Joining;
        self.round += 1;
        for m in self.members.values_mut() {
            m.rejoined = false;
        }
        for (_, tx) in self.syncers.drain(..) {
            let _ = tx.send((code::REBALANCE_IN_PROGRESS, Bytes::new()));
        }
        let wait = self
            .members
            .values()
            .map(|m| m.rebalance)
            .max()
            .unwrap_or(INITIAL_DELAY)
            .min(REBALANCE_MAX);
        (self.round, wait)
    }

    /// Ends the join phase: members that did not rejoin leave, the generation moves, a
    /// leader and a protocol are chosen and every waiting join is answered.
    fn complete_join(&mut self) {
        self.members.retain(|_, m| m.rejoined);
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        self.generation += 1;
        if !self.members.contains_key(&self.leader) {
            self.leader = self
                .joiners
                .first()
                .map(|(id, _)| id.clone())
                .unwrap_or_else(|| self.members.keys().next().cloned().unwrap_or_default());
        }
        // The first protocol of the leader's list that every member supports.
        let leader = &self.members[&self.leader];
        self.protocol = leader
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .unwrap_or_default();
        self.state = State::Syncing;
        let all: Vec<(String, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.metadata(&self.protocol)))
            .collect();
        for (id, tx) in self.joiners.drain(..) {
            let _ = tx.send(Joined {
                error: 0,
                generation: self.generation,
                protocol: self.protocol.clone(),
                leader: self.leader.clone(),
                members: if id == self.leader {
                    all.clone()
                } else {
                    Vec::new()
                },
                member_id: id,
            });
        }
    }
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Described {
    /// Kafka's state names: Empty, PreparingRebalance, CompletingRebalance, Stable.
    pub(crate) state: &'static str,
    pub(crate) protocol_type: String,
    pub(crate) protocol: String,
    /// Member id, client id, its metadata for the chosen protocol, its assignment.
    pub(crate) members: Vec<(String, String, Bytes, Bytes)>,
}

impl State {
    fn kafka_name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::Joining => "PreparingRebalance",
            State::Syncing => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

/// The Kafka consumer groups this broker coordinates (membership, generations, rebalances).
#[derive(Debug)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    next_member: std::sync::atomic::AtomicU64,
    limits: GroupLimits,
    /// When a new group was last refused for `groups_max` (logged at most once a second).
    refused_logged: Mutex<Option<Instant>>,
}

/// How many groups a [`Coordinator`] knows at most, and how long an empty one is kept.
#[derive(Debug, Clone, Copy)]
pub struct GroupLimits {
    /// A group with no members this long is forgotten (`kafka.empty_group_expiry_ms`).
    pub empty_group_expiry: Duration,
    /// Groups known at once (`kafka.groups_max`).
    pub groups_max: usize,
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            empty_group_expiry: Duration::from_secs(600),
            groups_max: 10_000,
        }
    }
}

impl Default for Coordinator {
    fn default() -> Self {
        Coordinator::new(GroupLimits::default())
    }
}

/// What a JoinGroup asks.
pub(crate) struct Join {
    pub(crate) group: String,
    pub(crate) member_id: String,
    pub(crate) client_id: String,
    pub(crate) protocol_type: String,
    pub(crate) protocols: Vec<(String, Bytes)>,
    pub(crate) session: Duration,
    pub(crate) rebalance: Duration,
    /// JoinGroup v4+: a member without an id gets one and must join again with it.
    pub(crate) require_known_id: bool,
}

impl Coordinator {
    /// A coordinator bounded by `limits`.
    pub fn new(limits: GroupLimits) -> Coordinator {
        Coordinator {
            groups: Mutex::default(),
            next_member: Default::default(),
            limits,
            refused_logged: Mutex::default(),
        }
    }

    /// A group's state and members; `None` when this broker knows no such group.
    pub(crate) fn describe(&self, group: &str) -> Option<Described> {
        let groups = self.groups.lock().expect("groups lock poisoned");
        let g = groups.get(group)?;
        Some(Described {
            state: g.state.kafka_name(),
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            members: g
                .members
                .iter()
                .map(|(id, m)| {
                    (
                        id.clone(),
                        m.client_id.clone(),
                        m.metadata(&g.protocol),
                        m.assignment.clone(),
                    )
                })
                .collect(),
        })
    }

    /// Every group with its protocol type and state.
    pub(crate) fn list(&self) -> Vec<(String, String, &'static str)> {
        let groups = self.groups.lock().expect("groups lock poisoned");
        let mut out: Vec<_> = groups
            .iter()
            .map(|(name, g)| (name.clone(), g.protocol_type.clone(), g.state.kafka_name()))
            .collect();
        out.sort();
        out
    }

    /// Starts the task that removes members whose session lapsed and forgets groups empty
    /// for `empty_group_expiry`.
    pub(crate) fn start(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Some(c) = weak.upgrade() else {
                    return;
                };
                c.expire();
            }
        });
    }

    fn expire(self: &Arc<Self>) {
        let mut timers = Vec::new();
        {
            let mut groups = self.groups.lock().expect("groups lock poisoned");
            let now = Instant::now();
            for (name, g) in groups.iter_mut() {
                let before = g.members.len();
                g.members.retain(|id, m| {
                    let alive = now.duration_since(m.last_seen) < m.session;
                    if !alive {
                        tracing::info!(group = %name, member = %id, "Kafka group member's session expired");
                    }
                    alive
                });
                if g.members.len() < before && g.state != State::Joining {
                    if g.members.is_empty() {
                        g.become_empty();
                    } else {
                        timers.push((name.clone(), g.start_rebalance()));
                    }
                }
            }
            let expiry = self.limits.empty_group_expiry;
            groups.retain(|name, g| {
                let forget = forgotten(g.state, g.members.len(), g.empty_since, now, expiry);
                if forget {
                    tracing::debug!(group = %name, "forgetting an empty Kafka group");
                }
                !forget
            });
            metrics::gauge!("meridian_kafka_groups").set(groups.len() as f64);
        }
        for (name, (round, wait)) in timers {
            self.complete_after(name, round, wait);
        }
    }

    /// Completes round `round` of `group`'s join after `wait` unless it completed before.
    fn complete_after(self: &Arc<Self>, group: String, round: u64, wait: Duration) {
        let c = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let mut groups = c.groups.lock().expect("groups lock poisoned");
            if let Some(g) = groups.get_mut(&group)
                && g.state == State::Joining
                && g.round == round
            {
                g.complete_join();
            }
        });
    }

    pub(crate) async fn join(self: &Arc<Self>, j: Join) -> Joined {
        let fail = |error, member_id: String| Joined {
            error,
            member_id,
            ..Joined::default()
        };
        if j.session < Duration::from_millis(1000) || j.session > Duration::from_secs(300) {
            return fail(code::INVALID_SESSION_TIMEOUT, j.member_id);
        }
        let rx = {
            let mut groups = self.groups.lock().expect("groups lock poisoned");
            if !groups.contains_key(&j.group) && groups.len() >= self.limits.groups_max {
                self.refuse_new_group(&j.group, groups.len());
                return fail(code::COORDINATOR_NOT_AVAILABLE, j.member_id);
            }
            let g = groups.entry(j.group.clone()).or_insert_with(Group::new);
            let member_id = if j.member_id.is_empty() {
                let n = self
                    .next_member
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let id = format!("{}-{n}", j.client_id);
                if j.require_known_id {
                    return fail(code::MEMBER_ID_REQUIRED, id);
                }
                id
            } else {
                j.member_id.clone()
            };
            if !g.members.is_empty() && g.protocol_type != j.protocol_type {
                return fail(code::INCONSISTENT_GROUP_PROTOCOL, member_id);
            }
            g.protocol_type = j.protocol_type.clone();
            let known = g.members.contains_key(&member_id);
            let unchanged =
                known && g.state == State::Stable && g.members[&member_id].protocols == j.protocols;
            if unchanged && g.leader != member_id {
                // A follower rejoining with nothing new: answer with the current generation.
                let m = g.members.get_mut(&member_id).expect("known");
                m.last_seen = Instant::now();
                return Joined {
                    error: 0,
                    generation: g.generation,
                    protocol: g.protocol.clone(),
                    leader: g.leader.clone(),
                    member_id,
                    members: Vec::new(),
                };
            }
            let was_empty = g.state == State::Empty;
            g.members.insert(
                member_id.clone(),
                Member {
                    client_id: j.client_id.clone(),
                    protocols: j.protocols,
                    session: j.session,
                    rebalance: j.rebalance,
                    last_seen: Instant::now(),
                    assignment: Bytes::new(),
                    rejoined: true,
                },
            );
            if g.state != State::Joining {
                let (round, wait) = g.start_rebalance();
                g.members.get_mut(&member_id).expect("inserted").rejoined = true;
                let wait = if was_empty { INITIAL_DELAY } else { wait };
                self.complete_after(j.group.clone(), round, wait);
            }
            let (tx, rx) = oneshot::channel();
            g.joiners.push((member_id, tx));
            if !was_empty && g.members.values().all(|m| m.rejoined) {
                g.complete_join();
            }
            rx
        };
        rx.await
            .unwrap_or_else(|_| fail(code::REBALANCE_IN_PROGRESS, j.member_id))
    }

    pub(crate) async fn sync(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Synced {
        let rx = {
            let mut groups = self.groups.lock().expect("groups lock poisoned");
            let Some(g) = groups.get_mut(group) else {
                return (code::UNKNOWN_MEMBER_ID, Bytes::new());
            };
            if !g.members.contains_key(member_id) {
                return (code::UNKNOWN_MEMBER_ID, Bytes::new());
            }
            if generation != g.generation {
                return (code::ILLEGAL_GENERATION, Bytes::new());
            }
            if g.state == State::Joining {
                return (code::REBALANCE_IN_PROGRESS, Bytes::new());
            }
            g.members.get_mut(member_id).expect("checked").last_seen = Instant::now();
            if member_id == g.leader && g.state == State::Syncing {
                for (id, a) in assignments {
                    if let Some(m) = g.members.get_mut(&id) {
                        m.assignment = a;
                    }
                }
                g.state = State::Stable;
                for (id, tx) in g.syncers.drain(..) {
                    let a = g.members.get(&id).map(|m| m.assignment.clone());
                    let _ = tx.send(match a {
                        Some(a) => (0, a),
                        None => (code::UNKNOWN_MEMBER_ID, Bytes::new()),
                    });
                }
            }
            if g.state == State::Stable {
                return (0, g.members[member_id].assignment.clone());
            }
            let (tx, rx) = oneshot::channel();
            g.syncers.push((member_id.to_owned(), tx));
            rx
        };
        rx.await
            .unwrap_or((code::REBALANCE_IN_PROGRESS, Bytes::new()))
    }

    /// Forgets `group` for DeleteGroups: NON_EMPTY_GROUP while it has members (or some are
    /// joining), else it is gone (whether or not it was known).
    pub(crate) fn delete(&self, group: &str) -> Result<(), i16> {
        let mut groups = self.groups.lock().expect("groups lock poisoned");
        if let Some(g) = groups.get(group)
            && (!g.members.is_empty() || !g.joiners.is_empty())
        {
            return Err(code::NON_EMPTY_GROUP);
        }
        groups.remove(group);
        Ok(())
    }

    /// Whether `group` has members (OffsetDelete refuses while it does).
    pub(crate) fn has_members(&self, group: &str) -> bool {
        let groups = self.groups.lock().expect("groups lock poisoned");
        groups.get(group).is_some_and(|g| !g.members.is_empty())
    }

    /// Whether an OffsetCommit by `member_id` at `generation` is the group's (Kafka's
    /// classic fencing): a member of the current generation, or, with no generation (-1),
    /// a group with no members (one that only stores offsets here). A member of an older
    /// generation (a zombie, or one that missed a rebalance) is refused
    /// ILLEGAL_GENERATION, one the group does not know UNKNOWN_MEMBER_ID, and a commit
    /// while the group waits for its assignment REBALANCE_IN_PROGRESS.
    pub(crate) fn check_commit(&self, group: &str, member_id: &str, generation: i32) -> i16 {
        let groups = self.groups.lock().expect("groups lock poisoned");
        // A group this coordinator does not know (its state is in memory: it restarted,
        // or just became the coordinator) cannot fence: the commit stands, and the
        // members' next heartbeat tells them to rejoin.
        let Some(g) = groups.get(group) else {
            return 0;
        };
        if generation < 0 && member_id.is_empty() {
            return if g.members.is_empty() {
                0
            } else {
                code::UNKNOWN_MEMBER_ID
            };
        }
        if !g.members.contains_key(member_id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        if generation != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        if g.state == State::Syncing {
            return code::REBALANCE_IN_PROGRESS;
        }
        0
    }

    pub(crate) fn heartbeat(&self, group: &str, member_id: &str, generation: i32) -> i16 {
        let mut groups = self.groups.lock().expect("groups lock poisoned");
        let Some(g) = groups.get_mut(group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        let Some(m) = g.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        m.last_seen = Instant::now();
        if g.state == State::Joining {
            return code::REBALANCE_IN_PROGRESS;
        }
        if generation != g.generation {
            return code::ILLEGAL_GENERATION;
        }
        0
    }

    /// Counts and logs (at most once a second) a new group refused for `groups_max`.
    fn refuse_new_group(&self, group: &str, known: usize) {
        metrics::counter!("meridian_kafka_groups_refused_total").increment(1);
        let mut last = self.refused_logged.lock().expect("log lock poisoned");
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            tracing::warn!(
                group,
                known,
                "refused a new Kafka consumer group: {known} groups are known, the limit (kafka.groups_max); empty groups are forgotten after kafka.empty_group_expiry_ms"
            );
            *last = Some(Instant::now());
        }
    }

    /// Removes members; the others rebalance. Returns each member's error code.
    pub(crate) fn leave(self: &Arc<Self>, group: &str, members: &[String]) -> Vec<i16> {
        let (codes, timer) = {
            let mut groups = self.groups.lock().expect("groups lock poisoned");
            let Some(g) = groups.get_mut(group) else {
                return vec![code::UNKNOWN_MEMBER_ID; members.len()];
            };
            let codes: Vec<i16> = members
                .iter()
                .map(|id| {
                    if g.members.remove(id).is_some() {
                        0
                    } else {
                        code::UNKNOWN_MEMBER_ID
                    }
                })
                .collect();
            let timer = if g.members.is_empty() {
                g.become_empty();
                None
            } else if g.state != State::Joining {
                Some(g.start_rebalance())
            } else {
                None
            };
            (codes, timer)
        };
        if let Some((round, wait)) = timer {
            self.complete_after(group.to_owned(), round, wait);
        }
        codes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_group_empty_for_the_whole_expiry_is_forgotten() {
        let expiry = Duration::from_secs(600);
        let t = Instant::now();
        let later = t + expiry;
        assert!(forgotten(State::Empty, 0, t, later, expiry));
        assert!(!forgotten(
            State::Empty,
            0,
            t,
            later - Duration::from_millis(1),
            expiry
        ));
        // Members, or a rebalance under way, keep a group however old.
        assert!(!forgotten(State::Stable, 2, t, later + expiry, expiry));
        assert!(!forgotten(State::Joining, 0, t, later, expiry));
        assert!(!forgotten(State::Empty, 1, t, later, expiry));
        // A clock that seems to go back forgets nothing.
        assert!(!forgotten(State::Empty, 0, later, t, expiry));
    }

    #[tokio::test]
    async fn an_empty_group_is_forgotten_and_groups_are_bounded() {
        let c = Arc::new(Coordinator::new(GroupLimits {
            empty_group_expiry: Duration::from_secs(1),
            groups_max: 2,
        }));
        c.start();
        let a = c.join(join("a", "")).await;
        assert_eq!(a.error, 0);
        assert_eq!(c.join(join("b", "")).await.error, 0);
        // A third group is refused while two are known; the known ones go on.
        assert_eq!(
            c.join(join("c", "")).await.error,
            code::COORDINATOR_NOT_AVAILABLE
        );
        assert_eq!(c.join(join("a", &a.member_id)).await.error, 0);
        assert_eq!(c.leave("a", std::slice::from_ref(&a.member_id)), vec![0]);
        assert_eq!(c.list().len(), 2, "empty for less than the expiry: kept");
        let names = || -> Vec<String> { c.list().into_iter().map(|(n, ..)| n).collect() };
        let deadline = Instant::now() + Duration::from_secs(5);
        while names().len() == 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            names(),
            vec!["b".to_owned()],
            "a is forgotten, b has a member"
        );
        assert_eq!(c.join(join("c", "")).await.error, 0, "room for a new group");
    }

    fn join(group: &str, member: &str) -> Join {
        Join {
            group: group.into(),
            member_id: member.into(),
            client_id: "c".into(),
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"meta"))],
            session: Duration::from_secs(10),
            rebalance: Duration::from_secs(2),
            require_known_id: false,
        }
    }

    #[tokio::test]
    async fn two_members_join_sync_and_one_leaves() {
        let c = Arc::new(Coordinator::default());
        c.start();
        let (a, b) = tokio::join!(c.join(join("g", "")), c.join(join("g", "")));
        assert_eq!((a.error, b.error), (0, 0));
        assert_eq!(a.generation, b.generation);
        assert_eq!(a.leader, b.leader);
        let (leader, follower) = if a.member_id == a.leader {
            (a, b)
        } else {
            (b, a)
        };
        assert_eq!(leader.members.len(), 2);
        assert!(follower.members.is_empty());
        assert_eq!(leader.protocol, "range");
        let assignments = vec![
            (leader.member_id.clone(), Bytes::from_static(b"p0")),
            (follower.member_id.clone(), Bytes::from_static(b"p1")),
        ];
        let (fs, ls) = tokio::join!(
            c.sync("g", &follower.member_id, follower.generation, Vec::new()),
            c.sync("g", &leader.member_id, leader.generation, assignments)
        );
        assert_eq!(fs, (0, Bytes::from_static(b"p1")));
        assert_eq!(ls, (0, Bytes::from_static(b"p0")));
        let described = c.describe("g").expect("the group is known");
        assert_eq!(
            (described.state, described.protocol.as_str()),
            ("Stable", "range")
        );
        let mut members: Vec<_> = described
            .members
            .iter()
            .map(|(id, client, meta, assignment)| {
                (
                    id.clone(),
                    client.as_str(),
                    meta.clone(),
                    assignment.clone(),
                )
            })
            .collect();
        members.sort();
        let mut expected = vec![
            (
                leader.member_id.clone(),
                "c",
                Bytes::from_static(b"meta"),
                Bytes::from_static(b"p0"),
            ),
            (
                follower.member_id.clone(),
                "c",
                Bytes::from_static(b"meta"),
                Bytes::from_static(b"p1"),
            ),
        ];
        expected.sort();
        assert_eq!(members, expected);
        assert_eq!(
            c.list(),
            vec![("g".to_owned(), "consumer".to_owned(), "Stable")]
        );
        assert!(c.describe("other").is_none());
        assert_eq!(
            c.heartbeat("g", &follower.member_id, follower.generation),
            0
        );
        // Commits are fenced: the current generation's members only; no simple commits
        // into a group with members; any commit where the group is unknown here.
        let generation = follower.generation;
        assert_eq!(c.check_commit("g", &follower.member_id, generation), 0);
        assert_eq!(
            c.check_commit("g", &follower.member_id, generation - 1),
            code::ILLEGAL_GENERATION
        );
        assert_eq!(
            c.check_commit("g", "zombie", generation),
            code::UNKNOWN_MEMBER_ID
        );
        assert_eq!(c.check_commit("g", "", -1), code::UNKNOWN_MEMBER_ID);
        assert_eq!(c.check_commit("unknown", "", -1), 0);
        // The leader leaves: the follower hears of a rebalance and rejoins alone.
        assert_eq!(
            c.leave("g", std::slice::from_ref(&leader.member_id)),
            vec![0]
        );
        assert_eq!(
            c.heartbeat("g", &follower.member_id, follower.generation),
            code::REBALANCE_IN_PROGRESS
        );
        let again = c.join(join("g", &follower.member_id)).await;
        assert_eq!(again.error, 0);
        assert_eq!(again.generation, follower.generation + 1);
        // The leader that left, and the old generation, commit nothing more.
        assert_eq!(
            c.check_commit("g", &leader.member_id, again.generation),
            code::UNKNOWN_MEMBER_ID
        );
        assert_ne!(c.check_commit("g", &follower.member_id, generation), 0);
        assert_eq!(again.leader, follower.member_id);
        assert_eq!(
            c.heartbeat("g", "nobody", again.generation),
            code::UNKNOWN_MEMBER_ID
        );
    }
}
