//! Authorization of Kafka requests by the region's ACLs (`broker::acls`), when
//! `auth.acls_enabled` is on, with Kafka's error codes: what a principal may not touch is
//! taken out of its request and answered TOPIC_AUTHORIZATION_FAILED (or the group's,
//! transactional id's or cluster's code) beside what it may, as Kafka does.
//!
//! - Produce: Write on each topic; Fetch: Read; ListOffsets and Metadata: Describe (a
//!   Metadata of every topic lists only those the principal may describe); CreateTopics:
//!   Create on the topic or the cluster; DeleteTopics and DeleteRecords: Delete;
//!   OffsetForLeaderEpoch: Describe on the topic; DescribeLogDirs: Describe on the cluster;
//!   ElectLeaders: Alter on the cluster.
//! - Consumer groups (JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit,
//!   OffsetFetch, ConsumerGroupHeartbeat): Read on the group; InitProducerId with a
//!   transactional id: Write on it.
//! - The ACL and user-credential APIs: Alter (Describe to read) on the cluster.
//! - Any other API: Alter on the cluster (only operators, until each is mapped); a refusal
//!   there closes the connection.

use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind, TopicName};
use kafka_protocol::protocol::StrBytes;
use meridian_proto::kafka::kafka_protocol;
use meridian_security::acl::{CLUSTER, Operation, ResourceType};

use crate::broker::acls::Principal;

use super::Kafka;

pub(super) const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub(super) const GROUP_AUTHORIZATION_FAILED: i16 = 30;
pub(super) const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
pub(super) const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

/// Who sends a connection's requests.
#[derive(Debug, Clone)]
pub(super) struct Who {
    /// `User:NAME`, `User:ANONYMOUS` without SASL.
    pub(super) principal: String,
    pub(super) host: String,
}

impl Who {
    fn principal(&self) -> Principal<'_> {
        Principal {
            name: &self.principal,
            host: &self.host,
        }
    }
}

/// What to do with a request.
pub(super) enum Checked {
    /// Serve this (what may be served of it), then [`finish`] its response with `Refused`.
    Serve(RequestKind, Refused),
    /// Answer this instead.
    Answer(ResponseKind),
    /// Refused an API that has no refusal answer here: close the connection.
    Close(ApiKey),
}

/// What was taken out of a request, to be answered as refused.
#[derive(Debug, Default)]
pub(super) struct Refused {
    /// Topics and their partitions.
    topics: Vec<(TopicName, Vec<i32>)>,
    /// Metadata: topics to hide or refuse in the response.
    metadata: bool,
    /// Metadata of every topic (not named ones): those not to be seen are hidden, not
    /// refused, and not audited.
    metadata_all: bool,
}

async fn may(kafka: &Kafka, who: &Who, op: Operation, rt: ResourceType, name: &str) -> bool {
    kafka.broker.authorize(who.principal(), op, rt, name).await
}

