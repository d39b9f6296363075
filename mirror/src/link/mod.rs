//! The mirror link protocol as state machines without I/O, as `quinn-proto` is to `quinn`:
//! no tokio, no QUIC, no brokers. Each side is fed what happened (a frame arrived, a read
//! of the origin group returned, an append finished, a stream ended) and is polled for what
//! to do next (frames to send, reads to issue, batches to append, streams to close).
//! [`crate::sender`] and [`crate::receiver`] are the shells that carry the actions out over
//! quinn and the region's brokers.
//!
//! - [`sender::ShipStream`]: one stream shipping one origin log group: `Hello`, waiting for
//!   `Resume`, the window of frames shipped but not acknowledged, acknowledgements.
//! - [`receiver::Receiver`]: every inbound stream of a region: checks each `Hello`, asks
//!   for the origin group's mark and answers `Resume` one past it, appends the shipped
//!   batches one at a time in seq order and acknowledges a frame once all of it is held,
//!   and lets a newer stream for the same origin group replace the older one.
//! - [`Backoff`]: when to try again after a failure (a clock passed in).
//!
//! The safety argument (idempotent appends by origin seq, resume from the receiver's
//! marks) is in [`receiver`]; `tests/link_sim.rs` drives two regions' cores against each
//! other through a link that loses, duplicates, delays and reorders, and restarts sides.

use std::time::{Duration, Instant};

pub mod receiver;
pub mod sender;

/// Why a stream of the link stopped, as the protocol sees it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The other side refused the stream (its reason).
    #[error("the peer refused the stream: {0}")]
    Refused(String),
    /// This side refuses the stream: a `Refuse` with the reason is sent, then the stream
    /// closes.
    #[error("refusing the stream: {0}")]
    Refusing(Refusal),
    /// A frame the protocol does not allow at this point.
    #[error("the peer broke the protocol: expected {expected}, got {got}")]
    Unexpected {
        /// What the protocol allows here.
        expected: &'static str,
        /// The kind of frame received.
        got: &'static str,
    },
    /// The other side ended the stream.
    #[error("the peer closed the stream")]
    Closed,
    /// A newer stream for the same origin group replaced this one.
    #[error("a newer stream for the same origin replaced this one")]
    Replaced,
}

/// Why a receiver refuses a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The sender speaks another protocol version.
    #[error(
        "link protocol version {version} is not supported (this mirror speaks {ours}): upgrade the older mirror"
    )]
    Version {
        /// The version the sender announced.
        version: u16,
        /// Ours.
        ours: u16,
    },
    /// A region's mirror dialled its own region.
    #[error("region {0} cannot ship to itself")]
    OwnRegion(String),
    /// The caller's certificate does not name the region its `Hello` claims.
    #[error("the certificate presented is not region {0}'s mirror certificate")]
    NotCertified(String),
}

/// Exponential backoff between attempts, from `min` doubling to `max`; reset on success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// A backoff starting at `min`, never longer than `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// A failure at `now`: when to try again (each failure doubles the wait, up to the max).
    pub fn failed(&mut self, now: Instant) -> Instant {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        now + wait
    }

    /// The wait the next failure will get.
    pub fn wait(&self) -> Duration {
        self.next
    }

    /// A success: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_max_and_resets() {
        let now = Instant::now();
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<_> = (0..4).map(|_| b.failed(now) - now).collect();
        assert_eq!(
            waits,
            [100, 200, 350, 350].map(Duration::from_millis).to_vec()
        );
        b.reset();
        assert_eq!(b.failed(now) - now, Duration::from_millis(100));
    }
}
