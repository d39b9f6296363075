//! Meridian's internal client of a region, for the platform's own processes.
//!
//! [`RegionClient`] is the leader-following connection to a region's brokers: requests go to
//! one broker, a broker that does not lead the log group answers with the leader's address
//! and the request follows it, elections are waited out, and an unreachable broker is
//! replaced by the next bootstrap broker. The public SDK (`meridian-client`) builds its
//! `Client` on it and adds routing between regions through [`Failover`]; the Kafka listener
//! reaches the leaders of other partitions through it.
//!
//! [`mirror`] holds the brokers' internal RPCs only mirror agents call (committed local
//! batches, idempotent mirrored appends, origin marks, merged consumer positions): they are
//! not part of the SDK. [`control`] finds the control plane's leader.

pub mod control;
mod error;
pub mod idempotence;
mod keyed;
pub mod membership;
pub mod mirror;
mod offsets;
mod transactions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_proto::auth::Authed as Channel;
use meridian_proto::v1::{self, broker_client::BrokerClient};
use tonic::transport::Endpoint;

pub use error::{RegionError, source_chain};
pub use keyed::Leading;

/// The response header naming the leader on a "not leader" error (the broker's
/// `grpc::LEADER_HEADER`, and the control plane's).
pub const LEADER_HEADER: &str = "x-meridian-leader";
/// The metadata key a "not the leader" answer names the log group in.
pub const LOG_GROUP_HEADER: &str = "x-meridian-log-group";
/// The metadata key a "not the leader" answer names the leader's broker id in.
pub const LEADER_ID_HEADER: &str = "x-meridian-leader-id";
/// The longest one request may take: longer than the longest long poll (30 s), like Kafka's
/// `request.timeout.ms`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(45);
/// Redirects and retries a request takes at most.
const ATTEMPTS_MAX: usize = 200;
/// How long a request keeps following redirects and waiting out elections: a leader's death
/// is noticed after an election timeout, longer on a loaded machine.
const RETRY_FOR: Duration = Duration::from_secs(15);
/// How long [`RegionClient::rotate`] waits for a broker to answer before trying the next.
const ROTATE_PROBE: Duration = Duration::from_secs(5);
/// How long a metadata request, which any live broker answers at once, waits for its
/// answer before the broker counts as failed and the next is asked (a stalled broker keeps
/// its connections open: without it, the wait is the transport's keep-alive, 30 s).
pub const METADATA_ANSWER: Duration = Duration::from_secs(8);
/// The pause before a retry at another broker.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Origin positions: region → the highest position seen there
/// (`meridian_proto::origin::position`).
pub type Positions = std::collections::BTreeMap<String, u64>;

/// Origin positions as the wire carries them.
pub fn to_wire(positions: &Positions) -> Vec<v1::OriginPosition> {
    positions
        .iter()
        .map(|(region, position)| v1::OriginPosition {
            region: region.clone(),
            position: *position,
        })
        .collect()
}

/// Origin positions from the wire.
pub fn from_wire(positions: Vec<v1::OriginPosition>) -> Positions {
    positions
        .into_iter()
        .map(|p| (p.region, p.position))
        .collect()
}

/// What a request does when every broker of its region is gone: a client routed by the
/// control plane moves to another region ([`RegionClient::call_routed`]); the platform's
/// own processes stay ([`Stay`]).
pub trait Failover: Sync {
    /// Whether the client may move to another region at all.
    fn routed(&self) -> bool;
    /// Moves the client to another region (through [`RegionClient::switch_to`]); whether it
    /// moved.
    fn fail_over(&self) -> impl Future<Output = bool> + Send;
}

/// Never moves to another region.
#[derive(Debug, Clone, Copy)]
pub struct Stay;

impl Failover for Stay {
    fn routed(&self) -> bool {
        false
    }

    async fn fail_over(&self) -> bool {
        false
    }
}

