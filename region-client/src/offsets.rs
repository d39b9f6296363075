//! Consumer-group offsets, read and committed at the partition's leader (the Kafka listener
//! forwards them here for partitions another broker leads; the SDK's consumer uses them).

use meridian_proto::v1;

use crate::{Failover, Positions, RegionClient, RegionError, from_wire, to_wire};

impl RegionClient {
    /// A consumer group's committed position of a partition: where to resume in this
    /// region, and the origin positions it has seen (committed here or in another region).
    /// `failover` says whether the client may move to another region meanwhile ([`crate::Stay`]
    /// for the platform's own processes).
    pub async fn committed(
        &self,
        failover: &impl Failover,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<(Option<u64>, Positions, String), RegionError> {
        let r = v1::FetchOffsetRequest {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
        };
        let answer = self
            .call_routed(failover, true, |mut c| {
                let r = r.clone();
                async move { c.fetch_offset(r).await }
            })
            .await?;
        Ok((answer.offset, from_wire(answer.positions), answer.metadata))
    }

    /// Commits a consumer group's offset of a partition with the origin positions seen
    /// below it (what lets the group resume in another region); `failover` as in
    /// [`RegionClient::committed`].
    pub async fn commit_positions(
        &self,
        failover: &impl Failover,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        positions: &Positions,
    ) -> Result<(), RegionError> {
        self.commit_with_metadata(failover, group, topic, partition, offset, positions, "")
            .await
    }

    /// [`RegionClient::commit_positions`] keeping the committer's `metadata` (Kafka's
    /// OffsetCommit metadata) with the offset.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_with_metadata(
        &self,
        failover: &impl Failover,
        group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
        positions: &Positions,
        metadata: &str,
    ) -> Result<(), RegionError> {
        let r = v1::CommitOffsetRequest {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
            offset,
            positions: to_wire(positions),
            metadata: metadata.to_owned(),
            ..Default::default()
        };
        self.call_routed(failover, true, |mut c| {
            let r = r.clone();
            async move { c.commit_offset(r).await }
        })
        .await?;
        Ok(())
    }

    /// Deletes a consumer group's commit in a partition, at its leader; whether there was
    /// one.
    pub async fn delete_offset(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<bool, RegionError> {
        let r = v1::DeleteOffsetRequest {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition,
        };
        Ok(self
            .call_routed(&crate::Stay, true, |mut c| {
                let r = r.clone();
                async move { c.delete_offset(r).await }
            })
            .await?
            .deleted)
    }
}
