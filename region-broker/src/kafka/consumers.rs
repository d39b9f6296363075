//! Consumer-group requests: where a group is coordinated (the leader of the log group its
//! name hashes to), membership (JoinGroup, SyncGroup, LeaveGroup; heartbeats are answered
//! in `handle`), DescribeGroups and ListGroups from the
//! [`Coordinator`](groups::Coordinator), and a group's
//! offsets (OffsetCommit, OffsetFetch), forwarded to the partition's leader when another
//! broker leads it.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::{BrokerId, TopicName};
use meridian_proto::v1;
use meridian_region_client::Stay;

use super::groups;
use super::{Kafka, client_error_code, code, error_code, partition_index, str};
use crate::broker::BrokerError;

impl Kafka {
    /// The broker coordinating `group`, and its Kafka address: the leader of the log group
    /// the group's name hashes to (Kafka places a group on the leader of a
    /// `__consumer_offsets` partition the same way), so every broker names the same one
    /// and the group moves with that leader. COORDINATOR_NOT_AVAILABLE while none leads.
    pub(super) fn coordinator(&self, group: &str) -> Result<(u32, String, u16), i16> {
        let g = self
            .broker
            .coordinator_group(group)
            .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
        let leader = self
            .broker
            .leader_id(g)
            .ok_or(code::COORDINATOR_NOT_AVAILABLE)?;
        self.broker
            .kafka_brokers()
            .into_iter()
            .find(|(id, ..)| *id == leader)
            .ok_or(code::COORDINATOR_NOT_AVAILABLE)
    }

    /// NOT_COORDINATOR when another broker coordinates `group` (the client looks it up
    /// again), else NONE.
    pub(super) fn check_coordinator(&self, group: &str) -> i16 {
        match self.coordinator(group) {
            Ok((id, ..)) if id == self.broker.config().broker_id => code::NONE,
            Ok(_) => code::NOT_COORDINATOR,
            Err(c) => c,
        }
    }
}

/// FindCoordinator: the Kafka listener of the broker leading the log group a consumer
/// group's name or a transactional id hashes to ([`Kafka::coordinator`]).
pub(super) fn find_coordinator(
    kafka: &Kafka,
    r: kafka_protocol::messages::FindCoordinatorRequest,
) -> kafka_protocol::messages::FindCoordinatorResponse {
    let mut out = kafka_protocol::messages::FindCoordinatorResponse::default();
    // Key type 0 is a consumer group, 1 a transactional id: both are placed the same way
    // (`Broker::coordinator_group`).
    let found = match r.key_type {
        0 | 1 => kafka.coordinator(&r.key),
        _ => Err(code::INVALID_REQUEST),
    };
    match found {
        Ok((id, host, port)) => {
            out.node_id = BrokerId(id as i32);
            out.host = str(&host);
            out.port = i32::from(port);
        }
        Err(c) => {
            out.error_code = c;
            out.node_id = BrokerId(-1);
            out.port = -1;
        }
    }
    out
}

