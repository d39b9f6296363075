//! Meridian's Rust SDK.
//!
//! [`Client`] wraps the broker's native gRPC API: topic administration, offsets, and the
//! [`Producer`] (async send with batching and linger, a future per message; idempotent by
//! default: a batch resent across failures and leader changes is stored once) and
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
mod delayed;
mod error;
mod groups;
mod producer;
pub mod retry;
mod route;
mod transaction;

use std::sync::Arc;

use meridian_proto::auth::Authed as Channel;
use meridian_proto::v1::{self, broker_client::BrokerClient};
use meridian_region_client::{Failover, METADATA_ANSWER, RegionClient, answered_within};

pub use admin::{BrokerLogGroups, FailoverReport, LogGroupInfo};
pub use consumer::{ConsumedMessage, Consumer, ConsumerConfig, StartFrom};
pub use delayed::Scheduled;
pub use error::ClientError;
pub use groups::{GroupInfo, GroupMember, GroupPartition, ResetTo};
pub use meridian_proto::v1::TopicInfo;
pub use meridian_region_client::Positions;
pub use meridian_region_client::control::on_control_leader;
pub use producer::{Producer, ProducerConfig, Record, RecordMetadata, SendFuture};
pub use route::{Route, connect_control, route};
pub use transaction::{CheckBackServer, Transaction, TransactionConfig};

/// A connection to a region's brokers. Cheap to clone; clones share connections.
///
/// Requests go to the first reachable bootstrap broker; a broker that does not lead the
/// partition's log group answers with the leader's address, and the client retries there
/// (the leader-following core is `meridian-region-client`'s, shared with the platform's
/// own processes).
#[derive(Debug, Clone)]
pub struct Client {
    region: RegionClient,
    /// Set for a client the control plane routes ([`Client::connect_routed`]): it moves to
    /// another region when its region fails.
    routing: Option<Arc<route::Routing>>,
}

/// A routed client's move to another region, offered to the leader-following core.
struct Routed<'a>(&'a Client);

impl Failover for Routed<'_> {
    fn routed(&self) -> bool {
        self.0.routing.is_some()
    }

    fn fail_over(&self) -> impl Future<Output = bool> + Send {
        self.0.fail_over()
    }
}

/// Moves a routed client off a region that is gone, but says it did not: the request at
/// hand is not sent in the new region (a resend of a batch the old region may hold).
struct MoveWithout<'a>(&'a Client);

impl Failover for MoveWithout<'_> {
    fn routed(&self) -> bool {
        self.0.routing.is_some()
    }

    fn fail_over(&self) -> impl Future<Output = bool> + Send {
        let client = self.0;
        async move {
            client.fail_over().await;
            false
        }
    }
}

/// Which offset of a partition to look up.
/// What a producer needs to know of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TopicShape {
    /// Its partition count.
    pub(crate) partitions: std::num::NonZeroU32,
    /// Strictly ordered: a producer stops at a partition's first failed batch.
    pub(crate) strict_order: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first retained message.
    Earliest,
    /// One past the last message.
    Latest,
    /// The first message appended at or after this time (ms since the epoch).
    Time(i64),
}

/// How long a produce is sent again while its partition's leader answers "unknown topic" (a
/// topic just created reaches every broker within moments), as Kafka's producers retry
/// UNKNOWN_TOPIC_OR_PARTITION.
const UNKNOWN_TOPIC_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether a produce answered with `code` may be sent again as one to a topic just created:
/// "unknown topic" (a refusal: nothing stored) within [`UNKNOWN_TOPIC_GRACE`] of the first
/// send, `elapsed` ago.
pub(crate) fn just_created(code: Option<tonic::Code>, elapsed: std::time::Duration) -> bool {
    code == Some(tonic::Code::NotFound) && elapsed < UNKNOWN_TOPIC_GRACE
}

impl Client {
    /// Connects to a region through `addrs`: one broker (`host:port`) or several, comma
    /// separated; the first that answers is used, the others when it fails.
    pub async fn connect(addrs: &str) -> Result<Client, ClientError> {
        Ok(Client {
            region: RegionClient::connect(addrs).await?,
            routing: None,
        })
    }

    /// Runs `request` against the broker that can serve it: follows "not leader" answers to
    /// the named leader, waits out elections, and moves to another bootstrap broker (or,
    /// routed, another region) when one is unreachable.
    pub(crate) async fn call<T, F, Fut>(&self, request: F) -> Result<T, ClientError>
    where
        F: FnMut(BrokerClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        Ok(self
            .region
            .call_routed(&Routed(self), true, request)
            .await?)
    }

    /// A topic's partition count and ordering, from `cache`, else asked once and kept
    /// there.
    pub(crate) async fn topic_shape(
        &self,
        cache: &mut std::collections::HashMap<String, TopicShape>,
        topic: &str,
    ) -> Result<TopicShape, ClientError> {
        if let Some(&shape) = cache.get(topic) {
            return Ok(shape);
        }
        let info = self.describe_topic(topic).await?;
        let shape = TopicShape {
            partitions: std::num::NonZeroU32::new(info.partitions.len() as u32)
                .unwrap_or(std::num::NonZeroU32::MIN),
            strict_order: info.strict_order,
        };
        cache.insert(topic.to_owned(), shape);
        Ok(shape)
    }

