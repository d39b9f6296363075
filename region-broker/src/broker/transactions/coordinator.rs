//! The transaction coordinator's decisions, without I/O (as openraft's engine is to its
//! runtime): requests and the time in, the transaction record to write and the answer out.
//!
//! Every change is a whole [`Transaction`] written to the coordinator's log *before* it
//! takes effect (Kafka's `__transaction_state` keeps the same: the full metadata per id), so
//! [`Coordinator::apply`] is the one way state changes — on the leader once its write is
//! committed, on followers and after a restart as they replay the log — and a new leader
//! resumes from exactly what was decided. A record carries its own time, so replaying it
//! gives the same state anywhere.
//!
//! The phases, as Kafka names them:
//!
//! ```text
//! Empty ──add──▶ Ongoing ──end(commit)──▶ PrepareCommit ──markers──▶ CompleteCommit
//!   ▲              │  └──end(abort), timeout──▶ PrepareAbort ──markers──▶ CompleteAbort
//!   └──init, add───┴───────────────────────────────────────────────────────────┘
//! ```
//!
//! A prepared outcome is final: the markers are written (and rewritten after a leader
//! change) until every participant holds them. Ending again with the same outcome is
//! answered as done; with the other outcome it is refused (a commit after a rollback).
//! A Kafka transaction past its timeout is aborted (its epoch bumped, fencing the
//! producer). A native one (it names a producer group) is checked back: the group is asked
//! up to `check_back_attempts` times, with backoff, then `default_outcome` is applied and
//! recorded as such.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// A producer id (Kafka's `producerId`).
pub type ProducerId = i64;
/// A producer epoch; a higher one fences the lower.
pub type Epoch = i16;
/// Wall-clock milliseconds, as records carry them.
pub type Ms = i64;

/// A partition taking part in a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Participant {
    /// Topic name.
    pub topic: String,
    /// Partition.
    pub partition: u32,
}

/// A consumer group's offset committed inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOffset {
    /// The consumer group.
    pub group: String,
    /// The partition.
    pub partition: Participant,
    /// The offset (the next to read).
    pub offset: u64,
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// A producer is registered; no transaction is open.
    Empty,
    /// Open: batches may be written to its participants.
    Ongoing,
    /// Decided to commit; markers are being written.
    PrepareCommit,
    /// Decided to abort; markers are being written.
    PrepareAbort,
    /// Committed: every participant holds its commit marker.
    CompleteCommit,
    /// Aborted: every participant holds its abort marker.
    CompleteAbort,
}

impl Phase {
    /// The outcome decided, once it is.
    pub fn outcome(self) -> Option<Outcome> {
        match self {
            Phase::PrepareCommit | Phase::CompleteCommit => Some(Outcome::Commit),
            Phase::PrepareAbort | Phase::CompleteAbort => Some(Outcome::Abort),
            Phase::Empty | Phase::Ongoing => None,
        }
    }

    fn prepare(outcome: Outcome) -> Phase {
        match outcome {
            Outcome::Commit => Phase::PrepareCommit,
            Outcome::Abort => Phase::PrepareAbort,
        }
    }

    fn complete(outcome: Outcome) -> Phase {
        match outcome {
            Outcome::Commit => Phase::CompleteCommit,
            Outcome::Abort => Phase::CompleteAbort,
        }
    }
}

/// How a transaction ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Its messages become visible.
    Commit,
    /// Its messages are never seen by readers of committed data.
    Abort,
}

impl Outcome {
    /// A configured default outcome: "commit", "rollback", or empty for none.
    pub fn parse_default(s: &str) -> Result<Option<Outcome>, String> {
        match s {
            "" => Ok(None),
            "commit" => Ok(Some(Outcome::Commit)),
            "rollback" => Ok(Some(Outcome::Abort)),
            other => Err(format!(
                "unknown default outcome {other:?}: commit or rollback"
            )),
        }
    }
}