/// OffsetCommit: the broker's offset commits (the same a gRPC consumer makes).
pub(super) async fn offset_commit(
    kafka: &Kafka,
    r: kafka_protocol::messages::OffsetCommitRequest,
) -> kafka_protocol::messages::OffsetCommitResponse {
    let broker = &*kafka.broker;
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    let group = r.group_id.0.to_string();
    let mut out = kafka_protocol::messages::OffsetCommitResponse::default();
    // Fenced at the group's coordinator: a commit naming a member or generation is
    // checked against the group; one naming neither only where the group has no members.
    let fenced = match kafka.check_coordinator(&group) {
        code::NONE => kafka.consumer_groups.check_commit(
            &group,
            r.member_id.as_str(),
            r.generation_id_or_member_epoch,
        ),
        _ if r.generation_id_or_member_epoch < 0 && r.member_id.is_empty() => code::NONE,
        c => c,
    };
    // A KIP-848 member (ConsumerGroupHeartbeat) commits as a member of the native group:
    // refused once the partition is another's or the member is gone.
    let member = (fenced == code::NONE
            && !r.member_id.is_empty()
            // A classic group's members (the common case) skip the native coordinator.
            && !kafka.consumer_groups.has_members(&group)
            && broker.has_native_group(&group).await)
        .then(|| (r.member_id.to_string(), r.generation_id_or_member_epoch));
    for topic in r.topics {
        let name = topic.name.0.to_string();
        let mut t = OffsetCommitResponseTopic::default();
        t.name = topic.name.clone();
        for part in topic.partitions {
            let mut p = OffsetCommitResponsePartition::default();
            p.partition_index = part.partition_index;
            let partition = match partition_index(part.partition_index) {
                Ok(partition) => partition,
                Err(c) => {
                    p.error_code = c;
                    t.partitions.push(p);
                    continue;
                }
            };
            let offset = part.committed_offset as u64;
            let metadata = part
                .committed_metadata
                .as_ref()
                .map_or(String::new(), |m| m.to_string());
            if fenced != code::NONE {
                p.error_code = fenced;
            } else if part.committed_offset < 0 {
                p.error_code = code::OFFSET_OUT_OF_RANGE;
            } else if let Some((id, epoch)) = &member {
                use crate::broker::consumer_groups::membership::GroupError;
                p.error_code = match broker
                    .commit_as_member(
                        &group,
                        (id, *epoch),
                        &name,
                        partition,
                        offset,
                        Vec::new(),
                        &metadata,
                    )
                    .await
                {
                    Ok(()) => code::NONE,
                    Err(BrokerError::Group(GroupError::UnknownMember { .. })) => {
                        groups::code::UNKNOWN_MEMBER_ID
                    }
                    Err(BrokerError::Group(_)) => groups::code::ILLEGAL_GENERATION,
                    Err(other) => error_code(&other),
                };
            } else {
                let local = broker
                    .commit_offset(&group, &name, partition, offset, Vec::new(), &metadata)
                    .await;
                p.error_code = match local {
                    Ok(()) => code::NONE,
                    // The partition's log group is led elsewhere: the commit goes there.
                    Err(BrokerError::NotLeader { .. }) => match kafka.region().await {
                        Ok(client) => client
                            .commit_with_metadata(
                                &Stay,
                                &group,
                                &name,
                                partition,
                                offset,
                                &Default::default(),
                                &metadata,
                            )
                            .await
                            .map_or_else(|e| client_error_code(&e), |()| code::NONE),
                        Err(e) => client_error_code(&e),
                    },
                    Err(BrokerError::Invalid(_)) => 24, // INVALID_GROUP_ID
                    Err(other) => error_code(&other),
                };
            }
            t.partitions.push(p);
        }
        out.topics.push(t);
    }
    out
}

/// OffsetFetch: what the group committed (-1 where nothing); every partition with a commit
/// when the request names no topics.
pub(super) async fn offset_fetch(
    kafka: &Kafka,
    r: kafka_protocol::messages::OffsetFetchRequest,
) -> kafka_protocol::messages::OffsetFetchResponse {
    let broker = &*kafka.broker;
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponsePartition, OffsetFetchResponseTopic,
    };
    let group = r.group_id.0.to_string();
    let all = r.topics.is_none();
    let wanted: Vec<(TopicName, Vec<i32>)> = match r.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect(),
        None => broker
            .topics()
            .into_iter()
            .map(|t| {
                let n = t.groups.len() as i32;
                (TopicName(str(&t.name)), (0..n).collect())
            })
            .collect(),
    };
    let mut out = kafka_protocol::messages::OffsetFetchResponse::default();
    for (name, partitions) in wanted {
        let mut t = OffsetFetchResponseTopic::default();
        t.name = name.clone();
        for p in partitions {
            let mut part = OffsetFetchResponsePartition::default();
            part.partition_index = p;
            part.committed_leader_epoch = -1;
            part.metadata = Some(str(""));
            part.committed_offset = -1;
            let partition = match partition_index(p) {
                Ok(partition) => partition,
                Err(c) => {
                    part.error_code = c;
                    t.partitions.push(part);
                    continue;
                }
            };
            let committed = match broker.committed_offset(&group, &name.0, partition).await {
                Ok(c) => Ok((c.offset, c.metadata)),
                // The partition's log group is led elsewhere: ask there.
                Err(BrokerError::NotLeader { .. }) => match kafka.region().await {
                    Ok(client) => client
                        .committed(&Stay, &group, &name.0, partition)
                        .await
                        .map(|(offset, _, metadata)| (offset, metadata))
                        .map_err(|e| client_error_code(&e)),
                    Err(e) => Err(client_error_code(&e)),
                },
                Err(e) => Err(error_code(&e)),
            };
            match committed {
                Ok((Some(o), metadata)) => {
                    part.committed_offset = o as i64;
                    part.metadata = Some(str(&metadata));
                }
                Ok((None, _)) if all => continue,
                Ok((None, _)) => {}
                Err(c) => part.error_code = c,
            }
            t.partitions.push(part);
        }
        if !(all && t.partitions.is_empty()) {
            out.topics.push(t);
        }
    }
    out
}