    /// The connection to the broker at `addr`.
    pub(crate) async fn connection(
        &self,
        addr: &str,
    ) -> Result<BrokerClient<Channel>, ClientError> {
        Ok(self.region.connection(addr).await?)
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
            .call(|mut c| {
                answered_within(METADATA_ANSWER, async move {
                    c.list_topics(v1::ListTopicsRequest {}).await
                })
            })
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
            answered_within(METADATA_ANSWER, async move { c.describe_topic(r).await })
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
                answered_within(METADATA_ANSWER, async move { c.list_offsets(r).await })
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
        let (offset, positions, _) = self
            .region
            .committed(&Routed(self), group, topic, partition)
            .await?;
        Ok((offset, positions))
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
            positions: meridian_region_client::to_wire(positions),
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
        Ok(self
            .region
            .commit_positions(&Routed(self), group, topic, partition, offset, positions)
            .await?)
    }

    /// Makes what a consumer of `group` read in a partition (`seen`, origin positions)
    /// the group's, without membership: a commit past both the group's commit and `seen`,
    /// with the positions of both (each origin's highest). For a consumer that lost its
    /// membership (its lease ran out, its client moved region) before it could commit: the
    /// commit ships to the other regions as every commit does.
    pub(crate) async fn commit_seen(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        seen: &Positions,
    ) -> Result<(), ClientError> {
        let (committed, mut positions) = self.committed(group, topic, partition).await?;
        for (region, &p) in seen {
            let e = positions.entry(region.clone()).or_default();
            *e = (*e).max(p);
        }
        let past_seen = self
            .offset_for_positions(topic, partition, &positions)
            .await?;
        let offset = committed.unwrap_or(0).max(past_seen);
        self.commit_positions(group, topic, partition, offset, &positions)
            .await
    }

    /// Commits as `member` (id, epoch) of `group`: at the group's coordinator, which
    /// refuses it once the partition is another member's.
    pub async fn commit_member(
        &self,
        group: &str,
        member: (&str, i32),
        topic: &str,
        partition: u32,
        offset: u64,
        positions: &Positions,
    ) -> Result<(), ClientError> {
        if member.0.is_empty() {
            return Err(ClientError::Usage(format!(
                "not committed: this consumer is not (yet) a member of group {group:?}"
            )));
        }
        let r = v1::CommitOffsetRequest {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            offset,
            positions: meridian_region_client::to_wire(positions),
            member_id: member.0.to_owned(),
            member_epoch: member.1,
            metadata: String::new(),
        };
        self.call(|mut c| {
            let r = r.clone();
            async move { c.commit_offset(r).await }
        })
        .await
        .map(|_| ())
    }

    /// Sends one produce request to the partition's leader, following redirects but never
    /// resending a request that may have reached a broker that then failed (it could be
    /// stored twice). "Unknown topic" is a refusal (nothing stored): it is sent again for
    /// [`UNKNOWN_TOPIC_GRACE`], while a topic just created reaches the partition's leader.
    pub(crate) async fn produce_once(
        &self,
        request: &v1::ProduceRequest,
    ) -> Result<v1::ProduceResponse, ClientError> {
        let started = std::time::Instant::now();
        loop {
            let sent = self
                .region
                .call_routed(&Routed(self), false, |mut c| {
                    let r = request.clone();
                    async move { c.produce(r).await }
                })
                .await;
            match sent {
                Err(e) if just_created(e.code(), started.elapsed()) => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                sent => return Ok(sent?),
            }
        }
    }

    /// Sends an idempotent producer's request (it carries `producer`) to the partition's
    /// leader, following redirects and resending it as is when a broker fails or does not
    /// answer within `attempt` (the partition stores it once however often it arrives), for
    /// at most `limit`. A broker that does not answer within `attempt` (a stalled process
    /// keeps its connections open) counts as failed: the request moves to another broker
    /// instead of waiting for the transport's 45 s request timeout. Only with `may_move`
    /// does a routed client carry a never-sent request to another region when its own is
    /// gone; without, the client still moves but the request fails (a resend must not go
    /// along: the region it left may hold the batch, and ships it later).
    pub(crate) async fn produce_idempotent(
        &self,
        request: &v1::ProduceRequest,
        attempt: std::time::Duration,
        limit: std::time::Duration,
        may_move: bool,
    ) -> Result<v1::ProduceResponse, meridian_region_client::RegionError> {
        // Failures come back to the caller (`send_idempotent`), which resends with its own
        // backoff and keeps what the broker said; redirects are followed here.
        let call = |mut c: BrokerClient<Channel>| {
            let r = request.clone();
            answered_within(attempt, async move { c.produce(r).await })
        };
        let sent = async {
            if may_move {
                self.region.call_routed(&Routed(self), false, call).await
            } else {
                self.region
                    .call_routed(&MoveWithout(self), false, call)
                    .await
            }
        };
        tokio::time::timeout(limit, sent)
            .await
            .unwrap_or(Err(meridian_region_client::RegionError::GaveUp(limit)))
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

/// A consumer's heartbeats go where its client's requests go (following it to another
/// region).
impl meridian_region_client::membership::Coordinator for Client {
    fn heartbeat(
        &self,
        request: v1::ConsumerHeartbeatRequest,
    ) -> std::pin::Pin<
        Box<
            dyn Future<
                    Output = Result<
                        v1::ConsumerHeartbeatResponse,
                        meridian_region_client::RegionError,
                    >,
                > + Send
                + '_,
        >,
    > {
        Box::pin(async move {
            self.region
                .call_routed(&Routed(self), true, move |mut c| {
                    let r = request.clone();
                    async move { c.consumer_heartbeat(r).await }
                })
                .await
        })
    }
}
