//! The producer: `send` queues a record and returns a future of its acknowledgment; a
//! background task gathers records per partition into batches, sent when they reach
//! `batch_bytes` or have waited `linger`. Batches of one partition are sent one after the
//! other, so a partition's messages keep the order they were sent in.
//!
//! **Idempotence** (on by default, [`ProducerConfig::idempotent`]): each producer has an id
//! (random, in a range Kafka's producer ids never reach) and, per partition, an epoch and a
//! sequence; a batch's request carries them, so the partition stores it once however often
//! it arrives — whichever broker leads when it does. A batch is resent as is (same producer,
//! same sequences) to the partition's current leader when a broker fails, goes away or does
//! not answer within [`ProducerConfig::request_timeout`], until
//! [`ProducerConfig::delivery_timeout`]; its future gets the offset where it is stored.
//!
//! One batch of a partition is in flight at a time (the next is sent once the previous is
//! acknowledged or failed for good), so sequences never need renumbering and order is kept
//! without relying on the broker refusing gaps. A batch's sequence is taken when its turn
//! comes. When a batch fails for good (its outcome may be unknown: a timeout), that
//! partition's epoch moves on and its sequence restarts at 0: the following batches go on
//! (they are not failed), and a late copy of the failed one can no longer be written after
//! them (the broker fences the older epoch).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::{partition, v1};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use meridian_region_client::RegionError;
use meridian_region_client::idempotence::{Sequences, new_producer_id, retriable};

use crate::{Client, ClientError};

/// Producer settings.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more records before it is sent.
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes.
    pub batch_bytes: usize,
    /// Records queued for the batching task, at most; `send` waits beyond it.
    pub queue_records_max: usize,
    /// What the broker waits for before acknowledging; `Unspecified` (the default): the
    /// topic's setting (quorum unless the topic says otherwise).
    pub acks: v1::Acks,
    /// Exactly once per batch (the default): batches carry the producer's id and sequences,
    /// and are resent after failures and timeouts until `delivery_timeout`. Off, a batch is
    /// sent once (redirects to the leader aside): a failure after it may have reached a
    /// broker fails its records, since resending could store them twice.
    pub idempotent: bool,
    /// Idempotent mode: how long a batch keeps being resent before its records fail
    /// (Kafka's `delivery.timeout.ms`).
    pub delivery_timeout: Duration,
    /// Idempotent mode: how long one attempt waits for an answer before the batch is resent
    /// (to the leader, or another broker): the broker's own longest wait for replicas
    /// (5 s with acks=all) and 5 s more, well below the transport's 45 s, so a stalled
    /// leader does not hold the partition's batches for long.
    pub request_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_bytes: 256 << 10,
            queue_records_max: 10_000,
            acks: v1::Acks::Unspecified,
            idempotent: true,
            delivery_timeout: Duration::from_secs(120),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct Record {
    /// Destination topic.
    pub topic: String,
    /// Destination partition; `None` picks one by key with Kafka's partitioner
    /// (`meridian_proto::partition::for_key`: murmur2, as the Java client and librdkafka's
    /// `murmur2_random`), or round-robin without a key.
    pub partition: Option<u32>,
    /// Optional key.
    pub key: Option<Bytes>,
    /// Payload; `None` is a null value (a tombstone, as Kafka calls it), distinct from an
    /// empty one.
    pub value: Option<Bytes>,
    /// Headers, in order; a name may repeat and a value may be null (`None`).
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Producer timestamp (ms since the epoch); 0 lets the broker stamp it.
    pub timestamp_ms: i64,
}

impl Record {
    /// A record with a value for a topic.
    pub fn new(topic: impl Into<String>, value: impl Into<Bytes>) -> Record {
        Record {
            topic: topic.into(),
            value: Some(value.into()),
            ..Record::default()
        }
    }

    /// A record with a null value (a tombstone: "this key is deleted" to a compacting
    /// reader) for a topic.
    pub fn tombstone(topic: impl Into<String>) -> Record {
        Record {
            topic: topic.into(),
            ..Record::default()
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }

    /// Pins the partition.
    pub fn partition(mut self, partition: u32) -> Record {
        self.partition = Some(partition);
        self
    }

    /// Adds a header (after those already added; a name may repeat).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Record {
        self.headers.push((name.into(), Some(value.into())));
        self
    }

    /// Adds a header with a null value.
    pub fn null_header(mut self, name: impl Into<String>) -> Record {
        self.headers.push((name.into(), None));
        self
    }

    /// Sets the producer timestamp (ms since the epoch).
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Record {
        self.timestamp_ms = timestamp_ms;
        self
    }