pub(super) async fn join_group(
    groups: &Arc<groups::Coordinator>,
    header: &kafka_protocol::messages::RequestHeader,
    r: kafka_protocol::messages::JoinGroupRequest,
    version: i16,
) -> kafka_protocol::messages::JoinGroupResponse {
    use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
    let session = Duration::from_millis(r.session_timeout_ms.max(0) as u64);
    let rebalance = if version >= 1 {
        Duration::from_millis(r.rebalance_timeout_ms.max(0) as u64)
    } else {
        session
    };
    let joined = groups
        .join(groups::Join {
            group: r.group_id.0.to_string(),
            member_id: r.member_id.to_string(),
            client_id: header
                .client_id
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "kafka".into()),
            protocol_type: r.protocol_type.to_string(),
            protocols: r
                .protocols
                .into_iter()
                .map(|p| (p.name.to_string(), p.metadata))
                .collect(),
            session,
            rebalance,
            require_known_id: version >= 4,
        })
        .await;
    let mut out = kafka_protocol::messages::JoinGroupResponse::default();
    out.error_code = joined.error;
    out.generation_id = if joined.error == 0 {
        joined.generation
    } else {
        -1
    };
    out.protocol_name = Some(str(&joined.protocol));
    if version >= 7 {
        out.protocol_type = Some(r.protocol_type.clone());
    }
    out.leader = str(&joined.leader);
    out.member_id = str(&joined.member_id);
    out.members = joined
        .members
        .into_iter()
        .map(|(id, metadata)| {
            let mut m = JoinGroupResponseMember::default();
            m.member_id = str(&id);
            m.metadata = metadata;
            m
        })
        .collect();
    out
}

pub(super) async fn sync_group(
    groups: &groups::Coordinator,
    r: kafka_protocol::messages::SyncGroupRequest,
) -> kafka_protocol::messages::SyncGroupResponse {
    let assignments = r
        .assignments
        .into_iter()
        .map(|a| (a.member_id.to_string(), a.assignment))
        .collect();
    let (error, assignment) = groups
        .sync(&r.group_id.0, &r.member_id, r.generation_id, assignments)
        .await;
    let mut out = kafka_protocol::messages::SyncGroupResponse::default();
    out.error_code = error;
    out.assignment = assignment;
    out
}

pub(super) fn leave_group(
    groups: &Arc<groups::Coordinator>,
    r: kafka_protocol::messages::LeaveGroupRequest,
    version: i16,
) -> kafka_protocol::messages::LeaveGroupResponse {
    use kafka_protocol::messages::leave_group_response::MemberResponse;
    let members: Vec<String> = if version >= 3 {
        r.members.iter().map(|m| m.member_id.to_string()).collect()
    } else {
        vec![r.member_id.to_string()]
    };
    let codes = groups.leave(&r.group_id.0, &members);
    let mut out = kafka_protocol::messages::LeaveGroupResponse::default();
    if version >= 3 {
        out.members = members
            .iter()
            .zip(&codes)
            .map(|(id, c)| {
                let mut m = MemberResponse::default();
                m.member_id = str(id);
                m.error_code = *c;
                m
            })
            .collect();
    } else {
        out.error_code = codes.first().copied().unwrap_or(0);
    }
    out
}

/// DescribeGroups: state, protocol and members of groups this broker coordinates; a group
/// it does not know is "Dead", as Kafka answers.
pub(super) fn describe_groups(
    kafka: &Kafka,
    r: kafka_protocol::messages::DescribeGroupsRequest,
    version: i16,
) -> kafka_protocol::messages::DescribeGroupsResponse {
    use kafka_protocol::messages::describe_groups_response::{
        DescribedGroup, DescribedGroupMember,
    };
    let mut out = kafka_protocol::messages::DescribeGroupsResponse::default();
    for id in r.groups {
        let mut g = DescribedGroup::default();
        g.group_id = id.clone();
        if version >= 3 {
            g.authorized_operations = i32::MIN;
        }
        let refused = kafka.check_coordinator(&id.0);
        if refused != code::NONE {
            g.error_code = refused;
            out.groups.push(g);
            continue;
        }
        match kafka.consumer_groups.describe(&id.0) {
            Some(d) => {
                g.group_state = str(d.state);
                g.protocol_type = str(&d.protocol_type);
                g.protocol_data = str(&d.protocol);
                g.members = d
                    .members
                    .into_iter()
                    .map(|(member, client, metadata, assignment)| {
                        let mut m = DescribedGroupMember::default();
                        m.member_id = str(&member);
                        m.client_id = str(&client);
                        m.client_host = str("");
                        m.member_metadata = metadata;
                        m.member_assignment = assignment;
                        m
                    })
                    .collect();
            }
            None => g.group_state = str("Dead"),
        }
        out.groups.push(g);
    }
    out
}

