//! The group checkpoint: how far the journal is known durable and the indexes complete.
//!
//! Recovery trusts the journal up to `journal_synced` and each partition index up to its
//! count here, verifies the journal from `journal_synced` on, and rebuilds index entries from
//! `indexed` on. A pending `truncate_to` is a truncation that had started when the process
//! stopped, a pending `reset_to` a reset: recovery finishes it before anything else, so a
//! truncated record never reappears.
//!
//! The file is small and written by replacement (write, fsync, rename, fsync the directory),
//! so it is always either the old or the new checkpoint.

use std::io::{self, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

const FILE: &str = "checkpoint.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// Journal position up to which data was fsynced.
    pub(crate) journal_synced: u64,
    /// Journal position up to which every record is in the (flushed) indexes.
    pub(crate) indexed: u64,
    /// Flushed entry count per `(topic_id, partition)`.
    pub(crate) counts: Vec<(u32, u32, u64)>,
    /// A truncation that must be finished before the group opens.
    pub(crate) truncate_to: Option<u64>,
    /// A reset (every record dropped, the journal restarting at this position) that must be
    /// finished before the group opens.
    #[serde(default)]
    pub(crate) reset_to: Option<u64>,
}

impl Checkpoint {
    /// Reads the checkpoint, or `None` when the group has none yet.
    pub(crate) fn load(dir: &Path) -> io::Result<Option<Checkpoint>> {
        match std::fs::read(dir.join(FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", dir.join(FILE).display()),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the checkpoint durably.
    pub(crate) fn store(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join("checkpoint.json.tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(self).map_err(io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, dir.join(FILE))?;
        super::backend::sync_dir(dir)
    }
}
