//! What a mirror agent asks of a region's brokers: the committed local-origin batches of a
//! log group, an idempotent append of a batch from another region, and how far an origin
//! group's batches are held. Requests follow group leaders like every other call.

use std::time::Duration;

use meridian_proto::origin::Origin;
use meridian_proto::v1;

use crate::{Leading, Positions, RegionClient, RegionError, to_wire};

/// How long one attempt of a mirror request may go unanswered beyond its own long poll
/// before it moves to another broker (the leader may be stalled; another may lead by now).
const ATTEMPT: Duration = Duration::from_secs(5);

pub use meridian_proto::mirror::ShippedBatch;
pub use meridian_proto::v1::LocalCommit;

impl RegionClient {
    /// Committed local-origin batches of log group `group` from record index `from` on
    /// (long poll up to `wait`), and where to read next.
    pub async fn read_local(
        &self,
        group: u32,
        from: u64,
        max_bytes: u32,
        wait: Duration,
    ) -> Result<(Vec<ShippedBatch>, u64), RegionError> {
        let (batches, _, next) = self
            .read_local_records(group, from, false, max_bytes, wait)
            .await?;
        Ok((batches, next))
    }

    /// [`RegionClient::read_local`], with the consumer commits carrying origin positions among
    /// the records read.
    pub async fn read_local_records(
        &self,
        group: u32,
        from: u64,
        skip_deleted: bool,
        max_bytes: u32,
        wait: Duration,
    ) -> Result<(Vec<ShippedBatch>, Vec<LocalCommit>, u64), RegionError> {
        let r = v1::ReadLocalRequest {
            group,
            from_seq: from,
            skip_deleted,
            max_bytes,
            max_wait_ms: wait.as_millis() as u32,
        };
        let answer = self
            .call_at_leader(
                Leading::LogGroup(group),
                wait + ATTEMPT,
                |mut c| async move { c.read_local(r).await },
            )
            .await?;
        Ok((
            answer.batches.into_iter().map(ShippedBatch::from).collect(),
            answer.commits,
            answer.next_seq,
        ))
    }

    /// Merges a consumer group's origin positions committed in another region into this
    /// region's; whether anything moved forward.
    pub async fn merge_positions(
        &self,
        group: &str,
        topic_id: u32,
        partition: u32,
        positions: &Positions,
    ) -> Result<bool, RegionError> {
        let r = v1::MergePositionsRequest {
            group: group.to_owned(),
            topic_id,
            partition,
            positions: to_wire(positions),
        };
        Ok(self
            .call_at_leader(Leading::Partition(topic_id, partition), ATTEMPT, |mut c| {
                let r = r.clone();
                async move { c.merge_positions(r).await }
            })
            .await?
            .changed)
    }

    /// Appends batches of one origin group, in the origin's order, each unless held
    /// (idempotent on the origin). The broker appends the leading run of them in the first
    /// one's log group; the answer says, for each batch of that run, whether it was held
    /// already. Send the rest again.
    pub async fn append_mirrored(
        &self,
        batches: &[(Origin, ShippedBatch)],
    ) -> Result<Vec<bool>, RegionError> {
        let Some((first, head)) = batches.first() else {
            return Ok(Vec::new());
        };
        let r = v1::AppendMirroredRequest {
            origin_region: first.region.clone(),
            origin_group: first.group,
            batches: batches
                .iter()
                .map(|(o, b)| v1::MirroredBatch {
                    topic_id: b.topic_id,
                    partition: b.partition,
                    seq: o.seq,
                    through: o.through,
                    count: b.count,
                    payload: b.payload.clone(),
                    txn: b.txn.map(Into::into),
                })
                .collect(),
        };
        let answer = self
            .call_at_leader(
                Leading::Partition(head.topic_id, head.partition),
                ATTEMPT * 2,
                |mut c| {
                    let r = r.clone();
                    async move { c.append_mirrored(r).await }
                },
            )
            .await?;
        if answer.results.is_empty() || answer.results.len() > batches.len() {
            return Err(RegionError::Broker {
                code: tonic::Code::Internal,
                message: format!(
                    "the broker answered {} results for {} mirrored batches",
                    answer.results.len(),
                    batches.len()
                ),
            });
        }
        Ok(answer.results.iter().map(|r| r.duplicate).collect())
    }

    /// The highest seq of origin `(region, group)` any log group of the region holds, asking
    /// every broker (each answers for the groups it leads); `None` when none holds any. A
    /// broker that does not answer (within a few seconds: it may be stalled) is skipped: a
    /// lower answer only means a resend, whose duplicates are detected.
    pub async fn mirror_mark(&self, region: &str, group: u32) -> Result<Option<u64>, RegionError> {
        Ok(self
            .mirror_marks(region, group)
            .await?
            .into_iter()
            .map(|(_, seq)| seq)
            .max())
    }

    /// [`RegionClient::mirror_mark`] of each log group holding any of origin
    /// `(region, group)`: `(log group, highest seq)`, for a caller that counts some groups
    /// only.
    pub async fn mirror_marks(
        &self,
        region: &str,
        group: u32,
    ) -> Result<Vec<(u32, u64)>, RegionError> {
        let brokers = self
            .call_at_leader(Leading::AnyBroker, ATTEMPT, |mut c| async move {
                c.log_groups(v1::LogGroupsRequest {}).await
            })
            .await?
            .brokers;
        let mut marks = std::collections::BTreeMap::new();
        for b in brokers {
            let Ok(mut c) = self.connection(&b.grpc).await else {
                continue;
            };
            let Ok(Ok(answer)) = tokio::time::timeout(
                ATTEMPT,
                c.mirror_marks(v1::MirrorMarksRequest {
                    origin_region: region.to_owned(),
                    origin_group: group,
                }),
            )
            .await
            else {
                continue;
            };
            for m in answer.into_inner().marks {
                let held = marks.entry(m.group).or_insert(m.seq);
                *held = (*held).max(m.seq);
            }
        }
        Ok(marks.into_iter().collect())
    }
}
