//! Kafka transactions on the broker's transaction coordinators
//! ([`crate::broker::transactions`]): InitProducerId (idempotent, or registering a
//! `transactional.id` and fencing its older producers by epoch), AddPartitionsToTxn,
//! AddOffsetsToTxn, TxnOffsetCommit and EndTxn. A request reaches the id's coordinator
//! (FindCoordinator with key type 1 names it); elsewhere it is answered NOT_COORDINATOR, as
//! Kafka does, except TxnOffsetCommit, which goes to the consumer group's coordinator and
//! is forwarded from there to the transaction's.

use kafka_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest,
    AddPartitionsToTxnResponse, DescribeProducersRequest, DescribeProducersResponse,
    DescribeTransactionsRequest, DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};
use meridian_region_client::RegionError;

use super::{Kafka, code, error_code, kafka_protocol, partition_index, str};
use crate::broker::BrokerError;
use crate::broker::transactions::coordinator::{
    Answer, Outcome, Participant, Phase, Request, Transaction, TxnError,
};
use crate::broker::transactions::{Refusal, TxnRequestError};

/// The Kafka error code of a refused or failed transaction request.
fn txn_error_code(e: &TxnRequestError) -> i16 {
    match e {
        TxnRequestError::Refused(refused) => match refused {
            TxnError::Unknown { .. } | TxnError::WrongProducer { .. } => {
                code::INVALID_PRODUCER_ID_MAPPING
            }
            TxnError::Fenced { .. } => code::PRODUCER_FENCED,
            TxnError::Concurrent { .. } => code::CONCURRENT_TRANSACTIONS,
            TxnError::InvalidState { .. }
            | TxnError::TooManyParticipants { .. }
            | TxnError::TooManyTransactions { .. } => code::INVALID_TXN_STATE,
            TxnError::InvalidTimeout { .. } => code::INVALID_TRANSACTION_TIMEOUT,
        },
        TxnRequestError::Broker(BrokerError::NotLeader { .. }) => code::NOT_COORDINATOR,
        // Retriable: the coordinator is loading, electing or cannot write yet.
        TxnRequestError::Broker(_) => code::COORDINATOR_LOAD_IN_PROGRESS,
    }
}

/// A failed transaction request as it is logged (the client sees only the code).
fn log_refusal(api: &'static str, e: &TxnRequestError) {
    tracing::debug!(api, error = %e, "transaction request refused");
}

/// InitProducerId: without a transactional id, a new idempotent producer id (epoch 0), or
/// the same id with the next epoch for a producer that asks again with its id (KIP-360);
/// with one, the id's producer from its coordinator (a new epoch fences the older ones;
/// a transaction an older producer left open is aborted first: CONCURRENT_TRANSACTIONS
/// until it is, which the client retries).
pub(super) async fn init_producer_id(
    kafka: &Kafka,
    r: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut out = InitProducerIdResponse::default();
    out.producer_id = ProducerId(-1);
    out.producer_epoch = -1;
    let Some(id) = r.transactional_id.as_ref().map(|t| t.0.to_string()) else {
        if r.producer_id.0 >= 0 && r.producer_epoch >= 0 && r.producer_epoch < i16::MAX {
            out.producer_id = r.producer_id;
            out.producer_epoch = r.producer_epoch + 1;
        } else {
            out.producer_id = ProducerId(kafka.broker.next_producer_id());
            out.producer_epoch = 0;
        }
        metrics::counter!("meridian_kafka_producer_ids_total").increment(1);
        return out;
    };
    let request = Request::Init {
        id,
        timeout_ms: i64::from(r.transaction_timeout_ms),
        producer_group: None,
        fresh_producer_id: kafka.broker.next_producer_id(),
    };
    match kafka.broker.transaction(request).await {
        Ok(Answer::Producer { producer_id, epoch }) => {
            out.producer_id = ProducerId(producer_id);
            out.producer_epoch = epoch;
        }
        Ok(Answer::Done) => out.error_code = code::UNKNOWN_SERVER_ERROR,
        Err(e) => {
            log_refusal("InitProducerId", &e);
            out.error_code = txn_error_code(&e);
        }
    }
    out
}

