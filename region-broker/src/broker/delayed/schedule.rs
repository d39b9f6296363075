//! Delayed delivery's decision core: which timers of one log group are pending, which are
//! due, and what the log says was fired; no I/O. The shell (`super`) replays the timers
//! partition into it, asks it what is due, writes a [`Round`] record before appending the
//! fired batches, and reports what it appended.
//!
//! A timer is known by its offset in the timers partition (its id) and its deliver-at
//! time; its batch stays in the journal, so memory holds 16 bytes (and the set's overhead)
//! per pending timer, at most [`Limits::pending_max`] per log group.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A pending timer: `(deliver_at_ms, id)`; ordered by when it is due.
pub type Timer = (i64, u64);

/// Bounds and timings.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Pending timers a log group holds at most: a delayed produce past it is refused.
    pub pending_max: usize,
    /// Timers fired in one round at most.
    pub round_max: usize,
    /// The longest delay.
    pub delay_max_ms: i64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            pending_max: 2_000_000,
            round_max: 4_096,
            delay_max_ms: 365 * 24 * 3_600_000,
        }
    }
}

/// What one firing round appends to one partition: the batch made of `timers`' messages
/// in order, written at or after `end` (the partition's end before the round).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fire {
    /// The partition's topic id.
    pub topic_id: u32,
    /// The partition.
    pub partition: u32,
    /// The partition's end offset before the round: the fired batch is at or after it.
    pub end: u64,
    /// The timers whose messages the batch holds, in order.
    pub timers: Vec<Timer>,
}

/// The record a round writes to the timers partition before appending anything: these
/// timers are fired. A new leader checks the last one's batches are in their partitions
/// (the old leader may have died between this record and its appends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Round {
    /// One per partition the round appends to.
    pub fires: Vec<Fire>,
}

/// Why a delayed produce is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelayError {
    /// The deliver-at time is out of bounds.
    #[error("{0}")]
    Invalid(String),
    /// Too many pending timers.
    #[error(
        "this log group holds {0} pending timers, its limit: wait for some to fire, or spread delayed messages over more partitions"
    )]
    Full(usize),
}

/// The pending timers of one log group.
#[derive(Debug, Default)]
pub struct Schedule {
    limits: Limits,
    pending: BTreeSet<Timer>,
    /// The last round replayed or written: the one whose appends a new leader checks.
    last_round: Option<Round>,
}

impl Schedule {
    /// An empty schedule.
    pub fn new(limits: Limits) -> Schedule {
        Schedule {
            limits,
            ..Schedule::default()
        }
    }

    /// Checks a delayed produce at `now_ms`: its deliver-at time and room for one more
    /// timer. (The journal's retention bounds nothing: a timer whose record ages is
    /// written again.)
    pub fn admit(&self, deliver_at_ms: i64, now_ms: i64) -> Result<(), DelayError> {
        let delay = deliver_at_ms.saturating_sub(now_ms);
        if delay > self.limits.delay_max_ms {
            return Err(DelayError::Invalid(format!(
                "deliver-at {deliver_at_ms} is {delay} ms ahead; the longest delay is {} ms (365 days)",
                self.limits.delay_max_ms
            )));
        }
        if self.pending.len() >= self.limits.pending_max {
            return Err(DelayError::Full(self.pending.len()));
        }
        Ok(())
    }

    /// A timer record read from the log.
    pub fn add(&mut self, timer: Timer) {
        self.pending.insert(timer);
    }

    /// A round record read from the log (or just written): its timers are no longer
    /// pending.
    pub fn fired(&mut self, round: Round) {
        for f in &round.fires {
            for t in &f.timers {
                self.pending.remove(t);
            }
        }
        self.last_round = Some(round);
    }

    /// The last round, whose appends a new leader must find (`None`: none since the
    /// replay's start). Taken: asked once per load.
    pub fn take_last_round(&mut self) -> Option<Round> {
        self.last_round.take()
    }

    /// A timer whose record is gone (retention deleted it): no longer pending.
    pub fn forget(&mut self, timer: Timer) {
        self.pending.remove(&timer);
    }

    /// Timers of a round whose batch a new leader did not find: pending again.
    pub fn refire(&mut self, timers: &[Timer]) {
        self.pending.extend(timers.iter().copied());
    }

