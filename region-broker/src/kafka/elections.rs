//! ElectLeaders: Kafka's preferred leader election, on raft log groups. Each partition's
//! log group hands its leadership to its preferred replica (the first replica Metadata
//! lists, `log_group::preference_order`) through the group's leader, wherever the request
//! arrived (`Broker::transfer_leadership` over the region client). Partitions sharing a
//! log group share one hand-over and its answer.
//!
//! Unclean elections are not offered: raft elects only a replica holding every committed
//! record, so a partition with a leader needs none (ELECTION_NOT_NEEDED) and one without is
//! answered ELIGIBLE_LEADERS_NOT_AVAILABLE until raft elects one by itself.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use meridian_proto::kafka::kafka_protocol;
use meridian_proto::v1;
use meridian_region_client::{RegionError, Stay};

use super::{Kafka, code};

/// Kafka's PREFERRED_LEADER_NOT_AVAILABLE: the preferred replica is down or behind.
const PREFERRED_LEADER_NOT_AVAILABLE: i16 = 80;
/// Kafka's ELIGIBLE_LEADERS_NOT_AVAILABLE (an unclean election with no leader).
const ELIGIBLE_LEADERS_NOT_AVAILABLE: i16 = 83;
/// Kafka's ELECTION_NOT_NEEDED: the preferred replica leads already.
const ELECTION_NOT_NEEDED: i16 = 84;

/// Kafka's election types.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

/// The longest a request waits for its elections, whatever its timeout says (below the
/// region client's 45 s of retries, so the answer is the broker's, not a cut-off call).
const WAIT_MAX: Duration = Duration::from_secs(30);

/// Hand-overs under way at once for one request.
const CONCURRENT_MAX: usize = 16;

/// One partition's answer.
type Outcome = (i16, Option<String>);

/// A partition asked for: its index, and its log group or the answer that names none.
type Asked = (i32, Result<u32, Outcome>);

/// ElectLeaders: every partition asked for (none named: every partition of every topic)
/// elected as the election type says, each answered with its own error.
pub(super) async fn elect_leaders(kafka: &Kafka, r: ElectLeadersRequest) -> ElectLeadersResponse {
    let broker = &kafka.broker;
    let wanted: Vec<(TopicName, Vec<i32>)> = match r.topic_partitions {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic, t.partitions))
            .collect(),
        None => broker
            .topics()
            .into_iter()
            .map(|t| {
                let partitions = (0..t.groups.len() as i32).collect();
                (TopicName(StrBytes::from_string(t.name)), partitions)
            })
            .collect(),
    };
    let wait = Duration::from_millis(u64::try_from(r.timeout_ms).unwrap_or(0)).min(WAIT_MAX);
    // Each partition's log group (or the error that names none), then one election per
    // group.
    let mut asked: Vec<(TopicName, Vec<Asked>)> = Vec::new();
    let mut groups: Vec<u32> = Vec::new();
    let mut listed = std::collections::HashSet::new();
    for (name, partitions) in wanted {
        let topic = broker.topic(&name.0);
        let mut parts = Vec::new();
        for index in partitions {
            let group = match (&topic, super::partition_index(index)) {
                (Err(_), _) | (_, Err(_)) => Err(unknown(&name.0, index)),
                (Ok(t), Ok(p)) => t
                    .groups
                    .get(p as usize)
                    .copied()
                    .ok_or_else(|| unknown(&name.0, index)),
            };
            if let Ok(g) = group
                && listed.insert(g)
            {
                groups.push(g);
            }
            parts.push((index, group));
        }
        asked.push((name, parts));
    }
    use futures_util::StreamExt;
    let outcomes: HashMap<u32, Outcome> =
        futures_util::stream::iter(groups.into_iter().map(|g| async move {
            let outcome = match r.election_type {
                PREFERRED => preferred(kafka, g, wait).await,
                UNCLEAN => unclean(kafka, g),
                other => (
                    code::INVALID_REQUEST,
                    Some(format!(
                        "election type {other} is not one of 0 (preferred) and 1 (unclean)"
                    )),
                ),
            };
            (g, outcome)
        }))
        .buffer_unordered(CONCURRENT_MAX)
        .collect()
        .await;
    let mut out = ElectLeadersResponse::default();
    for (name, parts) in asked {
        let mut result = ReplicaElectionResult::default();
        result.topic = name;
        for (index, group) in parts {
            let (error_code, message) = match group {
                Ok(g) => outcomes.get(&g).cloned().unwrap_or((code::NONE, None)),
                Err(outcome) => outcome,
            };
            let mut p = PartitionResult::default();
            p.partition_id = index;
            p.error_code = error_code;
            p.error_message = message.map(StrBytes::from_string);
            result.partition_result.push(p);
        }
        out.replica_election_results.push(result);
    }
    out
}

