//! The second half of a group commit: making a written commit durable, then publishing it
//! (offsets, producer and transaction state, progress, record positions) and acknowledging
//! its appends.
//!
//! With the `fsync` policy this runs on its own thread, the **sync stage**, so the writer
//! stages and writes commit N+1 while commit N's `fdatasync` runs: a group commit then costs
//! the longer of the two instead of their sum. The hand-off is a rendezvous channel, so at
//! most one commit is syncing and one more written and waiting (the bound); appends keep
//! queueing in the group's channel meanwhile and make the next commit larger. Commits are
//! finished in the order they were written, so state and acknowledgements follow the
//! journal's order exactly as when one thread did both.
//!
//! A failed sync makes the group refuse writes (`Progress::fatal`), and every commit
//! written behind it is refused too: it is on disk, maybe, but nothing written since the
//! last good sync may be reported durable. Recovery re-reads the disk on reopen.
//!
//! With the `async` policy there is nothing to wait for and the writer finishes a commit
//! itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::Instant;

use meridian_proto::producer::ProducerBatch;

use super::{OffsetKey, Reply, Shared};
use crate::segment::Segment;
use crate::transactions::TxnEvent;
use crate::{AppendError, Appended, FlushPolicy, PartitionKey};

/// A staged append: where to answer, and what its commit publishes once durable.
pub(super) struct StagedReply {
    pub(super) reply: Reply,
    pub(super) key: PartitionKey,
    pub(super) appended: Appended,
    pub(super) commit: Vec<(OffsetKey, u64)>,
    /// The idempotent producer of a batch record.
    pub(super) producer: Option<ProducerBatch>,
    /// What a transactional batch or marker tells its partition's transactions.
    pub(super) txn: Option<TxnEvent>,
}

/// A group commit written to the journal, not yet durable or acknowledged.
pub(super) struct Written {
    pub(super) staged: Vec<StagedReply>,
    /// The segments it wrote to, to sync (`fsync` policy).
    pub(super) segments: Vec<Arc<Segment>>,
    /// The journal's end after it.
    pub(super) end: u64,
    /// Journal bytes it wrote.
    pub(super) bytes: u64,
    pub(super) started: Instant,
}

/// What the writer hands the sync stage.
pub(super) enum Job {
    Finish(Written),
    /// Answered once every commit handed before it is finished: the writer drains the
    /// stage before a truncation, a reset or stopping.
    Barrier(SyncSender<()>),
}

/// The sync stage's loop: finishes commits in the order handed, until the writer hangs up.
pub(super) fn run(shared: &Shared, jobs: Receiver<Job>) {
    for job in jobs {
        match job {
            Job::Finish(written) => finish(shared, written),
            Job::Barrier(done) => {
                let _ = done.send(());
            }
        }
    }
}

/// Syncs a written commit (per the flush policy), then publishes and acknowledges it; or,
/// if this or an earlier sync failed, refuses its appends.
pub(super) fn finish(shared: &Shared, mut written: Written) {
    let fatal = shared
        .progress
        .lock()
        .expect("progress lock poisoned")
        .fatal;
    if let Some(reason) = fatal {
        refuse(shared, written.staged.into_iter().map(|s| s.reply), reason);
        return;
    }
    if shared.config.flush == FlushPolicy::Fsync {
        let synced = match &shared.config.sync {
            Some(batcher) => batcher.sync(std::mem::take(&mut written.segments)),
            None => written.segments.iter().try_for_each(|s| s.sync()),
        };
        if let Err(e) = synced {
            // After a failed fsync the page cache may have dropped the dirty pages: the
            // disk's contents are unknown until recovery re-reads them (PostgreSQL's
            // "fsyncgate"). Refuse further writes, and this commit.
            tracing::error!(dir = %shared.dir_display, error = %e, "fsync failed: the log group refuses writes until restart");
            shared
                .progress
                .lock()
                .expect("progress lock poisoned")
                .fatal = Some("fsync failed");
            refuse(
                shared,
                written.staged.into_iter().map(|s| s.reply),
                &e.to_string(),
            );
            return;
        }
    }
    publish(shared, &written);
    for s in written.staged {
        let _ = s.reply.send(Ok(s.appended));
    }
}

/// Refuses appends because a sync failed: the group takes no more writes until reopened.
pub(super) fn refuse(shared: &Shared, replies: impl IntoIterator<Item = Reply>, reason: &str) {
    for reply in replies {
        let _ = reply.send(Err(AppendError::Fatal {
            dir: shared.dir_display.clone(),
            reason: reason.into(),
        }));
    }
}

/// Makes a durable commit's effects visible, in record order.
fn publish(shared: &Shared, written: &Written) {
    let staged = &written.staged;
    {
        let mut offsets = shared.offsets.lock().expect("offsets lock poisoned");
        for s in staged {
            for (key, offset) in &s.commit {
                offsets.insert(key.clone(), (*offset, s.appended.position));
            }
        }
    }
    {
        // Producers' batches count once written, in record order, as a scan of the
        // journal counts them.
        let mut producers = shared.producers.lock().expect("producers lock poisoned");
        let mut txns = shared.txns.lock().expect("transactions lock poisoned");
        for s in staged {
            if let Some(event) = s.txn {
                txns.entry(s.key).or_default().apply(event);
                if let TxnEvent::Marker {
                    producer_id, epoch, ..
                } = event
                {
                    producers.fence(
                        s.key,
                        producer_id,
                        epoch,
                        s.appended.index,
                        s.appended.append_time_ms,
                    );
                }
            }
            if let Some(p) = &s.producer {
                producers.record(
                    s.key,
                    p,
                    s.appended.base_offset,
                    s.appended.index,
                    s.appended.append_time_ms,
                );
            }
        }
    }
    shared.commits.fetch_add(1, Ordering::Relaxed);
    shared
        .commit_bytes
        .fetch_add(written.bytes, Ordering::Relaxed);
    {
        let mut progress = shared.progress.lock().expect("progress lock poisoned");
        progress.written = written.end;
        if shared.config.flush == FlushPolicy::Fsync {
            progress.synced = progress.written;
        }
    }
    shared.pullable.send_replace(written.end);
    shared.progress_changed.notify_all();
    metrics::histogram!("meridian_group_commit_records").record(staged.len() as f64);
    // The write size the disk sees: what a benchmark's disk anchor writes per sync.
    metrics::histogram!("meridian_group_commit_bytes").record(written.bytes as f64);
    metrics::histogram!("meridian_group_commit_seconds")
        .record(written.started.elapsed().as_secs_f64());
    {
        let mut records = shared.records.lock().expect("records lock poisoned");
        for s in staged {
            records.push(s.appended.index, s.appended.position, s.appended.len);
        }
    }
}
