//! The consumer: partitions are assigned explicitly or by subscribing to topics; `poll`
//! fetches from every assigned partition, long-polling when none has data; `commit` stores
//! the positions for the consumer group through the broker's journal.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::v1;
use tokio::task::JoinSet;

use crate::{Client, ClientError, OffsetSpec};

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The first retained message.
    Beginning,
    /// Only messages produced from now on.
    End,
    /// This offset.
    Offset(u64),
    /// The first message appended at or after this time (ms since the epoch).
    Time(i64),
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Consumer group; without one, nothing is committed or resumed.
    pub group: Option<String>,
    /// Where partitions without a committed offset start.
    pub start: StartFrom,
    /// Bytes per partition per fetch, about.
    pub fetch_bytes_max: u32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group: None,
            start: StartFrom::End,
            fetch_bytes_max: 1 << 20,
        }
    }
}

/// One consumed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedMessage {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Key.
    pub key: Option<Bytes>,
    /// Payload.
    pub value: Bytes,
    /// Headers.
    pub headers: Vec<(String, Bytes)>,
    /// Producer timestamp.
    pub timestamp_ms: i64,
    /// Broker append time.
    pub append_time_ms: i64,
}

/// A consumer of assigned partitions.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    /// Next offset to read, per assigned partition.
    positions: BTreeMap<(String, u32), u64>,
}

impl Consumer {
    pub(crate) fn new(client: Client, config: ConsumerConfig) -> Consumer {
        Consumer {
            client,
            config,
            positions: BTreeMap::new(),
        }
    }

    /// Assigns every partition of `topic`.
    pub async fn subscribe(&mut self, topic: &str) -> Result<(), ClientError> {
        let info = self.client.describe_topic(topic).await?;
        let partitions: Vec<u32> = info.partitions.iter().map(|p| p.partition).collect();
        self.assign(topic, &partitions).await
    }

    /// Assigns the given partitions of `topic`, each starting at the group's committed
    /// offset or, without one, at the configured start.
    pub async fn assign(&mut self, topic: &str, partitions: &[u32]) -> Result<(), ClientError> {
        for &p in partitions {
            let committed = match &self.config.group {
                Some(g) => self.client.committed_offset(g, topic, p).await?,
                None => None,
            };
            let offset = match committed {
                Some(o) => o,
                None => self.resolve(topic, p, self.config.start).await?,
            };
            self.positions.insert((topic.to_owned(), p), offset);
        }
        Ok(())
    }

    /// The assigned partitions and their next offsets.
    pub fn positions(&self) -> impl Iterator<Item = (&str, u32, u64)> {
        self.positions
            .iter()
            .map(|((t, p), o)| (t.as_str(), *p, *o))
    }

    /// Moves an assigned partition to `offset`.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<(), ClientError> {
        let position = self
            .positions
            .get_mut(&(topic.to_owned(), partition))
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "partition {topic}/{partition} is not assigned to this consumer"
                ))
            })?;
        *position = offset;
        Ok(())
    }

    /// Moves every assigned partition to where `start` says (beginning, end, a time).
    pub async fn seek_all(&mut self, start: StartFrom) -> Result<(), ClientError> {
        let keys: Vec<_> = self.positions.keys().cloned().collect();
        for (topic, p) in keys {
            let offset = self.resolve(&topic, p, start).await?;
            self.positions.insert((topic, p), offset);
        }
        Ok(())
    }

    /// Fetches what is available from every assigned partition; when nothing is, waits up
    /// to `max_wait` for the first message to arrive anywhere.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedMessage>, ClientError> {
        if self.positions.is_empty() {
            return Err(ClientError::Usage(
                "poll on a consumer with no assigned partitions: subscribe or assign first".into(),
            ));
        }
        let first = self.fetch_all(Duration::ZERO).await?;
        if !first.is_empty() || max_wait.is_zero() {
            return Ok(first);
        }
        self.fetch_all(max_wait).await
    }

    /// Commits the current positions of every assigned partition for the group.
    pub async fn commit(&self) -> Result<(), ClientError> {
        let group = self
            .config
            .group
            .as_deref()
            .ok_or_else(|| ClientError::Usage("commit needs a consumer group".into()))?;
        for ((topic, p), offset) in &self.positions {
            self.client.commit_offset(group, topic, *p, *offset).await?;
        }
        Ok(())
    }

    async fn resolve(
        &self,
        topic: &str,
        partition: u32,
        start: StartFrom,
    ) -> Result<u64, ClientError> {
        Ok(match start {
            StartFrom::Beginning => {
                self.client
                    .list_offset(topic, partition, OffsetSpec::Earliest)
                    .await?
                    .0
            }
            StartFrom::End => {
                self.client
                    .list_offset(topic, partition, OffsetSpec::Latest)
                    .await?
                    .0
            }
            StartFrom::Offset(o) => o,
            StartFrom::Time(t) => {
                self.client
                    .list_offset(topic, partition, OffsetSpec::Time(t))
                    .await?
                    .0
            }
        })
    }

    /// Fetches every partition at once; with a wait, returns as soon as one has data.
    async fn fetch_all(&mut self, wait: Duration) -> Result<Vec<ConsumedMessage>, ClientError> {
        let mut set = JoinSet::new();
        for ((topic, partition), &offset) in &self.positions {
            let client = self.client.clone();
            let request = v1::FetchRequest {
                topic: topic.clone(),
                partition: *partition,
                offset,
                max_bytes: self.config.fetch_bytes_max,
                max_wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
            };
            set.spawn(async move {
                (
                    request.topic.clone(),
                    request.partition,
                    client
                        .call(|mut c| {
                            let r = request.clone();
                            async move { c.fetch(r).await }
                        })
                        .await,
                )
            });
        }
        let mut out = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (topic, partition, result) =
                joined.map_err(|e| ClientError::Usage(format!("fetch task failed: {e}")))?;
            let messages = result?.messages;
            if let Some(last) = messages.last() {
                self.positions
                    .insert((topic.clone(), partition), last.offset + 1);
            }
            out.extend(messages.into_iter().map(|m| ConsumedMessage {
                topic: topic.clone(),
                partition,
                offset: m.offset,
                key: m.key,
                value: m.value,
                headers: m.headers.into_iter().map(|h| (h.key, h.value)).collect(),
                timestamp_ms: m.timestamp_ms,
                append_time_ms: m.append_time_ms,
            }));
            if !wait.is_zero() && !out.is_empty() {
                set.abort_all();
                break;
            }
        }
        Ok(out)
    }
}
