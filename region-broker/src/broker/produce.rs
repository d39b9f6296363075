//! Produce and fetch: a produce is validated and encoded here and appended by the
//! partition's log group at the request's ack level; a fetch long-polls the group's storage
//! for committed records and decodes them.

use std::time::Duration;

use bytes::Bytes;
use meridian_proto::batch::{self, Message};
use meridian_proto::kafka::kafka_protocol::records::Compression;
use meridian_proto::producer::ProducerBatch;
use meridian_proto::topic_config::TopicCompression;

use super::{
    Acks, Broker, BrokerError, Fetched, FetchedMessage, Isolation, Produced, Topic, catalog, now_ms,
};
use crate::storage::transactions::{Aborted, TxnPart};
use crate::storage::{AppendError, LogGroup, PartitionKey, ReadBatch, ReadError};

/// Limits on header names and counts, beyond the byte limits of the config.
const HEADERS_MAX: usize = 1024;
const HEADER_NAME_BYTES_MAX: usize = 1024;

impl Broker {
    /// Appends messages to a partition; returns the first message's offset and the append
    /// time once the batch is durable.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        messages: Vec<Message>,
        acks: Option<Acks>,
        epoch: u64,
    ) -> Result<Produced, BrokerError> {
        self.produce_batch(topic, partition, (messages, None), acks, epoch, None)
            .await
            .map(|(produced, _)| produced)
    }

    /// Appends an idempotent producer's batch exactly once (`HostedGroup::append_idempotent`):
    /// a batch written before is answered with its first offset, and `true`.
    pub async fn produce_idempotent(
        &self,
        topic: &str,
        partition: u32,
        messages: Vec<Message>,
        acks: Option<Acks>,
        producer: ProducerBatch,
    ) -> Result<(Produced, bool), BrokerError> {
        self.produce_idempotent_at(topic, partition, messages, acks, producer, 0)
            .await
    }

    /// [`Broker::produce_idempotent`] fenced by the log group's leadership `epoch` the
    /// producer last saw, as [`Broker::produce`] is (0: not fenced).
    pub async fn produce_idempotent_at(
        &self,
        topic: &str,
        partition: u32,
        messages: Vec<Message>,
        acks: Option<Acks>,
        producer: ProducerBatch,
        epoch: u64,
    ) -> Result<(Produced, bool), BrokerError> {
        self.produce_batch(
            topic,
            partition,
            (messages, None),
            acks,
            epoch,
            Some((producer, None)),
        )
        .await
    }

    /// [`Broker::produce_idempotent`] for a batch inside the open transaction of
    /// `transactional_id`'s producer: readers of committed data see it once its commit
    /// marker is written, never if its abort marker is. The transaction's first batch in
    /// the partition is written only once its coordinator says the partition was added to
    /// it (no marker would ever end it here otherwise, holding readers forever).
    pub async fn produce_transactional(
        &self,
        transactional_id: &str,
        (topic, partition): (&str, u32),
        messages: Vec<Message>,
        acks: Option<Acks>,
        producer: ProducerBatch,
    ) -> Result<(Produced, bool), BrokerError> {
        let producer = Some((producer, Some(transactional_id)));
        self.produce_batch(topic, partition, (messages, None), acks, 0, producer)
            .await
    }

    /// A Kafka producer's records: plain, idempotent (`producer`) or inside the
    /// transaction of `transactional_id`, as [`Broker::produce`],
    /// [`Broker::produce_idempotent`] and [`Broker::produce_transactional`]. With
    /// `verbatim` (the record batch as the producer sent it) and `kafka.store_batches`
    /// on, the batch is stored unchanged for Kafka consumers to receive as sent.
    pub async fn produce_kafka(
        &self,
        (topic, partition): (&str, u32),
        (messages, verbatim): (Vec<Message>, Option<Bytes>),
        acks: Option<Acks>,
        producer: Option<ProducerBatch>,
        transactional_id: Option<&str>,
    ) -> Result<(Produced, bool), BrokerError> {
        let verbatim = verbatim.filter(|_| self.config.kafka.store_batches);
        let producer = producer.map(|p| (p, transactional_id));
        self.produce_batch(topic, partition, (messages, verbatim), acks, 0, producer)
            .await
    }

    async fn produce_batch(
        &self,
        topic: &str,
        partition: u32,
        (messages, verbatim): (Vec<Message>, Option<Bytes>),
        acks: Option<Acks>,
        epoch: u64,
        producer: Option<(ProducerBatch, Option<&str>)>,
    ) -> Result<(Produced, bool), BrokerError> {
        let topic = self.topic(topic)?;
        let acks = crate::log_group::Ack {
            acks: acks.unwrap_or(topic.acks),
            min_insync: topic.config.min_insync_replicas.unwrap_or(0),
        };
        let (group, key) = self.locate(&topic, partition)?;
        if let Some(home) = &topic.home {
            self.check_home(&topic.name, home)?;
        }
        let (count, payload, size) = self.encode_produce(&topic, messages, verbatim)?;
        let (produced, duplicate) = match producer {
            Some((p, txn)) => {
                let turn = group.lock_producer(key, p.id).await;
                // A transaction's first batch here: only if its coordinator says the
                // partition is in the open transaction — asked in the producer's turn, so
                // its marker cannot be written between the answer and the batch.
                if let Some(id) = txn
                    && !group.storage().has_open_transaction(key, p.id)
                {
                    self.verify_in_transaction(id, &p, &topic.name, partition)
                        .await?;
                }
                group
                    .append_idempotent(&turn, (key, count, payload), p, txn.is_some(), acks, epoch)
                    .await
                    .map_err(|e| self.group_error(e))?
            }
            None => (
                group
                    .append((key, count, payload), acks, epoch)
                    .await
                    .map_err(|e| self.group_error(e))?,
                false,
            ),
        };
        if duplicate {
            metrics::counter!("meridian_produce_duplicate_batches_total").increment(1);
        } else {
            metrics::counter!("meridian_produce_messages_total").increment(u64::from(count));
            metrics::counter!("meridian_produce_bytes_total").increment(size as u64);
        }
        Ok((produced, duplicate))
    }

    /// Validates a produce's messages to `topic` (sizes, the topic's own limit first;
    /// headers, timestamps; an unset timestamp stamped now) and encodes them as one batch:
    /// `(count, payload, size)`. With `verbatim` (a Kafka record batch of these messages as
    /// its producer sent it) and no timestamp to stamp, the payload stores that batch
    /// (`batch::kafka_payload`) instead.
    pub(super) fn encode_produce(
        &self,
        topic: &Topic,
        mut messages: Vec<Message>,
        verbatim: Option<Bytes>,
    ) -> Result<(u32, Bytes, usize), BrokerError> {
        if messages.is_empty() {
            return Err(BrokerError::Invalid(
                "a produce request needs at least one message".into(),
            ));
        }
        let now = now_ms();
        let mut size = 0;
        let mut stamped = false;
        for m in &mut messages {
            self.validate_message(topic, m)?;
            if m.timestamp_ms < 0 {
                return Err(BrokerError::InvalidTimestamp(format!(
                    "a message is stamped {} ms since the epoch: a timestamp is 0 (the broker's time) or more",
                    m.timestamp_ms
                )));
            }
            if m.timestamp_ms == 0 {
                m.timestamp_ms = now;
                stamped = true;
            }
            if m.timestamp_ms > now.saturating_add(super::TIMESTAMP_AHEAD_MAX_MS) {
                return Err(BrokerError::InvalidTimestamp(format!(
                    "a message is stamped {} ms since the epoch, more than {} ms after this broker's clock ({now}): check the producer's clock (Kafka's message.timestamp.after.max.ms)",
                    m.timestamp_ms,
                    super::TIMESTAMP_AHEAD_MAX_MS
                )));
            }
            size += m.encoded_len();
        }
        if size > self.config.batch_bytes_max {
            return Err(BrokerError::TooLarge {
                what: "the batch",
                size,
                limit: self.config.batch_bytes_max,
            });
        }
        let count = messages.len() as u32;
        let payload = match verbatim {
            // A topic's compression.type other than `producer`: the batch is stored (and
            // served) compressed with it — only when it is stored as produced at all.
            Some(kafka) if !stamped => match topic.config.compression.and_then(kafka_codec) {
                Some(codec) => {
                    let again = meridian_proto::kafka::recompress(
                        &kafka,
                        codec,
                        self.config.batch_bytes_max,
                    )
                    .map_err(|e| BrokerError::Invalid(e.message))?;
                    batch::kafka_payload(again.as_ref().unwrap_or(&kafka))
                }
                None => batch::kafka_payload(&kafka),
            },
            _ => Bytes::from(batch::encode_batch(&messages)),
        };
        Ok((count, payload, size))
    }

    /// Reads messages from `offset` on (at most about `max_bytes`, at least one message when
    /// any is available), waiting up to `max_wait` for the first one to arrive. Native
    /// consumers read committed data: nothing of an open or aborted transaction.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
        max_wait: Duration,
    ) -> Result<(Vec<FetchedMessage>, (u64, u64)), BrokerError> {
        let fetched = self
            .fetch_batches(
                topic,
                partition,
                (offset, max_bytes),
                max_wait,
                Isolation::Committed,
            )
            .await?;
        let messages = decode(fetched.batches, offset, max_bytes, &self.config.region)?;
        metrics::counter!("meridian_fetch_messages_total").increment(messages.len() as u64);
        Ok((messages, (fetched.earliest, fetched.latest)))
    }

    /// Reads the batches (and transaction markers) from `offset` on, at most about
    /// `max_bytes` (at least one batch when any is available), waiting up to `max_wait`
    /// for one to arrive. With [`Isolation::Committed`], stops at the last stable offset and
    /// leaves out aborted transactions' batches.
    pub async fn fetch_batches(
        &self,
        topic: &str,
        partition: u32,
        (offset, max_bytes): (u64, usize),
        max_wait: Duration,
        isolation: Isolation,
    ) -> Result<Fetched, BrokerError> {
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        self.require_leader(topic.groups[partition as usize])?;
        if let Some(policy) = topic.compaction() {
            // Never read a compacted partition before its key map is built (the retention
            // pass builds it too, but only every retention check).
            ensure_compacted(group.storage(), key, policy).await?;
        }
        let max_wait = max_wait.min(Duration::from_millis(self.config.fetch_wait_max_ms));
        let deadline = tokio::time::Instant::now() + max_wait;
        let group = group.storage();
        let mut visible = group.subscribe();
        loop {
            visible.borrow_and_update();
            let (batches, (earliest, latest, last_stable)) =
                read_isolated(group, key, offset, max_bytes.max(1), isolation)
                    .map_err(|e| self.read_error(&topic, partition, e))?;
            if !batches.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(Fetched {
                    batches,
                    earliest,
                    latest,
                    last_stable,
                });
            }
            // Long poll: wake when the group makes new records visible, or at the deadline.
            if tokio::time::timeout_at(deadline, visible.changed())
                .await
                .is_ok_and(|r| r.is_err())
            {
                return Err(BrokerError::Append(AppendError::Closed));
            }
        }
    }

    /// A strictly ordered topic takes writes only in its open home region, and only on a
    /// broker sure the control plane has not moved the home meanwhile.
    pub(super) fn check_home(&self, topic: &str, home: &catalog::Home) -> Result<(), BrokerError> {
        let why = if home.closed {
            format!(
                "its home is moving away from {} (epoch {})",
                home.region, home.epoch
            )
        } else if home.region != self.config.region {
            format!(
                "only its home region {} accepts writes (epoch {})",
                home.region, home.epoch
            )
        } else {
            match self.may_write_home() {
                Ok(()) => return Ok(()),
                Err(e) => format!(
                    "this broker of home region {} cannot take writes: {e}",
                    home.region
                ),
            }
        };
        Err(BrokerError::NotHome(format!(
            "topic {topic} is strictly ordered: {why}; produce in its home region (meridian topic describe {topic})"
        )))
    }

    fn validate_message(&self, topic: &Topic, m: &Message) -> Result<(), BrokerError> {
        if m.key.is_none() && topic.compaction().is_some() {
            return Err(BrokerError::InvalidRecord(format!(
                "topic {} is compacted (cleanup.policy {}): every message needs a key; send one, or alter the topic's cleanup.policy",
                topic.name,
                topic
                    .config
                    .cleanup_policy
                    .map_or("compact", |p| p.as_str())
            )));
        }
        let size = m.encoded_len();
        let limit = topic.message_bytes_max(self.config.message_bytes_max);
        if size > limit {
            return Err(BrokerError::TooLarge {
                what: "a message",
                size,
                limit,
            });
        }
        if m.headers.len() > HEADERS_MAX {
            return Err(BrokerError::Invalid(format!(
                "a message has {} headers; the limit is {HEADERS_MAX}",
                m.headers.len()
            )));
        }
        if let Some((name, _)) = m
            .headers
            .iter()
            .find(|(n, _)| n.len() > HEADER_NAME_BYTES_MAX)
        {
            return Err(BrokerError::Invalid(format!(
                "header name of {} bytes; the limit is {HEADER_NAME_BYTES_MAX}",
                name.len()
            )));
        }
        Ok(())
    }

    fn read_error(&self, topic: &Topic, partition: u32, e: ReadError) -> BrokerError {
        match e {
            ReadError::OffsetOutOfRange {
                offset,
                earliest,
                latest,
            } => BrokerError::OffsetOutOfRange {
                topic: topic.name.clone(),
                partition,
                offset,
                earliest,
                latest,
            },
            other => BrokerError::Read(other),
        }
    }
}