/// AddPartitionsToTxn (versions 0-3, one transaction per request): the partitions join
/// the producer's transaction, opening it. Every partition gets the same answer; a
/// partition of an unknown topic fails the request (the others OPERATION_NOT_ATTEMPTED).
pub(super) async fn add_partitions_to_txn(
    kafka: &Kafka,
    r: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    use kafka_protocol::messages::add_partitions_to_txn_response::{
        AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
    };
    let mut participants = Vec::new();
    let mut unknown = Vec::new();
    for topic in &r.v3_and_below_topics {
        let name = topic.name.0.to_string();
        let known = kafka.broker.topic(&name).ok();
        for &p in &topic.partitions {
            let fits = known
                .as_ref()
                .zip(partition_index(p).ok())
                .filter(|(t, index)| (*index as usize) < t.groups.len());
            match fits {
                Some((_, partition)) => participants.push(Participant {
                    topic: name.clone(),
                    partition,
                }),
                None => unknown.push((name.clone(), p)),
            }
        }
    }
    let code_of = |name: &str, p: i32| -> i16 {
        if unknown.is_empty() {
            return code::NONE;
        }
        if unknown.iter().any(|(n, q)| n == name && *q == p) {
            code::UNKNOWN_TOPIC_OR_PARTITION
        } else {
            code::OPERATION_NOT_ATTEMPTED
        }
    };
    let answer = if unknown.is_empty() {
        let request = Request::Add {
            id: r.v3_and_below_transactional_id.0.to_string(),
            producer_id: r.v3_and_below_producer_id.0,
            epoch: r.v3_and_below_producer_epoch,
            participants,
        };
        match kafka.broker.transaction(request).await {
            Ok(_) => code::NONE,
            Err(e) => {
                log_refusal("AddPartitionsToTxn", &e);
                txn_error_code(&e)
            }
        }
    } else {
        code::NONE
    };
    let mut out = AddPartitionsToTxnResponse::default();
    for topic in r.v3_and_below_topics {
        let mut t = AddPartitionsToTxnTopicResult::default();
        t.name = topic.name.clone();
        for p in topic.partitions {
            let mut result = AddPartitionsToTxnPartitionResult::default();
            result.partition_index = p;
            result.partition_error_code = match code_of(&topic.name.0, p) {
                code::NONE => answer,
                c => c,
            };
            t.results_by_partition.push(result);
        }
        out.results_by_topic_v3_and_below.push(t);
    }
    out
}

/// AddOffsetsToTxn: the consumer group's offsets will be committed in the transaction.
pub(super) async fn add_offsets_to_txn(
    kafka: &Kafka,
    r: AddOffsetsToTxnRequest,
) -> AddOffsetsToTxnResponse {
    let request = Request::AddOffsets {
        id: r.transactional_id.0.to_string(),
        producer_id: r.producer_id.0,
        epoch: r.producer_epoch,
        group: r.group_id.0.to_string(),
    };
    let mut out = AddOffsetsToTxnResponse::default();
    if let Err(e) = kafka.broker.transaction(request).await {
        log_refusal("AddOffsetsToTxn", &e);
        out.error_code = txn_error_code(&e);
    }
    out
}

/// TxnOffsetCommit: offsets committed inside the transaction, made the group's committed
/// offsets only if it commits. Sent to the group's coordinator; carried out by the
/// transaction's (forwarded when that is another broker).
pub(super) async fn txn_offset_commit(
    kafka: &Kafka,
    r: TxnOffsetCommitRequest,
) -> TxnOffsetCommitResponse {
    use kafka_protocol::messages::txn_offset_commit_response::{
        TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
    };
    let mut offsets = Vec::new();
    let mut invalid = false;
    for topic in &r.topics {
        for p in &topic.partitions {
            match (
                partition_index(p.partition_index),
                u64::try_from(p.committed_offset),
            ) {
                (Ok(partition), Ok(offset)) => offsets.push((
                    Participant {
                        topic: topic.name.0.to_string(),
                        partition,
                    },
                    offset,
                )),
                _ => invalid = true,
            }
        }
    }
    let answer = if invalid {
        code::OFFSET_OUT_OF_RANGE
    } else {
        let request = Request::CommitOffsets {
            id: r.transactional_id.0.to_string(),
            producer_id: r.producer_id.0,
            epoch: r.producer_epoch,
            group: r.group_id.0.to_string(),
            offsets,
        };
        match kafka.broker.transaction_anywhere(request).await {
            Ok(()) => code::NONE,
            Err(Refusal::Here(e)) => {
                log_refusal("TxnOffsetCommit", &e);
                txn_error_code(&e)
            }
            Err(Refusal::There(e)) => {
                tracing::debug!(error = %e, "a forwarded transaction request failed");
                forwarded_code(&e)
            }
        }
    };
    let mut out = TxnOffsetCommitResponse::default();
    for topic in r.topics {
        let mut t = TxnOffsetCommitResponseTopic::default();
        t.name = topic.name.clone();
        for p in topic.partitions {
            let mut result = TxnOffsetCommitResponsePartition::default();
            result.partition_index = p.partition_index;
            result.error_code = answer;
            t.partitions.push(result);
        }
        out.topics.push(t);
    }
    out
}

