//! The broker's own idempotent producer, for records a broker takes in on behalf of its
//! region from clients of other protocols (an MQTT PUBLISH, MQTT session and retained
//! records): each goes to its partition's leader, through this broker's core when it
//! leads the partition and through the region client when another broker does.
//!
//! One producer id per broker process; per partition an epoch and a sequence
//! ([`Sequences`], the SDK's too). A partition's records are written in the order they
//! were queued: one batch of a partition in flight at a time, holding everything queued
//! behind the previous one (batches form by themselves under load, with no linger). A
//! batch is resent with the same sequences after a leader change or a failed broker until
//! it is stored or [`DELIVERY_TIMEOUT`] passes, so it is stored once; a batch that failed
//! for good moves the partition to a new epoch (a late copy of it is then fenced).
//!
//! Bounds: [`QUEUE_BYTES_MAX`] queued per partition (past it a record is refused at once,
//! with why); the map holds at most one queue per partition of the region's topics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_proto::batch::Message;
use meridian_proto::producer::ProducerBatch;
use meridian_proto::{partition, v1};
use meridian_region_client::RegionError;
use meridian_region_client::idempotence::{Sequences, new_producer_id, retriable};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Broker, BrokerError};

/// How long a batch is resent before it fails (as the SDK's `delivery_timeout`).
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long one attempt at another broker may take before it counts as failed (a stalled
/// broker keeps its connections open).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes queued for one partition at most.
pub const QUEUE_BYTES_MAX: usize = 16 << 20;
/// Bytes one batch carries at most.
const BATCH_BYTES_MAX: usize = 1 << 20;

/// Where a record was stored: its offset, or why it was not.
pub type Stored = Result<u64, String>;

/// The broker's own idempotent producer (see the module's text).
pub struct RegionProducer {
    broker: Arc<Broker>,
    id: i64,
    queues: Mutex<HashMap<(String, u32), Queue>>,
}

/// A partition's records waiting for their batch.
struct Queue {
    /// Records in order, each with its size (what it counts against the bound).
    waiting: Vec<(Message, usize, oneshot::Sender<Stored>)>,
    bytes: usize,
    /// A batch of it is in flight (its task then takes what waits).
    sending: bool,
    sequences: Sequences,
}

impl RegionProducer {
    /// The producer of `broker`, with a new producer id.
    pub fn new(broker: Arc<Broker>) -> Arc<RegionProducer> {
        Arc::new(RegionProducer {
            broker,
            id: new_producer_id(),
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Queues `message` for topic `topic` (its partition by its key, Kafka's partitioner,
    /// so a key lands where Kafka and SDK producers put it; a record without a key on
    /// partition 0): the future of where it is stored. Refused at once when the topic is
    /// unknown or its partition's queue is full.
    pub fn send(
        self: &Arc<Self>,
        topic: &str,
        message: Message,
    ) -> Result<oneshot::Receiver<Stored>, BrokerError> {
        let t = self.broker.topic(topic)?;
        let partitions = std::num::NonZeroU32::new(t.groups.len() as u32)
            .ok_or_else(|| BrokerError::UnknownTopic(topic.to_owned()))?;
        let p = match &message.key {
            Some(key) => partition::for_key(key, partitions),
            None => 0,
        };
        let size = message_size(&message);
        let (reply, stored) = oneshot::channel();
        let mut queues = self.queues.lock().expect("producer queues poisoned");
        let key = (topic.to_owned(), p);
        let queue = queues.entry(key.clone()).or_insert_with(|| Queue {
            waiting: Vec::new(),
            bytes: 0,
            sending: false,
            sequences: Sequences::new(self.id),
        });
        if queue.bytes + size > QUEUE_BYTES_MAX && !queue.waiting.is_empty() {
            metrics::counter!("meridian_region_producer_refused_total").increment(1);
            return Err(BrokerError::TooLarge {
                what: "the broker's write queue of a partition",
                size: queue.bytes + size,
                limit: QUEUE_BYTES_MAX,
            });
        }
        queue.waiting.push((message, size, reply));
        queue.bytes += size;
        if !queue.sending {
            queue.sending = true;
            let this = self.clone();
            tokio::spawn(async move { this.drain(key).await });
        }
        Ok(stored)
    }

    /// Sends partition `key`'s batches one after the other until nothing waits.
    async fn drain(self: Arc<Self>, key: (String, u32)) {
        loop {
            let (batch, producer) = {
                let mut queues = self.queues.lock().expect("producer queues poisoned");
                let queue = queues.get_mut(&key).expect("a sending queue stays");
                if queue.waiting.is_empty() {
                    queue.sending = false;
                    return;
                }
                // Up to BATCH_BYTES_MAX, and at least one record.
                let mut bytes = 0;
                let n = queue
                    .waiting
                    .iter()
                    .take_while(|(_, size, _)| {
                        bytes += size;
                        bytes <= BATCH_BYTES_MAX
                    })
                    .count()
                    .max(1);
                let batch: Vec<_> = queue.waiting.drain(..n).collect();
                queue.bytes -= batch.iter().map(|(_, size, _)| size).sum::<usize>();
                let producer = queue.sequences.assign(batch.len());
                (batch, producer)
            };
            let (messages, replies): (Vec<Message>, Vec<_>) =
                batch.into_iter().map(|(m, _, reply)| (m, reply)).unzip();
            let stored = self
                .broker
                .produce_anywhere(&key.0, key.1, messages, producer)
                .await;
            match stored {
                Ok(base) => {
                    for (i, r) in replies.into_iter().enumerate() {
                        let _ = r.send(Ok(base + i as u64));
                    }
                }
                Err(why) => {
                    // Its outcome may be unknown (a timeout): the next batch starts a new
                    // epoch, so a late copy of this one is fenced.
                    if let Some(q) = self
                        .queues
                        .lock()
                        .expect("producer queues poisoned")
                        .get_mut(&key)
                    {
                        q.sequences.failed();
                    }
                    for r in replies {
                        let _ = r.send(Err(why.clone()));
                    }
                }
            }
        }
    }
}

/// What a message counts against the queue's bound.
fn message_size(m: &Message) -> usize {
    64 + m.key.as_ref().map_or(0, |k| k.len())
        + m.value.as_ref().map_or(0, |v| v.len())
        + m.headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
}

/// Whether a failure of this broker's own write is worth another try: the partition is
/// between leaders or lost its quorum for now; refusals are final.
fn retriable_here(e: &BrokerError) -> bool {
    matches!(
        e,
        BrokerError::NotLeader { .. }
            | BrokerError::EpochAhead { .. }
            | BrokerError::Replication(_)
            | BrokerError::NotEnoughReplicas(_)
            | BrokerError::Append(crate::storage::AppendError::Closed)
    )
}

impl Broker {
    /// Writes an idempotent batch of `producer` at partition `partition`'s leader, wherever
    /// it is, resending it as is until it is stored (once, whatever the number of tries) or
    /// [`DELIVERY_TIMEOUT`] passes; its base offset, or why it failed.
    pub(crate) async fn produce_anywhere(
        &self,
        topic: &str,
        partition: u32,
        messages: Vec<Message>,
        producer: v1::ProducerSequence,
    ) -> Result<u64, String> {
        let give_up = Instant::now() + DELIVERY_TIMEOUT;
        let mut pause = Duration::from_millis(50);
        loop {
            let why = match self
                .produce_once_anywhere(topic, partition, &messages, producer)
                .await
            {
                Ok(base) => return Ok(base),
                Err(Err(refused)) => return Err(refused),
                Err(Ok(retry)) => retry,
            };
            if Instant::now() + pause > give_up {
                return Err(format!(
                    "not stored within {DELIVERY_TIMEOUT:?}; last error: {why}"
                ));
            }
            tracing::debug!(topic, partition, error = %why, "resending the broker's own batch");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// One try: here when this broker leads the partition, else at its leader through the
    /// region client. `Err(Ok(why))`: worth another try; `Err(Err(why))`: refused.
    async fn produce_once_anywhere(
        &self,
        topic: &str,
        partition: u32,
        messages: &[Message],
        producer: v1::ProducerSequence,
    ) -> Result<u64, Result<String, String>> {
        let span = (messages.len().max(1) - 1) as i64;
        let batch = ProducerBatch {
            id: producer.id,
            epoch: producer.epoch as i16,
            first_sequence: producer.first_sequence,
            last_sequence: ((i64::from(producer.first_sequence) + span) & i64::from(i32::MAX))
                as i32,
        };
        match self
            .produce_idempotent(topic, partition, messages.to_vec(), None, batch)
            .await
        {
            Ok((produced, _)) => return Ok(produced.base_offset),
            Err(BrokerError::NotLeader { .. }) => {}
            Err(e) if retriable_here(&e) => return Err(Ok(e.to_string())),
            Err(e) => return Err(Err(e.to_string())),
        }
        let request = v1::ProduceRequest {
            topic: topic.to_owned(),
            partition,
            messages: messages.iter().cloned().map(v1::Message::from).collect(),
            producer: Some(producer),
            ..Default::default()
        };
        self.at_partition_leader(topic, partition, ATTEMPT_TIMEOUT, |mut c| {
            let r = request.clone();
            async move { c.produce(r).await }
        })
        .await
        .map(|r| r.base_offset)
        .map_err(|e: RegionError| {
            if retriable(&e) {
                Ok(e.to_string())
            } else {
                Err(e.to_string())
            }
        })
    }
}