/// Who decided a transaction's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DecidedBy {
    /// Its producer ended it.
    Producer,
    /// A producer of its group answered a check-back.
    CheckBack,
    /// It outlived its timeout (a Kafka transaction: aborted).
    Timeout,
    /// Check-back went unanswered `check_back_attempts` times: the configured default.
    Default,
}

/// One transactional id's state: what the coordinator's log records on every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// The transactional id.
    pub id: String,
    /// Its producer.
    pub producer_id: ProducerId,
    /// The producer's epoch: a request with a lower one is fenced.
    pub epoch: Epoch,
    /// Where it stands.
    pub phase: Phase,
    /// Which of the id's transactions this is (1 for its first): the producer's epoch may
    /// stay the same across transactions, so a late answer names the one it is about.
    pub number: u64,
    /// Partitions written in the open (or last) transaction.
    pub participants: BTreeSet<Participant>,
    /// Consumer groups whose offsets it commits (Kafka's `AddOffsetsToTxn`).
    pub offset_groups: BTreeSet<String>,
    /// Consumer offsets committed in the transaction (Kafka's `TxnOffsetCommit`), one per
    /// group and partition: made the groups' committed offsets when it commits, dropped
    /// when it aborts.
    #[serde(default)]
    pub offsets: Vec<PendingOffset>,
    /// How long it may stay open, in milliseconds.
    pub timeout_ms: Ms,
    /// When the open transaction started.
    pub started_ms: Option<Ms>,
    /// When this record was made.
    pub updated_ms: Ms,
    /// A native transaction's producer group, asked on check-back; none for Kafka's.
    pub producer_group: Option<String>,
    /// Check-backs made for the open transaction.
    pub check_backs: u32,
    /// When the next check-back is due.
    pub next_check_ms: Option<Ms>,
    /// Who decided the outcome, once decided.
    pub decided_by: Option<DecidedBy>,
}

impl Transaction {
    /// Whether it is open or deciding (readers of committed data wait on it).
    pub fn in_flight(&self) -> bool {
        matches!(
            self.phase,
            Phase::Ongoing | Phase::PrepareCommit | Phase::PrepareAbort
        )
    }
}

/// What the coordinator's log holds: a transaction's new state, or that an ended one is
/// forgotten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnRecord {
    /// The transaction's state from now on.
    Put(Transaction),
    /// An ended transaction's id is forgotten (it was ended long enough ago).
    Forget {
        /// The transactional id.
        id: String,
        /// The producer it had (forgotten only if still this one).
        producer_id: ProducerId,
        /// And its epoch.
        epoch: Epoch,
    },
}

/// The coordinator's bounds and policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Transactional ids known at once (open and recently ended).
    pub transactions_max: usize,
    /// Partitions one transaction may write.
    pub participants_max: usize,
    /// The longest timeout a producer may ask for (Kafka's
    /// `transaction.max.timeout.ms`).
    pub timeout_max_ms: Ms,
    /// Check-backs before the default outcome applies.
    pub check_back_attempts: u32,
    /// Wait before the second check-back; doubling up to `check_back_backoff_max_ms`.
    pub check_back_backoff_ms: Ms,
    /// The longest wait between check-backs.
    pub check_back_backoff_max_ms: Ms,
    /// The outcome of a native transaction nobody answers for.
    pub default_outcome: Outcome,
    /// How long an ended transaction's id is remembered without a new one (Kafka's
    /// `transactional.id.expiration.ms`).
    pub ended_kept_ms: Ms,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from(&crate::config::TransactionsConfig::default())
    }
}

impl From<&crate::config::TransactionsConfig> for Limits {
    /// The `[transactions]` section's limits (validated by `Config::validate`).
    fn from(c: &crate::config::TransactionsConfig) -> Limits {
        Limits {
            transactions_max: c.transactions_max,
            participants_max: c.participants_max,
            timeout_max_ms: c.timeout_max_ms,
            check_back_attempts: c.check_back_attempts,
            check_back_backoff_ms: c.check_back_backoff_ms,
            check_back_backoff_max_ms: c.check_back_backoff_max_ms,
            default_outcome: Outcome::parse_default(&c.default_outcome)
                .ok()
                .flatten()
                .unwrap_or(Outcome::Abort),
            ended_kept_ms: c.ended_kept_ms,
        }
    }
}

