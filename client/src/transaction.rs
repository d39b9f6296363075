//! Native two-phase transactions (JMQ's transactional messages): begin a transaction under
//! an id, naming the producer group the broker asks on check-back; send half messages to
//! any partitions of the region (stored, invisible to consumers); then commit or roll back.
//! A transaction can also be ended by its id alone ([`Client::end_transaction`]: another
//! process, an operator). A producer group answers check-backs with
//! [`Client::serve_check_backs`]: the broker asks it how a transaction left in doubt past
//! its timeout ended, and commits or rolls back on the answer.
//!
//! Each transaction begins with a new epoch of the id's producer, fencing whatever an
//! earlier process with the same id left behind. A send is idempotent (producer id, epoch,
//! sequence), so it is resent after failures without being stored twice.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::{partition, v1};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::producer::{Record, RecordMetadata, send_idempotent};
use crate::{Client, ClientError, ProducerConfig};

/// How a transaction is begun.
#[derive(Debug, Clone)]
pub struct TransactionConfig {
    /// The transaction's id (Kafka's `transactional.id`): one transaction at a time per id.
    pub id: String,
    /// The producer group the broker asks on check-back (none: the transaction is aborted
    /// when its timeout passes, as a Kafka one is).
    pub producer_group: Option<String>,
    /// How long it may stay open before the broker checks back (or aborts).
    pub timeout: Duration,
    /// Sends: acks, delivery and request timeouts (batching settings do not apply).
    pub producer: ProducerConfig,
}

impl TransactionConfig {
    /// A transaction `id` of `producer_group`, open for at most a minute.
    pub fn new(id: impl Into<String>, producer_group: impl Into<String>) -> TransactionConfig {
        TransactionConfig {
            id: id.into(),
            producer_group: Some(producer_group.into()),
            timeout: Duration::from_secs(60),
            producer: ProducerConfig::default(),
        }
    }
}

/// An open transaction: [`Transaction::send`] half messages, then
/// [`Transaction::commit`] or [`Transaction::rollback`].
#[derive(Debug)]
pub struct Transaction {
    client: Client,
    config: TransactionConfig,
    producer_id: i64,
    epoch: i16,
    /// Each partition's next sequence.
    sequences: HashMap<(String, u32), i32>,
    /// Partitions added to the transaction.
    added: HashSet<(String, u32)>,
    partitions: HashMap<String, crate::TopicShape>,
    round_robin: u32,
}

/// How long a request refused because the previous transaction is still ending is retried.
const CONCURRENT_RETRY_FOR: Duration = Duration::from_secs(30);

impl Client {
    /// Begins a transaction: registers the id's producer with a new epoch (fencing an
    /// earlier one; a transaction it left open is rolled back first).
    pub async fn begin_transaction(
        &self,
        config: TransactionConfig,
    ) -> Result<Transaction, ClientError> {
        let answer = self
            .transaction_request(v1::TransactionRequest {
                id: config.id.clone(),
                producer_id: None,
                producer_epoch: 0,
                op: Some(v1::transaction_request::Op::Begin(v1::TxnBegin {
                    timeout_ms: i64::try_from(config.timeout.as_millis()).unwrap_or(i64::MAX),
                    producer_group: config.producer_group.clone(),
                })),
            })
            .await?;
        Ok(Transaction {
            client: self.clone(),
            producer_id: answer.producer_id,
            epoch: i16::try_from(answer.producer_epoch).unwrap_or(i16::MAX),
            config,
            sequences: HashMap::new(),
            added: HashSet::new(),
            partitions: HashMap::new(),
            round_robin: 0,
        })
    }

    /// Commits (or rolls back) transaction `id`, whoever began it. Ending it again the same
    /// way is done; the other way is refused.
    pub async fn end_transaction(&self, id: &str, commit: bool) -> Result<(), ClientError> {
        self.transaction_request(end(id, None, commit)).await?;
        Ok(())
    }

