//! Idempotent appends: a producer's batch is checked against the producer state storage
//! keeps from the journal (every replica alike), under a lock per (partition, producer), so
//! a retry — across a leader change, or of a batch committed but answered with an error —
//! is answered with its first offset instead of being written again.

#[allow(clippy::wildcard_imports)]
use super::*;

/// A producer's turn on one partition ([`HostedGroup::lock_producer`]): its appends and
/// markers there happen one at a time while it is held.
pub struct ProducerTurn<'a> {
    group: &'a HostedGroup,
    id: (PartitionKey, i64),
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for ProducerTurn<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self
            .group
            .producer_locks
            .lock()
            .expect("producer locks poisoned");
        // Only the map holds it now: nobody waits, forget it (the map stays as small as the
        // appends in flight).
        if locks
            .get(&self.id)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            locks.remove(&self.id);
        }
    }
}

impl HostedGroup {
    /// Waits for producer `id`'s turn on partition `key`: its idempotent appends and its
    /// transaction markers there are serialized by it (check, write, answer).
    pub async fn lock_producer(&self, key: PartitionKey, id: i64) -> ProducerTurn<'_> {
        let lock = {
            let mut locks = self.producer_locks.lock().expect("producer locks poisoned");
            locks.entry((key, id)).or_default().clone()
        };
        ProducerTurn {
            group: self,
            id: (key, id),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Appends an idempotent producer's batch exactly once, in the producer's `turn` on the
    /// partition: checks it against the producer's state (which every replica keeps from
    /// the journal, so it covers batches a previous leader wrote, and batches committed but
    /// answered with an error): a batch written before is answered with its first offset
    /// once its record is committed, a refused one is `Sequence`, a new one is appended.
    /// The second value says whether it was a duplicate. `transactional`: the batch is
    /// part of the producer's open transaction.
    pub async fn append_idempotent(
        &self,
        _turn: &ProducerTurn<'_>,
        batch: (PartitionKey, u32, Bytes),
        producer: ProducerBatch,
        transactional: bool,
        acks: impl Into<Ack>,
        epoch: u64,
    ) -> Result<(Produced, bool), LogGroupError> {
        let txn = transactional.then_some(TxnPart::Batch);
        self.append_checked(batch, (producer, txn), acks.into(), epoch)
            .await
    }

    async fn append_checked(
        &self,
        batch: (PartitionKey, u32, Bytes),
        (producer, txn): (ProducerBatch, Option<TxnPart>),
        ack: Ack,
        epoch: u64,
    ) -> Result<(Produced, bool), LogGroupError> {
        let acks = ack.acks;
        let min_insync = self.min_insync.max(ack.min_insync);
        self.check_leader()?;
        check_epoch(self.id, epoch, self.epoch())?;
        // A new leader first makes sure it holds and applied the whole log, so the
        // producer state it checks covers every batch written before it led.
        self.ensure_applied_in_term().await?;
        match self.storage.check_producer(batch.0, &producer) {
            SeqCheck::Write => Ok((
                self.append_batch(batch, Some((producer, txn)), ack, epoch)
                    .await
                    .inspect_err(|_| self.forget_applied())?,
                false,
            )),
            SeqCheck::Duplicate { base_offset, index } => {
                // A retry is answered as its first write would have been: with acks=all,
                // refused while too few replicas are in sync, and only once the replicas
                // min_insync_replicas asks for hold it (Kafka checks its ISR before it
                // looks for duplicates too).
                if acks == Acks::All {
                    self.check_min_insync(min_insync)?;
                }
                let append_time_ms = self.wait_committed(index).await?;
                if acks == Acks::All {
                    self.wait_duplicate_holders(index, min_insync).await?;
                }
                Ok((
                    Produced {
                        base_offset,
                        append_time_ms,
                        epoch: self.epoch(),
                    },
                    true,
                ))
            }
            SeqCheck::Refuse(refusal) => Err(LogGroupError::Sequence {
                log_group: self.id,
                refusal,
            }),
        }
    }

    /// acks=all for a batch found written before (record `index`): as many replicas hold
    /// it as a first write would wait for.
    async fn wait_duplicate_holders(
        &self,
        index: u64,
        min_insync: u32,
    ) -> Result<(), LogGroupError> {
        match &self.replication {
            Replication::Standalone | Replication::Starting => Ok(()),
            Replication::Raft(raft) => self.wait_raft_holders(raft, index, min_insync).await,
            Replication::MasterSlave(ms) => {
                let role = self.master_role(ms)?;
                let end = self.storage.end_of_record(index).unwrap_or(0);
                let ack = Ack {
                    acks: Acks::All,
                    min_insync,
                };
                self.wait_master_slave(ms, end, role, ack).await
            }
        }
    }

    /// Waits until the record with this index is committed (visible); its append time.
    async fn wait_committed(&self, index: u64) -> Result<i64, LogGroupError> {
        let not_yet = || {
            LogGroupError::Replication(format!(
                "log group {}: the first write of this batch (record {index}) is not committed yet; retry",
                self.id
            ))
        };
        let end = self.storage.end_of_record(index).ok_or_else(not_yet)?;
        let mut visible = self.storage.subscribe();
        tokio::time::timeout(DUPLICATE_COMMIT_WAIT, visible.wait_for(|&v| v >= end))
            .await
            .map_err(|_| not_yet())?
            .map_err(|_| LogGroupError::Append(AppendError::Closed))?;
        let header = self
            .storage
            .record_header_by_index(index)
            .map_err(|e| LogGroupError::Replication(e.to_string()))?
            .ok_or_else(not_yet)?;
        Ok(header.append_time_ms)
    }
}
