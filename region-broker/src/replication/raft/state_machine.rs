//! The state machine of a log group's raft: the commit watermark and raft's applied state
//! beside the journal (`raft-sm.json`), snapshots (what a snapshot covers is the journal
//! up to it, shipped from a peer to a replica that is behind), and the apply hooks.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The state machine's applied state, beside the journal.
pub(super) const SM_FILE: &str = "raft-sm.json";

/// The state machine of one log group: the commit watermark, and raft's applied state.
#[derive(Clone)]
pub struct JournalStateMachine {
    group: Arc<LogGroup>,
    state: Arc<Mutex<AppliedState>>,
    snapshot: Arc<Mutex<Option<StoredSnapshot>>>,
    path: PathBuf,
    hook: Option<ApplyHook>,
    snapshot_hooks: Option<SnapshotHooks>,
    shipping: Option<Shipping>,
    /// What the file holds and when it was written (apply and the snapshot builder both
    /// write it).
    saved: Arc<Mutex<SavedState>>,
}

/// The applied state last written to the file, and when.
#[derive(Debug, Default)]
struct SavedState {
    last_applied: Option<LogId>,
    at: Option<std::time::Instant>,
}

/// How often applying entries rewrites the applied-state file. Rewriting it (a create and
/// a rename over the old one) on every apply cost raft about 4 ms per round on ext4, a
/// third of its throughput; a stale file only makes raft re-apply more entries on restart.
const SAVE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// Replaces the broker's metadata with a snapshot's.
pub type RestoreHook = Arc<dyn Fn(&serde_json::Value) -> io::Result<()> + Send + Sync>;

/// Metadata the broker keeps beside a group's log (the topic catalog, for log group 0):
/// saved into snapshots, restored from them, since retention may delete the entries that
/// built it.
#[derive(Clone)]
pub struct SnapshotHooks {
    /// The metadata now.
    pub save: Arc<dyn Fn() -> io::Result<serde_json::Value> + Send + Sync>,
    /// Replaces the metadata with a snapshot's.
    pub restore: RestoreHook,
}

/// How an installing follower gets the journal a snapshot covers: from the other members,
/// by the pull protocol ([`super::pull`]).
#[derive(Clone)]
pub struct Shipping {
    /// This node's id (not a source).
    pub me: u64,
    /// The log group.
    pub group: u32,
    /// Sends a request to a member's replication port.
    pub call: super::super::master_slave::PeerCall,
}

/// What a snapshot carries: the applied state, where the journal ends at its last entry,
/// and the broker's metadata.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotState {
    applied: AppliedState,
    /// Journal position just past the last entry's record (the same on every replica).
    #[serde(default)]
    position: Option<u64>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

impl Debug for JournalStateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalStateMachine")
            .field("path", &self.path)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// The last snapshot built or installed: its metadata and data.
