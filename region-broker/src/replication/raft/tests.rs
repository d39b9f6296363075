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

/// A transactional batch and a transaction marker keep their part through the journal:
/// written from an entry, read back as the same entry (what a leader sends its followers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_entries_round_trip_through_the_journal() {
    use meridian_proto::producer::ProducerBatch;
    use meridian_proto::record::{self, TxnMarker};
    use openraft::entry::RaftEntry;

    use super::{Command, LocalAck, TxnPart, entry_from_record, record_from_entry};

    let dir = tempfile::tempdir().expect("temporary directory");
    let config = GroupConfig {
        replicated: true,
        ..GroupConfig::default()
    };
    let key = (4, 0);
    let group = LogGroup::open(
        &dir.path().join("group"),
        config,
        &[(key, "orders".to_owned())],
    )
    .expect("open group");
    let producer = ProducerBatch {
        id: 9,
        epoch: 2,
        first_sequence: 0,
        last_sequence: 0,
    };
    let mut marker = Vec::new();
    TxnMarker {
        commit: true,
        coordinator_epoch: 3,
    }
    .encode(&mut marker);
    let entry = |index: u64, transaction: TxnPart, payload: Vec<u8>| {
        super::Entry::new_normal(
            openraft::LogId::new_term_index(1, index),
            Command::Batch {
                topic_id: key.0,
                partition: key.1,
                count: 1,
                payload: bytes::Bytes::from(payload),
                mirrored: false,
                producer: Some(producer),
                transaction: Some(transaction),
                local_ack: LocalAck::default(),
            },
        )
    };
    let entries = [
        entry(1, TxnPart::Batch, b"inside".to_vec()),
        entry(2, TxnPart::Marker, marker),
    ];
    let records = entries
        .iter()
        .cloned()
        .map(record_from_entry)
        .collect::<std::io::Result<Vec<_>>>()
        .expect("records");
    assert_eq!(
        records.iter().map(|r| r.flags).collect::<Vec<_>>(),
        [record::FLAG_TRANSACTIONAL, record::FLAG_CONTROL],
        "the writer adds FLAG_PRODUCER itself"
    );
    group.append_raft(records).await.expect("appended");
    for original in entries {
        let (h, payload) = group
            .record_by_index(original.log_id.index)
            .expect("read")
            .expect("held");
        assert_ne!(h.flags & record::FLAG_PRODUCER, 0);
        let back = entry_from_record(&h, payload).expect("an entry");
        assert_eq!(back.payload, original.payload);
    }
    group.close();
}
