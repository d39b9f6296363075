//! Delayed delivery from the SDK: a record sent with a deliver-at time is held by its
//! partition's log group (a replicated timer) and appended to the partition then, at a
//! new offset. Sent alone, outside the batching producer, and not idempotent: a send that
//! fails after the broker stored it may, if sent again, be delivered twice.

use meridian_proto::{partition, v1};

use crate::{Client, ClientError, Record};

/// A delayed record the broker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// Its topic.
    pub topic: String,
    /// The partition it will be appended to.
    pub partition: u32,
    /// Its timer's id in the partition's log group.
    pub timer: u64,
}

impl Client {
    /// Sends `record` to become visible at `deliver_at_ms` (ms since the epoch; from now to
    /// 365 days ahead, within the brokers' retention). Its partition is the record's, its
    /// key's (Kafka's partitioner) or, without either, one by the clock.
    pub async fn send_delayed(
        &self,
        record: Record,
        deliver_at_ms: i64,
    ) -> Result<Scheduled, ClientError> {
        let partition = match (record.partition, &record.key) {
            (Some(p), _) => p,
            (None, key) => {
                let n = self.describe_topic(&record.topic).await?.partitions.len() as u32;
                let n = std::num::NonZeroU32::new(n).ok_or_else(|| {
                    ClientError::Usage(format!("topic {:?} has no partitions", record.topic))
                })?;
                match key {
                    Some(key) => partition::for_key(key, n),
                    None => (deliver_at_ms.unsigned_abs() % u64::from(n.get())) as u32,
                }
            }
        };
        let topic = record.topic.clone();
        let request = v1::ProduceRequest {
            topic: topic.clone(),
            partition,
            messages: vec![record.into_message()],
            deliver_at_ms,
            ..v1::ProduceRequest::default()
        };
        let answer = self.produce_once(&request).await?;
        Ok(Scheduled {
            topic,
            partition,
            timer: answer.base_offset,
        })
    }
}