/// A producer's request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Registers (or re-registers, fencing the older) the producer of `id`: Kafka's
    /// `InitProducerId` with a transactional id, or a native begin.
    Init {
        /// The transactional id.
        id: String,
        /// How long a transaction may stay open.
        timeout_ms: Ms,
        /// A native transaction's producer group (check-back asks it).
        producer_group: Option<String>,
        /// A fresh producer id the shell allocated, used if `id` needs one.
        fresh_producer_id: ProducerId,
    },
    /// Adds partitions to the open transaction (opening it): Kafka's `AddPartitionsToTxn`.
    Add {
        /// The transactional id.
        id: String,
        /// The producer asking.
        producer_id: ProducerId,
        /// Its epoch.
        epoch: Epoch,
        /// Partitions it will write.
        participants: Vec<Participant>,
    },
    /// Adds a consumer group's offsets to the open transaction: Kafka's `AddOffsetsToTxn`.
    AddOffsets {
        /// The transactional id.
        id: String,
        /// The producer asking.
        producer_id: ProducerId,
        /// Its epoch.
        epoch: Epoch,
        /// The consumer group.
        group: String,
    },
    /// Commits consumer offsets inside the open transaction: Kafka's `TxnOffsetCommit`
    /// (the group must have been added with [`Request::AddOffsets`]).
    CommitOffsets {
        /// The transactional id.
        id: String,
        /// The producer asking.
        producer_id: ProducerId,
        /// Its epoch.
        epoch: Epoch,
        /// The consumer group.
        group: String,
        /// Each partition's offset (the next to read).
        offsets: Vec<(Participant, u64)>,
    },
    /// Whether `participant` is in the producer's open transaction: asked by a partition's
    /// leader before writing a transaction's first batch there, so a batch for a partition
    /// never added (no marker would ever end it there) is refused, not left open forever
    /// (Kafka's KIP-890 verification). Writes nothing.
    Verify {
        /// The transactional id.
        id: String,
        /// The producer writing.
        producer_id: ProducerId,
        /// Its epoch.
        epoch: Epoch,
        /// The partition it writes.
        participant: Participant,
    },
    /// Ends the open transaction: Kafka's `EndTxn`, or a native commit or rollback (which
    /// names only the id: `producer` is `None`).
    End {
        /// The transactional id.
        id: String,
        /// The producer asking and its epoch, checked when given.
        producer: Option<(ProducerId, Epoch)>,
        /// Commit or abort.
        outcome: Outcome,
    },
}

