//! Which replicas of a log group are in sync — Kafka's ISR — decided without I/O.
//!
//! A follower is in sync when it has caught up with the leader's log end at some moment
//! within the last `lag` (Kafka's `replica.lag.time.max.ms`) and acknowledged the leader
//! within `lag`. "Caught up at time t" means its matched position reached the end the
//! leader had at t: a follower a few entries behind under a steady stream of writes stays
//! in sync, one that stopped (SIGSTOP, a dead process, a partition) falls out after `lag`.
//! The leader is always in sync.
//!
//! [`InSync`] is fed observations (the time, the leader's log end, each follower's matched
//! position and last acknowledgement) by whoever watches replication — raft metrics or a
//! master's slave positions — and answers [`InSync::members`].
//!
//! The set decides two things: what Kafka's Metadata reports as a partition's ISR, and
//! whether an `acks=all` produce may be written at all when `min_insync_replicas` asks for
//! more replicas than are in sync (Kafka's NOT_ENOUGH_REPLICAS). How many replicas an
//! `acks=all` produce waits for is [`acks_all_needs`].

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Observations kept at most (one per observation inside `lag`); older ones are dropped
/// first, so a burst of observations cannot grow memory.
const SAMPLES_MAX: usize = 1024;

/// What the leader knows of one follower at an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Follower {
    /// The follower's broker id.
    pub id: u32,
    /// The log position (raft index, or journal position) it is known to hold.
    pub matched: Option<u64>,
    /// When it last acknowledged the leader.
    pub last_ack: Option<Instant>,
}

/// The in-sync tracker of one log group on its leader.
#[derive(Debug, Clone)]
pub struct InSync {
    lag: Duration,
    /// `(time, leader's log end)` observations within `lag`, oldest first.
    samples: VecDeque<(Instant, u64)>,
    /// Per follower: the latest time it was caught up, and its last acknowledgement.
    followers: HashMap<u32, (Option<Instant>, Option<Instant>)>,
}

impl InSync {
    /// A tracker with the given lag (a fresh leader: no follower is in sync until observed).
    pub fn new(lag: Duration) -> InSync {
        InSync {
            lag,
            samples: VecDeque::new(),
            followers: HashMap::new(),
        }
    }

    /// Records an observation at `now`: the leader's log end and what it knows of each
    /// follower. Followers not named are forgotten (they left the group).
    pub fn observe(&mut self, now: Instant, leader_end: u64, followers: &[Follower]) {
        if self
            .samples
            .back()
            .is_none_or(|&(_, end)| end != leader_end)
        {
            self.samples.push_back((now, leader_end));
        } else if let Some(last) = self.samples.back_mut() {
            // The same end: the newest time it was the end is what matters.
            last.0 = now;
        }
        while self.samples.len() > SAMPLES_MAX
            || self.samples.front().is_some_and(|&(t, _)| {
                now.saturating_duration_since(t) > self.lag && self.samples.len() > 1
            })
        {
            self.samples.pop_front();
        }
        self.followers
            .retain(|id, _| followers.iter().any(|f| f.id == *id));
        for f in followers {
            let entry = self.followers.entry(f.id).or_insert((None, None));
            if let Some(matched) = f.matched {
                // The newest observation whose end it had reached.
                if let Some(&(t, _)) = self.samples.iter().rev().find(|&&(_, end)| end <= matched) {
                    entry.0 = Some(entry.0.map_or(t, |c| c.max(t)));
                }
            }
            if f.last_ack.is_some() {
                entry.1 = f.last_ack;
            }
        }
    }

    /// The replicas in sync at `now`: the leader, then each follower caught up and heard
    /// from within `lag`, in id order.
    pub fn members(&self, now: Instant, leader: u32) -> Vec<u32> {
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| now.saturating_duration_since(t) <= self.lag);
        let mut out: Vec<u32> = self
            .followers
            .iter()
            .filter(|(_, (caught_up, acked))| recent(*caught_up) && recent(*acked))
            .map(|(&id, _)| id)
            .collect();
        out.push(leader);
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// How many replicas (the leader included) must hold a batch before an `acks=all` produce
/// is answered: the commit quorum of `replicas`, or `min_insync` when that asks for more
/// (never more than there are replicas). Never every replica: a stopped follower must not
/// stop acknowledgements.
pub fn acks_all_needs(replicas: usize, commit_quorum: usize, min_insync: u32) -> usize {
    commit_quorum.max(min_insync as usize).min(replicas.max(1))
}

/// How long a follower trusts the in-sync set its leader last announced.
pub const ANNOUNCED_FOR: Duration = Duration::from_secs(3);

/// How often [`Announced::watch_pauses`] ticks.
const TICK: Duration = Duration::from_millis(100);
/// A gap between ticks this long means the process was not running (SIGSTOP, a paused VM,
/// a starved machine).
const PAUSE_GAP: Duration = Duration::from_secs(1);
/// After a pause, announcements arriving this soon are not trusted: they may be requests
/// the leader sent long ago, waiting in the socket while the process was stopped, and
/// handled now in any order (each on a task of its own).
const SETTLE: Duration = Duration::from_secs(1);

/// The in-sync sets leaders announced to this broker, by log group: a leader sends its set
/// with each heartbeat, so a follower answers Kafka's Metadata with the leader's ISR rather
/// than every replica. One entry per log group this broker hosts (forgotten when it stops
/// hosting one).
#[derive(Debug, Clone, Default)]
pub struct Announced {
    sets: std::sync::Arc<std::sync::Mutex<HashMap<u32, AnnouncedSet>>>,
    pauses: std::sync::Arc<std::sync::Mutex<Pauses>>,
}

/// A leader's in-sync set and when it arrived.
type AnnouncedSet = (Vec<u32>, Instant);

/// When this process last ran and last came back from a pause: an announcement's arrival
/// time is when it was handled, not when the leader sent it, so after a pause the requests
/// that waited in the socket look fresh — one sent before the leader dropped this follower
/// from its in-sync set would make a follower far behind call itself in sync.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Pauses {
    /// The last tick (`None`: nothing watches, every announcement is taken at its time).
    last_tick: Option<Instant>,
    /// When a pause last ended.
    resumed: Option<Instant>,
}

