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
        let sm = JournalStateMachine::open(&store, dir.path()).expect("open state machine");
        Ok((dir, store, sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_store_passes_openraft_storage_suite() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(Builder).await
}

/// A committed hint past the journal (the entries were committed by a quorum, this replica's
/// own write of them was lost in a crash) is cut back to what the journal holds on open:
/// raft re-applies up to it on start and would fail on the missing entries.
#[tokio::test]
async fn a_committed_hint_past_the_journal_is_cut_back_on_open() {
    use openraft::storage::RaftLogStorage;

    let (dir, mut store, _sm) = Builder.build().await.expect("build store");
    store
        .save_committed(Some(super::LogId::new_term_index(3, 40)))
        .await
        .expect("save committed hint");
    drop(store);
    let group = Arc::new(
        LogGroup::open(
            &dir.path().join("group"),
            GroupConfig {
                segment_bytes: 1 << 16,
                replicated: true,
                ..GroupConfig::default()
            },
            &[],
        )
        .expect("reopen group"),
    );
    let mut store = JournalLogStore::open(group, dir.path()).expect("reopen log store");
    // The journal holds nothing: nothing is known committed.
    assert_eq!(store.read_committed().await.expect("read committed"), None);
}