/// Checks `request` from `who`.
pub(super) async fn check(kafka: &Kafka, who: &Who, request: RequestKind) -> Checked {
    use ResourceType::{Cluster, Group, Topic, TransactionalId};
    if !kafka.broker.config().auth.acls_enabled {
        return Checked::Serve(request, Refused::default());
    }
    let mut refused = Refused::default();
    macro_rules! group_refusal {
        ($group:expr, $resp:ident, $kind:ident) => {
            if !may(kafka, who, Operation::Read, Group, &$group).await {
                let mut out = kafka_protocol::messages::$resp::default();
                out.error_code = GROUP_AUTHORIZATION_FAILED;
                return Checked::Answer(ResponseKind::$kind(out));
            }
        };
    }
    let request = match request {
        RequestKind::Produce(mut r) => {
            let mut kept = Vec::new();
            for t in std::mem::take(&mut r.topic_data) {
                if may(kafka, who, Operation::Write, Topic, &t.name).await {
                    kept.push(t);
                } else {
                    let parts = t.partition_data.iter().map(|p| p.index).collect();
                    refused.topics.push((t.name, parts));
                }
            }
            r.topic_data = kept;
            RequestKind::Produce(r)
        }
        RequestKind::Fetch(mut r) => {
            let mut kept = Vec::new();
            for t in std::mem::take(&mut r.topics) {
                if may(kafka, who, Operation::Read, Topic, &t.topic).await {
                    kept.push(t);
                } else {
                    let parts = t.partitions.iter().map(|p| p.partition).collect();
                    refused.topics.push((t.topic, parts));
                }
            }
            r.topics = kept;
            RequestKind::Fetch(r)
        }
        RequestKind::ListOffsets(mut r) => {
            let mut kept = Vec::new();
            for t in std::mem::take(&mut r.topics) {
                if may(kafka, who, Operation::Describe, Topic, &t.name).await {
                    kept.push(t);
                } else {
                    let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                    refused.topics.push((t.name, parts));
                }
            }
            r.topics = kept;
            RequestKind::ListOffsets(r)
        }
        RequestKind::OffsetForLeaderEpoch(mut r) => {
            let mut kept = Vec::new();
            for t in std::mem::take(&mut r.topics) {
                if may(kafka, who, Operation::Describe, Topic, &t.topic).await {
                    kept.push(t);
                } else {
                    let parts = t.partitions.iter().map(|p| p.partition).collect();
                    refused.topics.push((t.topic, parts));
                }
            }
            r.topics = kept;
            RequestKind::OffsetForLeaderEpoch(r)
        }
        RequestKind::ElectLeaders(r) => {
            if !may(kafka, who, Operation::Alter, Cluster, CLUSTER).await {
                return Checked::Answer(ResponseKind::ElectLeaders(super::elections::refused(
                    r,
                    CLUSTER_AUTHORIZATION_FAILED,
                )));
            }
            RequestKind::ElectLeaders(r)
        }
        RequestKind::DescribeLogDirs(r) => {
            if !may(kafka, who, Operation::Describe, Cluster, CLUSTER).await {
                let mut out = kafka_protocol::messages::DescribeLogDirsResponse::default();
                out.error_code = CLUSTER_AUTHORIZATION_FAILED;
                return Checked::Answer(ResponseKind::DescribeLogDirs(out));
            }
            RequestKind::DescribeLogDirs(r)
        }
        RequestKind::Metadata(r) => {
            refused.metadata = true;
            refused.metadata_all = r.topics.is_none();
            RequestKind::Metadata(r)
        }
        RequestKind::CreateTopics(mut r) => {
            let cluster = may(kafka, who, Operation::Create, Cluster, CLUSTER).await;
            let mut kept = Vec::new();
            for t in std::mem::take(&mut r.topics) {
                if cluster || may(kafka, who, Operation::Create, Topic, &t.name).await {
                    kept.push(t);
                } else {
                    refused.topics.push((t.name, Vec::new()));
                }
            }
            r.topics = kept;
            RequestKind::CreateTopics(r)
        }
        RequestKind::DeleteTopics(mut r) => {
            let mut kept_names = Vec::new();
            for n in std::mem::take(&mut r.topic_names) {
                if may(kafka, who, Operation::Delete, Topic, &n).await {
                    kept_names.push(n);
                } else {
                    refused.topics.push((n, Vec::new()));
                }
            }
            r.topic_names = kept_names;
            let mut kept = Vec::new();
            for t in std::mem::take(&mut r.topics) {
                match &t.name {
                    Some(n) if !may(kafka, who, Operation::Delete, Topic, n).await => {
                        refused.topics.push((n.clone(), Vec::new()));
                    }
                    _ => kept.push(t),
                }
            }
            r.topics = kept;
            RequestKind::DeleteTopics(r)
        }
        RequestKind::DeleteRecords(mut r) => {
            let mut kept = Vec::new();
            for t in std::mem::take(&mut r.topics) {
                if may(kafka, who, Operation::Delete, Topic, &t.name).await {
                    kept.push(t);
                } else {
                    let parts = t.partitions.iter().map(|p| p.partition_index).collect();
                    refused.topics.push((t.name, parts));
                }
            }
            r.topics = kept;
            RequestKind::DeleteRecords(r)
        }
        RequestKind::JoinGroup(r) => {
            if !may(kafka, who, Operation::Read, Group, &r.group_id).await {
                let mut out = kafka_protocol::messages::JoinGroupResponse::default();
                out.error_code = GROUP_AUTHORIZATION_FAILED;
                out.generation_id = -1;
                return Checked::Answer(ResponseKind::JoinGroup(out));
            }
            RequestKind::JoinGroup(r)
        }
        RequestKind::SyncGroup(r) => {
            group_refusal!(r.group_id, SyncGroupResponse, SyncGroup);
            RequestKind::SyncGroup(r)
        }
        RequestKind::Heartbeat(r) => {
            group_refusal!(r.group_id, HeartbeatResponse, Heartbeat);
            RequestKind::Heartbeat(r)
        }
        RequestKind::LeaveGroup(r) => {
            group_refusal!(r.group_id, LeaveGroupResponse, LeaveGroup);
            RequestKind::LeaveGroup(r)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => {
            group_refusal!(
                r.group_id,
                ConsumerGroupHeartbeatResponse,
                ConsumerGroupHeartbeat
            );
            RequestKind::ConsumerGroupHeartbeat(r)
        }
        RequestKind::OffsetCommit(r) => {
            if !may(kafka, who, Operation::Read, Group, &r.group_id).await {
                use kafka_protocol::messages::offset_commit_response::*;
                let mut out = OffsetCommitResponse::default();
                for t in &r.topics {
                    let mut rt = OffsetCommitResponseTopic::default();
                    rt.name = t.name.clone();
                    for p in &t.partitions {
                        let mut rp = OffsetCommitResponsePartition::default();
                        rp.partition_index = p.partition_index;
                        rp.error_code = GROUP_AUTHORIZATION_FAILED;
                        rt.partitions.push(rp);
                    }
                    out.topics.push(rt);
                }
                return Checked::Answer(ResponseKind::OffsetCommit(out));
            }
            RequestKind::OffsetCommit(r)
        }
        RequestKind::OffsetFetch(r) => {
            let mut groups: Vec<&str> = r.groups.iter().map(|g| g.group_id.as_str()).collect();
            if groups.is_empty() {
                groups.push(r.group_id.as_str());
            }
            for g in groups {
                if !may(kafka, who, Operation::Read, Group, g).await {
                    use kafka_protocol::messages::offset_fetch_response::*;
                    let mut out = OffsetFetchResponse::default();
                    out.error_code = GROUP_AUTHORIZATION_FAILED;
                    out.groups = r
                        .groups
                        .iter()
                        .map(|g| {
                            let mut rg = OffsetFetchResponseGroup::default();
                            rg.group_id = g.group_id.clone();
                            rg.error_code = GROUP_AUTHORIZATION_FAILED;
                            rg
                        })
                        .collect();
                    return Checked::Answer(ResponseKind::OffsetFetch(out));
                }
            }
            RequestKind::OffsetFetch(r)
        }
        RequestKind::InitProducerId(r) => {
            if let Some(id) = &r.transactional_id
                && !may(kafka, who, Operation::Write, TransactionalId, id).await
            {
                let mut out = kafka_protocol::messages::InitProducerIdResponse::default();
                out.error_code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
                out.producer_id = (-1).into();
                out.producer_epoch = -1;
                return Checked::Answer(ResponseKind::InitProducerId(out));
            }
            RequestKind::InitProducerId(r)
        }
        RequestKind::CreateAcls(r) => {
            if !may(kafka, who, Operation::Alter, Cluster, CLUSTER).await {
                use kafka_protocol::messages::create_acls_response::AclCreationResult;
                let mut out = kafka_protocol::messages::CreateAclsResponse::default();
                out.results = r
                    .creations
                    .iter()
                    .map(|_| {
                        let mut c = AclCreationResult::default();
                        c.error_code = CLUSTER_AUTHORIZATION_FAILED;
                        c
                    })
                    .collect();
                return Checked::Answer(ResponseKind::CreateAcls(out));
            }
            RequestKind::CreateAcls(r)
        }
        RequestKind::DeleteAcls(r) => {
            if !may(kafka, who, Operation::Alter, Cluster, CLUSTER).await {
                use kafka_protocol::messages::delete_acls_response::DeleteAclsFilterResult;
                let mut out = kafka_protocol::messages::DeleteAclsResponse::default();
                out.filter_results = r
                    .filters
                    .iter()
                    .map(|_| {
                        let mut c = DeleteAclsFilterResult::default();
                        c.error_code = CLUSTER_AUTHORIZATION_FAILED;
                        c
                    })
                    .collect();
                return Checked::Answer(ResponseKind::DeleteAcls(out));
            }
            RequestKind::DeleteAcls(r)
        }
        RequestKind::DescribeAcls(r) => {
            if !may(kafka, who, Operation::Describe, Cluster, CLUSTER).await {
                let mut out = kafka_protocol::messages::DescribeAclsResponse::default();
                out.error_code = CLUSTER_AUTHORIZATION_FAILED;
                return Checked::Answer(ResponseKind::DescribeAcls(out));
            }
            RequestKind::DescribeAcls(r)
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            if !may(kafka, who, Operation::Describe, Cluster, CLUSTER).await {
                let mut out =
                    kafka_protocol::messages::DescribeUserScramCredentialsResponse::default();
                out.error_code = CLUSTER_AUTHORIZATION_FAILED;
                return Checked::Answer(ResponseKind::DescribeUserScramCredentials(out));
            }
            RequestKind::DescribeUserScramCredentials(r)
        }
        // Bootstrap and discovery: what any client needs to find its way.
        r @ (RequestKind::ApiVersions(_)
        | RequestKind::FindCoordinator(_)
        | RequestKind::DescribeCluster(_)) => r,
        // Cluster-wide or not yet mapped: operators only.
        other => {
            if !may(kafka, who, Operation::Alter, Cluster, CLUSTER).await {
                let key = request_key(&other);
                return Checked::Close(key);
            }
            other
        }
    };
    Checked::Serve(request, refused)
}

fn request_key(r: &RequestKind) -> ApiKey {
    match r {
        RequestKind::AlterUserScramCredentials(_) => ApiKey::AlterUserScramCredentials,
        RequestKind::DescribeConfigs(_) => ApiKey::DescribeConfigs,
        RequestKind::AlterConfigs(_) => ApiKey::AlterConfigs,
        RequestKind::IncrementalAlterConfigs(_) => ApiKey::IncrementalAlterConfigs,
        RequestKind::CreatePartitions(_) => ApiKey::CreatePartitions,
        RequestKind::DescribeGroups(_) => ApiKey::DescribeGroups,
        RequestKind::ListGroups(_) => ApiKey::ListGroups,
        RequestKind::DeleteGroups(_) => ApiKey::DeleteGroups,
        RequestKind::FindCoordinator(_) => ApiKey::FindCoordinator,
        RequestKind::DescribeCluster(_) => ApiKey::DescribeCluster,
        _ => ApiKey::ApiVersions,
    }
}

/// Adds the refusals taken out of a request to its response.
pub(super) async fn finish(
    kafka: &Kafka,
    who: &Who,
    refused: Refused,
    response: ResponseKind,
) -> ResponseKind {
    match response {
        ResponseKind::Produce(mut out) => {
            use kafka_protocol::messages::produce_response::*;
            for (name, parts) in refused.topics {
                let mut t = TopicProduceResponse::default();
                t.name = name;
                t.partition_responses = parts
                    .into_iter()
                    .map(|index| {
                        let mut p = PartitionProduceResponse::default();
                        p.index = index;
                        p.error_code = TOPIC_AUTHORIZATION_FAILED;
                        p.base_offset = -1;
                        p.log_append_time_ms = -1;
                        p.log_start_offset = -1;
                        p
                    })
                    .collect();
                out.responses.push(t);
            }
            ResponseKind::Produce(out)
        }
        ResponseKind::Fetch(mut out) => {
            use kafka_protocol::messages::fetch_response::*;
            for (name, parts) in refused.topics {
                let mut t = FetchableTopicResponse::default();
                t.topic = name;
                t.partitions = parts
                    .into_iter()
                    .map(|index| {
                        let mut p = PartitionData::default();
                        p.partition_index = index;
                        p.error_code = TOPIC_AUTHORIZATION_FAILED;
                        p.high_watermark = -1;
                        p.last_stable_offset = -1;
                        p.log_start_offset = -1;
                        p
                    })
                    .collect();
                out.responses.push(t);
            }
            ResponseKind::Fetch(out)
        }
        ResponseKind::ListOffsets(mut out) => {
            use kafka_protocol::messages::list_offsets_response::*;
            for (name, parts) in refused.topics {
                let mut t = ListOffsetsTopicResponse::default();
                t.name = name;
                t.partitions = parts
                    .into_iter()
                    .map(|index| {
                        let mut p = ListOffsetsPartitionResponse::default();
                        p.partition_index = index;
                        p.error_code = TOPIC_AUTHORIZATION_FAILED;
                        p.offset = -1;
                        p.timestamp = -1;
                        p
                    })
                    .collect();
                out.topics.push(t);
            }
            ResponseKind::ListOffsets(out)
        }
        ResponseKind::Metadata(mut out) if refused.metadata => {
            let mut kept = Vec::new();
            for mut t in std::mem::take(&mut out.topics) {
                let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
                let seen = if refused.metadata_all {
                    let who = who.principal();
                    kafka.broker.may_see(who, ResourceType::Topic, &name).await
                } else {
                    may(kafka, who, Operation::Describe, ResourceType::Topic, &name).await
                };
                if seen {
                    kept.push(t);
                } else if !refused.metadata_all {
                    // Named or listed: refused, with nothing of it shown.
                    t.error_code = TOPIC_AUTHORIZATION_FAILED;
                    t.partitions.clear();
                    kept.push(t);
                }
            }
            out.topics = kept;
            ResponseKind::Metadata(out)
        }
        ResponseKind::CreateTopics(mut out) => {
            use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
            for (name, _) in refused.topics {
                let mut t = CreatableTopicResult::default();
                t.name = name;
                t.error_code = TOPIC_AUTHORIZATION_FAILED;
                t.error_message = Some(StrBytes::from_static_str("Authorization failed."));
                t.num_partitions = -1;
                t.replication_factor = -1;
                out.topics.push(t);
            }
            ResponseKind::CreateTopics(out)
        }
        ResponseKind::DeleteRecords(mut out) => {
            use kafka_protocol::messages::delete_records_response::*;
            for (name, parts) in refused.topics {
                let mut t = DeleteRecordsTopicResult::default();
                t.name = name;
                for index in parts {
                    let mut p = DeleteRecordsPartitionResult::default();
                    p.partition_index = index;
                    p.low_watermark = -1;
                    p.error_code = TOPIC_AUTHORIZATION_FAILED;
                    t.partitions.push(p);
                }
                out.topics.push(t);
            }
            ResponseKind::DeleteRecords(out)
        }
        ResponseKind::OffsetForLeaderEpoch(mut out) => {
            use kafka_protocol::messages::offset_for_leader_epoch_response::*;
            for (name, parts) in refused.topics {
                let mut t = OffsetForLeaderTopicResult::default();
                t.topic = name;
                for index in parts {
                    let mut p = EpochEndOffset::default();
                    p.partition = index;
                    p.leader_epoch = -1;
                    p.end_offset = -1;
                    p.error_code = TOPIC_AUTHORIZATION_FAILED;
                    t.partitions.push(p);
                }
                out.topics.push(t);
            }
            ResponseKind::OffsetForLeaderEpoch(out)
        }
        ResponseKind::DeleteTopics(mut out) => {
            use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
            for (name, _) in refused.topics {
                let mut t = DeletableTopicResult::default();
                t.name = Some(name);
                t.error_code = TOPIC_AUTHORIZATION_FAILED;
                out.responses.push(t);
            }
            ResponseKind::DeleteTopics(out)
        }
        other => other,
    }
}

/// The principal of a connection (`User:ANONYMOUS` before or without SASL).
pub(super) fn who(user: Option<&str>, peer: std::net::SocketAddr) -> Arc<Who> {
    Arc::new(Who {
        principal: format!("User:{}", user.unwrap_or("ANONYMOUS")),
        host: peer.ip().to_string(),
    })
}
