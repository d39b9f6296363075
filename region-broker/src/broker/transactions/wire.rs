//! Transaction requests and refusals in their gRPC form (`v1::TransactionRequest`), for the
//! gRPC service and for brokers forwarding a request to the id's coordinator.

use meridian_proto::v1;

use super::coordinator::{DecidedBy, Outcome, Participant, Phase, Request, Transaction, TxnError};

impl From<Request> for v1::TransactionRequest {
    fn from(request: Request) -> v1::TransactionRequest {
        use v1::transaction_request::Op;
        let (id, producer, op) = match request {
            Request::Init {
                id,
                timeout_ms,
                producer_group,
                ..
            } => (
                id,
                None,
                Op::Begin(v1::TxnBegin {
                    timeout_ms,
                    producer_group,
                }),
            ),
            Request::Add {
                id,
                producer_id,
                epoch,
                participants,
            } => (
                id,
                Some((producer_id, epoch)),
                Op::AddPartitions(v1::TxnPartitions {
                    partitions: partitions_to_wire(&participants),
                }),
            ),
            Request::AddOffsets {
                id,
                producer_id,
                epoch,
                group,
            } => (id, Some((producer_id, epoch)), Op::AddOffsetsGroup(group)),
            Request::CommitOffsets {
                id,
                producer_id,
                epoch,
                group,
                offsets,
            } => (
                id,
                Some((producer_id, epoch)),
                Op::CommitOffsets(v1::TxnOffsets {
                    group,
                    offsets: offsets
                        .into_iter()
                        .map(|(p, offset)| v1::TxnOffset {
                            topic: p.topic,
                            partition: p.partition,
                            offset,
                        })
                        .collect(),
                }),
            ),
            Request::Verify {
                id,
                producer_id,
                epoch,
                participant,
            } => (
                id,
                Some((producer_id, epoch)),
                Op::VerifyPartition(v1::TxnPartition {
                    topic: participant.topic,
                    partition: participant.partition,
                }),
            ),
            Request::End {
                id,
                producer,
                outcome,
            } => (
                id,
                producer,
                Op::End(v1::TxnEnd {
                    commit: outcome == Outcome::Commit,
                }),
            ),
        };
        v1::TransactionRequest {
            id,
            producer_id: producer.map(|p| p.0),
            producer_epoch: producer.map_or(0, |p| i32::from(p.1)),
            op: Some(op),
        }
    }
}

/// A gRPC transaction request as the coordinator's; `fresh_producer_id` for a begin. The
/// error says what is missing or out of range.
pub fn request_from_wire(
    r: v1::TransactionRequest,
    fresh_producer_id: i64,
) -> Result<Request, String> {
    use v1::transaction_request::Op;
    let epoch = i16::try_from(r.producer_epoch)
        .map_err(|_| format!("producer_epoch {} does not fit 16 bits", r.producer_epoch))?;
    let producer = || {
        r.producer_id
            .map(|id| (id, epoch))
            .ok_or_else(|| "this request needs producer_id (as begin answered)".to_owned())
    };
    Ok(match r.op.ok_or("the request names no operation")? {
        Op::Begin(b) => Request::Init {
            id: r.id,
            timeout_ms: b.timeout_ms,
            producer_group: b.producer_group,
            fresh_producer_id,
        },
        Op::AddPartitions(p) => {
            let (producer_id, epoch) = producer()?;
            Request::Add {
                id: r.id,
                producer_id,
                epoch,
                participants: p
                    .partitions
                    .into_iter()
                    .map(|p| Participant {
                        topic: p.topic,
                        partition: p.partition,
                    })
                    .collect(),
            }
        }
        Op::AddOffsetsGroup(group) => {
            let (producer_id, epoch) = producer()?;
            Request::AddOffsets {
                id: r.id,
                producer_id,
                epoch,
                group,
            }
        }
        Op::CommitOffsets(o) => {
            let (producer_id, epoch) = producer()?;
            Request::CommitOffsets {
                id: r.id,
                producer_id,
                epoch,
                group: o.group,
                offsets: o
                    .offsets
                    .into_iter()
                    .map(|o| {
                        (
                            Participant {
                                topic: o.topic,
                                partition: o.partition,
                            },
                            o.offset,
                        )
                    })
                    .collect(),
            }
        }
        Op::VerifyPartition(p) => {
            let (producer_id, epoch) = producer()?;
            Request::Verify {
                id: r.id,
                producer_id,
                epoch,
                participant: Participant {
                    topic: p.topic,
                    partition: p.partition,
                },
            }
        }
        Op::End(e) => Request::End {
            id: r.id,
            producer: r.producer_id.map(|id| (id, epoch)),
            outcome: if e.commit {
                Outcome::Commit
            } else {
                Outcome::Abort
            },
        },
    })
}

