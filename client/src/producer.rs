//! The producer: `send` queues a record and returns a future of its acknowledgment; a
//! background task gathers records per partition into batches, sent when they reach
//! `batch_bytes` or have waited `linger`. Batches of one partition are sent one after the
//! other, so a partition's messages keep the order they were sent in.

use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::{partition, v1};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

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
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_bytes: 256 << 10,
            queue_records_max: 10_000,
            acks: v1::Acks::Unspecified,
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
            partitions: HashMap::new(),
            batches: HashMap::new(),
            in_flight: HashMap::new(),
            round_robin: 0,
            epochs: Arc::default(),
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
}

struct Batcher {
    client: Client,
    config: ProducerConfig,
    rx: mpsc::Receiver<Command>,
    partitions: HashMap<String, NonZeroU32>,
    batches: HashMap<(String, u32), Batch>,
    in_flight: HashMap<(String, u32), JoinHandle<()>>,
    round_robin: u32,
    /// The leadership epoch each partition's group last answered with; sent with the next
    /// batch, so a broker that fell behind (a replaced leader) refuses it rather than
    /// acknowledging it.
    epochs: Arc<Mutex<HashMap<(String, u32), u64>>>,
}

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
        let partition = match record.partition {
            Some(p) => p,
            None => match self.partition_count(&record.topic).await {
                Ok(n) => match &record.key {
                    // Kafka's partitioner, so Kafka clients put the key on the same partition.
                    Some(key) => partition::for_key(key, n),
                    None => {
                        self.round_robin = self.round_robin.wrapping_add(1);
                        self.round_robin % n.get()
                    }
                },
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
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
        });
        batch.records.push(record);
        batch.replies.push(reply);
        batch.bytes += size;
        if batch.bytes >= self.config.batch_bytes {
            let batch = self.batches.remove(&key).expect("just inserted");
            self.send_batch(key, batch);
        }
    }

    async fn partition_count(&mut self, topic: &str) -> Result<NonZeroU32, ClientError> {
        if let Some(&n) = self.partitions.get(topic) {
            return Ok(n);
        }
        let info = self.client.describe_topic(topic).await?;
        let n = NonZeroU32::new(info.partitions.len() as u32).unwrap_or(NonZeroU32::MIN);
        self.partitions.insert(topic.to_owned(), n);
        Ok(n)
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

    /// Sends a batch after the partition's previous batch is acknowledged, keeping order.
    fn send_batch(&mut self, key: (String, u32), batch: Batch) {
        let previous = self.in_flight.remove(&key);
        let client = self.client.clone();
        let acks = self.config.acks;
        let epochs = self.epochs.clone();
        let (topic, partition) = key.clone();
        let handle = tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let messages = batch
                .records
                .into_iter()
                .map(|r| v1::Message {
                    key: r.key,
                    value_null: r.value.is_none(),
                    value: r.value.unwrap_or_default(),
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(key, value)| v1::Header::from_pair(key, value))
                        .collect(),
                    timestamp_ms: r.timestamp_ms,
                })
                .collect();
            let epoch_key = (topic.clone(), partition);
            let known = epochs
                .lock()
                .expect("epochs lock poisoned")
                .get(&epoch_key)
                .copied()
                .unwrap_or(0);
            let mut request = v1::ProduceRequest {
                topic: topic.clone(),
                partition,
                messages,
                acks: acks as i32,
                epoch: known,
            };
            let mut sent = client.produce_once(&request).await;
            if sent
                .as_ref()
                .is_err_and(|e| e.code() == Some(tonic::Code::Aborted))
            {
                // The group moved to a newer epoch than this producer saw (a failover): the
                // batch was refused, not stored, so it is safe to send again, unfenced; the
                // answer carries the new epoch.
                request.epoch = 0;
                sent = client.produce_once(&request).await;
            }
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
                    for reply in batch.replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
        self.in_flight.insert(key, handle);
    }
}
