//! Meridian's Rust SDK.
//!
//! [`Client`] wraps the broker's native gRPC API: topic administration, offsets, and the
//! [`Producer`] (async send with batching and linger, a future per message) and
//! [`Consumer`] (subscribe or assign, poll, commit, seek by offset or time).
//!
//! Not here yet: routing through the control plane to the nearest region and following a
//! moved partition leader; consumer-group membership (a subscribing consumer reads every
//! partition of its topics).

mod consumer;
mod error;
mod producer;

use meridian_proto::v1::{self, broker_client::BrokerClient};
use tonic::transport::{Channel, Endpoint};

pub use consumer::{ConsumedMessage, Consumer, ConsumerConfig, StartFrom};
pub use error::ClientError;
pub use meridian_proto::v1::TopicInfo;
pub use producer::{Producer, ProducerConfig, Record, RecordMetadata, SendFuture};

/// A connection to one broker. Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Client {
    rpc: BrokerClient<Channel>,
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
    /// Connects to a broker at `addr` (`host:port` or `http://host:port`).
    pub async fn connect(addr: &str) -> Result<Client, ClientError> {
        let uri = if addr.contains("://") {
            addr.to_owned()
        } else {
            format!("http://{addr}")
        };
        let endpoint = Endpoint::from_shared(uri.clone())
            .map_err(|e| ClientError::Connect {
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?
            .connect_timeout(std::time::Duration::from_secs(5))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
            addr: addr.to_owned(),
            reason: error::source_chain(&e),
        })?;
        let rpc = BrokerClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        Ok(Client { rpc })
    }

    /// Creates a topic; `partitions` 0 takes the broker's default.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<TopicInfo, ClientError> {
        let r = v1::CreateTopicRequest {
            name: name.to_owned(),
            partitions,
        };
        Ok(self.rpc.clone().create_topic(r).await?.into_inner())
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.rpc
            .clone()
            .delete_topic(v1::DeleteTopicRequest {
                name: name.to_owned(),
            })
            .await?;
        Ok(())
    }

    /// Every topic.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        Ok(self
            .rpc
            .clone()
            .list_topics(v1::ListTopicsRequest {})
            .await?
            .into_inner()
            .topics)
    }

    /// One topic, with the offsets of each partition.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicInfo, ClientError> {
        Ok(self
            .rpc
            .clone()
            .describe_topic(v1::DescribeTopicRequest {
                name: name.to_owned(),
            })
            .await?
            .into_inner())
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
        let r = self.rpc.clone().list_offsets(r).await?.into_inner();
        Ok((r.offset, r.timestamp_ms))
    }

    /// A consumer group's committed offset of a partition.
    pub async fn committed_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, ClientError> {
        let r = v1::FetchOffsetRequest {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
        };
        Ok(self.rpc.clone().fetch_offset(r).await?.into_inner().offset)
    }

    /// Commits a consumer group's offset of a partition.
    pub async fn commit_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), ClientError> {
        let r = v1::CommitOffsetRequest {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            offset,
        };
        self.rpc.clone().commit_offset(r).await?;
        Ok(())
    }

    /// A producer with its own batching task.
    pub fn producer(&self, config: ProducerConfig) -> Producer {
        Producer::new(self.clone(), config)
    }

    /// A consumer; with a group it starts from, and commits to, the group's offsets.
    pub fn consumer(&self, config: ConsumerConfig) -> Consumer {
        Consumer::new(self.clone(), config)
    }

    pub(crate) fn rpc(&self) -> BrokerClient<Channel> {
        self.rpc.clone()
    }
}