/// ListGroups: the groups this broker coordinates (filtered by state, v4+).
pub(super) fn list_groups(
    groups: &groups::Coordinator,
    r: kafka_protocol::messages::ListGroupsRequest,
) -> kafka_protocol::messages::ListGroupsResponse {
    use kafka_protocol::messages::list_groups_response::ListedGroup;
    let mut out = kafka_protocol::messages::ListGroupsResponse::default();
    for (name, protocol_type, state) in groups.list() {
        if !r.states_filter.is_empty() && !r.states_filter.iter().any(|s| s.as_str() == state) {
            continue;
        }
        let mut g = ListedGroup::default();
        g.group_id = kafka_protocol::messages::GroupId(str(&name));
        g.protocol_type = str(&protocol_type);
        g.group_state = str(state);
        out.groups.push(g);
    }
    out
}

/// Kafka's id of a topic (Metadata v10+, KIP-848 assignments): made from the catalog's
/// topic id and creation time, so every broker gives the same one and a topic deleted
/// and made again gets another.
pub(super) fn kafka_topic_id(topic: &crate::broker::Topic) -> uuid::Uuid {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&topic.id.to_le_bytes());
    b[4..12].copy_from_slice(&topic.created_ms.to_le_bytes());
    b[12..].copy_from_slice(b"mrdn");
    uuid::Uuid::from_bytes(b)
}

/// ConsumerGroupHeartbeat (KIP-848, the consumer protocol Kafka 4 clients speak with
/// `group.protocol=consumer`): served by the native group coordinator
/// (`broker/consumer_groups`), whose protocol is KIP-848's — the coordinator assigns,
/// partitions move cooperatively, a member epoch fences. Kafka groups of this protocol and
/// native groups share names, members and assignment. A member's session is Kafka's
/// default `group.consumer.session.timeout.ms` (45 s).
pub(super) async fn consumer_group_heartbeat(
    kafka: &Kafka,
    client_id: &str,
    r: kafka_protocol::messages::ConsumerGroupHeartbeatRequest,
) -> kafka_protocol::messages::ConsumerGroupHeartbeatResponse {
    use crate::broker::consumer_groups::membership::{GroupError, Heartbeat};
    use kafka_protocol::messages::consumer_group_heartbeat_response::{
        Assignment, TopicPartitions,
    };
    let mut out = kafka_protocol::messages::ConsumerGroupHeartbeatResponse::default();
    let group = r.group_id.0.to_string();
    let refuse = |mut out: kafka_protocol::messages::ConsumerGroupHeartbeatResponse,
                  code: i16,
                  message: String| {
        out.error_code = code;
        out.error_message = Some(str(&message));
        out
    };
    let refused = kafka.check_coordinator(&group);
    if refused != code::NONE {
        return refuse(
            out,
            refused,
            format!("not the coordinator of group {group}"),
        );
    }
    // Topic ids (the owned partitions) to names, through the catalog.
    let by_id: std::collections::HashMap<uuid::Uuid, String> = kafka
        .broker
        .topics()
        .into_iter()
        .map(|t| (kafka_topic_id(&t), t.name))
        .collect();
    let hb = Heartbeat {
        group: group.clone(),
        member_id: r.member_id.to_string(),
        // -2 (a static member leaving for now) leaves as -1 does: no static membership.
        member_epoch: if r.member_epoch < 0 {
            -1
        } else {
            r.member_epoch
        },
        client_id: client_id.to_owned(),
        topics: r
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|n| n.0.to_string()).collect()),
        owned: r.topic_partitions.map(|tps| {
            tps.into_iter()
                .filter_map(|t| {
                    by_id
                        .get(&t.topic_id)
                        .map(|name| (name.clone(), t.partitions))
                })
                .flat_map(|(name, ps)| {
                    ps.into_iter()
                        .filter_map(move |p| u32::try_from(p).ok().map(|p| (name.clone(), p)))
                })
                .collect()
        }),
        assignor: match r.server_assignor.as_deref() {
            Some("range") => "range".to_owned(),
            _ => "sticky".to_owned(),
        },
        session_ms: 45_000,
        // Broadcast groups are native only: a Kafka member asking to join one is refused.
        ..Heartbeat::default()
    };
    match kafka.broker.consumer_heartbeat(hb).await {
        Ok(answer) => {
            out.member_id = Some(str(&answer.member_id));
            out.member_epoch = answer.member_epoch;
            out.heartbeat_interval_ms = kafka.broker.heartbeat_interval_ms() as i32;
            if answer.member_epoch >= 0 {
                let ids: std::collections::HashMap<&str, uuid::Uuid> = by_id
                    .iter()
                    .map(|(id, name)| (name.as_str(), *id))
                    .collect();
                let mut a = Assignment::default();
                for t in v1::TopicPartitions::group(&answer.assignment) {
                    let Some(&id) = ids.get(t.topic.as_str()) else {
                        continue;
                    };
                    let mut tp = TopicPartitions::default();
                    tp.topic_id = id;
                    tp.partitions = t.partitions.into_iter().map(|p| p as i32).collect();
                    a.topic_partitions.push(tp);
                }
                out.assignment = Some(a);
            }
            out
        }
        Err(BrokerError::Group(e)) => {
            let c = match &e {
                GroupError::UnknownMember { .. } => 25, // UNKNOWN_MEMBER_ID
                GroupError::FencedEpoch { .. } => 110,  // FENCED_MEMBER_EPOCH
                GroupError::NotAssigned { .. } => 113,  // STALE_MEMBER_EPOCH
                GroupError::Invalid(_) => code::INVALID_REQUEST,
                GroupError::Full(_) => 81, // GROUP_MAX_SIZE_REACHED
            };
            refuse(out, c, e.to_string())
        }
        Err(BrokerError::NotLeader { .. }) => refuse(
            out,
            code::NOT_COORDINATOR,
            format!("not the coordinator of group {group}"),
        ),
        Err(BrokerError::UnknownTopic(t)) => refuse(
            out,
            code::UNKNOWN_TOPIC_OR_PARTITION,
            format!("unknown topic {t:?}"),
        ),
        Err(e) => refuse(out, code::COORDINATOR_NOT_AVAILABLE, e.to_string()),
    }
}

