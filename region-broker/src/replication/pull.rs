//! Pulling a journal from another replica by position: what a master-slave slave does all
//! the time and a raft follower does to install a snapshot (the snapshot names a log
//! position; the journal up to it is shipped as records, byte for byte).
//!
//! The replica sends where its journal ends and its last record `(index, term)`; the
//! source answers with one of:
//!
//! - the records that follow (whole records of one segment, durable on the source);
//! - *truncate after index N*: the replica's last record is not the source's (same index
//!   and term, ending at the same position), so its tail diverges; N is the last index whose
//!   term is at most the replica's last term (terms never decrease along a journal), as in
//!   Kafka's leader-epoch truncation;
//! - *reset to position P*: the replica's journal ends before the first record the source
//!   still retains (retention deleted what it needs), so it starts over at P, with each
//!   partition's next offset as of P.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::storage::{AppendError, LogGroup, ReadError, RecordChunk};

/// Why a journal read could not be served or its answer applied.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Reading the partitions' next offsets at the journal's start failed.
    #[error("reading partition offsets: {0}")]
    PartitionEnds(#[source] ReadError),
    /// Looking up the last record of a term failed.
    #[error("reading the journal for a divergence check: {0}")]
    DivergenceCheck(#[source] ReadError),
    /// Reading the records failed.
    #[error("reading records from {from}: {source}")]
    Records {
        /// Where the read started.
        from: u64,
        /// Why.
        source: ReadError,
    },
    /// Appending the records here failed.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// The source says to truncate after a record this replica does not hold.
    #[error("record {0:?} is not held here")]
    NotHeld(Option<u64>),
    /// Truncating the divergent tail failed.
    #[error("truncating: {0}")]
    Truncate(#[source] std::io::Error),
    /// Starting over at the source's first position failed.
    #[error("resetting the journal to {start}: {source}")]
    Reset {
        /// The position to start at.
        start: u64,
        /// Why.
        source: std::io::Error,
    },
}

/// Where a replica's journal ends, and how much it wants.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadRequest {
    /// The end of the replica's journal: where the records it wants start.
    pub from: u64,
    /// The replica's last record `(index, term)`; `None` on an empty journal.
    pub last: Option<(u64, u64)>,
    /// Bytes of records wanted at most (at least one record is sent).
    pub max_bytes: u32,
    /// Send no record that ends past this position (a snapshot's end).
    #[serde(default)]
    pub until: Option<u64>,
}

impl ReadRequest {
    /// The request that continues `group`'s journal.
    pub fn continuing(group: &LogGroup, max_bytes: u32) -> ReadRequest {
        ReadRequest {
            from: group.positions().1,
            last: group.last_record(),
            max_bytes,
            until: None,
        }
    }
}

/// The source's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReadAnswer {
    /// Records from `position` (none when the replica is caught up).
    Records {
        /// Journal position of the first record.
        position: u64,
        /// Whole records, byte for byte.
        records: Bytes,
        /// Where the next read starts.
        next: u64,
    },
    /// The replica's history diverges: keep records up to this index (none with `None`).
    Truncate {
        /// The last index to keep.
        after_index: Option<u64>,
    },
    /// The replica's journal ends before the source's first retained record: start over.
    Reset {
        /// Where the source's journal starts.
        start: u64,
        /// Each partition's next offset as of `start`: `(topic id, partition, offset)`.
        ends: Vec<(u32, u32, u64)>,
    },
}

/// Answers a replica from `group`'s journal, without waiting.
pub fn serve(group: &LogGroup, req: &ReadRequest) -> Result<ReadAnswer, PullError> {
    let start = group.positions().0;
    if req.from < start || (req.last.is_none() && req.from != start) {
        let ends = group
            .partition_ends_at(start)
            .map_err(PullError::PartitionEnds)?;
        let mut ends: Vec<(u32, u32, u64)> =
            ends.into_iter().map(|((t, p), o)| (t, p, o)).collect();
        ends.sort_unstable();
        return Ok(ReadAnswer::Reset { start, ends });
    }
    if let Some((index, term)) = req.last {
        let agrees = matches!(group.record_header_by_index(index), Ok(Some(h)) if h.term == term)
            && group.end_of_record(index) == Some(req.from);
        if !agrees {
            let last_of_term = group
                .last_index_of_term_at_most(term)
                .map_err(PullError::DivergenceCheck)?;
            return Ok(ReadAnswer::Truncate {
                after_index: super::master_slave::truncation_point(last_of_term, index),
            });
        }
    }
    let chunk = group
        .read_records_until(req.from, req.until, req.max_bytes as usize)
        .map_err(|source| PullError::Records {
            from: req.from,
            source,
        })?;
    Ok(ReadAnswer::Records {
        position: chunk.position,
        records: chunk.records,
        next: chunk.next,
    })
}

/// Applies a source's answer to `group`; returns the journal end afterwards.
pub async fn apply(group: &LogGroup, answer: ReadAnswer) -> Result<u64, PullError> {
    match answer {
        ReadAnswer::Records {
            position,
            records,
            next,
        } => {
            if !records.is_empty() {
                group
                    .append_records(&RecordChunk {
                        position,
                        records,
                        next,
                    })
                    .await?;
            }
        }
        ReadAnswer::Truncate { after_index } => {
            let position = match after_index {
                Some(i) => group.end_of_record(i),
                None => Some(group.positions().0),
            }
            .ok_or(PullError::NotHeld(after_index))?;
            tracing::warn!(position, keep_to = ?after_index, "truncating a divergent tail to follow the source");
            metrics::counter!("meridian_replica_truncations_total").increment(1);
            group.truncate_after(position).await.map_err(|e| {
                tracing::error!(position, error = %e, "cannot truncate to follow the source");
                PullError::Truncate(e)
            })?;
        }
        ReadAnswer::Reset { start, ends } => {
            let ends: HashMap<_, _> = ends.into_iter().map(|(t, p, o)| ((t, p), o)).collect();
            metrics::counter!("meridian_replica_resets_total").increment(1);
            group
                .reset_to(start, ends)
                .await
                .map_err(|source| PullError::Reset { start, source })?;
        }
    }
    Ok(group.positions().1)
}