/// A connection to a region's brokers. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct RegionClient {
    /// The broker requests go to first, and its address; moves on redirects and failures.
    current: Arc<Mutex<(String, BrokerClient<Channel>)>>,
    bootstrap: Arc<Mutex<Arc<Vec<String>>>>,
    /// One connection per broker address; bounded by the brokers the region names.
    connections: Arc<Mutex<HashMap<String, BrokerClient<Channel>>>>,
    /// The broker that last served each log group or partition ([`Leading`]); at most
    /// 65,536 entries (cleared past it: each is only a hint).
    leaders: Arc<Mutex<HashMap<Leading, String>>>,
}

impl RegionClient {
    /// Connects to a region through `addrs`: one broker (`host:port`) or several, comma
    /// separated; the first that answers is used, the others when it fails.
    pub async fn connect(addrs: &str) -> Result<RegionClient, RegionError> {
        let bootstrap: Vec<String> = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        let mut last = None;
        for addr in &bootstrap {
            match connect_one(addr).await {
                Ok(rpc) => {
                    return Ok(RegionClient {
                        current: Arc::new(Mutex::new((addr.clone(), rpc))),
                        bootstrap: Arc::new(Mutex::new(Arc::new(bootstrap.clone()))),
                        connections: Arc::default(),
                        leaders: Arc::default(),
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(RegionError::NoAddress("broker")))
    }

    /// Runs `request` against the broker that can serve it: follows "not leader" answers to
    /// the named leader, waits out elections, and moves to another bootstrap broker when one
    /// is unreachable. Only for requests that are safe to carry out twice.
    pub async fn call<T, F, Fut>(&self, request: F) -> Result<T, RegionError>
    where
        F: FnMut(BrokerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_routed(&Stay, true, request).await
    }

    /// [`RegionClient::call`]; with `retry_unavailable` false, a request that may have
    /// reached a broker that then failed is not sent again (a produce could otherwise be
    /// stored twice). "Not leader" answers are always followed: the request was not carried
    /// out. When no broker of the region accepts connections, `failover` may move the client
    /// to another region, where requests that never reached a broker are sent again.
    pub async fn call_routed<T, F, Fut>(
        &self,
        failover: &impl Failover,
        retry_unavailable: bool,
        mut request: F,
    ) -> Result<T, RegionError>
    where
        F: FnMut(BrokerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (mut at, mut rpc) = self.current();
        let mut last = None;
        let mut hint = error::GroupHint::default();
        // Redirects followed in a row: past the first, each waits (a broker may name itself
        // while its group starts, or two may name each other during an election).
        let mut redirects = 0;
        let deadline = tokio::time::Instant::now() + RETRY_FOR;
        for _ in 0..ATTEMPTS_MAX {
            if tokio::time::Instant::now() > deadline {
                break;
            }
            match request(rpc.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    let leader = status
                        .metadata()
                        .get(LEADER_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    hint.note(&status);
                    last = Some(RegionError::from(status));
                    if redirects > 0 {
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    redirects += 1;
                    match leader {
                        Some(addr) => match self.connection(&addr).await {
                            Ok(c) => {
                                self.set_current(&addr, c.clone());
                                (at, rpc) = (addr, c);
                            }
                            // The named leader is unreachable (it may have just died):
                            // wait for the others to elect a new one.
                            Err(e) => {
                                last = Some(e);
                                tokio::time::sleep(RETRY_PAUSE).await;
                            }
                        },
                        // An election is under way, or this broker is behind: wait, then ask
                        // the next bootstrap broker.
                        None => {
                            tokio::time::sleep(RETRY_PAUSE).await;
                            if let Some(next) = self.next_bootstrap(&at).await {
                                (at, rpc) = next;
                            }
                        }
                    }
                }
                // Unsent requests go to the next broker, but only while some broker could
                // still take them: when no bootstrap broker accepts a connection, the
                // region is down and the caller hears it at once.
                Err(status)
                    if (retry_unavailable && broker_failed(&status))
                        || (never_sent(&status) && self.any_reachable().await) =>
                {
                    last = Some(RegionError::at(&at, status));
                    tokio::time::sleep(RETRY_PAUSE).await;
                    if failover.routed()
                        && !self.any_reachable().await
                        && failover.fail_over().await
                    {
                        // The whole region is gone and the client moved to another.
                        (at, rpc) = self.current();
                        continue;
                    }
                    if let Some((addr, c)) = self.next_bootstrap(&at).await {
                        self.set_current(&addr, c.clone());
                        (at, rpc) = (addr, c);
                    }
                }
                // Never sent, and no broker of the region accepts connections: a routed
                // client moves to another region and sends it there.
                Err(status) if never_sent(&status) && failover.fail_over().await => {
                    last = Some(RegionError::from(status));
                    (at, rpc) = self.current();
                }
                Err(status) => {
                    if broker_failed(&status) {
                        // Not retried, but the next request tries another broker (another
                        // region when this one is gone).
                        if !failover.routed() || self.any_reachable().await {
                            self.rotate().await;
                        } else {
                            failover.fail_over().await;
                        }
                    }
                    // Brokers that named the group this request needs, then its leader
                    // failing: the group's unavailability, naming them.
                    return Err(hint.give_up(RegionError::at(&at, status)));
                }
            }
        }
        Err(hint.give_up(last.unwrap_or(RegionError::GaveUp(RETRY_FOR))))
    }

    fn current(&self) -> (String, BrokerClient<Channel>) {
        self.current.lock().expect("client lock poisoned").clone()
    }

    fn set_current(&self, addr: &str, c: BrokerClient<Channel>) {
        *self.current.lock().expect("client lock poisoned") = (addr.to_owned(), c);
    }

    /// The bootstrap broker after `addr` (the first when `addr` is not one): where to go
    /// when `addr` fails. Each failure moves one on, so every broker is tried in turn.
    fn bootstrap_after(&self, addr: &str) -> String {
        let bootstrap = self.bootstrap();
        let i = bootstrap
            .iter()
            .position(|b| b == addr)
            .map_or(0, |i| i + 1);
        bootstrap[i % bootstrap.len()].clone()
    }

    /// A connection to the first bootstrap broker after `addr` that takes one (a stalled
    /// broker's kernel still accepts: it is found out by the request), and its address.
    async fn next_bootstrap(&self, addr: &str) -> Option<(String, BrokerClient<Channel>)> {
        let mut next = addr.to_owned();
        for _ in 0..self.bootstrap().len() {
            next = self.bootstrap_after(&next);
            if let Ok(c) = self.connection(&next).await {
                return Some((next, c));
            }
        }
        None
    }

    /// The brokers the client starts from (its region's).
    fn bootstrap(&self) -> Arc<Vec<String>> {
        self.bootstrap
            .lock()
            .expect("bootstrap lock poisoned")
            .clone()
    }

    /// Points the client at another region's brokers (a routed client's move).
    pub async fn switch_to(&self, brokers: &[String]) -> Result<(), RegionError> {
        let mut last = RegionError::NoAddress("broker");
        for addr in brokers {
            match self.connection(addr).await {
                Ok(c) => {
                    *self.bootstrap.lock().expect("bootstrap lock poisoned") =
                        Arc::new(brokers.to_vec());
                    // The leaders remembered are the old region's brokers: a request sent
                    // to one would still land there (it may be alive, failed over by an
                    // operator).
                    self.leaders.lock().expect("leaders lock poisoned").clear();
                    self.set_current(addr, c);
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Whether any bootstrap broker accepts a TCP connection now.
    async fn any_reachable(&self) -> bool {
        for addr in self.bootstrap().iter() {
            let addr = addr.trim_start_matches("http://");
            if let Ok(Ok(_)) = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                return true;
            }
        }
        false
    }

    /// Points the client at the next reachable bootstrap broker (one that answers within
    /// `ROTATE_PROBE`: a stalled broker keeps its connections open and would hold the probe
    /// for the transport's 45 s).
    async fn rotate(&self) {
        for addr in self.bootstrap().iter() {
            if let Ok(c) = self.connection(addr).await
                && let Ok(Ok(_)) = tokio::time::timeout(
                    ROTATE_PROBE,
                    c.clone().list_topics(v1::ListTopicsRequest {}),
                )
                .await
            {
                self.set_current(addr, c);
                return;
            }
        }
    }

    /// The connection to the broker at `addr`, made once and then shared.
    pub async fn connection(&self, addr: &str) -> Result<BrokerClient<Channel>, RegionError> {
        if let Some(c) = self
            .connections
            .lock()
            .expect("connections lock poisoned")
            .get(addr)
        {
            return Ok(c.clone());
        }
        let c = connect_one(addr).await?;
        self.connections
            .lock()
            .expect("connections lock poisoned")
            .insert(addr.to_owned(), c.clone());
        Ok(c)
    }
}

/// `call`'s answer, or an Unavailable status (the broker counts as failed) when none comes
/// within `wait`.
pub async fn answered_within<T>(
    wait: Duration,
    call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<tonic::Response<T>, tonic::Status> {
    match tokio::time::timeout(wait, call).await {
        Ok(answer) => answer,
        Err(_) => Err(tonic::Status::unavailable(format!(
            "no answer from the broker within {wait:?}"
        ))),
    }
}

/// The request never reached a broker: the connection could not be made (a dead broker's
/// port refuses). Safe to send elsewhere even when a resend could otherwise duplicate.
fn never_sent(status: &tonic::Status) -> bool {
    use std::error::Error;
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    // The transport keeps the refused connect's `io::Error` at the end of the chain.
    let mut source: Option<&(dyn Error + 'static)> = status.source();
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        {
            return true;
        }
        source = e.source();
    }
    false
}

/// Whether a status means the broker (or the connection to it) failed rather than refused:
/// worth another broker for requests safe to carry out twice.
fn broker_failed(status: &tonic::Status) -> bool {
    // A connection that drops mid-request surfaces as Cancelled.
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

/// The gRPC endpoint of `addr` (`host:port` or a URI).
fn endpoint(addr: &str) -> Result<Endpoint, RegionError> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    Endpoint::from_shared(uri).map_err(|e| RegionError::BadAddress {
        addr: addr.to_owned(),
        reason: e.to_string(),
    })
}

async fn connect_one(addr: &str) -> Result<BrokerClient<Channel>, RegionError> {
    let endpoint = endpoint(addr)?
        .connect_timeout(Duration::from_secs(5))
        // A broker that stops answering (a hung or SIGSTOPped process keeps its TCP
        // connections open) is noticed by HTTP/2 pings, and no request waits forever.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true);
    let channel =
        meridian_proto::auth::connect(endpoint)
            .await
            .map_err(|e| RegionError::Connect {
                addr: addr.to_owned(),
                reason: source_chain(&e),
            })?;
    Ok(BrokerClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_survive_the_wire() {
        let positions: Positions = [("eu".to_owned(), 7), ("us".to_owned(), 3)].into();
        assert_eq!(from_wire(to_wire(&positions)), positions);
    }

    #[tokio::test]
    async fn a_region_without_brokers_is_named_in_the_error() {
        assert!(matches!(
            RegionClient::connect(" , ").await,
            Err(RegionError::NoAddress("broker"))
        ));
        // Nothing listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        match RegionClient::connect(&addr).await {
            Err(e @ RegionError::Connect { .. }) => {
                let text = e.to_string();
                assert!(text.contains(&addr), "{text}");
                assert!(text.contains("meridian up"), "{text}");
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
        assert!(matches!(
            RegionClient::connect("http://[bad").await,
            Err(RegionError::BadAddress { .. })
        ));
    }

    fn unavailable(kind: std::io::ErrorKind) -> tonic::Status {
        let mut status = tonic::Status::unavailable("transport error");
        status.set_source(Arc::new(std::io::Error::from(kind)));
        status
    }

    #[test]
    fn only_a_refused_connection_counts_as_never_sent() {
        let refused = unavailable(std::io::ErrorKind::ConnectionRefused);
        assert!(never_sent(&refused));
        assert!(broker_failed(&refused));
        let reset = unavailable(std::io::ErrorKind::ConnectionReset);
        assert!(
            !never_sent(&reset),
            "a reset request may have been carried out"
        );
        assert!(broker_failed(&reset));
        assert!(!never_sent(&tonic::Status::failed_precondition(
            "not leader"
        )));
        assert!(!broker_failed(&tonic::Status::not_found("no such topic")));
    }
}
