//! What every listener of a daemon bounds alike: which connections it takes ([`Admission`]:
//! at most so many in all and from one client address), refusals logged at most once a
//! second ([`Refusals`]), and, for the daemons' gRPC APIs ([`grpc`]: tonic has no
//! connection limit), an accept loop that admits connections, closes idle ones and times
//! out requests whose bytes stop arriving, and who calls ([`authenticate`]: API tokens).

mod admission;
pub mod authenticate;
pub mod grpc;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use admission::{Admission, Refused, Ticket};

/// Logs refused connections at most once a second (a flood must not flood the log), with
/// how many were refused since the last line.
#[derive(Debug)]
pub struct Refusals {
    listener: &'static str,
    last: Option<Instant>,
    since: u64,
}

impl Refusals {
    /// Refusals of `listener` (`Kafka`, `gRPC`), as the log line names it.
    pub fn new(listener: &'static str) -> Refusals {
        Refusals {
            listener,
            last: None,
            since: 0,
        }
    }

    /// One more refused connection from `peer`, and why.
    pub fn note(&mut self, peer: &SocketAddr, why: &Refused) {
        self.since += 1;
        if self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            tracing::warn!(%peer, refused = self.since, "refused a {} connection: {why}", self.listener);
            self.last = Some(Instant::now());
            self.since = 0;
        }
    }
}
