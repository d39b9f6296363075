//! Calls that follow their own leader: a request about one log group (or one partition)
//! goes to the broker that last served that log group, not to the client's current broker,
//! and each attempt has its own deadline. So one stalled broker (SIGSTOPped, hung, behind a
//! dead link: its TCP connections stay open and nothing answers) delays only the log groups
//! it leads: the others keep their own leaders, and a request stuck at the stalled broker
//! moves on after its attempt deadline instead of the transport's 45 s timeout.
//!
//! Only for requests safe to carry out twice (reads, idempotent appends): a request whose
//! attempt timed out may have been carried out.

use std::time::Duration;

use meridian_proto::auth::Authed as Channel;
use meridian_proto::v1::broker_client::BrokerClient;

use crate::{
    ATTEMPTS_MAX, LEADER_HEADER, RETRY_FOR, RETRY_PAUSE, RegionClient, RegionError, broker_failed,
};

/// What a request is about, so it goes to that thing's leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leading {
    /// Anything any broker answers (the region's log groups): the last that answered.
    AnyBroker,
    /// A log group of the region.
    LogGroup(u32),
    /// A partition of a topic, by topic id.
    Partition(u32, u32),
}

/// Leaders remembered at most; past it the map is cleared (each entry is only a hint: a
/// forgotten one costs one redirect).
pub(crate) const LEADERS_MAX: usize = 65_536;

impl RegionClient {
    /// Runs `request` at the leader of `about`: first the broker that last served it, then
    /// wherever "not leader" answers point, the next bootstrap broker when one fails or
    /// does not answer within `attempt`. Retries for up to 15 s.
    pub async fn call_at_leader<T, F, Fut>(
        &self,
        about: Leading,
        attempt: Duration,
        mut request: F,
    ) -> Result<T, RegionError>
    where
        F: FnMut(BrokerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let bootstrap = self.bootstrap();
        let mut addr = self
            .remembered_leader(about)
            .unwrap_or_else(|| bootstrap[0].clone());
        let mut last = None;
        let mut hint = crate::error::GroupHint::default();
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        for _ in 0..ATTEMPTS_MAX {
            if tokio::time::Instant::now() > deadline {
                break;
            }
            let rpc = match self.connection(&addr).await {
                Ok(c) => c,
                Err(e) => {
                    last = Some(e);
                    self.forget_leader(about);
                    addr = self.bootstrap_after(&addr);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            match tokio::time::timeout(attempt, request(rpc)).await {
                Ok(Ok(response)) => {
                    self.remember_leader(about, &addr);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if status.code() == tonic::Code::FailedPrecondition => {
                    let leader = status
                        .metadata()
                        .get(LEADER_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    hint.note(&status);
                    last = Some(RegionError::from(status));
                    match leader {
                        // A broker naming itself is starting its group, not yet elected:
                        // wait as for an election rather than ask it again at once.
                        Some(leader) if leader == addr => tokio::time::sleep(RETRY_PAUSE).await,
                        Some(leader) => addr = leader,
                        // An election is under way: wait, then ask another broker.
                        None => {
                            tokio::time::sleep(RETRY_PAUSE).await;
                            addr = self.bootstrap_after(&addr);
                        }
                    }
                }
                Ok(Err(status)) if broker_failed(&status) => {
                    last = Some(RegionError::from(status));
                    self.forget_leader(about);
                    tokio::time::sleep(RETRY_PAUSE).await;
                    addr = self.bootstrap_after(&addr);
                }
                Ok(Err(status)) => return Err(status.into()),
                // No answer in time: the broker may be stalled; another may lead by now.
                Err(_) => {
                    last = Some(RegionError::NoAnswer("broker", attempt));
                    self.forget_leader(about);
                    addr = self.bootstrap_after(&addr);
                }
            }
        }
        Err(hint.give_up(last.unwrap_or(RegionError::GaveUp(RETRY_FOR))))
    }

    fn remembered_leader(&self, about: Leading) -> Option<String> {
        self.leaders
            .lock()
            .expect("leaders lock poisoned")
            .get(&about)
            .cloned()
    }

    fn remember_leader(&self, about: Leading, addr: &str) {
        let mut leaders = self.leaders.lock().expect("leaders lock poisoned");
        if leaders.len() >= LEADERS_MAX && !leaders.contains_key(&about) {
            leaders.clear();
        }
        if leaders.get(&about).is_none_or(|a| a != addr) {
            leaders.insert(about, addr.to_owned());
        }
    }

    fn forget_leader(&self, about: Leading) {
        self.leaders
            .lock()
            .expect("leaders lock poisoned")
            .remove(&about);
    }
}
