//! Appends mirrored from another region: idempotent on the origin's seq, one raft
//! submission per run of batches.

#[allow(clippy::wildcard_imports)]
use super::*;

impl HostedGroup {
    /// Appends batches mirrored from one origin group, in the origin's order (increasing
    /// seq), each unless the group holds it already (its seq is at or below the origin's
    /// mark); per batch `None` for a duplicate, else the first offset written. The entries
    /// go to raft in one submission, so a run costs one replication round, not one per
    /// batch; raft commits a prefix of them, so "the highest seq held" still means
    /// "everything before it is held". The caller serializes the appends of one origin.
    pub async fn append_mirrored(
        &self,
        origin: (&str, u32),
        batches: Vec<MirroredBatch>,
    ) -> Result<Vec<Option<Option<u64>>>, LogGroupError> {
        self.require_raft("mirroring into master-slave topics is not supported yet")?;
        // Everything this leader's log holds is applied, so the mark counts it all.
        self.ensure_applied_in_term().await?;
        let mut held = self
            .storage
            .mirror_mark(origin.0, origin.1)
            .map_or(0, |(seq, _)| seq);
        let mut out = Vec::with_capacity(batches.len());
        let mut commands = Vec::new();
        for b in batches {
            if b.origin.seq <= held {
                out.push(None);
                continue;
            }
            held = b.origin.seq;
            out.push(Some(None));
            commands.push((
                out.len() - 1,
                Command::Batch {
                    topic_id: b.key.0,
                    partition: b.key.1,
                    count: b.count,
                    payload: storage::mirrored_payload(&b.origin, &b.payload),
                    mirrored: true,
                    producer: b.txn.map(|(p, _)| p),
                    transaction: b.txn.map(|(_, part)| part),
                    local_ack: LocalAck::default(),
                },
            ));
        }
        if commands.is_empty() {
            return Ok(out);
        }
        let (at, commands): (Vec<usize>, Vec<Command>) = commands.into_iter().unzip();
        let results = self
            .replicate_many(commands)
            .await
            .inspect_err(|_| self.forget_applied())?;
        for (i, result) in at.into_iter().zip(results) {
            out[i] = Some(result.base_offset);
        }
        Ok(out)
    }
}
