//! Meridian's Rust SDK.
//!
//! [`Client`] wraps the broker's native gRPC API: topic administration, offsets, and the
//! [`Producer`] (async send with batching and linger, a future per message) and
//! [`Consumer`] (subscribe or assign, poll, commit, seek by offset or time).
//!
//! A client follows a log group's leader: a broker that does not lead answers with the
//! leader's address and the client retries there.
//!
//! [`route`] asks the control plane which region serves a topic, naming the client's region
//! or measuring the round trip to each healthy one; [`Client::connect_routed`] connects
//! there.
//!
//! Not here yet: consumer-group membership (a subscribing consumer reads every partition of
//! its topics).

mod admin;
mod consumer;
mod error;
mod mirror;
mod producer;
mod route;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use meridian_proto::v1::{self, broker_client::BrokerClient};
use tonic::transport::{Channel, Endpoint};

pub use admin::{BrokerLogGroups, FailoverReport, LogGroupInfo};
pub use consumer::{ConsumedMessage, Consumer, ConsumerConfig, StartFrom};
pub use error::ClientError;
pub use meridian_proto::v1::TopicInfo;
pub use mirror::{LocalCommit, ShippedBatch};
pub use producer::{Producer, ProducerConfig, Record, RecordMetadata, SendFuture};
pub use route::{Route, connect_control, on_control_leader, route};

/// A connection to a region's brokers. Cheap to clone; clones share connections.
///
/// Requests go to the first reachable bootstrap broker; a broker that does not lead the
/// partition's log group answers with the leader's address, and the client retries there.
#[derive(Debug, Clone)]
pub struct Client {
    /// The broker requests go to first; moves on redirects and failures.
    current: Arc<Mutex<BrokerClient<Channel>>>,
    bootstrap: Arc<Mutex<Arc<Vec<String>>>>,
    connections: Arc<Mutex<HashMap<String, BrokerClient<Channel>>>>,
    /// Set for a client the control plane routes ([`Client::connect_routed`]): it moves to
    /// another region when its region fails.
    routing: Option<Arc<route::Routing>>,
}

/// The response header naming the leader on a "not leader" error (the broker's
/// `grpc::LEADER_HEADER`).
const LEADER_HEADER: &str = "x-meridian-leader";
/// The longest one request may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);
/// Redirects and retries a request takes at most.
const ATTEMPTS_MAX: usize = 200;
/// How long a request keeps following redirects and waiting out elections: a leader's death
/// is noticed after an election timeout, longer on a loaded machine.
const RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(15);

/// Origin positions: region → the highest position seen there
/// (`meridian_proto::origin::position`).
pub type Positions = std::collections::BTreeMap<String, u64>;

pub(crate) fn to_wire(positions: &Positions) -> Vec<v1::OriginPosition> {
    positions
        .iter()
        .map(|(region, position)| v1::OriginPosition {
            region: region.clone(),
            position: *position,
        })
        .collect()
}

pub(crate) fn from_wire(positions: Vec<v1::OriginPosition>) -> Positions {
    positions
        .into_iter()
        .map(|p| (p.region, p.position))
        .collect()
}

/// Which offset of a partition to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first retained message.
    Earliest,
    /// One past the last message.
    Latest,
    /// The first message appended at or after this time (ms since the epoch).
    Time(i64),
}

impl Client {
    /// Connects to a region through `addrs`: one broker (`host:port`) or several, comma
    /// separated; the first that answers is used, the others when it fails.
    pub async fn connect(addrs: &str) -> Result<Client, ClientError> {
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
                    return Ok(Client {
                        current: Arc::new(Mutex::new(rpc)),
                        bootstrap: Arc::new(Mutex::new(Arc::new(bootstrap.clone()))),
                        connections: Arc::default(),
                        routing: None,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Usage("no broker address given".into())))
    }

    /// Runs `request` against the broker that can serve it: follows "not leader" answers to
    /// the named leader, waits out elections, and moves to another bootstrap broker when one
    /// is unreachable.
    pub(crate) async fn call<T, F, Fut>(&self, request: F) -> Result<T, ClientError>
    where
        F: FnMut(BrokerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        self.call_with(true, request).await
    }