impl Pauses {
    fn tick(&mut self, now: Instant) {
        if self
            .last_tick
            .is_some_and(|last| now.saturating_duration_since(last) > PAUSE_GAP)
        {
            self.resumed = Some(now);
        }
        self.last_tick = Some(now);
    }

    /// Whether an announcement that arrived `at` may be believed `now`.
    fn trusts(&self, at: Instant, now: Instant) -> bool {
        // A pause not noticed yet: the process has just resumed.
        let unnoticed = self
            .last_tick
            .is_some_and(|last| now.saturating_duration_since(last) > PAUSE_GAP);
        let settling = self.resumed.is_some_and(|r| at < r + SETTLE);
        !unnoticed && !settling
    }
}

impl Announced {
    /// Log group `group`'s leader announced `members` at `now`.
    pub fn announce(&self, group: u32, members: Vec<u32>, now: Instant) {
        self.sets
            .lock()
            .expect("announced lock poisoned")
            .insert(group, (members, now));
    }

    /// What `group`'s leader announced last, unless that is older than [`ANNOUNCED_FOR`]
    /// or may have waited out a pause of this process.
    pub fn get(&self, group: u32, now: Instant) -> Option<Vec<u32>> {
        let pauses = *self.pauses.lock().expect("pauses lock poisoned");
        let sets = self.sets.lock().expect("announced lock poisoned");
        let (members, at) = sets.get(&group)?;
        (now.saturating_duration_since(*at) <= ANNOUNCED_FOR && pauses.trusts(*at, now))
            .then(|| members.clone())
    }

    /// Notices pauses of this process (forever; spawned once per broker).
    pub async fn watch_pauses(self) {
        loop {
            self.pauses
                .lock()
                .expect("pauses lock poisoned")
                .tick(Instant::now());
            tokio::time::sleep(TICK).await;
        }
    }

