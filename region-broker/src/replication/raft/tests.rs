//! openraft's storage conformance suite against the journal-backed log store and state
//! machine.

use std::sync::Arc;

use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

use super::{JournalLogStore, JournalStateMachine, TypeConfig};
use crate::storage::{GroupConfig, LogGroup};

struct Builder;

impl StoreBuilder<TypeConfig, JournalLogStore, JournalStateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, JournalLogStore, JournalStateMachine), StorageError<TypeConfig>>
    {
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = GroupConfig {
            segment_bytes: 1 << 16,
            replicated: true,
            ..GroupConfig::default()
        };
        let group =
            Arc::new(LogGroup::open(&dir.path().join("group"), config, &[]).expect("open group"));
        let store = JournalLogStore::open(group.clone(), dir.path()).expect("open log store");
        let sm = JournalStateMachine::open(group, dir.path()).expect("open state machine");
        Ok((dir, store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_store_passes_openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await
}

#[test]
fn a_full_disk_is_recognised_through_the_errors_wrapping_it() {
    use std::io;
    #[derive(Debug, thiserror::Error)]
    enum Hook {
        #[error("storage error: {0}")]
        Io(#[from] io::Error),
    }
    let full = || io::Error::from(io::ErrorKind::StorageFull);
    assert!(super::is_disk_full(&full()));
    assert!(super::is_disk_full(&io::Error::other(Hook::Io(full()))));
    assert!(super::is_disk_full(&io::Error::other(io::Error::other(
        Hook::Io(full())
    ))));
    assert!(!super::is_disk_full(&io::Error::other(Hook::Io(
        io::Error::from(io::ErrorKind::PermissionDenied)
    ))));
    assert!(!super::is_disk_full(&io::Error::other(
        "no space left, says a string"
    )));
}
