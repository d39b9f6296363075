//! Transactions: two-phase messages with check-back (native) and Kafka transactions, on one
//! coordinator.
//!
//! The design, as Kafka keeps it: a transaction is a transactional id's producer (id and
//! epoch) writing batches marked transactional into any partitions of the region, then
//! ending it; the coordinator of that id (a log group chosen by the id) records every state
//! change in its raft log *before* acting on it, writes a commit or abort marker into every
//! participating partition, and records the transaction complete. Readers that ask for
//! committed data stop at a partition's last stable offset (the first offset of its oldest
//! open transaction) and skip aborted batches. A native transaction left in doubt past its
//! timeout is checked back with its producer group, a bounded number of times, then given
//! the configured default outcome.
//!
//! [`coordinator`] is the coordinator's decision core: requests and the clock in, records
//! to write and actions out, no I/O; it is what every replica replays from the log. This
//! file is its shell: where an id is coordinated (the leader of the log group the id hashes
//! to, as consumer groups are placed), where its records live (the group's own partition
//! [`STATE_TOPIC`], outside the catalog: Kafka's `__transaction_state`, one partition per
//! log group), loading them when a broker starts leading the group, and carrying out the
//! actions: markers written at each participant's leader, offsets committed, timeouts.

pub mod check_back;
pub mod coordinator;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::record::TxnMarker;

use super::coordinator_state::{Locked, PerGroup};
use super::{Acks, Broker, BrokerError, HostedGroup, now_ms};
use crate::storage::PartitionKey;
use coordinator::{Action, Answer, Coordinator, Limits, Outcome, Participant, Request, TxnError};
use coordinator::{Transaction, TxnRecord};

/// The id of every log group's transaction-state partition; the catalog never gives it.
pub const STATE_TOPIC_ID: u32 = u32::MAX;
/// Its name (its index directory).
pub const STATE_TOPIC: &str = "__transaction_state";
/// Its partition key in each log group.
pub const STATE_KEY: PartitionKey = (STATE_TOPIC_ID, 0);
/// Markers of one transaction written at once.
const MARKERS_IN_FLIGHT: usize = 64;
/// How often timeouts and unfinished markers are looked at.
const TICK: Duration = Duration::from_secs(1);

/// The coordinators of the log groups this broker leads.
#[derive(Debug)]
pub struct Transactions {
    limits: Limits,
    /// Per log group: its coordinator as loaded in a leadership epoch; the lock serializes
    /// its decisions with their writes.
    loaded: PerGroup<Coordinator>,
    /// Transactions (log group, id) whose markers are being written: one writer each, so
    /// a late duplicate marker never lands after the producer began its next transaction
    /// in that partition (it would end that one). Bounded by the transactions known.
    finishing: std::sync::Mutex<std::collections::HashSet<(u32, String)>>,
    /// Transactions (log group, id) being checked back: one check-back at a time each.
    asking: std::sync::Mutex<std::collections::HashSet<(u32, String)>>,
    /// The producer groups' check-back streams.
    check_backs: check_back::CheckBacks,
}

impl Transactions {
    /// Coordinators with these limits and policy.
    pub fn new(limits: Limits) -> Transactions {
        Transactions {
            limits,
            loaded: Default::default(),
            finishing: Default::default(),
            asking: Default::default(),
            check_backs: Default::default(),
        }
    }
}

/// A transaction checked back later: (id, producer group, (producer id, epoch, number)).
type CheckBackJob = (String, String, (i64, i16, u64));

/// Holds a transaction's place in one of [`Transactions`]' claim sets while a task works
/// on it (its markers, its check-back).
struct Claim<'a> {
    set: &'a std::sync::Mutex<std::collections::HashSet<(u32, String)>>,
    key: (u32, String),
}

impl<'a> Claim<'a> {
    /// The place, unless another task holds it.
    fn take(
        set: &'a std::sync::Mutex<std::collections::HashSet<(u32, String)>>,
        log_group: u32,
        id: &str,
    ) -> Option<Claim<'a>> {
        let key = (log_group, id.to_owned());
        let taken = set
            .lock()
            .expect("claims lock poisoned")
            .insert(key.clone());
        taken.then_some(Claim { set, key })
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .expect("claims lock poisoned")
            .remove(&self.key);
    }
}

/// Why [`Broker::transaction_anywhere`] did not carry out a request.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// This broker's coordinator refused it or could not act.
    Here(TxnRequestError),
    /// The coordinator on another broker refused it, or could not be reached.
    There(meridian_region_client::RegionError),
}

