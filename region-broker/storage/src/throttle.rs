//! Rate-limited logging of a failure that repeats: a full disk fails every retry (every
//! group commit, every index flush, every replication retry) until space returns, and one
//! line per retry would flood the log with the same message. A [`LogThrottle`] lets the
//! first failure through, then at most one per interval with how many happened since, and
//! says when the failures stopped.

use std::time::{Duration, Instant};

/// How often a repeating failure is logged at most, by default.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Rate limit of one repeating failure's log line.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    /// When the failure was last logged, and when this run of failures began.
    last: Option<(Instant, Instant)>,
    /// Failures since the last logged one.
    suppressed: u64,
    /// Failures in this run, logged or not.
    total: u64,
}

impl Default for LogThrottle {
    fn default() -> LogThrottle {
        LogThrottle::new(LOG_EVERY)
    }
}

impl LogThrottle {
    /// A throttle letting one failure through per `every`.
    pub fn new(every: Duration) -> LogThrottle {
        LogThrottle {
            every,
            last: None,
            suppressed: 0,
            total: 0,
        }
    }

    /// Counts a failure. `Some(n)`: log it now, mentioning the `n` failures not logged
    /// since the last line; `None`: stay quiet.
    pub fn failed(&mut self) -> Option<u64> {
        let now = Instant::now();
        self.total += 1;
        match &mut self.last {
            Some((last, _)) if now.duration_since(*last) < self.every => {
                self.suppressed += 1;
                None
            }
            Some((last, _)) => {
                *last = now;
                Some(std::mem::take(&mut self.suppressed))
            }
            None => {
                self.last = Some((now, now));
                Some(0)
            }
        }
    }

    /// Counts a success. `Some((failures, duration))` when it ends a run of failures (log
    /// that it recovered).
    pub fn succeeded(&mut self) -> Option<(u64, Duration)> {
        let (_, began) = self.last.take()?;
        self.suppressed = 0;
        Some((std::mem::take(&mut self.total), began.elapsed()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_failure_then_one_per_interval_with_the_count() {
        let mut t = LogThrottle::new(Duration::from_millis(200));
        assert_eq!(t.failed(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.failed(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(t.failed(), Some(5));
        assert_eq!(t.failed(), None);
        let (failures, _) = t.succeeded().expect("a run of failures ended");
        assert_eq!(failures, 8);
        assert_eq!(t.succeeded(), None);
        assert_eq!(t.failed(), Some(0), "a new run is logged at once");
    }
}
