//! How the broker's types and errors map to the wire of `meridian.v1.Broker`: status codes
//! for `BrokerError`, producer sequences, topic, log-group and consumer-group descriptions,
//! origin positions.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Maps broker errors to gRPC status codes, keeping the broker's message for the user.
pub fn status(e: BrokerError) -> Status {
    let code = match &e {
        BrokerError::Invalid(_)
        | BrokerError::TooLarge { .. }
        | BrokerError::InvalidTimestamp(_)
        | BrokerError::InvalidRecord(_)
        | BrokerError::MetadataTooLarge(_) => tonic::Code::InvalidArgument,
        BrokerError::NotHome(_) | BrokerError::NotInTransaction { fenced: true, .. } => {
            tonic::Code::PermissionDenied
        }
        BrokerError::NotInTransaction { .. } => tonic::Code::InvalidArgument,
        BrokerError::Group(e) => {
            use crate::broker::consumer_groups::membership::GroupError;
            match e {
                GroupError::UnknownMember { .. } => tonic::Code::NotFound,
                GroupError::FencedEpoch { .. } => tonic::Code::Aborted,
                GroupError::NotAssigned { .. } => tonic::Code::PermissionDenied,
                GroupError::Invalid(_) => tonic::Code::InvalidArgument,
                GroupError::Full(_) => tonic::Code::ResourceExhausted,
            }
        }
        BrokerError::Delay(crate::broker::delayed::schedule::DelayError::Invalid(_)) => {
            tonic::Code::InvalidArgument
        }
        BrokerError::Delay(_) => tonic::Code::ResourceExhausted,
        BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => {
            tonic::Code::NotFound
        }
        BrokerError::TopicExists(_) => tonic::Code::AlreadyExists,
        BrokerError::OffsetOutOfRange { .. } => tonic::Code::OutOfRange,
        BrokerError::Append(AppendError::DiskFull { .. }) => tonic::Code::ResourceExhausted,
        BrokerError::Append(AppendError::TooLarge { .. }) => tonic::Code::InvalidArgument,
        // Neither is a broker failure (Unavailable would have clients try another broker).
        BrokerError::Election {
            timed_out: true, ..
        } => tonic::Code::DeadlineExceeded,
        BrokerError::Election { .. } => tonic::Code::Aborted,
        BrokerError::Append(AppendError::Closed)
        | BrokerError::Replication(_)
        | BrokerError::NotEnoughReplicas(_) => tonic::Code::Unavailable,
        BrokerError::NotLeader { .. } | BrokerError::EpochAhead { .. } => {
            tonic::Code::FailedPrecondition
        }
        // Not FailedPrecondition: clients read that as "not leader" and follow the leader;
        // a sequence refusal is final for the batch (with SEQUENCE_HEADER saying why).
        BrokerError::Sequence(_) => tonic::Code::OutOfRange,
        // Kafka's FENCED_LEADER_EPOCH: not retried as is; the client must refresh.
        BrokerError::StaleEpoch { .. } => tonic::Code::Aborted,
        BrokerError::Append(_) | BrokerError::Read(_) | BrokerError::Io(_) => tonic::Code::Internal,
    };
    // A "not leader here" answer names where the leader is and clients follow it: a
    // redirect, not an error (routing at idle would otherwise count thousands of errors).
    let series = match &e {
        BrokerError::NotLeader { .. } | BrokerError::EpochAhead { .. } => {
            "meridian_grpc_redirects_total"
        }
        _ => "meridian_grpc_errors_total",
    };
    metrics::counter!(series, "code" => format!("{code:?}")).increment(1);
    let mut status = Status::new(code, e.to_string());
    // Clients follow a leader change without parsing the message.
    if let BrokerError::NotLeader {
        log_group,
        leader_id,
        leader,
        ..
    } = &e
    {
        // And a client that gives up can name the group and the leader that did not
        // answer.
        if let Ok(value) = log_group.to_string().parse() {
            status.metadata_mut().insert(LOG_GROUP_HEADER, value);
        }
        if let Some(Ok(value)) = leader_id.map(|id| id.to_string().parse()) {
            status.metadata_mut().insert(LEADER_ID_HEADER, value);
        }
        if let Some(Ok(value)) = leader.as_ref().map(|a| a.parse()) {
            status.metadata_mut().insert(LEADER_HEADER, value);
        }
    }
    if let BrokerError::Sequence(LogGroupError::Sequence { refusal, .. }) = &e {
        let why = match refusal {
            SeqRefusal::Fenced { .. } => "fenced",
            SeqRefusal::NewEpochNotAtZero { .. } | SeqRefusal::OutOfOrder { .. } => "out-of-order",
        };
        status.metadata_mut().insert(
            SEQUENCE_HEADER,
            tonic::metadata::MetadataValue::from_static(why),
        );
    }
    if let BrokerError::StaleEpoch { current, .. } = &e
        && let Ok(value) = current.to_string().parse()
    {
        status.metadata_mut().insert(EPOCH_HEADER, value);
    }
    status
}