/// ConsumerGroupDescribe (KIP-848): each group as its coordinator knows it — state, epochs,
/// assignor, and per member its subscription, assignment and target. Groups of the
/// consumer protocol are the native ones (`broker/consumer_groups`); a name with none is
/// GROUP_ID_NOT_FOUND (a classic group's describe is DescribeGroups).
pub(super) async fn consumer_group_describe(
    kafka: &Kafka,
    r: kafka_protocol::messages::ConsumerGroupDescribeRequest,
) -> kafka_protocol::messages::ConsumerGroupDescribeResponse {
    use kafka_protocol::messages::consumer_group_describe_response::{
        Assignment, DescribedGroup, Member, TopicPartitions,
    };
    let ids: std::collections::HashMap<String, uuid::Uuid> = kafka
        .broker
        .topics()
        .into_iter()
        .map(|t| (t.name.clone(), kafka_topic_id(&t)))
        .collect();
    let assignment = |tps: &mut dyn Iterator<Item = &(String, u32)>| {
        let owned: std::collections::BTreeSet<(String, u32)> = tps.cloned().collect();
        let mut a = Assignment::default();
        for t in v1::TopicPartitions::group(&owned) {
            let mut tp = TopicPartitions::default();
            tp.topic_id = ids.get(&t.topic).copied().unwrap_or_default();
            tp.partitions = t.partitions.into_iter().map(|p| p as i32).collect();
            tp.topic_name = TopicName(str(&t.topic));
            a.topic_partitions.push(tp);
        }
        a
    };
    let mut out = kafka_protocol::messages::ConsumerGroupDescribeResponse::default();
    for id in r.group_ids {
        let name = id.0.to_string();
        let mut d = DescribedGroup::default();
        d.group_id = id;
        d.authorized_operations = i32::MIN;
        let refused = kafka.check_coordinator(&name);
        if refused != code::NONE {
            d.error_code = refused;
            out.groups.push(d);
            continue;
        }
        match kafka.broker.native_group(&name).await {
            Ok(Some(g)) => {
                d.group_state = str(if g.members.is_empty() {
                    "Empty"
                } else if g.is_stable() {
                    "Stable"
                } else {
                    "Reconciling"
                });
                d.group_epoch = g.epoch;
                d.assignment_epoch = g.epoch;
                d.assignor_name = str(g.assignor.name());
                for m in g.members.values() {
                    let mut member = Member::default();
                    member.member_id = str(&m.id);
                    member.instance_id = (!m.instance.is_empty()).then(|| str(&m.instance));
                    member.member_epoch = m.epoch;
                    member.client_id = str(&m.client_id);
                    member.client_host = str("");
                    member.subscribed_topic_names =
                        m.topics.iter().map(|t| TopicName(str(t))).collect();
                    member.assignment = assignment(&mut m.assigned.iter());
                    member.target_assignment = assignment(
                        &mut g
                            .target
                            .iter()
                            .filter(|(_, owner)| **owner == m.id)
                            .map(|(tp, _)| tp),
                    );
                    member.member_type = 1;
                    d.members.push(member);
                }
            }
            Ok(None) => {
                d.error_code = 69; // GROUP_ID_NOT_FOUND
                d.error_message = Some(str(&format!(
                    "no consumer group {name:?} of the consumer protocol"
                )));
            }
            Err(BrokerError::NotLeader { .. }) => d.error_code = code::NOT_COORDINATOR,
            Err(e) => {
                d.error_code = code::COORDINATOR_NOT_AVAILABLE;
                d.error_message = Some(str(&e.to_string()));
            }
        }
        out.groups.push(d);
    }
    out
}