/// Reads batches from `offset`, as [`Broker::fetch_batches`] returns them: with
/// [`Isolation::Committed`] only below the last stable offset and without aborted
/// transactions' batches, reading on while all it read was left out. Also the partition's
/// `(earliest, latest, last stable)` offsets, read once before the batches.
#[allow(clippy::type_complexity)]
fn read_isolated(
    group: &LogGroup,
    key: PartitionKey,
    offset: u64,
    max_bytes: usize,
    isolation: Isolation,
) -> Result<(Vec<ReadBatch>, (u64, u64, u64)), ReadError> {
    let ends @ (earliest, latest, last_stable) = group.stable_offsets(key)?;
    if offset < earliest || offset > latest {
        return Err(ReadError::OffsetOutOfRange {
            offset,
            earliest,
            latest,
        });
    }
    // What is returned never passes the offsets returned with it.
    let limit = match isolation {
        Isolation::Committed => last_stable,
        Isolation::Uncommitted => latest,
    };
    let mut aborted: Option<Vec<Aborted>> = None;
    let (mut out, mut next) = (Vec::new(), offset);
    while out.is_empty() && next < limit {
        let batches = group.read(key, next, max_bytes)?;
        if batches.is_empty() {
            break;
        }
        for b in batches {
            if b.base_offset >= limit {
                return Ok((out, ends));
            }
            next = b.base_offset + u64::from(b.count);
            if isolation == Isolation::Committed
                && b.txn == Some(TxnPart::Batch)
                && let Some(p) = b.producer
            {
                let aborted = aborted.get_or_insert_with(|| group.aborted_in(key, offset, limit));
                if aborted.iter().any(|a| a.covers(p.id, b.base_offset)) {
                    continue;
                }
            }
            out.push(b);
        }
    }
    Ok((out, ends))
}