/// The producer batch of a request's `producer` and its `count` messages: the last
/// sequence is the first + count - 1, wrapping past `i32::MAX` to 0 as Kafka's do.
pub(super) fn producer_batch(
    p: &v1::ProducerSequence,
    count: usize,
) -> Result<ProducerBatch, Status> {
    let epoch = i16::try_from(p.epoch).ok().filter(|e| *e >= 0);
    let (Some(epoch), true, true) = (epoch, p.id >= 0, p.first_sequence >= 0) else {
        return Err(Status::invalid_argument(format!(
            "producer id {}, epoch {}, first sequence {}: the id and the first sequence must be 0 or more, the epoch 0 to {}",
            p.id,
            p.epoch,
            p.first_sequence,
            i16::MAX
        )));
    };
    // An empty request is refused by the broker; count - 1 stays 0 for it here.
    let span = (count.max(1) - 1) as i64;
    let last = ((i64::from(p.first_sequence) + span) & i64::from(i32::MAX)) as i32;
    Ok(ProducerBatch {
        id: p.id,
        epoch,
        first_sequence: p.first_sequence,
        last_sequence: last,
    })
}

/// How long a describe (or a listing) waits for other brokers' offsets, in all: well within
/// the time clients wait for a metadata answer (`meridian_region_client::METADATA_ANSWER`),
/// so a stalled leader leaves its partitions' offsets unknown instead of failing the answer.
const REMOTE_OFFSETS_WAIT: Duration = Duration::from_secs(3);
/// Partitions whose offsets are asked of other brokers at once, at most.
const REMOTE_OFFSETS_IN_FLIGHT: usize = 32;