type StoredSnapshot = (SnapshotMeta, Vec<u8>);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl JournalStateMachine {
    /// The state machine of `group`, keeping its applied state in `dir`.
    pub fn open(group: Arc<LogGroup>, dir: &Path) -> io::Result<JournalStateMachine> {
        let path = dir.join(SM_FILE);
        let state: AppliedState = load_hint(&path).unwrap_or_default();
        if let Some(applied) = state.last_applied
            && let Some(end) = group.end_of_record(applied.index)
        {
            group.set_watermark(end);
        }
        Ok(JournalStateMachine {
            group,
            state: Arc::new(Mutex::new(state)),
            snapshot: Arc::default(),
            path,
            hook: None,
            snapshot_hooks: None,
            shipping: None,
            saved: Arc::default(),
        })
    }

    /// Saves and restores the broker's metadata with snapshots.
    pub fn with_snapshot_hooks(mut self, hooks: SnapshotHooks) -> JournalStateMachine {
        self.snapshot_hooks = Some(hooks);
        self
    }

    /// Ships the journal from other members when installing a snapshot.
    pub fn with_shipping(mut self, shipping: Shipping) -> JournalStateMachine {
        self.shipping = Some(shipping);
        self
    }

    /// Whether the journal holds the entry `log_id`.
    fn holds(&self, log_id: LogId) -> bool {
        matches!(self.group.record_header_by_index(log_id.index), Ok(Some(h)) if h.term == log_id.leader_id.term)
    }

    /// Pulls the journal up to `until` (just past `last`'s record) from the snapshot's other
    /// members, in turn, until it holds `last`.
    async fn ship(&self, meta: &SnapshotMeta, last: LogId, until: u64) -> io::Result<()> {
        use super::super::master_slave::{ReplicaRequest, ReplicaResponse};
        use super::super::pull::{self, ReadAnswer, ReadRequest};
        let Some(shipping) = &self.shipping else {
            return Err(io::Error::other(
                "this replica cannot ship a journal (no peers configured)",
            ));
        };
        let sources: Vec<(u64, String)> = meta
            .last_membership
            .membership()
            .nodes()
            .filter(|(id, _)| **id != shipping.me)
            .map(|(id, node)| (*id, node.addr.clone()))
            .collect();
        let mut errors = Vec::new();
        for (id, addr) in sources {
            let mut shipped = 0u64;
            let result: Result<(), ShipError> = async {
                loop {
                    if self.holds(last) {
                        return Ok(());
                    }
                    let mut request = ReadRequest::continuing(&self.group, 4 << 20);
                    request.until = Some(until);
                    let answer = (shipping.call)(
                        addr.clone(),
                        shipping.group,
                        ReplicaRequest::Read(request),
                        std::time::Duration::from_secs(30),
                    )
                    .await?;
                    let answer = match answer {
                        ReplicaResponse::Read { answer, .. } => answer,
                        ReplicaResponse::Failed { reason } => {
                            return Err(ShipError::Failed(reason));
                        }
                        other => return Err(ShipError::Unexpected(format!("{other:?}"))),
                    };
                    if let ReadAnswer::Records { records, .. } = &answer {
                        if records.is_empty() {
                            return Err(ShipError::Short {
                                held: self.group.positions().1,
                                until,
                            });
                        }
                        shipped += records.len() as u64;
                    }
                    // A full disk here waits for space, as raft's own writes do.
                    let answer = &answer;
                    while_disk_full(
                        &self.group,
                        "shipping the journal for a snapshot",
                        || async {
                            pull::apply(&self.group, answer.clone())
                                .await
                                .map_err(|e| match e {
                                    pull::PullError::Append(a) => append_error(a),
                                    other => io::Error::other(other),
                                })
                        },
                    )
                    .await
                    .map_err(ShipError::Apply)?;
                }
            }
            .await;
            match result {
                Ok(()) => {
                    tracing::info!(group = shipping.group, source = id, bytes = shipped, last = %last, "shipped the journal for a snapshot");
                    return Ok(());
                }
                Err(e) => errors.push(format!("broker {id} ({addr}): {e}")),
            }
        }
        Err(io::Error::other(format!(
            "no member could ship the journal up to entry {last}: {}",
            errors.join("; ")
        )))
    }

    /// Calls `hook` with every command applied from now on.
    pub fn with_hook(mut self, hook: ApplyHook) -> JournalStateMachine {
        self.hook = Some(hook);
        self
    }

    /// Saves the applied state, without fsync, unless the file holds a later one already.
    fn save(&self, state: &AppliedState) -> io::Result<()> {
        let mut saved = self.saved.lock().expect("saved-state lock poisoned");
        if saved.at.is_some() && saved.last_applied >= state.last_applied {
            return Ok(());
        }
        store_json(&self.path, state, false)?;
        *saved = SavedState {
            last_applied: state.last_applied,
            at: Some(std::time::Instant::now()),
        };
        Ok(())
    }

    /// Whether applying should save now: a membership change at once, else at most every
    /// [`SAVE_EVERY`].
    fn save_due(&self, membership_changed: bool) -> bool {
        let saved = self.saved.lock().expect("saved-state lock poisoned");
        membership_changed || saved.at.is_none_or(|at| at.elapsed() >= SAVE_EVERY)
    }
}

