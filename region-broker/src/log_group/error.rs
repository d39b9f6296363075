//! Why an operation on a log group failed ([`LogGroupError`], naming leaders by broker
//! id), and the epoch fence every produce passes ([`check_epoch`]).

use super::ACKS_ALL_WAIT;
use crate::storage::{AppendError, SeqRefusal};

/// Why an operation on a log group failed.
#[derive(Debug, thiserror::Error)]
pub enum LogGroupError {
    /// This broker does not lead the group.
    #[error("this broker does not lead log group {log_group}")]
    NotLeader {
        /// The log group.
        log_group: u32,
        /// The leader's broker id, when known.
        leader: Option<u64>,
    },
    /// The request carried an epoch the group has moved past.
    #[error("epoch {epoch} is stale: log group {log_group} is at epoch {current}")]
    StaleEpoch {
        /// The log group.
        log_group: u32,
        /// The epoch the request carried.
        epoch: u64,
        /// The group's current epoch.
        current: u64,
    },
    /// The request carried an epoch newer than this broker knows for the group.
    #[error("log group {log_group} is at epoch {current} here but the request carries {epoch}")]
    EpochAhead {
        /// The log group.
        log_group: u32,
        /// The epoch the request carried.
        epoch: u64,
        /// The epoch this broker knows.
        current: u64,
    },
    /// Fewer replicas are in sync than `min_insync_replicas` asks for: an `acks=all`
    /// produce is refused before anything is written (Kafka's NOT_ENOUGH_REPLICAS).
    #[error(
        "log group {log_group} has {in_sync} in-sync replica(s), fewer than the {needed} min_insync_replicas asks for: nothing was written; retry once its replicas catch up"
    )]
    NotEnoughReplicas {
        /// The log group.
        log_group: u32,
        /// Replicas in sync now, the leader included.
        in_sync: usize,
        /// Replicas an acks=all produce needs.
        needed: usize,
    },
    /// The batch is committed, but fewer than `min_insync_replicas` replicas acknowledged
    /// it in time (Kafka's NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    #[error(
        "log group {log_group}: the batch is committed, but fewer than the {needed} replicas min_insync_replicas asks for held it within {} s",
        ACKS_ALL_WAIT.as_secs()
    )]
    NotEnoughReplicasAfterAppend {
        /// The log group.
        log_group: u32,
        /// Replicas an acks=all produce needs.
        needed: usize,
    },
    /// The operation does not apply to this group.
    #[error("{0}")]
    Invalid(String),
    /// A leadership hand-over refused (the voter named is not in sync) or not finished
    /// in time (`timed_out`).
    #[error("{message}")]
    Election {
        /// What happened, naming the brokers.
        message: String,
        /// The hand-over started but no election of the voter was seen in time.
        timed_out: bool,
    },
    /// Replication failed (no quorum, not running, shutting down).
    #[error("replication failed: {0}")]
    Replication(String),
    /// Storage refused the append.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// An idempotent producer's batch does not fit what the partition holds of it (an
    /// older epoch, or a sequence gap): nothing was written.
    #[error("log group {log_group}: {refusal}")]
    Sequence {
        /// The log group.
        log_group: u32,
        /// Why.
        refusal: SeqRefusal,
    },
}

/// Fences a produce by the epoch it carries (0: not fenced): an older epoch means the
/// producer is behind, a newer one that this broker is.
pub fn check_epoch(log_group: u32, epoch: u64, current: u64) -> Result<(), LogGroupError> {
    if epoch == 0 || epoch == current {
        Ok(())
    } else if epoch < current {
        Err(LogGroupError::StaleEpoch {
            log_group,
            epoch,
            current,
        })
    } else {
        Err(LogGroupError::EpochAhead {
            log_group,
            epoch,
            current,
        })
    }
}

pub(super) fn not_running() -> LogGroupError {
    LogGroupError::Replication("replication is not running".into())
}