/// The gRPC status code of a refusal (the `Transaction` RPC's documented mapping).
pub fn refusal_code(e: &TxnError) -> tonic::Code {
    match e {
        TxnError::Unknown { .. } | TxnError::WrongProducer { .. } => tonic::Code::NotFound,
        TxnError::Fenced { .. } => tonic::Code::PermissionDenied,
        TxnError::Concurrent { .. } => tonic::Code::Aborted,
        TxnError::InvalidState { .. }
        | TxnError::TooManyParticipants { .. }
        | TxnError::TooManyTransactions { .. }
        | TxnError::InvalidTimeout { .. } => tonic::Code::InvalidArgument,
    }
}

/// Partitions in their gRPC form.
pub fn partitions_to_wire<'a>(
    partitions: impl IntoIterator<Item = &'a Participant>,
) -> Vec<v1::TxnPartition> {
    partitions
        .into_iter()
        .map(|p| v1::TxnPartition {
            topic: p.topic.clone(),
            partition: p.partition,
        })
        .collect()
}

/// A transaction as `ListTransactions` shows it.
pub fn transaction_info(t: &Transaction) -> v1::TransactionInfo {
    v1::TransactionInfo {
        id: t.id.clone(),
        producer_id: t.producer_id,
        producer_epoch: i32::from(t.epoch),
        phase: match t.phase {
            Phase::Empty => "empty",
            Phase::Ongoing => "ongoing",
            Phase::PrepareCommit => "prepare-commit",
            Phase::PrepareAbort => "prepare-abort",
            Phase::CompleteCommit => "complete-commit",
            Phase::CompleteAbort => "complete-abort",
        }
        .into(),
        participants: partitions_to_wire(&t.participants),
        started_ms: t.started_ms,
        updated_ms: t.updated_ms,
        timeout_ms: t.timeout_ms,
        producer_group: t.producer_group.clone(),
        check_backs: t.check_backs,
        decided_by: match t.decided_by {
            None => "",
            Some(DecidedBy::Producer) => "producer",
            Some(DecidedBy::CheckBack) => "check-back",
            Some(DecidedBy::Timeout) => "timeout",
            Some(DecidedBy::Default) => "default",
        }
        .into(),
        number: t.number,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_survives_the_wire() {
        let p = Participant {
            topic: "orders".into(),
            partition: 3,
        };
        let requests = [
            Request::Init {
                id: "t".into(),
                timeout_ms: 60_000,
                producer_group: Some("payments".into()),
                fresh_producer_id: 42,
            },
            Request::Add {
                id: "t".into(),
                producer_id: 42,
                epoch: 1,
                participants: vec![p.clone()],
            },
            Request::AddOffsets {
                id: "t".into(),
                producer_id: 42,
                epoch: 1,
                group: "readers".into(),
            },
            Request::Verify {
                id: "t".into(),
                producer_id: 42,
                epoch: 1,
                participant: p.clone(),
            },
            Request::CommitOffsets {
                id: "t".into(),
                producer_id: 42,
                epoch: 1,
                group: "readers".into(),
                offsets: vec![(p, 17)],
            },
            Request::End {
                id: "t".into(),
                producer: None,
                outcome: Outcome::Abort,
            },
        ];
        for r in requests {
            let wire: v1::TransactionRequest = r.clone().into();
            assert_eq!(request_from_wire(wire, 42).unwrap(), r);
        }
        let no_producer = v1::TransactionRequest {
            id: "t".into(),
            producer_id: None,
            producer_epoch: 0,
            op: Some(v1::transaction_request::Op::AddOffsetsGroup("g".into())),
        };
        assert!(request_from_wire(no_producer, 1).is_err());
    }
}