/// Topics' descriptions: each partition's offsets from its leader — this broker when it
/// leads the partition's log group, else asked of the leader (a follower here may be
/// behind; a region's topics may be spread over its brokers). (Answering "not the leader" for the whole topic
/// instead sent a client back and forth between brokers that each lacked a group.) Those
/// are asked concurrently under one deadline for the whole answer, so a listing of many
/// topics on a stalled broker takes `REMOTE_OFFSETS_WAIT`, not that per topic. A leader
/// that does not answer leaves its partition's offsets unknown, not the description failed:
/// a producer needs only the partitions, and an operator describing a topic while one
/// broker stalls sees the rest.
pub(super) async fn topics_info(
    broker: &Broker,
    topics: &[Topic],
) -> Result<Vec<v1::TopicInfo>, Status> {
    use futures_util::StreamExt;
    let mut infos = Vec::with_capacity(topics.len());
    let mut remote = Vec::new();
    for (i, t) in topics.iter().enumerate() {
        let mut partitions = Vec::with_capacity(t.groups.len());
        for (p, &g) in t.groups.iter().enumerate() {
            let (earliest, latest) = match broker.partition_offsets(t, p as u32) {
                Ok(offsets) => offsets,
                Err(BrokerError::NotLeader { .. }) => {
                    remote.push((i, p));
                    (0, 0)
                }
                Err(e) => return Err(status(e)),
            };
            partitions.push(v1::PartitionInfo {
                partition: p as u32,
                log_group: g,
                earliest_offset: earliest,
                latest_offset: latest,
                offsets_unknown: false,
            });
        }
        infos.push(v1::TopicInfo {
            name: t.name.clone(),
            topic_id: t.id,
            partitions,
            created_ms: t.created_ms,
            replication: t.replication.as_str().to_owned(),
            strict_order: t.home.is_some(),
            timestamp_type: t.timestamp_type.as_str().to_owned(),
        });
    }
    let deadline = tokio::time::Instant::now() + REMOTE_OFFSETS_WAIT;
    let mut asked = futures_util::stream::iter(remote)
        .map(|(i, p)| async move {
            let answer =
                tokio::time::timeout_at(deadline, remote_offsets(broker, &topics[i], p as u32))
                    .await
                    .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in time")));
            (i, p, answer)
        })
        .buffer_unordered(REMOTE_OFFSETS_IN_FLIGHT);
    while let Some((i, p, answer)) = asked.next().await {
        let info = &mut infos[i].partitions[p];
        match answer {
            Ok((earliest, latest)) => {
                (info.earliest_offset, info.latest_offset) = (earliest, latest)
            }
            Err(e) => {
                tracing::debug!(topic = %topics[i].name, partition = p, error = %e, "offsets unknown");
                info.offsets_unknown = true;
            }
        }
    }
    Ok(infos)
}

/// One topic's description ([`topics_info`]).
pub(super) async fn topic_info(broker: &Broker, t: &Topic) -> Result<v1::TopicInfo, Status> {
    let mut infos = topics_info(broker, std::slice::from_ref(t)).await?;
    Ok(infos.pop().expect("one topic asked, one described"))
}

/// One partition's `(earliest, latest)` asked of its leader, both at once.
async fn remote_offsets(broker: &Broker, t: &Topic, partition: u32) -> Result<(u64, u64), Status> {
    let end = |spec: v1::OffsetSpec| {
        let request = v1::ListOffsetsRequest {
            topic: t.name.clone(),
            partition,
            spec: spec as i32,
            timestamp_ms: 0,
        };
        async move {
            broker
                .at_partition_leader(&t.name, partition, REMOTE_OFFSETS_WAIT, |mut c| {
                    let r = request.clone();
                    async move { c.list_offsets(r).await }
                })
                .await
                .map(|answer| answer.offset)
                .map_err(|e| {
                    Status::unavailable(format!(
                        "partition {partition} of {}: its leader's offsets: {e}",
                        t.name
                    ))
                })
        }
    };
    tokio::try_join!(end(v1::OffsetSpec::Earliest), end(v1::OffsetSpec::Latest))
}

pub(super) fn log_group_info(s: LogGroupState) -> v1::LogGroupInfo {
    v1::LogGroupInfo {
        group: s.log_group,
        strategy: s.strategy.to_owned(),
        epoch: s.epoch,
        leader: s.leader,
        start_position: s.start_position,
        end_position: s.end_position,
        last_index: s.last_index,
        last_term: s.last_term,
        watermark: s.watermark,
        replicas: s
            .replicas
            .into_iter()
            .map(|(broker_id, position)| v1::ReplicaProgress {
                broker_id,
                position,
            })
            .collect(),
        sync_replicas: s.sync_replicas,
        voters: s.voters,
    }
}

pub(super) fn from_positions(positions: Vec<v1::OriginPosition>) -> crate::broker::Positions {
    positions
        .into_iter()
        .map(|p| (p.region, p.position))
        .collect()
}

pub(super) fn to_positions(positions: crate::broker::Positions) -> Vec<v1::OriginPosition> {
    positions
        .into_iter()
        .map(|(region, position)| v1::OriginPosition { region, position })
        .collect()
}

