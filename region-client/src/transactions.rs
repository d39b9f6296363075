//! Transaction markers, written by a transaction's coordinator into each partition it took
//! part in, at that partition's leader.

use meridian_proto::v1;

use crate::{RegionClient, RegionError, Stay};

impl RegionClient {
    /// Writes a transaction's commit (else abort) marker for `producer` (id, epoch) into a
    /// partition, at its leader; the marker's offset.
    pub async fn write_txn_marker(
        &self,
        topic: &str,
        partition: u32,
        producer: (i64, i16),
        commit: bool,
        coordinator_epoch: i32,
    ) -> Result<u64, RegionError> {
        let r = v1::WriteTxnMarkerRequest {
            topic: topic.to_owned(),
            partition,
            producer_id: producer.0,
            producer_epoch: i32::from(producer.1),
            commit,
            coordinator_epoch,
        };
        // A marker written twice ends nothing the second time: safe to send again.
        let answer = self
            .call_routed(&Stay, true, |mut c| {
                let r = r.clone();
                async move { c.write_txn_marker(r).await }
            })
            .await?;
        Ok(answer.offset)
    }
}

impl RegionClient {
    /// One request to a transactional id's coordinator, wherever it is.
    pub async fn transaction(
        &self,
        request: &v1::TransactionRequest,
    ) -> Result<v1::TransactionResponse, RegionError> {
        self.call_routed(&Stay, false, |mut c| {
            let r = request.clone();
            async move { c.transaction(r).await }
        })
        .await
    }
}