/// The Kafka code of a transaction request refused by another broker (its gRPC status
/// code says which refusal: `crate::grpc`'s mapping).
fn forwarded_code(e: &RegionError) -> i16 {
    match e {
        RegionError::Broker { code: c, .. } => match *c {
            tonic::Code::NotFound => code::INVALID_PRODUCER_ID_MAPPING,
            tonic::Code::PermissionDenied => code::PRODUCER_FENCED,
            tonic::Code::Aborted => code::CONCURRENT_TRANSACTIONS,
            tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted => {
                code::INVALID_TXN_STATE
            }
            _ => code::COORDINATOR_LOAD_IN_PROGRESS,
        },
        _ => code::COORDINATOR_LOAD_IN_PROGRESS,
    }
}

/// EndTxn: commits or aborts the producer's transaction; answered once the outcome is
/// recorded and its markers written (or left to the coordinator to finish).
pub(super) async fn end_txn(kafka: &Kafka, r: EndTxnRequest) -> EndTxnResponse {
    let request = Request::End {
        id: r.transactional_id.0.to_string(),
        producer: Some((r.producer_id.0, r.producer_epoch)),
        outcome: if r.committed {
            Outcome::Commit
        } else {
            Outcome::Abort
        },
    };
    let mut out = EndTxnResponse::default();
    out.producer_id = ProducerId(-1);
    out.producer_epoch = -1;
    if let Err(e) = kafka.broker.transaction(request).await {
        log_refusal("EndTxn", &e);
        out.error_code = match txn_error_code(&e) {
            // EndTxn's versions before 2 know only the older name of fencing.
            code::PRODUCER_FENCED => code::INVALID_PRODUCER_EPOCH,
            c => c,
        };
    }
    out
}

/// A transaction's state as Kafka names it.
fn state_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Empty => "Empty",
        Phase::Ongoing => "Ongoing",
        Phase::PrepareCommit => "PrepareCommit",
        Phase::PrepareAbort => "PrepareAbort",
        Phase::CompleteCommit => "CompleteCommit",
        Phase::CompleteAbort => "CompleteAbort",
    }
}

/// ListTransactions: the transactions this broker coordinates, filtered by state, producer
/// id and (v1) time open at least `duration_filter` ms; an unknown state filter is listed
/// back, as Kafka does.
pub(super) async fn list_transactions(
    kafka: &Kafka,
    r: ListTransactionsRequest,
) -> ListTransactionsResponse {
    use kafka_protocol::messages::list_transactions_response::TransactionState;
    const STATES: [&str; 6] = [
        "Empty",
        "Ongoing",
        "PrepareCommit",
        "PrepareAbort",
        "CompleteCommit",
        "CompleteAbort",
    ];
    let mut out = ListTransactionsResponse::default();
    let states: Vec<String> = r.state_filters.iter().map(|s| s.to_string()).collect();
    out.unknown_state_filters = r
        .state_filters
        .iter()
        .filter(|s| !STATES.contains(&s.as_str()))
        .cloned()
        .collect();
    let now = crate::broker::now_ms();
    for t in kafka.broker.list_transactions().await {
        let name = state_name(t.phase);
        let open_for = t.started_ms.map_or(0, |s| now - s);
        if (!states.is_empty() && !states.iter().any(|s| s == name))
            || (!r.producer_id_filters.is_empty()
                && !r.producer_id_filters.iter().any(|p| p.0 == t.producer_id))
            || (r.duration_filter >= 0 && t.in_flight() && open_for < r.duration_filter)
            || (r.duration_filter > 0 && !t.in_flight())
        {
            continue;
        }
        let mut s = TransactionState::default();
        s.transactional_id = TransactionalId(str(&t.id));
        s.producer_id = ProducerId(t.producer_id);
        s.transaction_state = str(name);
        out.transaction_states.push(s);
    }
    out
}

