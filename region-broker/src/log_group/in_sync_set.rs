//! A group's in-sync replicas (Kafka's ISR) as its leader sees them: a task feeds the
//! tracker (`replication::in_sync`) with what raft or the master knows of the followers;
//! Metadata, `acks=all` with `min_insync_replicas`, and the heartbeats announcing the set to
//! followers read it.

#[allow(clippy::wildcard_imports)]
use super::*;

impl HostedGroup {
    /// Keeps the in-sync tracker fed while the group is hosted and replicates: every
    /// [`OBSERVE_EVERY`], what the leader knows of its followers (how far each holds the
    /// log, when each last answered).
    pub fn watch_in_sync(self: &Arc<Self>) {
        self.every(OBSERVE_EVERY, |group| async move {
            group.observe_in_sync();
        });
    }

    /// Feeds the in-sync tracker one observation (a no-op unless this broker leads).
    pub(super) fn observe_in_sync(&self) {
        let now = std::time::Instant::now();
        let progress = match &self.replication {
            Replication::Standalone | Replication::Starting => None,
            Replication::MasterSlave(ms) => ms.replica_progress(),
            Replication::Raft(raft) => {
                let m = raft.metrics().borrow_watched().clone();
                m.replication.as_ref().map(|replication| {
                    // Acknowledgement times are the raft runtime's instants; the tracker's
                    // are std's: carry the age across.
                    use openraft::Instant as _;
                    let followers = replication
                        .iter()
                        .filter(|(id, _)| **id != m.id)
                        .map(|(id, matched)| crate::replication::in_sync::Follower {
                            id: *id as u32,
                            matched: matched.map(|l| l.index),
                            last_ack: m
                                .heartbeat
                                .as_ref()
                                .and_then(|h| h.get(id).copied().flatten())
                                .and_then(|at| now.checked_sub(at.elapsed())),
                        })
                        .collect();
                    (m.last_log_index.unwrap_or(0), followers)
                })
            }
        };
        let mut tracker = self.in_sync.lock().expect("in-sync lock poisoned");
        match progress {
            Some((end, followers)) => tracker.observe(now, end, &followers),
            // Not leading: what it knew is stale by the time it leads again.
            None => *tracker = InSync::new(REPLICA_LAG),
        }
    }

    /// The replicas in sync (Kafka's ISR), the leader included, when this broker leads the
    /// group; `None` elsewhere. Observes the followers first.
    pub fn in_sync(&self) -> Option<Vec<u32>> {
        self.in_sync_members(true)
    }

    /// [`HostedGroup::in_sync`] as the tracker last observed it (at most
    /// `OBSERVE_EVERY` ago): what each heartbeat announces, without copying raft's metrics
    /// again for every heartbeat of every group.
    pub fn in_sync_as_observed(&self) -> Option<Vec<u32>> {
        self.in_sync_members(false)
    }

    fn in_sync_members(&self, observe: bool) -> Option<Vec<u32>> {
        let leads = match &self.replication {
            Replication::Standalone => return Some(vec![self.me]),
            Replication::Starting => false,
            Replication::MasterSlave(ms) => ms.is_master(),
            Replication::Raft(_) => self.leading().is_some(),
        };
        if !leads {
            return None;
        }
        if observe {
            self.observe_in_sync();
        }
        Some(
            self.in_sync
                .lock()
                .expect("in-sync lock poisoned")
                .members(std::time::Instant::now(), self.me),
        )
    }

    /// Refuses an `acks=all` produce before it is written when fewer replicas are in sync
    /// than `min_insync` (the group's `min_insync_replicas`, or a topic's own, more) asks
    /// for.
    pub(super) fn check_min_insync(&self, min_insync: u32) -> Result<(), LogGroupError> {
        if min_insync <= 1 {
            return Ok(());
        }
        let in_sync = self.in_sync().map_or(0, |m| m.len());
        let needed = min_insync as usize;
        if in_sync < needed {
            return Err(LogGroupError::NotEnoughReplicas {
                log_group: self.id,
                in_sync,
                needed,
            });
        }
        Ok(())
    }
}