/// The groups a Kafka coordinator holds, as the gRPC API describes them (assignments decoded
/// from Kafka's consumer protocol).
/// A native group as the listing shows it (protocol type `meridian`).
pub(super) fn native_group(
    g: crate::broker::consumer_groups::membership::Group,
) -> v1::ConsumerGroupInfo {
    v1::ConsumerGroupInfo {
        name: g.name.clone(),
        state: if g.members.is_empty() {
            "Empty"
        } else if g.is_stable() {
            "Stable"
        } else {
            "Reconciling"
        }
        .to_owned(),
        protocol_type: "meridian".to_owned(),
        protocol: g.assignor.name().to_owned(),
        members: g
            .members
            .values()
            .map(|m| v1::ConsumerGroupMember {
                member_id: m.id.clone(),
                client_id: m.client_id.clone(),
                assignment: v1::TopicPartitions::group(&m.assigned),
                instance_id: m.instance.clone(),
            })
            .collect(),
        idle_instances: g
            .instances
            .iter()
            .filter(|(_, i)| i.idle_since_ms.is_some())
            .map(|(name, _)| name.clone())
            .collect(),
    }
}

pub(super) fn consumer_groups(c: &Coordinator) -> Vec<v1::ConsumerGroupInfo> {
    c.list()
        .into_iter()
        .filter_map(|(name, _, _)| {
            let d = c.describe(&name)?;
            Some(v1::ConsumerGroupInfo {
                name,
                state: d.state.to_owned(),
                protocol_type: d.protocol_type,
                protocol: d.protocol,
                members: d
                    .members
                    .into_iter()
                    .map(
                        |(member_id, client_id, _, assignment)| v1::ConsumerGroupMember {
                            member_id,
                            client_id,
                            assignment: meridian_proto::kafka::decode_assignment(&assignment)
                                .unwrap_or_default()
                                .into_iter()
                                .map(|(topic, partitions)| v1::TopicPartitions {
                                    topic,
                                    partitions: partitions
                                        .into_iter()
                                        .filter_map(|p| u32::try_from(p).ok())
                                        .collect(),
                                })
                                .collect(),
                            instance_id: String::new(),
                        },
                    )
                    .collect(),
                idle_instances: Vec::new(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(id: i64, epoch: i32, first: i32) -> v1::ProducerSequence {
        v1::ProducerSequence {
            id,
            epoch,
            first_sequence: first,
        }
    }

    #[test]
    fn a_request_producer_spans_its_messages_and_wraps() {
        let p = producer_batch(&seq(1 << 62, 3, 10), 5).unwrap();
        assert_eq!((p.id, p.epoch), (1 << 62, 3));
        assert_eq!((p.first_sequence, p.last_sequence), (10, 14));
        let p = producer_batch(&seq(7, 0, i32::MAX - 1), 4).unwrap();
        assert_eq!((p.first_sequence, p.last_sequence), (i32::MAX - 1, 1));
        for bad in [
            seq(-1, 0, 0),
            seq(1, -1, 0),
            seq(1, 40_000, 0),
            seq(1, 0, -5),
        ] {
            let e = producer_batch(&bad, 1).unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn sequence_refusals_are_out_of_range_with_their_reason() {
        let refused = |refusal| {
            status(BrokerError::Sequence(LogGroupError::Sequence {
                log_group: 1,
                refusal,
            }))
        };
        let fenced = refused(SeqRefusal::Fenced {
            id: 1,
            epoch: 0,
            current: 1,
        });
        assert_eq!(fenced.code(), tonic::Code::OutOfRange);
        assert_eq!(fenced.metadata().get(SEQUENCE_HEADER).unwrap(), "fenced");
        let gap = refused(SeqRefusal::OutOfOrder {
            id: 1,
            epoch: 0,
            first: 9,
            last: 9,
            expected: 5,
        });
        assert_eq!(gap.code(), tonic::Code::OutOfRange);
        assert_eq!(gap.metadata().get(SEQUENCE_HEADER).unwrap(), "out-of-order");
        assert!(gap.metadata().get(LEADER_HEADER).is_none());
    }
}