/// Why a request is refused (each maps to the error code Kafka uses, and reads clearly).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    /// The id has no producer here (Kafka: `INVALID_PRODUCER_ID_MAPPING`).
    #[error("transactional id {id:?} has no producer here: initialize it first")]
    Unknown {
        /// The transactional id.
        id: String,
    },
    /// The producer id is not the id's (Kafka: `INVALID_PRODUCER_ID_MAPPING`).
    #[error("producer {producer_id} is not transactional id {id:?}'s (it has producer {current})")]
    WrongProducer {
        /// The transactional id.
        id: String,
        /// The producer that asked.
        producer_id: ProducerId,
        /// The id's producer.
        current: ProducerId,
    },
    /// A newer producer of the id took over (Kafka: `PRODUCER_FENCED`).
    #[error(
        "producer epoch {epoch} of transactional id {id:?} is fenced by epoch {current}: another producer with this transactional id started"
    )]
    Fenced {
        /// The transactional id.
        id: String,
        /// The epoch that asked.
        epoch: Epoch,
        /// The id's epoch now.
        current: Epoch,
    },
    /// The previous transaction is still being ended (Kafka: `CONCURRENT_TRANSACTIONS`,
    /// which clients retry).
    #[error("transactional id {id:?} is still ending its previous transaction: retry")]
    Concurrent {
        /// The transactional id.
        id: String,
    },
    /// The request does not fit the transaction's phase (Kafka: `INVALID_TXN_STATE`).
    #[error("transactional id {id:?} is {phase:?}: {why}")]
    InvalidState {
        /// The transactional id.
        id: String,
        /// Its phase.
        phase: Phase,
        /// What was asked and why it cannot be.
        why: &'static str,
    },
    /// The transaction would write to more partitions than allowed.
    #[error(
        "transactional id {id:?} would write {count} partitions, more than the {max} a transaction may"
    )]
    TooManyParticipants {
        /// The transactional id.
        id: String,
        /// Partitions it would have.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// The coordinator knows as many transactional ids as it may.
    #[error(
        "this coordinator holds {max} transactional ids, its limit: retry once ended ones expire"
    )]
    TooManyTransactions {
        /// The bound.
        max: usize,
    },
    /// The timeout asked for is out of bounds (Kafka: `INVALID_TRANSACTION_TIMEOUT`).
    #[error("transaction timeout {timeout_ms} ms is not between 1 and {max} ms")]
    InvalidTimeout {
        /// Asked for.
        timeout_ms: Ms,
        /// The bound.
        max: Ms,
    },
}

/// What a request gets once its record (if any) is written and applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The producer to use from now on.
    Producer {
        /// Its id.
        producer_id: ProducerId,
        /// Its epoch.
        epoch: Epoch,
    },
    /// Done.
    Done,
}

/// A decision: the record to write first (none when nothing changes), then the answer —
/// an error the client retries, after the record, where a request must first end what
/// an older producer left open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Written to the coordinator's log, and applied, before answering.
    pub write: Option<TxnRecord>,
    /// The answer once it is.
    pub answer: Result<Answer, TxnError>,
}

/// Something the coordinator's leader must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write `outcome`'s marker for the producer into every participant (and commit the
    /// offset groups' pending offsets on commit), then call
    /// [`Coordinator::markers_written`].
    WriteMarkers {
        /// The transaction, as prepared.
        txn: Transaction,
        /// Its outcome.
        outcome: Outcome,
    },
    /// Write this record (a timeout's abort, a check-back's count, the default outcome, or
    /// forgetting an ended id).
    Write(TxnRecord),
    /// Ask a live producer of `group` how transaction `id` (this producer and epoch) ended,
    /// then call [`Coordinator::checked_back`]. The record counting this attempt comes
    /// first, as its own [`Action::Write`].
    CheckBack {
        /// The transactional id.
        id: String,
        /// The producer group to ask.
        group: String,
        /// The transaction's producer.
        producer_id: ProducerId,
        /// Its epoch.
        epoch: Epoch,
        /// Which of the id's transactions.
        number: u64,
    },
}

/// The transactions one coordinator (one log group) is responsible for.
#[derive(Debug, Clone, Default)]
pub struct Coordinator {
    limits: Limits,
    txns: HashMap<String, Transaction>,
}

impl Coordinator {
    /// An empty coordinator with these limits.
    pub fn new(limits: Limits) -> Coordinator {
        Coordinator {
            limits,
            txns: HashMap::new(),
        }
    }

    /// A transactional id's state.
    pub fn get(&self, id: &str) -> Option<&Transaction> {
        self.txns.get(id)
    }