/// DeleteGroups: each group with no members has its committed offsets deleted in every
/// partition (NON_EMPTY_GROUP while it has members, classic or KIP-848;
/// GROUP_ID_NOT_FOUND when it had nothing). Served by the group's coordinator.
pub(super) async fn delete_groups(
    kafka: &Kafka,
    r: kafka_protocol::messages::DeleteGroupsRequest,
) -> kafka_protocol::messages::DeleteGroupsResponse {
    use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
    let mut out = kafka_protocol::messages::DeleteGroupsResponse::default();
    for name in r.groups_names {
        let group = name.0.to_string();
        let mut result = DeletableGroupResult::default();
        result.group_id = name;
        result.error_code = match kafka.check_coordinator(&group) {
            code::NONE => match kafka.consumer_groups.delete(&group) {
                Err(c) => c,
                Ok(()) => match kafka.broker.delete_group_offsets(&group).await {
                    Ok(0) => groups::code::GROUP_ID_NOT_FOUND,
                    Ok(_) => code::NONE,
                    Err(BrokerError::Invalid(_)) => groups::code::NON_EMPTY_GROUP,
                    Err(e) => error_code(&e),
                },
            },
            refused => refused,
        };
        out.results.push(result);
    }
    out
}

/// OffsetDelete: a group's committed offsets in the named partitions are deleted
/// (GROUP_SUBSCRIBED_TO_TOPIC for every partition while the group has members).
pub(super) async fn offset_delete(
    kafka: &Kafka,
    r: kafka_protocol::messages::OffsetDeleteRequest,
) -> kafka_protocol::messages::OffsetDeleteResponse {
    use kafka_protocol::messages::offset_delete_response::{
        OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
    };
    let group = r.group_id.0.to_string();
    let mut out = kafka_protocol::messages::OffsetDeleteResponse::default();
    let refused = kafka.check_coordinator(&group);
    if refused != code::NONE {
        out.error_code = refused;
        return out;
    }
    let active =
        kafka.consumer_groups.has_members(&group) || kafka.broker.has_native_group(&group).await;
    for topic in r.topics {
        let name = topic.name.0.to_string();
        let mut t = OffsetDeleteResponseTopic::default();
        t.name = topic.name;
        for part in topic.partitions {
            let mut p = OffsetDeleteResponsePartition::default();
            p.partition_index = part.partition_index;
            p.error_code = if active {
                groups::code::GROUP_SUBSCRIBED_TO_TOPIC
            } else {
                match partition_index(part.partition_index) {
                    Err(c) => c,
                    Ok(partition) => match kafka
                        .broker
                        .delete_offset_anywhere(&group, &name, partition)
                        .await
                    {
                        Ok(_) => code::NONE,
                        Err(e) => error_code(&e),
                    },
                }
            };
            t.partitions.push(p);
        }
        out.topics.push(t);
    }
    out
}
