//! Login throttling as decisions (state in, answer out, the clock passed in): each key — a
//! client address, a user name — may fail [`FREE_FAILURES`] times in a row; every failure
//! after that makes the next attempt wait, twice as long each time (1 s, 2 s, 4 s, … at
//! most [`WAIT_MAX`]); an attempt that must wait is refused before its password is
//! checked. A success clears the name and the address. At most `max` keys are kept (past
//! it those whose wait is over go first, then the least recently seen).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Failures in a row a key may have before attempts must wait.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait.
pub const WAIT_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    until: Instant,
    seen: Instant,
}

/// Failures per key (see the module's text).
#[derive(Debug)]
pub struct Throttle {
    entries: HashMap<String, Entry>,
    max: usize,
}

impl Throttle {
    /// A throttle keeping at most `max` keys.
    pub fn new(max: usize) -> Throttle {
        Throttle {
            entries: HashMap::new(),
            max: max.max(1),
        }
    }

    /// Whether an attempt concerning `keys` may be checked at `now`; else how long the
    /// longest of their waits still runs.
    pub fn check(&self, keys: &[&str], now: Instant) -> Result<(), Duration> {
        let wait = keys
            .iter()
            .filter_map(|k| self.entries.get(*k))
            .map(|e| e.until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// An attempt concerning `keys` failed at `now`.
    pub fn failed(&mut self, keys: &[&str], now: Instant) {
        for k in keys {
            if !self.entries.contains_key(*k) {
                self.make_room(now);
            }
            let e = self.entries.entry((*k).to_owned()).or_insert(Entry {
                failures: 0,
                until: now,
                seen: now,
            });
            e.failures = e.failures.saturating_add(1);
            e.seen = now;
            if e.failures > FREE_FAILURES {
                let doublings = (e.failures - FREE_FAILURES - 1).min(16);
                e.until = now + Duration::from_secs(1 << doublings).min(WAIT_MAX);
            }
        }
    }

    /// An attempt concerning `keys` succeeded: their failures are forgotten.
    pub fn succeeded(&mut self, keys: &[&str]) {
        for k in keys {
            self.entries.remove(*k);
        }
    }

    /// Keys kept now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        if self.entries.len() < self.max {
            return;
        }
        self.entries
            .retain(|_, e| e.until > now || now.duration_since(e.seen) < WAIT_MAX);
        while self.entries.len() >= self.max {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.seen)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_free_ones_wait_twice_as_long_each_time() {
        let mut t = Throttle::new(100);
        let now = Instant::now();
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.check(&["1.2.3.4", "admin"], now), Ok(()));
            t.failed(&["1.2.3.4", "admin"], now);
        }
        // The free ones used: the next failure makes attempts wait 1 s, then 2 s, 4 s.
        assert_eq!(t.check(&["1.2.3.4"], now), Ok(()));
        t.failed(&["1.2.3.4", "admin"], now);
        assert_eq!(t.check(&["1.2.3.4"], now), Err(Duration::from_secs(1)));
        // The name waits too, from any address.
        assert_eq!(
            t.check(&["5.6.7.8", "admin"], now),
            Err(Duration::from_secs(1))
        );
        assert_eq!(t.check(&["5.6.7.8", "ana"], now), Ok(()));
        let later = now + Duration::from_secs(1);
        assert_eq!(t.check(&["1.2.3.4", "admin"], later), Ok(()));
        t.failed(&["1.2.3.4", "admin"], later);
        assert_eq!(t.check(&["admin"], later), Err(Duration::from_secs(2)));
        t.failed(&["admin"], later);
        assert_eq!(t.check(&["admin"], later), Err(Duration::from_secs(4)));
        // A success forgets.
        t.succeeded(&["1.2.3.4", "admin"]);
        assert_eq!(t.check(&["1.2.3.4", "admin"], later), Ok(()));
    }

    #[test]
    fn the_wait_stops_growing_at_its_maximum() {
        let mut t = Throttle::new(10);
        let now = Instant::now();
        for _ in 0..100 {
            t.failed(&["k"], now);
        }
        assert_eq!(t.check(&["k"], now), Err(WAIT_MAX));
    }

    #[test]
    fn it_keeps_at_most_max_keys() {
        let mut t = Throttle::new(3);
        let now = Instant::now();
        for (i, k) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            t.failed(&[k], now + Duration::from_millis(i as u64));
        }
        assert_eq!(t.len(), 3);
        // The least recently seen went first.
        for _ in 0..10 {
            t.failed(&["e"], now + Duration::from_secs(1));
        }
        assert!(t.check(&["e"], now + Duration::from_secs(1)).is_err());
        assert_eq!(t.len(), 3);
    }
}