impl RaftStateMachine<TypeConfig> for JournalStateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = JournalStateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.state.lock().expect("state machine lock poisoned");
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<openraft::storage::EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        let mut state = self
            .state
            .lock()
            .expect("state machine lock poisoned")
            .clone();
        let mut watermark = None;
        let mut responses = Vec::new();
        let mut membership_changed = false;
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            state.last_applied = Some(entry.log_id);
            let mut result = CommandResult::default();
            match &entry.payload {
                EntryPayload::Membership(m) => {
                    membership_changed = true;
                    state.membership = StoredMembership::new(Some(entry.log_id), m.clone())
                }
                EntryPayload::Normal(Command::Batch { .. }) => {
                    if let Some(h) = self
                        .group
                        .record_header_by_index(entry.log_id.index)
                        .map_err(io::Error::other)?
                    {
                        result.base_offset = Some(h.base_offset);
                        result.append_time_ms = Some(h.append_time_ms);
                    }
                }
                EntryPayload::Normal(Command::Commit { .. } | Command::Carry { .. })
                | EntryPayload::Blank => {}
                EntryPayload::Normal(command @ Command::Catalog(_)) => {
                    if let Some(hook) = &self.hook {
                        // The hook writes the catalog and the new partitions' indexes
                        // (applying again is a no-op for what was done).
                        while_disk_full(&self.group, "applying a catalog change", || async {
                            hook(command)
                        })
                        .await?;
                    }
                }
            }
            // Applying an entry commits its record: consumers may now read it.
            if let Some(end) = self.group.end_of_record(entry.log_id.index) {
                watermark = Some(end);
            }
            if let Some(r) = responder {
                responses.push((r, result));
            }
        }
        if let Some(end) = watermark {
            self.group.set_watermark(end);
        }
        // Waited out on a full disk. Not on every apply: a purge relies on this file
        // covering what it purges, which the snapshot the purge follows saved.
        if self.save_due(membership_changed) {
            while_disk_full(&self.group, "saving the applied state", || async {
                self.save(&state)
            })
            .await?;
        }
        *self.state.lock().expect("state machine lock poisoned") = state;
        for (r, result) in responses {
            r.send(result);
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let snap: SnapshotState = serde_json::from_slice(&data).map_err(io::Error::other)?;
        if snap.applied.last_applied != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot data does not match its metadata",
            ));
        }
        // Metadata first: the journal's records belong to topics it names.
        if let (Some(metadata), Some(hooks)) = (&snap.metadata, &self.snapshot_hooks) {
            while_disk_full(&self.group, "restoring a snapshot's catalog", || async {
                (hooks.restore)(metadata)
            })
            .await?;
        }
        if let Some(last) = meta.last_log_id {
            if !self.holds(last) {
                match (snap.position, &self.shipping) {
                    (Some(until), Some(_)) => self.ship(meta, last, until).await?,
                    // Nowhere to ship from (a replica without peers, as in the storage
                    // conformance suite): the snapshot carries the state machine only.
                    _ => tracing::warn!(last = %last, "installing a snapshot without its journal"),
                }
            }
            if let Some(end) = self.group.end_of_record(last.index) {
                self.group.set_watermark(end);
            }
        }
        let installed = snap.applied;
        while_disk_full(&self.group, "saving the applied state", || async {
            self.save(&installed)
        })
        .await?;
        *self.state.lock().expect("state machine lock poisoned") = installed;
        *self.snapshot.lock().expect("snapshot lock poisoned") = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let current = self
            .snapshot
            .lock()
            .expect("snapshot lock poisoned")
            .clone();
        Ok(current.map(|(meta, data)| Snapshot {
            meta,
            snapshot: io::Cursor::new(data),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for JournalStateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let state = self
            .state
            .lock()
            .expect("state machine lock poisoned")
            .clone();
        // The metadata is read after the applied state, so it covers at least what was
        // applied (applying again later is idempotent).
        let metadata = match &self.snapshot_hooks {
            Some(hooks) => Some((hooks.save)()?),
            None => None,
        };
        let snapshot = SnapshotState {
            position: state
                .last_applied
                .and_then(|l| self.group.end_of_record(l.index)),
            applied: state.clone(),
            metadata,
        };
        let data = serde_json::to_vec(&snapshot).map_err(io::Error::other)?;
        // The applied-state file covers the snapshot: the purge that follows it makes the
        // file durable and relies on that (applying saves it only now and then).
        while_disk_full(&self.group, "saving the applied state", || async {
            self.save(&state)
        })
        .await?;
        let meta = SnapshotMeta {
            last_log_id: state.last_applied,
            last_membership: state.membership.clone(),
        };
        *self.snapshot.lock().expect("snapshot lock poisoned") = Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: io::Cursor::new(data),
        })
    }
}
