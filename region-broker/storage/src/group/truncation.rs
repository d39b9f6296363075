//! Rolling the journal back, on the writer thread: truncation to a record boundary (with
//! every index entry, consumer offset and record position derived from what is cut) and a
//! reset that drops every record. Both record their intent in the checkpoint first, so
//! recovery finishes one a crash interrupted.

use std::collections::HashMap;
use std::io;

use super::recovery::Scan;
use super::replica::RecordPositions;
use super::visible_limit;
use super::writer::Appender;
use crate::PartitionKey;
use crate::checkpoint::Checkpoint;
use crate::journal::Writer;

impl Appender {
    /// Drops every record and restarts the journal at `position` (see [`crate::LogGroup::reset_to`]).
    pub(super) fn reset(
        &mut self,
        position: u64,
        ends: &HashMap<PartitionKey, u64>,
    ) -> io::Result<()> {
        let shared = self.shared.clone();
        let _indexing = shared.indexing.lock().expect("indexing lock poisoned");
        // Indexes first (emptied, each at its next offset, durably), then the intent, then
        // the journal: a crash before the intent leaves the old journal, whose indexes
        // recovery rebuilds; after it, recovery finishes the reset.
        let mut counts = Vec::new();
        {
            let indexes = shared.indexes.read().expect("indexes lock poisoned");
            for (key, index) in indexes.iter() {
                let mut index = index.lock().expect("index lock poisoned");
                let end = ends.get(key).copied().unwrap_or(index.end());
                index.reset_to(end)?;
                counts.push((key.0, key.1, end));
            }
            let mut pending = shared
                .pending_ends
                .lock()
                .expect("pending ends lock poisoned");
            pending.clear();
            for (key, &end) in ends {
                if !indexes.contains_key(key) {
                    pending.insert(*key, end);
                    counts.push((key.0, key.1, end));
                }
            }
        }
        counts.sort_unstable();
        shared.config.backend.sync_all(&shared.dir.join("index"))?;
        Checkpoint {
            journal_synced: position,
            indexed: position,
            counts,
            starts: Vec::new(),
            truncate_to: None,
            reset_to: Some(position),
        }
        .store(&*shared.config.backend, &shared.dir)?;
        shared.journal.reset(position)?;
        self.writer = Writer::new(&shared.journal, position)?;
        self.last_index = None;
        self.next_offsets.clear();
        *shared.records.lock().expect("records lock poisoned") = RecordPositions::default();
        shared
            .offsets
            .lock()
            .expect("offsets lock poisoned")
            .clear();
        shared
            .producers
            .lock()
            .expect("producers lock poisoned")
            .clear();
        shared
            .txns
            .lock()
            .expect("transactions lock poisoned")
            .clear();
        {
            let mut p = shared.progress.lock().expect("progress lock poisoned");
            p.written = position;
            p.synced = position;
            p.indexed = position;
            p.index_waiting = false;
            p.watermark = p.watermark.max(position);
        }
        shared.flush_and_checkpoint(position, position)?;
        shared
            .rebuild_compacted()
            .map_err(|e| io::Error::other(e.to_string()))?;
        shared.visible.send_replace(position);
        shared.pullable.send_replace(position);
        tracing::warn!(dir = %shared.dir_display, position, "journal reset: every record dropped, restarting where the source's journal starts");
        Ok(())
    }

    /// Cuts the journal at `position`. Without `force`, a replicated group refuses to cut
    /// committed records; raft (`force`) guarantees that itself.
    pub(super) fn truncate(&mut self, position: u64, force: bool) -> io::Result<()> {
        let shared = self.shared.clone();
        let end = self.writer.position();
        let invalid = |why: String| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot truncate to {position}: {why}"),
            )
        };
        if position > end || position < shared.journal.start() {
            return Err(invalid(format!(
                "the journal holds {}..{end}",
                shared.journal.start()
            )));
        }
        if position < end {
            shared
                .journal
                .read(position)
                .map_err(|e| invalid(format!("not a record boundary ({e})")))?;
        }
        let watermark = shared
            .progress
            .lock()
            .expect("progress lock poisoned")
            .watermark;
        if shared.config.replicated && position < watermark && !force {
            return Err(invalid(format!(
                "records up to {watermark} are committed and must never be truncated"
            )));
        }
        let _indexing = shared.indexing.lock().expect("indexing lock poisoned");
        // Record the intent first: if we crash midway, recovery finishes the truncation.
        let backend = &*shared.config.backend;
        let mut intent = Checkpoint::load(backend, &shared.dir)?.unwrap_or_default();
        intent.truncate_to = Some(position);
        intent.store(backend, &shared.dir)?;
        shared.journal.cut(position)?;
        self.writer = Writer::new(&shared.journal, position)?;
        let mut rebuild = false;
        for index in shared
            .indexes
            .read()
            .expect("indexes lock poisoned")
            .values()
        {
            let mut index = index.lock().expect("index lock poisoned");
            let keep = index.first_at_position(index.earliest(), position)?;
            index.truncate(keep)?;
            // Copies the cut removed leave entries pointing past the end: the index is
            // built again from the journal (below), its entries then pointing at what
            // remains (the originals, or earlier copies).
            if index.carried_past(position)? {
                let floor = index.earliest();
                index.reset_to(0)?;
                index.set_floor(floor);
                rebuild = true;
            }
        }
        if rebuild {
            tracing::warn!(dir = %shared.dir_display, position, "a truncation cut carried copies of compacted messages: their indexes are built again from the journal");
            shared.index_range(shared.journal.start(), position)?;
        }
        let mut scan = Scan::new(&shared.config);
        shared
            .journal
            .walk(shared.journal.start(), position, |pos, h, payload| {
                scan.visit(pos, h, payload)
            });
        self.last_index = scan.last_index;
        self.next_offsets = scan.next_offsets;
        *shared.records.lock().expect("records lock poisoned") = scan.records;
        *shared.offsets.lock().expect("offsets lock poisoned") = scan.offsets;
        *shared.producers.lock().expect("producers lock poisoned") = scan.producers;
        *shared.txns.lock().expect("transactions lock poisoned") = scan.txns;
        // What remains below `position` becomes durable now, and visible up to the limit.
        let synced = shared
            .progress
            .lock()
            .expect("progress lock poisoned")
            .synced;
        shared.journal.sync_range(synced.min(position), position)?;
        let (indexed, limit) = {
            let mut p = shared.progress.lock().expect("progress lock poisoned");
            p.written = position;
            p.synced = position;
            p.indexed = p.indexed.min(position);
            p.watermark = p.watermark.min(position);
            (p.indexed, visible_limit(&p, &shared.config))
        };
        if indexed < limit {
            shared.index_range(indexed, limit)?;
        }
        shared
            .progress
            .lock()
            .expect("progress lock poisoned")
            .indexed = limit.max(indexed);
        let indexed = limit.max(indexed);
        shared.flush_and_checkpoint(position, indexed)?;
        shared
            .rebuild_compacted()
            .map_err(|e| io::Error::other(e.to_string()))?;
        shared.visible.send_replace(indexed);
        shared.pullable.send_replace(position);
        tracing::info!(dir = %shared.dir_display, position, "journal truncated");
        Ok(())
    }
}