    /// The record as the wire carries it.
    pub(crate) fn into_message(self) -> v1::Message {
        v1::Message {
            key: self.key,
            value_null: self.value.is_none(),
            value: self.value.unwrap_or_default(),
            headers: self
                .headers
                .into_iter()
                .map(|(key, value)| v1::Header::from_pair(key, value))
                .collect(),
            timestamp_ms: self.timestamp_ms,
        }
    }

    fn size(&self) -> usize {
        24 + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| 6 + k.len() + v.as_ref().map_or(0, Bytes::len))
                .sum::<usize>()
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: u64,
    /// Broker time of the append.
    pub append_time_ms: i64,
}

/// Resolves when the broker acknowledges (or refuses) one record.
#[derive(Debug)]
pub struct SendFuture(oneshot::Receiver<Result<RecordMetadata, ClientError>>);

impl Future for SendFuture {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or(Err(ClientError::ProducerClosed)))
    }
}

type Reply = oneshot::Sender<Result<RecordMetadata, ClientError>>;

enum Command {
    Send(Record, Reply),
    Flush(oneshot::Sender<()>),
}

/// An asynchronous, batching producer. Dropping it sends what is queued, then stops.
#[derive(Debug, Clone)]
pub struct Producer {
    tx: mpsc::Sender<Command>,
}

impl Producer {
    pub(crate) fn new(client: Client, config: ProducerConfig) -> Producer {
        let (tx, rx) = mpsc::channel(config.queue_records_max.max(1));
        let batcher = Batcher {
            client,
            config,
            rx,
            topics: HashMap::new(),
            stopped: Arc::default(),
            batches: HashMap::new(),
            in_flight: HashMap::new(),
            round_robin: 0,
            epochs: Arc::default(),
            producer_id: new_producer_id(),
            sequences: Arc::default(),
        };
        tokio::spawn(batcher.run());
        Producer { tx }
    }