    /// Every transaction known, in id order.
    pub fn list(&self) -> Vec<&Transaction> {
        let mut all: Vec<&Transaction> = self.txns.values().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Decides a request at `now`: refused, or the record to write and the answer.
    pub fn decide(&self, request: Request, now: Ms) -> Result<Decision, TxnError> {
        match request {
            Request::Init {
                id,
                timeout_ms,
                producer_group,
                fresh_producer_id,
            } => self.init(id, timeout_ms, producer_group, fresh_producer_id, now),
            Request::Add {
                id,
                producer_id,
                epoch,
                participants,
            } => {
                let txn = self.producer_of(&id, Some((producer_id, epoch)))?;
                let mut next = self.opened(txn, now)?;
                next.participants.extend(participants);
                if next.participants.len() > self.limits.participants_max {
                    return Err(TxnError::TooManyParticipants {
                        id,
                        count: next.participants.len(),
                        max: self.limits.participants_max,
                    });
                }
                Ok(write_if_changed(txn, next))
            }
            Request::Verify {
                id,
                producer_id,
                epoch,
                participant,
            } => {
                let txn = self.producer_of(&id, Some((producer_id, epoch)))?;
                if txn.phase != Phase::Ongoing || !txn.participants.contains(&participant) {
                    return Err(TxnError::InvalidState {
                        id,
                        phase: txn.phase,
                        why: "a transaction writes only to partitions added to it (AddPartitionsToTxn) while it is open; nothing was written",
                    });
                }
                Ok(Decision {
                    write: None,
                    answer: Ok(Answer::Done),
                })
            }
            Request::AddOffsets {
                id,
                producer_id,
                epoch,
                group,
            } => {
                let txn = self.producer_of(&id, Some((producer_id, epoch)))?;
                let mut next = self.opened(txn, now)?;
                next.offset_groups.insert(group);
                Ok(write_if_changed(txn, next))
            }
            Request::CommitOffsets {
                id,
                producer_id,
                epoch,
                group,
                offsets,
            } => {
                let txn = self.producer_of(&id, Some((producer_id, epoch)))?;
                if txn.phase != Phase::Ongoing || !txn.offset_groups.contains(&group) {
                    return Err(TxnError::InvalidState {
                        id,
                        phase: txn.phase,
                        why: "offsets are committed in a transaction only after the group is added to it (AddOffsetsToTxn)",
                    });
                }
                let mut next = txn.clone();
                next.updated_ms = now;
                for (partition, offset) in offsets {
                    next.offsets
                        .retain(|o| o.group != group || o.partition != partition);
                    next.offsets.push(PendingOffset {
                        group: group.clone(),
                        partition,
                        offset,
                    });
                }
                if next.offsets.len() > self.limits.participants_max {
                    return Err(TxnError::TooManyParticipants {
                        id,
                        count: next.offsets.len(),
                        max: self.limits.participants_max,
                    });
                }
                Ok(write_if_changed(txn, next))
            }
            Request::End {
                id,
                producer,
                outcome,
            } => self.end(&id, producer, outcome, now),
        }
    }

    fn init(
        &self,
        id: String,
        timeout_ms: Ms,
        producer_group: Option<String>,
        fresh_producer_id: ProducerId,
        now: Ms,
    ) -> Result<Decision, TxnError> {
        if !(1..=self.limits.timeout_max_ms).contains(&timeout_ms) {
            return Err(TxnError::InvalidTimeout {
                timeout_ms,
                max: self.limits.timeout_max_ms,
            });
        }
        let next = match self.txns.get(&id) {
            None => {
                if self.txns.len() >= self.limits.transactions_max {
                    return Err(TxnError::TooManyTransactions {
                        max: self.limits.transactions_max,
                    });
                }
                Transaction {
                    id,
                    producer_id: fresh_producer_id,
                    epoch: 0,
                    phase: Phase::Empty,
                    number: 0,
                    participants: BTreeSet::new(),
                    offset_groups: BTreeSet::new(),
                    offsets: Vec::new(),
                    timeout_ms,
                    started_ms: None,
                    updated_ms: now,
                    producer_group,
                    check_backs: 0,
                    next_check_ms: None,
                    decided_by: None,
                }
            }
            Some(txn) => match txn.phase {
                // The older producer's open transaction is aborted first; the new producer
                // retries (Kafka answers CONCURRENT_TRANSACTIONS the same way).
                Phase::Ongoing => {
                    let mut abort = bumped(txn, now);
                    abort.phase = Phase::PrepareAbort;
                    abort.decided_by = Some(DecidedBy::Producer);
                    return Ok(Decision {
                        write: Some(TxnRecord::Put(abort)),
                        answer: Err(TxnError::Concurrent { id }),
                    });
                }
                Phase::PrepareCommit | Phase::PrepareAbort => {
                    return Err(TxnError::Concurrent { id });
                }
                Phase::Empty | Phase::CompleteCommit | Phase::CompleteAbort => {
                    let mut next = bumped(txn, now);
                    next.phase = Phase::Empty;
                    next.participants.clear();
                    next.offset_groups.clear();
                    next.offsets.clear();
                    next.timeout_ms = timeout_ms;
                    next.producer_group = producer_group;
                    next.started_ms = None;
                    next.check_backs = 0;
                    next.next_check_ms = None;
                    next.decided_by = None;
                    if next.epoch == txn.epoch {
                        // The epoch ran out: a new producer id, from epoch 0.
                        next.producer_id = fresh_producer_id;
                        next.epoch = 0;
                    }
                    next
                }
            },
        };
        let answer = Ok(Answer::Producer {
            producer_id: next.producer_id,
            epoch: next.epoch,
        });
        Ok(Decision {
            write: Some(TxnRecord::Put(next)),
            answer,
        })
    }

    fn end(
        &self,
        id: &str,
        producer: Option<(ProducerId, Epoch)>,
        outcome: Outcome,
        now: Ms,
    ) -> Result<Decision, TxnError> {
        let txn = self.producer_of(id, producer)?;
        match (txn.phase, txn.phase.outcome()) {
            (Phase::Ongoing, _) => {
                let mut next = txn.clone();
                next.phase = Phase::prepare(outcome);
                next.updated_ms = now;
                next.next_check_ms = None;
                next.decided_by = Some(DecidedBy::Producer);
                Ok(Decision {
                    write: Some(TxnRecord::Put(next)),
                    answer: Ok(Answer::Done),
                })
            }
            // Decided already: the same outcome again is done (a retry), the other refused.
            (_, Some(decided)) if decided == outcome => match txn.phase {
                Phase::PrepareCommit | Phase::PrepareAbort => {
                    Err(TxnError::Concurrent { id: id.to_owned() })
                }
                _ => Ok(Decision {
                    write: None,
                    answer: Ok(Answer::Done),
                }),
            },
            (phase, Some(_)) => Err(TxnError::InvalidState {
                id: id.to_owned(),
                phase,
                why: match outcome {
                    Outcome::Commit => "a commit after the transaction was rolled back is refused",
                    Outcome::Abort => "a rollback after the transaction was committed is refused",
                },
            }),
            (phase, None) => Err(TxnError::InvalidState {
                id: id.to_owned(),
                phase,
                why: "no transaction is open to end",
            }),
        }
    }

    /// The id's transaction, checked against the producer asking (when it says who it is).
    fn producer_of(
        &self,
        id: &str,
        producer: Option<(ProducerId, Epoch)>,
    ) -> Result<&Transaction, TxnError> {
        let txn = self
            .txns
            .get(id)
            .ok_or_else(|| TxnError::Unknown { id: id.to_owned() })?;
        if let Some((producer_id, epoch)) = producer {
            if producer_id != txn.producer_id {
                return Err(TxnError::WrongProducer {
                    id: id.to_owned(),
                    producer_id,
                    current: txn.producer_id,
                });
            }
            if epoch != txn.epoch {
                return Err(TxnError::Fenced {
                    id: id.to_owned(),
                    epoch,
                    current: txn.epoch,
                });
            }
        }
        Ok(txn)
    }

    /// The transaction open (opening it from Empty or a completed one) for more writes.
    fn opened(&self, txn: &Transaction, now: Ms) -> Result<Transaction, TxnError> {
        let mut next = txn.clone();
        match txn.phase {
            Phase::Ongoing => {}
            Phase::Empty | Phase::CompleteCommit | Phase::CompleteAbort => {
                next.phase = Phase::Ongoing;
                next.number += 1;
                next.participants.clear();
                next.offset_groups.clear();
                next.offsets.clear();
                next.started_ms = Some(now);
                next.check_backs = 0;
                next.next_check_ms = None;
                next.decided_by = None;
            }
            Phase::PrepareCommit | Phase::PrepareAbort => {
                return Err(TxnError::Concurrent { id: txn.id.clone() });
            }
        }
        next.updated_ms = now;
        Ok(next)
    }

    /// Applies a record from the log (the one way state changes). Returns what the leader
    /// must do next: a prepared outcome's markers.
    pub fn apply(&mut self, record: TxnRecord) -> Vec<Action> {
        match record {
            TxnRecord::Put(txn) => {
                let actions = match txn.phase.outcome() {
                    Some(outcome) if txn.in_flight() => vec![Action::WriteMarkers {
                        txn: txn.clone(),
                        outcome,
                    }],
                    _ => Vec::new(),
                };
                self.txns.insert(txn.id.clone(), txn);
                actions
            }
            TxnRecord::Forget {
                id,
                producer_id,
                epoch,
            } => {
                if self
                    .txns
                    .get(&id)
                    .is_some_and(|t| t.producer_id == producer_id && t.epoch == epoch)
                {
                    self.txns.remove(&id);
                }
                Vec::new()
            }
        }
    }

    /// Every prepared transaction's markers: what a new leader resumes.
    pub fn pending_markers(&self) -> Vec<Action> {
        self.list()
            .into_iter()
            .filter_map(|txn| match txn.phase {
                Phase::PrepareCommit | Phase::PrepareAbort => Some(Action::WriteMarkers {
                    txn: txn.clone(),
                    outcome: txn.phase.outcome()?,
                }),
                _ => None,
            })
            .collect()
    }

    /// Every participant of `id`'s prepared transaction (this producer and epoch) holds its
    /// marker: the record completing it, if it is still that transaction.
    pub fn markers_written(
        &self,
        id: &str,
        producer_id: ProducerId,
        epoch: Epoch,
        now: Ms,
    ) -> Option<TxnRecord> {
        let txn = self.txns.get(id)?;
        if txn.producer_id != producer_id || txn.epoch != epoch {
            return None;
        }
        let outcome = match txn.phase {
            Phase::PrepareCommit => Outcome::Commit,
            Phase::PrepareAbort => Outcome::Abort,
            _ => return None,
        };
        let mut next = txn.clone();
        next.phase = Phase::complete(outcome);
        next.updated_ms = now;
        Some(TxnRecord::Put(next))
    }

    /// The outcome `txn` gets when its check-backs ran out: commit only when every
    /// participant's topic commits by default (its own, else the broker's).
    fn default_outcome(
        &self,
        txn: &Transaction,
        topic_default: &impl Fn(&str) -> Option<Outcome>,
    ) -> Outcome {
        let of = |topic: &str| topic_default(topic).unwrap_or(self.limits.default_outcome);
        if txn.participants.is_empty() {
            return self.limits.default_outcome;
        }
        if txn
            .participants
            .iter()
            .all(|p| of(&p.topic) == Outcome::Commit)
        {
            Outcome::Commit
        } else {
            Outcome::Abort
        }
    }

    /// What is due at `now`: open transactions past their timeout (aborted, or checked back
    /// for a native one), the default outcome once check-backs ran out, and ended ids
    /// forgotten. Each record is written and applied before the next tick. A topic's own
    /// default outcome (`topic_default`; the broker's where it has none) decides for its
    /// partitions: a transaction commits by default only when every participant's does.
    pub fn due(&self, now: Ms, topic_default: impl Fn(&str) -> Option<Outcome>) -> Vec<Action> {
        let mut out = Vec::new();
        for txn in self.list() {
            match txn.phase {
                Phase::Ongoing => {
                    let started = txn.started_ms.unwrap_or(txn.updated_ms);
                    if now < started.saturating_add(txn.timeout_ms) {
                        continue;
                    }
                    match &txn.producer_group {
                        None => {
                            // Kafka: abort, bumping the epoch so the producer is fenced.
                            let mut abort = bumped(txn, now);
                            abort.phase = Phase::PrepareAbort;
                            abort.decided_by = Some(DecidedBy::Timeout);
                            out.push(Action::Write(TxnRecord::Put(abort)));
                        }
                        Some(group) => {
                            if txn.next_check_ms.is_some_and(|at| now < at) {
                                continue;
                            }
                            if txn.check_backs >= self.limits.check_back_attempts {
                                let outcome = self.default_outcome(txn, &topic_default);
                                let mut next = txn.clone();
                                next.phase = Phase::prepare(outcome);
                                next.updated_ms = now;
                                next.next_check_ms = None;
                                next.decided_by = Some(DecidedBy::Default);
                                out.push(Action::Write(TxnRecord::Put(next)));
                                continue;
                            }
                            let mut next = txn.clone();
                            next.check_backs += 1;
                            next.updated_ms = now;
                            next.next_check_ms = Some(now + self.backoff(next.check_backs));
                            out.push(Action::Write(TxnRecord::Put(next)));
                            out.push(Action::CheckBack {
                                id: txn.id.clone(),
                                group: group.clone(),
                                producer_id: txn.producer_id,
                                epoch: txn.epoch,
                                number: txn.number,
                            });
                        }
                    }
                }
                Phase::Empty | Phase::CompleteCommit | Phase::CompleteAbort => {
                    if now >= txn.updated_ms.saturating_add(self.limits.ended_kept_ms) {
                        out.push(Action::Write(TxnRecord::Forget {
                            id: txn.id.clone(),
                            producer_id: txn.producer_id,
                            epoch: txn.epoch,
                        }));
                    }
                }
                Phase::PrepareCommit | Phase::PrepareAbort => {}
            }
        }
        out
    }

    /// A producer of the group answered a check-back of `id`'s transaction `number` (this
    /// producer and epoch): `Some` outcome decides it; `None` (the producer does not know
    /// it) leaves it for the next attempt. The record to write, if the transaction is still
    /// that open, checked-back one.
    pub fn checked_back(
        &self,
        id: &str,
        (producer_id, epoch, number): (ProducerId, Epoch, u64),
        answer: Option<Outcome>,
        now: Ms,
    ) -> Option<TxnRecord> {
        let txn = self.txns.get(id)?;
        if txn.phase != Phase::Ongoing
            || txn.producer_group.is_none()
            || (txn.producer_id, txn.epoch, txn.number) != (producer_id, epoch, number)
        {
            return None;
        }
        let outcome = answer?;
        let mut next = txn.clone();
        next.phase = Phase::prepare(outcome);
        next.updated_ms = now;
        next.next_check_ms = None;
        next.decided_by = Some(DecidedBy::CheckBack);
        Some(TxnRecord::Put(next))
    }

    /// The wait after check-back `attempt` (1-based): the base, doubling, up to the max.
    fn backoff(&self, attempt: u32) -> Ms {
        let doubled = self
            .limits
            .check_back_backoff_ms
            .saturating_mul(1i64 << attempt.saturating_sub(1).min(30));
        doubled.min(self.limits.check_back_backoff_max_ms)
    }
}

/// `txn` with its epoch one higher (unchanged at the top: the caller takes a new id).
fn bumped(txn: &Transaction, now: Ms) -> Transaction {
    let mut next = txn.clone();
    next.epoch = txn.epoch.checked_add(1).unwrap_or(txn.epoch);
    next.updated_ms = now;
    next
}

/// A decision writing `next` unless it equals `txn` but for its time.
fn write_if_changed(txn: &Transaction, next: Transaction) -> Decision {
    let same = Transaction {
        updated_ms: txn.updated_ms,
        ..next.clone()
    } == *txn;
    Decision {
        write: (!same).then_some(TxnRecord::Put(next)),
        answer: Ok(Answer::Done),
    }
}

#[cfg(test)]
mod tests;