/// The Kafka codec a topic's `compression.type` names; `None` for `producer` (batches
/// kept as their producers compressed them).
pub(crate) fn kafka_codec(c: TopicCompression) -> Option<Compression> {
    match c {
        TopicCompression::Producer => None,
        TopicCompression::Uncompressed => Some(Compression::None),
        TopicCompression::Gzip => Some(Compression::Gzip),
        TopicCompression::Snappy => Some(Compression::Snappy),
        TopicCompression::Lz4 => Some(Compression::Lz4),
        TopicCompression::Zstd => Some(Compression::Zstd),
    }
}

/// Makes partition `key` of `storage` compacted, if it is not yet (building its key map
/// off the async workers).
async fn ensure_compacted(
    storage: &std::sync::Arc<LogGroup>,
    key: PartitionKey,
    policy: crate::storage::compaction::Compaction,
) -> Result<(), BrokerError> {
    if storage.compaction_stats(key).is_some() {
        return Ok(());
    }
    let storage = storage.clone();
    tokio::task::spawn_blocking(move || storage.set_compaction(key, Some(policy)))
        .await
        .map_err(|e| BrokerError::Invalid(format!("building a compacted partition's keys: {e}")))?
        .map_err(BrokerError::Read)
}

/// The messages of a stored batch (not a transaction marker).
pub(crate) fn messages_of(b: &ReadBatch) -> Result<Vec<Message>, BrokerError> {
    batch::decode_batch(&b.payload, b.count as usize).map_err(|e| {
        BrokerError::Invalid(format!(
            "stored batch at offset {} does not decode: {e}",
            b.base_offset
        ))
    })
}

/// Decodes fetched batches, dropping messages before `offset` and transaction markers, and
/// stopping near `max_bytes` (but always returning the first message).
fn decode(
    batches: Vec<ReadBatch>,
    offset: u64,
    max_bytes: usize,
    region: &str,
) -> Result<Vec<FetchedMessage>, BrokerError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for b in batches {
        if b.is_marker() {
            continue;
        }
        for (i, message) in messages_of(&b)?.into_iter().enumerate() {
            let o = b.base_offset + i as u64;
            if o < offset || b.removed.contains(&(i as u32)) {
                continue;
            }
            bytes += message.encoded_len();
            if !out.is_empty() && bytes > max_bytes {
                return Ok(out);
            }
            let (origin_region, seq) = match &b.origin {
                Some(origin) => (origin.region.clone(), origin.seq),
                None => (region.to_owned(), b.index),
            };
            out.push(FetchedMessage {
                offset: o,
                message,
                append_time_ms: b.append_time_ms,
                origin_region,
                origin_position: meridian_proto::origin::position(seq, i as u32),
            });
        }
    }
    Ok(out)
}