fn unknown(topic: &str, index: i32) -> Outcome {
    (
        code::UNKNOWN_TOPIC_OR_PARTITION,
        Some(format!("topic {topic:?} has no partition {index}")),
    )
}

/// The preferred replica of group `g` elected, at the group's leader.
async fn preferred(kafka: &Kafka, g: u32, wait: Duration) -> Outcome {
    let request = v1::TransferLeadershipRequest {
        group: g,
        to: None,
        timeout_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
    };
    let answer = match kafka.region().await {
        Ok(region) => {
            // Not sent twice after a broker failed mid-call: a hand-over that started
            // is not offered again blindly. "Not leader" answers are followed.
            region
                .call_routed(&Stay, false, |mut c| async move {
                    c.transfer_leadership(request).await
                })
                .await
        }
        Err(e) => Err(e),
    };
    match answer {
        Ok(v1::TransferLeadershipResponse { moved: true, .. }) => (code::NONE, None),
        Ok(v1::TransferLeadershipResponse { leader, .. }) => (
            ELECTION_NOT_NEEDED,
            Some(format!(
                "broker {leader}, the preferred replica, leads already"
            )),
        ),
        Err(e) => {
            let error_code = match e.code() {
                // Refused (not in sync, or another voter won): the preferred replica cannot
                // lead now.
                Some(tonic::Code::Aborted) => PREFERRED_LEADER_NOT_AVAILABLE,
                Some(tonic::Code::InvalidArgument) => code::INVALID_REQUEST,
                Some(tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) => {
                    super::authorize::CLUSTER_AUTHORIZATION_FAILED
                }
                Some(tonic::Code::Internal | tonic::Code::ResourceExhausted) => {
                    code::UNKNOWN_SERVER_ERROR
                }
                // Timed out, or no leader answered through the region client's retries.
                _ => code::REQUEST_TIMED_OUT,
            };
            (error_code, Some(message(&e)))
        }
    }
}

fn message(e: &RegionError) -> String {
    match e {
        RegionError::Broker { message, .. } => message.clone(),
        e => e.to_string(),
    }
}

/// An unclean election of group `g`: never needed where raft has a leader, never done
/// where it has none (raft's own election is the only safe one).
fn unclean(kafka: &Kafka, g: u32) -> Outcome {
    match kafka.broker.leader_id(g) {
        Some(leader) => (
            ELECTION_NOT_NEEDED,
            Some(format!("broker {leader} leads log group {g}")),
        ),
        None => (
            ELIGIBLE_LEADERS_NOT_AVAILABLE,
            Some(format!(
                "log group {g} has no leader yet; raft elects only a replica holding every committed record, so no unclean election is offered: wait for its election"
            )),
        ),
    }
}

/// The answer to a request refused whole with `error_code` (every partition it names
/// carries it too: version 0 has no request-level error).
pub(super) fn refused(r: ElectLeadersRequest, error_code: i16) -> ElectLeadersResponse {
    let mut out = ElectLeadersResponse::default();
    out.error_code = error_code;
    for t in r.topic_partitions.unwrap_or_default() {
        let mut result = ReplicaElectionResult::default();
        result.topic = t.topic;
        for index in t.partitions {
            let mut p = PartitionResult::default();
            p.partition_id = index;
            p.error_code = error_code;
            result.partition_result.push(p);
        }
        out.replica_election_results.push(result);
    }
    out
}