    /// Every transaction the region's coordinators know (open, in doubt, recently ended),
    /// asking each broker.
    pub async fn list_transactions(&self) -> Result<Vec<v1::TransactionInfo>, ClientError> {
        let brokers = self
            .call(|mut c| async move { c.log_groups(v1::LogGroupsRequest {}).await })
            .await?
            .brokers;
        let mut out = Vec::new();
        for b in brokers {
            let mut c = self.connection(&b.grpc).await?;
            let mut req = tonic::Request::new(v1::ListTransactionsRequest {});
            req.set_timeout(Duration::from_secs(10));
            out.extend(c.list_transactions(req).await?.into_inner().transactions);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One request to the id's coordinator; retried while the previous transaction is
    /// still ending (`Aborted`).
    async fn transaction_request(
        &self,
        request: v1::TransactionRequest,
    ) -> Result<v1::TransactionResponse, ClientError> {
        let give_up = Instant::now() + CONCURRENT_RETRY_FOR;
        loop {
            let r = request.clone();
            match self
                .call(|mut c| {
                    let r = r.clone();
                    async move { c.transaction(r).await }
                })
                .await
            {
                Err(e) if e.code() == Some(tonic::Code::Aborted) && Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Answers check-backs for `group` until the returned handle is dropped: a stream to
    /// every broker of the region (reopened when one ends), each query answered by
    /// `answer` — `Some(true)` commit, `Some(false)` roll back, `None` unknown (the broker
    /// asks another producer, or later).
    pub fn serve_check_backs<F>(&self, group: &str, answer: F) -> CheckBackServer
    where
        F: Fn(&v1::CheckBackQuery) -> Option<bool> + Send + Sync + 'static,
    {
        let client = self.clone();
        let group = group.to_owned();
        let answer = Arc::new(answer);
        let task = tokio::spawn(async move {
            let mut serving: HashMap<String, JoinHandle<()>> = HashMap::new();
            loop {
                if let Ok(r) = client
                    .call(|mut c| async move { c.log_groups(v1::LogGroupsRequest {}).await })
                    .await
                {
                    for b in r.brokers {
                        if serving.get(&b.grpc).is_some_and(|t| !t.is_finished()) {
                            continue;
                        }
                        let stream = serve_one(
                            client.clone(),
                            b.grpc.clone(),
                            group.clone(),
                            answer.clone(),
                        );
                        serving.insert(b.grpc, tokio::spawn(stream));
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        CheckBackServer { task }
    }
}

/// Serving check-backs; stops when dropped.
#[derive(Debug)]
pub struct CheckBackServer {
    task: JoinHandle<()>,
}

impl Drop for CheckBackServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One check-back stream to the broker at `addr`, until it ends.
async fn serve_one<F>(client: Client, addr: String, group: String, answer: Arc<F>)
where
    F: Fn(&v1::CheckBackQuery) -> Option<bool> + Send + Sync + 'static,
{
    use v1::check_back_reply::Msg;
    let Ok(mut c) = client.connection(&addr).await else {
        return;
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<v1::CheckBackReply>(16);
    if tx
        .send(v1::CheckBackReply {
            msg: Some(Msg::RegisterGroup(group.clone())),
        })
        .await
        .is_err()
    {
        return;
    }
    let replies =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
    let Ok(response) = c.check_back(replies).await else {
        return;
    };
    let mut queries = response.into_inner();
    while let Ok(Some(q)) = queries.message().await {
        let outcome = match answer(&q) {
            Some(true) => v1::CheckBackOutcome::CheckBackCommit,
            Some(false) => v1::CheckBackOutcome::CheckBackRollback,
            None => v1::CheckBackOutcome::CheckBackUnknown,
        };
        tracing::debug!(id = %q.id, ?outcome, "answered a check-back");
        let reply = v1::CheckBackReply {
            msg: Some(Msg::Answer(v1::CheckBackAnswer {
                query: q.query,
                outcome: outcome as i32,
            })),
        };
        if tx.send(reply).await.is_err() {
            return;
        }
    }
}

fn end(id: &str, producer: Option<(i64, i16)>, commit: bool) -> v1::TransactionRequest {
    v1::TransactionRequest {
        id: id.to_owned(),
        producer_id: producer.map(|p| p.0),
        producer_epoch: producer.map_or(0, |p| i32::from(p.1)),
        op: Some(v1::transaction_request::Op::End(v1::TxnEnd { commit })),
    }
}

impl Transaction {
    /// The transaction's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Its producer id and epoch.
    pub fn producer(&self) -> (i64, i16) {
        (self.producer_id, self.epoch)
    }

    /// Sends a half message: stored (where the returned metadata says), invisible to
    /// consumers until the transaction commits, never visible if it rolls back.
    pub async fn send(&mut self, record: Record) -> Result<RecordMetadata, ClientError> {
        let partition = match record.partition {
            Some(p) => p,
            None => {
                let n = self.partition_count(&record.topic).await?;
                match &record.key {
                    Some(key) => partition::for_key(key, n),
                    None => {
                        self.round_robin = self.round_robin.wrapping_add(1);
                        self.round_robin % n.get()
                    }
                }
            }
        };
        let key = (record.topic.clone(), partition);
        if !self.added.contains(&key) {
            self.client
                .transaction_request(v1::TransactionRequest {
                    id: self.config.id.clone(),
                    producer_id: Some(self.producer_id),
                    producer_epoch: i32::from(self.epoch),
                    op: Some(v1::transaction_request::Op::AddPartitions(
                        v1::TxnPartitions {
                            partitions: vec![v1::TxnPartition {
                                topic: key.0.clone(),
                                partition,
                            }],
                        },
                    )),
                })
                .await?;
            self.added.insert(key.clone());
        }
        let sequence = self.sequences.entry(key.clone()).or_insert(0);
        let request = v1::ProduceRequest {
            topic: key.0.clone(),
            partition,
            messages: vec![record.into_message()],
            acks: self.config.producer.acks as i32,
            epoch: 0,
            producer: Some(v1::ProducerSequence {
                id: self.producer_id,
                epoch: i32::from(self.epoch),
                first_sequence: *sequence,
            }),
            transactional: true,
            transactional_id: self.config.id.clone(),
            deliver_at_ms: 0,
        };
        let give_up = Instant::now() + self.config.producer.delivery_timeout;
        let r = send_idempotent(&self.client, request, &self.config.producer, give_up).await?;
        *sequence = sequence.wrapping_add(1) & i32::MAX;
        Ok(RecordMetadata {
            topic: key.0,
            partition,
            offset: r.base_offset,
            append_time_ms: r.append_time_ms,
        })
    }

    /// Commits: every half message becomes visible.
    pub async fn commit(self) -> Result<(), ClientError> {
        self.end(true).await
    }

    /// Rolls back: no half message is ever visible.
    pub async fn rollback(self) -> Result<(), ClientError> {
        self.end(false).await
    }

    async fn end(self, commit: bool) -> Result<(), ClientError> {
        let producer = Some((self.producer_id, self.epoch));
        self.client
            .transaction_request(end(&self.config.id, producer, commit))
            .await?;
        Ok(())
    }

    async fn partition_count(&mut self, topic: &str) -> Result<NonZeroU32, ClientError> {
        Ok(self
            .client
            .topic_shape(&mut self.partitions, topic)
            .await?
            .partitions)
    }
}
