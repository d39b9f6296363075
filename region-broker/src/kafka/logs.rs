//! The partition-log APIs of Kafka's admin surface: DeleteRecords (a partition's start
//! moved on every replica, `Broker::delete_records`).

use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};
use meridian_proto::kafka::kafka_protocol;

use super::{Kafka, code, error_code, partition_index};

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
