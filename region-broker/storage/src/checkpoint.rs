//! The group checkpoint: how far the journal is known durable and the indexes complete.
//!
//! Recovery trusts the journal up to `journal_synced` and each partition index up to its
//! count here, verifies the journal from `journal_synced` on, and rebuilds index entries from
//! `indexed` on. A pending `truncate_to` is a truncation that had started when the process
//! stopped, a pending `reset_to` a reset: recovery finishes it before anything else, so a
//! truncated record never reappears.
//!
//! The file is small and written by replacement through the group's [`Backend`] (write a
//! temporary file, sync it, rename it over the checkpoint, sync the directory), so it is
//! always either the old or the new checkpoint, whole: a power cut before the directory sync
//! may leave the old one, which is sound because each checkpoint only vouches for what was
//! durable when it was written, and everything it vouches for stays so until a later
//! checkpoint (or a recorded truncation) says otherwise.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::backend::Backend;

const FILE: &str = "checkpoint.json";
/// The replacement being written.
pub(crate) const TMP_FILE: &str = "checkpoint.json.tmp";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    /// Journal position up to which data was fsynced.
    pub(crate) journal_synced: u64,
    /// Journal position up to which every record is in the (flushed) indexes.
    pub(crate) indexed: u64,
    /// Flushed entry count per `(topic_id, partition)`.
    pub(crate) counts: Vec<(u32, u32, u64)>,
    /// First readable offset per `(topic_id, partition)` whose start is not 0: moved by
    /// retention or by a topic's own retention (`LogGroup::advance_start`), so a restart
    /// serves no message a start had passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) starts: Vec<(u32, u32, u64)>,
    /// A truncation that must be finished before the group opens.
    pub(crate) truncate_to: Option<u64>,
    /// A reset (every record dropped, the journal restarting at this position) that must be
    /// finished before the group opens.
    #[serde(default)]
    pub(crate) reset_to: Option<u64>,
}

impl Checkpoint {
    /// Reads the checkpoint, or `None` when the group has none yet.
    pub(crate) fn load(backend: &dyn Backend, dir: &Path) -> io::Result<Option<Checkpoint>> {
        let path = dir.join(FILE);
        let file = match backend.open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = vec![0; usize::try_from(file.len()).map_err(io::Error::other)?];
        file.read_at(0, &mut bytes)?;
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })
    }

    /// Replaces the checkpoint durably.
    pub(crate) fn store(&self, backend: &dyn Backend, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(TMP_FILE);
        let bytes = serde_json::to_vec(self).map_err(io::Error::other)?;
        let file = backend.open_growable(&tmp)?;
        file.set_len(0)?;
        file.write_at(0, &bytes)?;
        file.sync_data()?;
        backend.rename(&tmp, &dir.join(FILE))?;
        backend.sync_dir(dir)
    }
}