    /// [`Client::call`]; with `retry_unavailable` false, a request that may have reached a
    /// broker that then failed is not sent again (a produce could otherwise be stored twice).
    /// "Not leader" answers are always followed: the request was not carried out.
    pub(crate) async fn call_with<T, F, Fut>(
        &self,
        retry_unavailable: bool,
        mut request: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut(BrokerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut rpc = self.current.lock().expect("client lock poisoned").clone();
        let mut next_bootstrap = 0;
        let mut last = None;
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
                    last = Some(ClientError::from(status));
                    match leader {
                        Some(addr) => match self.connection(&addr).await {
                            Ok(c) => {
                                *self.current.lock().expect("client lock poisoned") = c.clone();
                                rpc = c;
                            }
                            // The named leader is unreachable (it may have just died):
                            // wait for the others to elect a new one.
                            Err(e) => {
                                last = Some(e);
                                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            }
                        },
                        // An election is under way, or this broker is behind: wait, then ask
                        // the next bootstrap broker.
                        None => {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            let bootstrap = self.bootstrap();
                            let addr = &bootstrap[next_bootstrap % bootstrap.len()];
                            next_bootstrap += 1;
                            if let Ok(c) = self.connection(addr).await {
                                rpc = c;
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
                    last = Some(ClientError::from(status));
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    if self.routing.is_some()
                        && !self.any_reachable().await
                        && self.fail_over().await
                    {
                        // The whole region is gone and the client moved to another.
                        rpc = self.current.lock().expect("client lock poisoned").clone();
                        continue;
                    }
                    let bootstrap = self.bootstrap();
                    let addr = &bootstrap[next_bootstrap % bootstrap.len()];
                    next_bootstrap += 1;
                    if let Ok(c) = self.connection(addr).await {
                        *self.current.lock().expect("client lock poisoned") = c.clone();
                        rpc = c;
                    }
                }
                // Never sent, and no broker of the region accepts connections: a routed
                // client moves to another region and sends it there.
                Err(status) if never_sent(&status) && self.fail_over().await => {
                    last = Some(ClientError::from(status));
                    rpc = self.current.lock().expect("client lock poisoned").clone();
                }
                Err(status) => {
                    if broker_failed(&status) {
                        // Not retried, but the next request tries another broker (another
                        // region when this one is gone).
                        if self.routing.is_none() || self.any_reachable().await {
                            self.rotate().await;
                        } else {
                            self.fail_over().await;
                        }
                    }
                    return Err(status.into());
                }
            }
        }
        Err(last.unwrap_or_else(|| ClientError::Usage("request failed".into())))
    }

    /// The brokers the client starts from (its region's).
    fn bootstrap(&self) -> Arc<Vec<String>> {
        self.bootstrap
            .lock()
            .expect("bootstrap lock poisoned")
            .clone()
    }

    /// Points the client at another region's brokers.
    pub(crate) async fn switch_to(&self, brokers: &[String]) -> Result<(), ClientError> {
        let mut last = ClientError::Usage("the route names no broker".into());
        for addr in brokers {
            match self.connection(addr).await {
                Ok(c) => {
                    *self.bootstrap.lock().expect("bootstrap lock poisoned") =
                        Arc::new(brokers.to_vec());
                    *self.current.lock().expect("client lock poisoned") = c;
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
                std::time::Duration::from_millis(500),
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                return true;
            }
        }
        false
    }

    /// Points the client at the next reachable bootstrap broker.
    async fn rotate(&self) {
        for addr in self.bootstrap().iter() {
            if let Ok(c) = self.connection(addr).await
                && c.clone()
                    .list_topics(v1::ListTopicsRequest {})
                    .await
                    .is_ok()
            {
                *self.current.lock().expect("client lock poisoned") = c;
                return;
            }
        }
    }

    pub(crate) async fn connection(
        &self,
        addr: &str,
    ) -> Result<BrokerClient<Channel>, ClientError> {
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

    /// Creates a topic; `partitions` 0 takes the broker's default.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<TopicInfo, ClientError> {
        self.create_topic_with(name, partitions, "").await
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let r = v1::DeleteTopicRequest {
            name: name.to_owned(),
        };
        self.call(|mut c| {
            let r = r.clone();
            async move { c.delete_topic(r).await }
        })
        .await?;
        Ok(())
    }

    /// Every topic.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        Ok(self
            .call(|mut c| async move { c.list_topics(v1::ListTopicsRequest {}).await })
            .await?
            .topics)
    }