/// Why a transaction request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum TxnRequestError {
    /// The coordinator refused it.
    #[error(transparent)]
    Refused(#[from] TxnError),
    /// The coordinator could not act (not the coordinator here, its log group failing).
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl Request {
    /// The transactional id it is about.
    fn id(&self) -> &str {
        match self {
            Request::Init { id, .. }
            | Request::Add { id, .. }
            | Request::AddOffsets { id, .. }
            | Request::CommitOffsets { id, .. }
            | Request::Verify { id, .. }
            | Request::End { id, .. } => id,
        }
    }
}

impl Broker {
    /// The log group coordinating `key` (a consumer group or a transactional id): the one
    /// the key hashes to, the same on every broker of the region (Kafka places groups and
    /// transactional ids on `__consumer_offsets` and `__transaction_state` partitions the
    /// same way). Changing the region's log groups moves keys.
    pub fn coordinator_group(&self, key: &str) -> Option<u32> {
        let groups = self.region_log_groups();
        if groups.is_empty() {
            return None;
        }
        // FNV-1a: the same on every broker (std's hasher is seeded per process).
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        Some(groups[(hash % groups.len() as u64) as usize])
    }

    /// Carries out a transaction request at the id's coordinator (this broker, or
    /// `NotLeader` naming the one): decides it, writes the record it makes before it takes
    /// effect, writes the markers of an outcome it decides, and answers.
    pub async fn transaction(&self, request: Request) -> Result<Answer, TxnRequestError> {
        let g = self
            .coordinator_group(request.id())
            .ok_or_else(|| BrokerError::Replication("this region has no log groups yet".into()))?;
        let group = self.hosted(g)?;
        let mut loaded = self.coordinator(&group).await?;
        let decision = loaded.decide(request, now_ms())?;
        let mut actions = Vec::new();
        if let Some(record) = decision.write {
            write_record(&group, &record).await?;
            actions = loaded.apply(record);
        }
        drop(loaded);
        for action in actions {
            // A request's own actions are markers and records, never check-backs.
            let _ = self.act(&group, action).await;
        }
        Ok(decision.answer?)
    }

    /// Whether `topic`/`partition` is in the open transaction of `id`'s `producer`, asked of
    /// the id's coordinator wherever it is: `NotInTransaction` when it is not (or the
    /// producer was fenced), `Replication` when the coordinator cannot be asked.
    pub(super) async fn verify_in_transaction(
        &self,
        id: &str,
        producer: &meridian_proto::producer::ProducerBatch,
        topic: &str,
        partition: u32,
    ) -> Result<(), BrokerError> {
        let request = Request::Verify {
            id: id.to_owned(),
            producer_id: producer.id,
            epoch: producer.epoch,
            participant: Participant {
                topic: topic.to_owned(),
                partition,
            },
        };
        let refused = |message: String, fenced: bool| BrokerError::NotInTransaction {
            message: format!(
                "transactional id {id:?} cannot write to {topic}/{partition}: {message}"
            ),
            fenced,
        };
        match self.transaction_anywhere(request).await {
            Ok(()) => Ok(()),
            Err(Refusal::Here(TxnRequestError::Refused(e))) => {
                let fenced = matches!(e, TxnError::Fenced { .. });
                Err(refused(e.to_string(), fenced))
            }
            Err(Refusal::Here(TxnRequestError::Broker(e))) => Err(e),
            Err(Refusal::There(meridian_region_client::RegionError::Broker { code, message }))
                if matches!(
                    code,
                    tonic::Code::NotFound
                        | tonic::Code::PermissionDenied
                        | tonic::Code::InvalidArgument
                ) =>
            {
                Err(refused(message, code == tonic::Code::PermissionDenied))
            }
            Err(Refusal::There(e)) => Err(BrokerError::Replication(format!(
                "the coordinator of transactional id {id:?} did not answer: {e}"
            ))),
        }
    }

    /// Carries out `request` at the transactional id's coordinator: here when this broker
    /// leads its log group, else forwarded to the coordinator over gRPC (whose status code
    /// says which refusal, as the gRPC service maps them).
    pub(crate) async fn transaction_anywhere(&self, request: Request) -> Result<(), Refusal> {
        match self.transaction(request.clone()).await {
            Ok(_) => Ok(()),
            Err(TxnRequestError::Broker(BrokerError::NotLeader { .. })) => {
                let region = self.region_client().await.map_err(Refusal::There)?;
                region
                    .transaction(&request.into())
                    .await
                    .map(|_| ())
                    .map_err(Refusal::There)
            }
            Err(e) => Err(Refusal::Here(e)),
        }
    }

    /// A transactional id's state at its coordinator (`NotLeader` elsewhere).
    pub async fn describe_transaction(&self, id: &str) -> Result<Option<Transaction>, BrokerError> {
        let g = self
            .coordinator_group(id)
            .ok_or_else(|| BrokerError::Replication("this region has no log groups yet".into()))?;
        let group = self.hosted(g)?;
        let loaded = self.coordinator(&group).await?;
        Ok(loaded.get(id).cloned())
    }

    /// Every transaction the coordinators on this broker know.
    pub async fn list_transactions(&self) -> Vec<Transaction> {
        let mut out = Vec::new();
        for (_, group) in self.log_groups() {
            if group.check_leader().is_err() {
                continue;
            }
            if let Ok(loaded) = self.coordinator(&group).await {
                out.extend(loaded.list().into_iter().cloned());
            }
        }
        out
    }

    /// The idempotent producers a partition this broker leads knows, each with the first
    /// offset of its open transaction there (Kafka's DescribeProducers).
    pub fn describe_producers(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Vec<(crate::storage::ProducerState, Option<u64>)>, BrokerError> {
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        group.check_leader().map_err(|e| self.group_error(e))?;
        let storage = group.storage();
        let open: HashMap<i64, u64> = storage.open_transactions(key).into_iter().collect();
        Ok(storage
            .producers_of(key)
            .into_iter()
            .map(|p| (p, open.get(&p.id).copied()))
            .collect())
    }

    /// Writes a transaction marker into a partition this broker leads (the coordinator's
    /// request, local or over `WriteTxnMarker`); its offset.
    pub async fn write_marker(
        &self,
        topic: &str,
        partition: u32,
        producer: (i64, i16),
        marker: TxnMarker,
    ) -> Result<u64, BrokerError> {
        let topic = self.topic(topic)?;
        let (group, key) = self.locate(&topic, partition)?;
        let written = group
            .append_marker(key, producer, marker, Acks::All)
            .await
            .map_err(|e| self.group_error(e))?;
        Ok(written.base_offset)
    }

    /// The coordinator of `group`, loaded from its state partition if this broker has not
    /// loaded it in the group's current leadership epoch; locked.
    async fn coordinator(&self, group: &HostedGroup) -> Result<Locked<Coordinator>, BrokerError> {
        self.transactions
            .loaded
            .lock(
                self,
                (group, STATE_KEY),
                || load(group, self.transactions.limits.clone()),
                ("transaction", |c: &Coordinator| c.list().len()),
            )
            .await
    }

    /// Carries out one of the coordinator's actions; what fails is left for the next tick
    /// (markers are written again until every participant holds them). Check-backs wait
    /// for producers' answers: they are returned, to run apart.
    async fn act(&self, group: &HostedGroup, action: Action) -> Vec<CheckBackJob> {
        let mut later = Vec::new();
        let mut queue = vec![action];
        while let Some(action) = queue.pop() {
            match action {
                Action::WriteMarkers { txn, outcome } => {
                    // Another task is writing them (the tick, or a request's own end).
                    let Some(_writing) =
                        Claim::take(&self.transactions.finishing, group.id(), &txn.id)
                    else {
                        continue;
                    };
                    // And only while it is still this transaction, prepared: once it is
                    // complete, its producer may have begun another in these partitions.
                    let current = match self.coordinator(group).await {
                        Ok(loaded) => loaded.get(&txn.id).cloned(),
                        Err(_) => continue,
                    };
                    if current.as_ref() != Some(&txn) {
                        continue;
                    }
                    if let Err(e) = self.finish(group, &txn, outcome).await {
                        tracing::warn!(id = %txn.id, error = %e, "transaction markers not all written yet; retried");
                        continue;
                    }
                    let Ok(mut loaded) = self.coordinator(group).await else {
                        continue;
                    };
                    let done =
                        loaded.markers_written(&txn.id, txn.producer_id, txn.epoch, now_ms());
                    if let Some(record) = done
                        && write_record(group, &record).await.is_ok()
                    {
                        queue.extend(loaded.apply(record));
                    }
                }
                Action::Write(record) => {
                    let Ok(mut loaded) = self.coordinator(group).await else {
                        continue;
                    };
                    if let Err(e) = write_record(group, &record).await {
                        tracing::warn!(error = %e, "a transaction record was not written; retried");
                        continue;
                    }
                    queue.extend(loaded.apply(record));
                }
                Action::CheckBack {
                    id,
                    group: producers,
                    producer_id,
                    epoch,
                    number,
                } => later.push((id, producers, (producer_id, epoch, number))),
            }
        }
        later
    }

    /// Asks a live producer of the transaction's group how it ended, and records the
    /// answer's outcome (none: the next attempt, or the default, will decide).
    async fn check_back(self: Arc<Self>, group: Arc<HostedGroup>, job: CheckBackJob) {
        let (id, producers, key) = job;
        let Some(_asking) = Claim::take(&self.transactions.asking, group.id(), &id) else {
            return;
        };
        let txn = match self.coordinator(&group).await {
            Ok(loaded) => loaded.get(&id).cloned(),
            Err(_) => return,
        };
        let Some(txn) = txn else { return };
        let answer = self.transactions.check_backs.ask(&producers, &txn).await;
        let answered = if answer.is_some() { "yes" } else { "no" };
        metrics::counter!("meridian_check_backs_total", "answered" => answered).increment(1);
        tracing::info!(%id, producer_group = %producers, attempt = txn.check_backs, answer = ?answer, "checked back an in-doubt transaction");
        let Ok(mut loaded) = self.coordinator(&group).await else {
            return;
        };
        let Some(record) = loaded.checked_back(&id, key, answer, now_ms()) else {
            return;
        };
        if write_record(&group, &record).await.is_err() {
            return;
        }
        let actions = loaded.apply(record);
        drop(loaded);
        for action in actions {
            let _ = self.act(&group, action).await;
        }
    }

    /// The producer groups' check-back streams.
    pub fn check_backs(&self) -> &check_back::CheckBacks {
        &self.transactions.check_backs
    }

    /// Writes `outcome`'s marker into every participant (and, on commit, the offsets the
    /// transaction committed).
    async fn finish(
        &self,
        group: &HostedGroup,
        txn: &Transaction,
        outcome: Outcome,
    ) -> Result<(), BrokerError> {
        let marker = TxnMarker {
            commit: outcome == Outcome::Commit,
            coordinator_epoch: i32::try_from(group.epoch()).unwrap_or(i32::MAX),
        };
        if outcome == Outcome::Commit {
            for o in &txn.offsets {
                match self
                    .commit_anywhere(
                        &o.group,
                        &o.partition.topic,
                        o.partition.partition,
                        o.offset,
                        Vec::new(),
                        "",
                    )
                    .await
                {
                    Ok(())
                    | Err(BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        // Every participant's marker at once (a commit waits for the slowest, not the sum),
        // [`MARKERS_IN_FLIGHT`] at a time.
        let participants: Vec<&Participant> = txn.participants.iter().collect();
        for chunk in participants.chunks(MARKERS_IN_FLIGHT) {
            let written = futures_util::future::join_all(
                chunk
                    .iter()
                    .map(|p| self.marker_anywhere(p, (txn.producer_id, txn.epoch), marker)),
            )
            .await;
            written.into_iter().collect::<Result<Vec<()>, _>>()?;
        }
        Ok(())
    }

    /// A marker at the partition's leader, wherever it is; a partition deleted since needs
    /// none.
    async fn marker_anywhere(
        &self,
        p: &Participant,
        producer: (i64, i16),
        marker: TxnMarker,
    ) -> Result<(), BrokerError> {
        match self
            .write_marker(&p.topic, p.partition, producer, marker)
            .await
        {
            Ok(_) | Err(BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. }) => {
                Ok(())
            }
            Err(BrokerError::NotLeader { .. }) => {
                let region = self.region().await?;
                region
                    .write_txn_marker(
                        &p.topic,
                        p.partition,
                        producer,
                        marker.commit,
                        marker.coordinator_epoch,
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| BrokerError::Replication(e.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    async fn region(&self) -> Result<&meridian_region_client::RegionClient, BrokerError> {
        self.region_client()
            .await
            .map_err(|e| BrokerError::Replication(e.to_string()))
    }

    /// Runs the coordinators of the groups this broker leads: every second, their
    /// timeouts, check-backs, expiries and unfinished markers (a new leader's first tick
    /// finishes what the old one left).
    pub async fn run_transactions(self: Arc<Self>) {
        let mut tick = super::coordinator_state::ticker(TICK);
        loop {
            tick.tick().await;
            for group in self.led_groups() {
                let actions = match self.coordinator(&group).await {
                    Ok(loaded) => {
                        let mut a = loaded.due(now_ms(), |topic| {
                            self.topic(topic).ok().and_then(|t| t.txn_default)
                        });
                        a.extend(loaded.pending_markers());
                        a
                    }
                    Err(_) => continue,
                };
                for action in actions {
                    for job in self.act(&group, action).await {
                        tokio::spawn(self.clone().check_back(group.clone(), job));
                    }
                }
            }
        }
    }
}

/// Writes a coordinator record, keyed by the transactional id.
async fn write_record(group: &HostedGroup, record: &TxnRecord) -> Result<(), BrokerError> {
    let id = match record {
        TxnRecord::Put(t) => t.id.as_str(),
        TxnRecord::Forget { id, .. } => id.as_str(),
    };
    super::coordinator_state::write(group, STATE_KEY, id, record).await
}

/// A coordinator rebuilt from every record of the group's state partition.
fn load(group: &HostedGroup, limits: Limits) -> Result<Coordinator, BrokerError> {
    let mut coordinator = Coordinator::new(limits);
    super::coordinator_state::replay(group, STATE_KEY, |r: TxnRecord| {
        coordinator.apply(r);
    })?;
    Ok(coordinator)
}