    /// The timers due at `now_ms`, earliest first, at most a round's worth.
    pub fn due(&self, now_ms: i64) -> Vec<Timer> {
        self.pending
            .iter()
            .take_while(|(at, _)| *at <= now_ms)
            .take(self.limits.round_max)
            .copied()
            .collect()
    }

    /// When the next timer is due.
    pub fn next_due(&self) -> Option<i64> {
        self.pending.first().map(|(at, _)| *at)
    }

    /// How many are pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Pending timers with an id below `id` (their records are the oldest), at most a
    /// round's worth (a walk over every pending timer: the shell asks seldom).
    pub fn older_than(&self, id: u64) -> Vec<Timer> {
        self.pending
            .iter()
            .filter(|(_, t)| *t < id)
            .take(self.limits.round_max)
            .copied()
            .collect()
    }

    /// The lowest id still pending: a replay may start there (a walk over every pending
    /// timer: the shell asks seldom).
    pub fn lowest_id(&self) -> Option<u64> {
        self.pending.iter().map(|(_, id)| *id).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: i64 = 24 * 3_600_000;

    #[test]
    fn deliver_at_is_bounded_by_a_year() {
        let s = Schedule::new(Limits::default());
        assert!(s.admit(1_000 + DAY, 1_000).is_ok());
        assert!(s.admit(1_000 + 366 * DAY, 1_000).is_err());
        assert!(s.admit(1_000 + 364 * DAY, 1_000).is_ok());
        // A time already past fires at once.
        assert!(s.admit(0, 1_000).is_ok());
    }

    #[test]
    fn the_oldest_records_are_found_by_id() {
        let mut s = Schedule::new(Limits::default());
        for (at, id) in [(50, 3), (10, 9), (90, 1), (20, 12)] {
            s.add((at, id));
        }
        let mut old = s.older_than(10);
        old.sort_by_key(|t| t.1);
        assert_eq!(old, [(90, 1), (50, 3), (10, 9)]);
    }

    #[test]
    fn a_full_schedule_refuses_more() {
        let mut s = Schedule::new(Limits {
            pending_max: 2,
            ..Limits::default()
        });
        s.add((5, 0));
        s.add((6, 1));
        assert_eq!(s.admit(7, 0), Err(DelayError::Full(2)));
    }

    proptest! {
        /// Whatever the order timers arrive in, rounds fire each exactly once, never
        /// before it is due, earliest first; and a schedule rebuilt from the records
        /// (timers and rounds, as the log holds them) has the same pending timers, the
        /// unfinished last round's timers pending again.
        #[test]
        fn every_timer_fires_once_in_time_and_a_replay_agrees(
            delays in proptest::collection::vec(0i64..10_000, 1..300),
            round_max in 1usize..50,
            lose_last in any::<bool>(),
        ) {
            let limits = Limits { round_max, ..Limits::default() };
            let mut s = Schedule::new(limits.clone());
            let mut log: Vec<Result<Timer, Round>> = Vec::new();
            for (id, d) in delays.iter().enumerate() {
                s.add((*d, id as u64));
                log.push(Ok((*d, id as u64)));
            }
            let mut fired = Vec::new();
            let mut now = 0;
            while !s.is_empty() {
                now += 97;
                let due = s.due(now);
                prop_assert!(due.len() <= round_max);
                if due.is_empty() { continue; }
                prop_assert!(due.iter().all(|(at, _)| *at <= now), "fired early");
                let round = Round { fires: vec![Fire { topic_id: 1, partition: 0, end: 0, timers: due.clone() }] };
                log.push(Err(round.clone()));
                s.fired(round);
                fired.extend(due);
            }
            let mut ids: Vec<u64> = fired.iter().map(|t| t.1).collect();
            ids.sort_unstable();
            prop_assert_eq!(ids, (0..delays.len() as u64).collect::<Vec<_>>());
            prop_assert!(fired.windows(2).all(|w| w[0] <= w[1]), "earliest first");

            // A new leader replays the log; the last round's batch may be missing.
            let mut r = Schedule::new(limits);
            for rec in log {
                match rec { Ok(t) => r.add(t), Err(round) => r.fired(round) }
            }
            let last = r.take_last_round().expect("a round was written");
            if lose_last {
                r.refire(&last.fires[0].timers);
                prop_assert_eq!(r.len(), last.fires[0].timers.len());
            } else {
                prop_assert!(r.is_empty());
            }
        }
    }
}