    /// One topic, with the offsets of each partition.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        let r = v1::DescribeTopicRequest {
            name: name.to_owned(),
        };
        self.call(|mut c| {
            let r = r.clone();
            async move { c.describe_topic(r).await }
        })
        .await
    }

    /// Looks up an offset; with [`OffsetSpec::Time`], `None` time means no message is that
    /// new and the offset is the log end.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<(u64, Option<i64>), ClientError> {
        let (spec, timestamp_ms) = match spec {
            OffsetSpec::Earliest => (v1::OffsetSpec::Earliest, 0),
            OffsetSpec::Latest => (v1::OffsetSpec::Latest, 0),
            OffsetSpec::Time(t) => (v1::OffsetSpec::Time, t),
        };
        let r = v1::ListOffsetsRequest {
            topic: topic.to_owned(),
            partition,
            spec: spec as i32,
            timestamp_ms,
        };
        let r = self
            .call(|mut c| {
                let r = r.clone();
                async move { c.list_offsets(r).await }
            })
            .await?;
        Ok((r.offset, r.timestamp_ms))
    }

    /// A consumer group's committed offset of a partition.
    pub async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, ClientError> {
        Ok(self.committed(group, topic, partition).await?.0)
    }

    /// A consumer group's committed position of a partition: where to resume in this
    /// region, and the origin positions it has seen (committed here or in another region).
    pub async fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<(Option<u64>, Positions), ClientError> {
        let r = v1::FetchOffsetRequest {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
        };
        let answer = self
            .call(|mut c| {
                let r = r.clone();
                async move { c.fetch_offset(r).await }
            })
            .await?;
        Ok((answer.offset, from_wire(answer.positions)))
    }

    /// The first offset of a partition holding a message `positions` do not cover.
    pub async fn offset_for_positions(
        &self,
        topic: &str,
        partition: u32,
        positions: &Positions,
    ) -> Result<u64, ClientError> {
        let r = v1::OffsetForPositionsRequest {
            topic: topic.to_owned(),
            partition,
            positions: to_wire(positions),
        };
        Ok(self
            .call(|mut c| {
                let r = r.clone();
                async move { c.offset_for_positions(r).await }
            })
            .await?
            .offset)
    }

    /// Commits a consumer group's offset of a partition.
    pub async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), ClientError> {
        self.commit_positions(group, topic, partition, offset, &Positions::new())
            .await
    }

    /// Commits a consumer group's offset of a partition with the origin positions seen
    /// below it (what lets the group resume in another region).
    pub async fn commit_positions(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        positions: &Positions,
    ) -> Result<(), ClientError> {
        let r = v1::CommitOffsetRequest {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            offset,
            positions: to_wire(positions),
        };
        self.call(|mut c| {
            let r = r.clone();
            async move { c.commit_offset(r).await }
        })
        .await?;
        Ok(())
    }

    /// Sends one produce request to the partition's leader, following redirects but never
    /// resending a request that may have reached a broker that then failed (it could be
    /// stored twice).
    pub(crate) async fn produce_once(
        &self,
        request: &v1::ProduceRequest,
    ) -> Result<v1::ProduceResponse, ClientError> {
        self.call_with(false, |mut c| {
            let r = request.clone();
            async move { c.produce(r).await }
        })
        .await
    }

    /// A producer with its own batching task.
    pub fn producer(&self, config: ProducerConfig) -> Producer {
        Producer::new(self.clone(), config)
    }

    /// A consumer; with a group it starts from, and commits to, the group's offsets.
    pub fn consumer(&self, config: ConsumerConfig) -> Consumer {
        Consumer::new(self.clone(), config)
    }
}

/// Whether a status means the broker (or the connection to it) failed rather than refused:
/// worth another broker for idempotent requests.
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

fn broker_failed(status: &tonic::Status) -> bool {
    // A connection that drops mid-request surfaces as Cancelled.
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

async fn connect_one(addr: &str) -> Result<BrokerClient<Channel>, ClientError> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let endpoint = Endpoint::from_shared(uri)
        .map_err(|e| ClientError::Connect {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?
        .connect_timeout(std::time::Duration::from_secs(5))
        // A broker that stops answering (a hung or SIGSTOPped process keeps its TCP
        // connections open) is noticed by HTTP/2 pings, and no request waits forever:
        // longer than the longest long poll (30 s), like Kafka's request.timeout.ms.
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_timeout(std::time::Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
        addr: addr.to_owned(),
        reason: error::source_chain(&e),
    })?;
    Ok(BrokerClient::new(channel)
        .max_decoding_message_size(usize::MAX)
        .max_encoding_message_size(usize::MAX))
}