    /// Queues a record (waiting for room in the queue) and returns the future of its
    /// acknowledgment.
    pub async fn send(&self, record: Record) -> SendFuture {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Command::Send(_, reply))) =
            self.tx.send(Command::Send(record, reply)).await
        {
            let _ = reply.send(Err(ClientError::ProducerClosed));
        }
        SendFuture(rx)
    }

    /// Sends every queued record now and waits until all are acknowledged or failed.
    pub async fn flush(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Batch {
    records: Vec<Record>,
    replies: Vec<Reply>,
    bytes: usize,
    deadline: Instant,
    /// When its first record was queued: its delivery timeout counts from here, as Kafka's
    /// `delivery.timeout.ms` does (time spent behind the partition's earlier batches counts).
    created: Instant,
    /// Its topic is strictly ordered.
    strict_order: bool,
}

struct Batcher {
    client: Client,
    config: ProducerConfig,
    rx: mpsc::Receiver<Command>,
    topics: HashMap<String, crate::TopicShape>,
    /// Partitions of strictly ordered topics where a batch failed, with why: nothing more
    /// is sent there (the next batch would land before the failed one's messages).
    stopped: Arc<Mutex<HashMap<(String, u32), String>>>,
    batches: HashMap<(String, u32), Batch>,
    in_flight: HashMap<(String, u32), JoinHandle<()>>,
    round_robin: u32,
    /// The leadership epoch each partition's group last answered with; sent with the next
    /// batch, so a broker that fell behind (a replaced leader) refuses it rather than
    /// acknowledging it.
    epochs: Arc<Mutex<HashMap<(String, u32), u64>>>,
    /// Idempotent mode: this producer's id.
    producer_id: i64,
    /// Idempotent mode: each partition's epoch and next sequence, with the client's region
    /// moves when they were started.
    sequences: Arc<Mutex<PartitionSequences>>,
}

/// Each partition's sequences, with the client's region moves when they were started.
type PartitionSequences = HashMap<(String, u32), (u64, Sequences)>;

impl Batcher {
    async fn run(mut self) {
        loop {
            let next_deadline = self.batches.values().map(|b| b.deadline).min();
            let command = match next_deadline {
                Some(deadline) => tokio::select! {
                    c = self.rx.recv() => c,
                    () = tokio::time::sleep_until(deadline) => {
                        self.send_due(Instant::now());
                        continue;
                    }
                },
                None => self.rx.recv().await,
            };
            match command {
                Some(Command::Send(record, reply)) => self.add(record, reply).await,
                Some(Command::Flush(done)) => {
                    self.send_due(Instant::now() + Duration::from_secs(3600 * 24));
                    let waits: Vec<_> = self.in_flight.drain().map(|(_, h)| h).collect();
                    tokio::spawn(async move {
                        for h in waits {
                            let _ = h.await;
                        }
                        let _ = done.send(());
                    });
                }
                None => {
                    self.send_due(Instant::now() + Duration::from_secs(3600 * 24));
                    for (_, h) in self.in_flight.drain() {
                        let _ = h.await;
                    }
                    return;
                }
            }
        }
    }

    async fn add(&mut self, record: Record, reply: Reply) {
        let shape = match self
            .client
            .topic_shape(&mut self.topics, &record.topic)
            .await
        {
            Ok(shape) => shape,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let partition = match record.partition {
            Some(p) => p,
            None => match &record.key {
                // Kafka's partitioner, so Kafka clients put the key on the same partition.
                Some(key) => partition::for_key(key, shape.partitions),
                None => {
                    self.round_robin = self.round_robin.wrapping_add(1);
                    self.round_robin % shape.partitions.get()
                }
            },
        };
        let key = (record.topic.clone(), partition);
        let size = record.size();
        let linger = self.config.linger;
        let batch = self.batches.entry(key.clone()).or_insert_with(|| Batch {
            records: Vec::new(),
            replies: Vec::new(),
            bytes: 0,
            deadline: Instant::now() + linger,
            created: Instant::now(),
            strict_order: shape.strict_order,
        });
        batch.records.push(record);
        batch.replies.push(reply);
        batch.bytes += size;
        if batch.bytes >= self.config.batch_bytes {
            let batch = self.batches.remove(&key).expect("just inserted");
            self.send_batch(key, batch);
        }
    }

    fn send_due(&mut self, now: Instant) {
        let due: Vec<_> = self
            .batches
            .iter()
            .filter(|(_, b)| b.deadline <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            let batch = self.batches.remove(&key).expect("listed above");
            self.send_batch(key, batch);
        }
    }

    /// Sends a batch after the partition's previous batch is acknowledged (or failed for
    /// good), keeping order.
    fn send_batch(&mut self, key: (String, u32), batch: Batch) {
        let previous = self.in_flight.remove(&key);
        let client = self.client.clone();
        let config = self.config.clone();
        let epochs = self.epochs.clone();
        let sequences = self.config.idempotent.then(|| {
            let id = self.producer_id;
            (self.sequences.clone(), id)
        });
        let (topic, partition) = key.clone();
        let stopped = self.stopped.clone();
        let (topic_key, partition_key) = key.clone();
        let handle = tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            // A strictly ordered partition whose earlier batch failed takes nothing more
            // from this producer: sending on would reorder it.
            let stop = batch.strict_order.then(|| {
                stopped
                    .lock()
                    .expect("stopped lock poisoned")
                    .get(&key)
                    .cloned()
            });
            if let Some(Some(why)) = stop {
                let e = ClientError::Usage(format!(
                    "not sent: an earlier batch to {topic}/{partition} failed ({why}); the topic is strictly ordered, so this producer sends nothing more there (deal with the failed messages, then use a new producer)"
                ));
                for reply in batch.replies {
                    let _ = reply.send(Err(e.clone()));
                }
                return;
            }
            let messages: Vec<v1::Message> = batch
                .records
                .into_iter()
                .map(Record::into_message)
                .collect();
            let epoch_key = (topic.clone(), partition);
            let known = epochs
                .lock()
                .expect("epochs lock poisoned")
                .get(&epoch_key)
                .copied()
                .unwrap_or(0);
            // The partition's previous batch is settled: this one takes the next sequence.
            // After the client moved to another region the partition's sequences start
            // again under a new producer id: the region it is in now never saw the ones in
            // between, and neither will the one it left when it comes back (no batch is
            // ever sent again across a move).
            let moves = client.moves();
            let producer = sequences.as_ref().map(|(sequences, id)| {
                let mut sequences = sequences.lock().expect("sequences lock poisoned");
                let (started, s) = sequences
                    .entry(epoch_key.clone())
                    .or_insert_with(|| (moves, Sequences::new(*id)));
                if *started != moves {
                    *started = moves;
                    *s = Sequences::new(new_producer_id());
                }
                s.assign(messages.len())
            });
            let request = v1::ProduceRequest {
                topic: topic.clone(),
                partition,
                messages,
                acks: config.acks as i32,
                epoch: known,
                producer,
                transactional: false,
                transactional_id: String::new(),
                deliver_at_ms: 0,
            };
            let sent = if request.producer.is_some() {
                let give_up = batch.created + config.delivery_timeout;
                let sent = send_idempotent(&client, request, &config, give_up).await;
                if sent.is_err()
                    && let Some((sequences, _)) = &sequences
                    && let Some((_, s)) = sequences
                        .lock()
                        .expect("sequences lock poisoned")
                        .get_mut(&epoch_key)
                {
                    s.failed();
                }
                sent
            } else {
                send_once(&client, request).await
            };
            if let Ok(r) = &sent
                && r.epoch > 0
            {
                let mut epochs = epochs.lock().expect("epochs lock poisoned");
                let e = epochs.entry(epoch_key).or_default();
                *e = (*e).max(r.epoch);
            }
            match sent {
                Ok(r) => {
                    for (i, reply) in batch.replies.into_iter().enumerate() {
                        let _ = reply.send(Ok(RecordMetadata {
                            topic: topic.clone(),
                            partition,
                            offset: r.base_offset + i as u64,
                            append_time_ms: r.append_time_ms,
                        }));
                    }
                }
                Err(e) => {
                    if batch.strict_order {
                        stopped
                            .lock()
                            .expect("stopped lock poisoned")
                            .entry(key)
                            .or_insert_with(|| e.to_string());
                    }
                    for reply in batch.replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
        self.in_flight.insert((topic_key, partition_key), handle);
    }
}

/// Sends a batch without a producer: once, following redirects, never resent after it may
/// have reached a broker that then failed (it could be stored twice).
async fn send_once(
    client: &Client,
    mut request: v1::ProduceRequest,
) -> Result<v1::ProduceResponse, ClientError> {
    let mut sent = client.produce_once(&request).await;
    if sent
        .as_ref()
        .is_err_and(|e| e.code() == Some(tonic::Code::Aborted))
    {
        // The group moved to a newer epoch than this producer saw (a failover): the batch
        // was refused, not stored, so it is safe to send again, unfenced; the answer
        // carries the new epoch.
        request.epoch = 0;
        sent = client.produce_once(&request).await;
    }
    sent
}

/// Sends an idempotent batch until it is stored or `give_up` (its delivery timeout) passes:
/// resent as is (same producer, same sequences) after failures, to whichever broker leads
/// the partition. A routed client's batch stays in the region it was first sent to: when
/// the client moved to another region meanwhile, the batch fails (it may be stored in the
/// region it left, whose mirror ships it later; sent again here it could be stored twice).
pub(crate) async fn send_idempotent(
    client: &Client,
    mut request: v1::ProduceRequest,
    config: &ProducerConfig,
    give_up: Instant,
) -> Result<v1::ProduceResponse, ClientError> {
    let region = client.region();
    let mut pause = Duration::from_millis(50);
    let mut last: Option<RegionError> = None;
    let started = Instant::now();
    loop {
        let left = give_up.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Broker {
                code: tonic::Code::DeadlineExceeded,
                message: match &last {
                    Some(e) => format!(
                        "not acknowledged within the delivery timeout ({:?}); last error: {e}",
                        config.delivery_timeout
                    ),
                    None => format!(
                        "not sent within the delivery timeout ({:?})",
                        config.delivery_timeout
                    ),
                },
            });
        }
        if last.is_some() && client.region() != region {
            return Err(ClientError::Broker {
                code: tonic::Code::Unavailable,
                message: format!(
                    "the client moved from region {} to {} before the batch was acknowledged; it may be stored there, so it is not sent again here; last error: {}",
                    region.as_deref().unwrap_or("?"),
                    client.region().as_deref().unwrap_or("?"),
                    last.as_ref().map(ToString::to_string).unwrap_or_default()
                ),
            });
        }
        let e = match client
            // Only a first attempt may follow the client to another region (inside the
            // call, and only for a request never sent): a resend may find the client about
            // to move, and must not carry the batch along (checked above, then raced).
            .produce_idempotent(
                &request,
                config.request_timeout.min(left),
                left,
                last.is_none(),
            )
            .await
        {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        if e.code() == Some(tonic::Code::Aborted) && request.epoch != 0 {
            // The group moved to a newer leadership epoch than this producer saw: refused,
            // not stored; sent again unfenced (the answer carries the new epoch).
            request.epoch = 0;
            last = Some(e);
            continue;
        }
        // A topic just created may not have reached this partition's leader yet (the
        // catalog replicates): "unknown topic" is retried for a few seconds, as Kafka's
        // producers retry UNKNOWN_TOPIC_OR_PARTITION, then is final.
        let just_created = crate::just_created(e.code(), started.elapsed());
        if !retriable(&e) && !just_created {
            return Err(e.into());
        }
        tracing::debug!(
            topic = %request.topic,
            partition = request.partition,
            error = %e,
            "resending an idempotent batch"
        );
        // The limit's own expiry says nothing new: keep the broker's last word. Nor does a
        // transport failure after the brokers named the log group that is unavailable and
        // its leader: that stays the error reported.
        let says_less = matches!(e, RegionError::GaveUp(_))
            || matches!(last, Some(RegionError::GroupUnavailable { .. }))
                && !matches!(e, RegionError::GroupUnavailable { .. });
        if !says_less || last.is_none() {
            last = Some(e);
        }
        tokio::time::sleep(pause.min(give_up.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}