    /// This broker no longer hosts `group`.
    pub fn forget(&self, group: u32) {
        self.sets
            .lock()
            .expect("announced lock poisoned")
            .remove(&group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: Duration = Duration::from_millis(1500);

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    fn follower(id: u32, matched: u64, last_ack: Instant) -> Follower {
        Follower {
            id,
            matched: Some(matched),
            last_ack: Some(last_ack),
        }
    }

    #[test]
    fn a_fresh_leader_is_alone_until_it_hears_from_followers() {
        let t0 = Instant::now();
        let mut isr = InSync::new(LAG);
        assert_eq!(isr.members(t0, 1), vec![1]);
        isr.observe(
            t0,
            10,
            &[
                Follower {
                    id: 2,
                    matched: None,
                    last_ack: None,
                },
                follower(3, 10, t0),
            ],
        );
        assert_eq!(isr.members(t0, 1), vec![1, 3]);
    }

    #[test]
    fn a_follower_a_little_behind_under_steady_writes_stays_in_sync() {
        let t0 = Instant::now();
        let mut isr = InSync::new(LAG);
        // The leader's end grows by 10 every 100 ms; follower 2 is always one
        // observation behind, follower 3 exactly caught up.
        for step in 0..100u64 {
            let now = at(t0, step * 100);
            let end = step * 10;
            isr.observe(
                now,
                end,
                &[
                    follower(2, end.saturating_sub(10), now),
                    follower(3, end, now),
                ],
            );
            assert_eq!(isr.members(now, 1), vec![1, 2, 3], "at step {step}");
        }
    }

    #[test]
    fn a_stopped_follower_drops_out_after_the_lag_and_comes_back_once_caught_up() {
        let t0 = Instant::now();
        let mut isr = InSync::new(LAG);
        let mut stopped_at = None;
        for step in 0..60u64 {
            let now = at(t0, step * 100);
            let end = step * 10;
            // Follower 2 stops at step 10: its position and acknowledgement freeze.
            let f2 = if step < 10 {
                follower(2, end, now)
            } else {
                *stopped_at.get_or_insert(follower(2, 90, at(t0, 900)))
            };
            isr.observe(now, end, &[f2, follower(3, end, now)]);
            let members = isr.members(now, 1);
            let elapsed =
                Duration::from_millis(step * 100).saturating_sub(Duration::from_millis(900));
            if elapsed <= LAG {
                assert_eq!(members, vec![1, 2, 3], "at step {step}");
            } else {
                assert_eq!(members, vec![1, 3], "at step {step}");
            }
        }
        // It resumes, behind: not in sync until it has reached an end the leader had
        // within the lag.
        let now = at(t0, 6000);
        isr.observe(now, 600, &[follower(2, 300, now), follower(3, 600, now)]);
        assert_eq!(isr.members(now, 1), vec![1, 3]);
        let now = at(t0, 6100);
        isr.observe(now, 610, &[follower(2, 600, now), follower(3, 610, now)]);
        assert_eq!(isr.members(now, 1), vec![1, 2, 3]);
    }

    #[test]
    fn a_follower_that_acknowledges_but_stays_more_than_the_lag_behind_is_out() {
        let t0 = Instant::now();
        let mut isr = InSync::new(LAG);
        for step in 0..40u64 {
            let now = at(t0, step * 100);
            // Follower 2 answers every heartbeat but holds only what the leader had 2 s
            // earlier (the end grows by 100 every 100 ms): more than the lag behind.
            isr.observe(now, 2000 + step * 100, &[follower(2, step * 100, now)]);
        }
        assert_eq!(isr.members(at(t0, 3900), 1), vec![1]);
    }

    #[test]
    fn a_follower_that_left_the_group_is_forgotten() {
        let t0 = Instant::now();
        let mut isr = InSync::new(LAG);
        isr.observe(t0, 5, &[follower(2, 5, t0), follower(3, 5, t0)]);
        isr.observe(at(t0, 100), 5, &[follower(3, 5, at(t0, 100))]);
        assert_eq!(isr.members(at(t0, 100), 1), vec![1, 3]);
    }

    #[test]
    fn samples_stay_bounded() {
        let t0 = Instant::now();
        let mut isr = InSync::new(Duration::from_secs(3600));
        for i in 0..10_000u64 {
            isr.observe(at(t0, i), i, &[]);
        }
        assert!(isr.samples.len() <= SAMPLES_MAX);
    }

    #[test]
    fn acks_all_waits_for_the_quorum_or_min_insync_never_every_replica() {
        // Three replicas, quorum two.
        assert_eq!(acks_all_needs(3, 2, 0), 2);
        assert_eq!(acks_all_needs(3, 2, 1), 2);
        assert_eq!(acks_all_needs(3, 2, 3), 3);
        // More than there are replicas is capped (the topic was created before a shrink).
        assert_eq!(acks_all_needs(3, 2, 5), 3);
        // A broker alone.
        assert_eq!(acks_all_needs(1, 1, 2), 1);
    }

    #[test]
    fn an_announced_set_is_trusted_for_a_while_then_forgotten() {
        let board = Announced::default();
        let t0 = Instant::now();
        assert_eq!(board.get(4, t0), None);
        board.announce(4, vec![1, 3], t0);
        assert_eq!(board.get(4, t0 + ANNOUNCED_FOR), Some(vec![1, 3]));
        assert_eq!(
            board.get(4, t0 + ANNOUNCED_FOR + Duration::from_millis(1)),
            None
        );
        board.announce(4, vec![1], t0 + Duration::from_secs(1));
        assert_eq!(board.get(4, t0 + Duration::from_secs(2)), Some(vec![1]));
        board.forget(4);
        assert_eq!(board.get(4, t0 + Duration::from_secs(2)), None);
    }

    #[test]
    fn after_a_pause_announcements_that_waited_in_the_socket_are_not_believed() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = Pauses::default();
        // Nothing watching: taken at its time.
        assert!(p.trusts(t0, t0));
        p.tick(t0);
        p.tick(ms(100));
        assert!(p.trusts(ms(150), ms(190)));
        // Stopped from 100 ms to 5 s: a request handled on resuming, before the next
        // tick, is not believed (the pause is not noticed yet)...
        assert!(!p.trusts(ms(5_000), ms(5_010)));
        p.tick(ms(5_020));
        assert_eq!(p.resumed, Some(ms(5_020)));
        // ...nor one handled just before the tick noticed, nor soon after.
        assert!(!p.trusts(ms(5_000), ms(5_030)));
        assert!(!p.trusts(ms(5_900), ms(5_950)));
        // One arriving once the socket's backlog is surely handled is.
        p.tick(ms(6_000));
        p.tick(ms(6_100));
        assert!(p.trusts(ms(6_050), ms(6_100)));
    }
}
