//! The partition-log APIs of Kafka's admin surface: DeleteRecords (a partition's start
//! moved on every replica, `Broker::delete_records`), DescribeLogDirs (this broker's one
//! data directory: each partition it holds a replica of, with the bytes of its records,
//! and the disk's size and free space), and OffsetForLeaderEpoch (the end of a leader
//! epoch, which clients compare with their position to detect a truncated log).

use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, DescribeLogDirsRequest, DescribeLogDirsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};
use kafka_protocol::protocol::StrBytes;
use meridian_proto::kafka::kafka_protocol;

use super::{Kafka, code, error_code, partition_index};

/// Kafka's FENCED_LEADER_EPOCH: the client knows a newer epoch than this leader.
const FENCED_LEADER_EPOCH: i16 = 74;
/// Kafka's UNKNOWN_LEADER_EPOCH: the client knows an epoch this leader has not reached.
const UNKNOWN_LEADER_EPOCH: i16 = 76;
/// Kafka's KAFKA_STORAGE_ERROR, for a data directory whose disk cannot be read.
const KAFKA_STORAGE_ERROR: i16 = 56;

/// DeleteRecords: each partition's messages below its offset deleted (-1: all it holds),
/// at the partition's leader; the low watermark after it.
pub(super) async fn delete_records(
    kafka: &Kafka,
    r: DeleteRecordsRequest,
) -> DeleteRecordsResponse {
    use kafka_protocol::messages::delete_records_response::{
        DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
    };
    let mut out = DeleteRecordsResponse::default();
    for t in r.topics {
        let mut topic = DeleteRecordsTopicResult::default();
        topic.name = t.name.clone();
        for p in t.partitions {
            let mut part = DeleteRecordsPartitionResult::default();
            part.partition_index = p.partition_index;
            part.low_watermark = -1;
            let answer = match partition_index(p.partition_index) {
                Err(c) => Err(c),
                Ok(_) if p.offset < -1 => Err(code::OFFSET_OUT_OF_RANGE),
                Ok(partition) => kafka
                    .broker
                    .delete_records(&t.name.0, partition, p.offset)
                    .await
                    .map_err(|e| error_code(&e)),
            };
            match answer {
                Ok(start) => part.low_watermark = start as i64,
                Err(c) => part.error_code = c,
            }
            topic.partitions.push(part);
        }
        out.topics.push(topic);
    }
    out
}

/// DescribeLogDirs: this broker's data directory, each partition it holds a replica of
/// (all, or those asked for) with the bytes of its records, and the disk's total and
/// usable bytes. A partition shares its log group's journal with others, so its size is
/// its own records' bytes, not its segments'.
pub(super) async fn describe_log_dirs(
    kafka: &Kafka,
    r: DescribeLogDirsRequest,
) -> DescribeLogDirsResponse {
    use kafka_protocol::messages::describe_log_dirs_response::{
        DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    let broker = &kafka.broker;
    let dir = broker.config().data_dir.clone();
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = StrBytes::from_string(dir.display().to_string());
    match crate::broker::observed::disk_space(&dir) {
        Some((total, usable)) => {
            result.total_bytes = total as i64;
            result.usable_bytes = usable as i64;
        }
        None => {
            result.error_code = KAFKA_STORAGE_ERROR;
            result.total_bytes = -1;
            result.usable_bytes = -1;
        }
    }
    let wanted: Vec<(String, Option<Vec<i32>>)> = match r.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), Some(t.partitions)))
            .collect(),
        None => broker
            .topics()
            .into_iter()
            .map(|t| (t.name.clone(), None))
            .collect(),
    };
    for (name, partitions) in wanted {
        let Ok(topic) = broker.topic(&name) else {
            continue;
        };
        let all: Vec<i32> = (0..topic.groups.len() as i32).collect();
        let mut t = DescribeLogDirsTopic::default();
        t.name = kafka_protocol::messages::TopicName(StrBytes::from_string(name.clone()));
        for index in partitions.unwrap_or(all) {
            let Ok(partition) = partition_index(index) else {
                continue;
            };
            // Only the replicas held here are listed, as a Kafka broker lists its own.
            let Some(bytes) = broker.partition_bytes(&topic, partition) else {
                continue;
            };
            let mut p = DescribeLogDirsPartition::default();
            p.partition_index = index;
            p.partition_size = bytes as i64;
            t.partitions.push(p);
        }
        if !t.partitions.is_empty() {
            result.topics.push(t);
        }
    }
    let mut out = DescribeLogDirsResponse::default();
    out.results.push(result);
    out
}

/// OffsetForLeaderEpoch: for each partition, at its leader, the end of the epoch asked
/// for. A raft log group never truncates what it committed, and consumers read only what
/// is committed, so the end a client may have read up to is the partition's end in every
/// epoch up to the leader's: a client comparing it with its position never finds a
/// truncation that did not happen. An epoch newer than the leader's has no end (-1, as
/// Kafka answers); a current epoch that is not the leader's is refused as Kafka refuses it
/// (FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH).
pub(super) async fn offset_for_leader_epoch(
    kafka: &Kafka,
    r: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    use kafka_protocol::messages::offset_for_leader_epoch_response::{
        EpochEndOffset, OffsetForLeaderTopicResult,
    };
    let mut out = OffsetForLeaderEpochResponse::default();
    for t in r.topics {
        let mut topic = OffsetForLeaderTopicResult::default();
        topic.topic = t.topic.clone();
        let found = kafka.broker.topic(&t.topic.0);
        for p in t.partitions {
            let mut part = EpochEndOffset::default();
            part.partition = p.partition;
            part.leader_epoch = -1;
            part.end_offset = -1;
            let answer = match (&found, partition_index(p.partition)) {
                (Err(e), _) => Err(error_code(e)),
                (_, Err(c)) => Err(c),
                (Ok(topic), Ok(partition)) => kafka
                    .broker
                    .leader_end(topic, partition)
                    .map_err(|e| error_code(&e)),
            };
            match answer {
                Err(c) => part.error_code = c,
                Ok((epoch, _))
                    if p.current_leader_epoch >= 0 && (p.current_leader_epoch as u64) < epoch =>
                {
                    part.error_code = FENCED_LEADER_EPOCH
                }
                Ok((epoch, _)) if p.current_leader_epoch as i64 > epoch as i64 => {
                    part.error_code = UNKNOWN_LEADER_EPOCH
                }
                // An epoch unknown here: no end (Kafka answers the same, without an error).
                Ok((epoch, _)) if p.leader_epoch < 0 || p.leader_epoch as u64 > epoch => {}
                Ok((epoch, end)) => {
                    part.leader_epoch = (p.leader_epoch as i64).min(epoch as i64) as i32;
                    part.end_offset = end as i64;
                }
            }
            topic.partitions.push(part);
        }
        out.topics.push(topic);
    }
    out
}