/// DescribeTransactions: each id's state at its coordinator (NOT_COORDINATOR elsewhere,
/// TRANSACTIONAL_ID_NOT_FOUND for an id it does not know).
pub(super) async fn describe_transactions(
    kafka: &Kafka,
    r: DescribeTransactionsRequest,
) -> DescribeTransactionsResponse {
    use kafka_protocol::messages::describe_transactions_response::TransactionState;
    const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    let mut out = DescribeTransactionsResponse::default();
    for id in r.transactional_ids {
        let mut s = TransactionState::default();
        s.transactional_id = id.clone();
        s.producer_id = ProducerId(-1);
        s.producer_epoch = -1;
        s.transaction_start_time_ms = -1;
        match kafka.broker.describe_transaction(&id.0).await {
            Ok(Some(t)) => fill(&mut s, &t),
            Ok(None) => s.error_code = TRANSACTIONAL_ID_NOT_FOUND,
            Err(BrokerError::NotLeader { .. }) => s.error_code = code::NOT_COORDINATOR,
            Err(e) => s.error_code = error_code(&e),
        }
        out.transaction_states.push(s);
    }
    out
}

/// A described transaction: its state, timeout, start, producer and partitions by topic.
fn fill(
    s: &mut kafka_protocol::messages::describe_transactions_response::TransactionState,
    t: &Transaction,
) {
    use kafka_protocol::messages::describe_transactions_response::TopicData;
    s.transaction_state = str(state_name(t.phase));
    s.transaction_timeout_ms = i32::try_from(t.timeout_ms).unwrap_or(i32::MAX);
    s.transaction_start_time_ms = t.started_ms.unwrap_or(-1);
    s.producer_id = ProducerId(t.producer_id);
    s.producer_epoch = t.epoch;
    let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for p in &t.participants {
        by_topic
            .entry(p.topic.as_str())
            .or_default()
            .push(p.partition as i32);
    }
    s.topics = by_topic
        .into_iter()
        .map(|(name, partitions)| {
            let mut d = TopicData::default();
            d.topic = TopicName(str(name));
            d.partitions = partitions;
            d
        })
        .collect();
}

/// DescribeProducers: each partition's idempotent producers (at its leader), with the start
/// of the transaction each has open there.
pub(super) async fn describe_producers(
    kafka: &Kafka,
    r: DescribeProducersRequest,
) -> DescribeProducersResponse {
    use kafka_protocol::messages::describe_producers_response::{
        PartitionResponse, ProducerState, TopicResponse,
    };
    let mut out = DescribeProducersResponse::default();
    for topic in r.topics {
        let mut t = TopicResponse::default();
        t.name = topic.name.clone();
        for index in topic.partition_indexes {
            let mut p = PartitionResponse::default();
            p.partition_index = index;
            let found = partition_index(index)
                .map_err(|c| (c, String::new()))
                .and_then(|i| {
                    kafka
                        .broker
                        .describe_producers(&topic.name.0, i)
                        .map_err(|e| (error_code(&e), e.to_string()))
                });
            match found {
                Ok(producers) => {
                    for (producer, open) in producers {
                        let mut s = ProducerState::default();
                        s.producer_id = ProducerId(producer.id);
                        s.producer_epoch = i32::from(producer.epoch);
                        s.last_sequence = producer.last_sequence;
                        s.last_timestamp = producer.last_time_ms;
                        s.coordinator_epoch = -1;
                        s.current_txn_start_offset = open.map_or(-1, |o| o as i64);
                        p.active_producers.push(s);
                    }
                }
                Err((c, message)) => {
                    p.error_code = c;
                    p.error_message = (!message.is_empty()).then(|| str(&message));
                }
            }
            t.partitions.push(p);
        }
        out.topics.push(t);
    }
    out
}
