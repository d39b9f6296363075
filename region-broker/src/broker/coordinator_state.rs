//! The coordinators' state partitions (transactions, consumer groups; delayed delivery's
//! timers keep their own records): one per coordinator kind in every log group, outside
//! the catalog and never mirrored. A coordinator writes each record, keyed by what it is
//! about, as a JSON message with acks=all before acting on it, and a new leader replays
//! every record to rebuild it ([`PerGroup`] holds each log group's state and loads it
//! once per leadership epoch).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use meridian_proto::batch::{self, Message};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Acks, Broker, BrokerError, HostedGroup, now_ms};
use crate::storage::PartitionKey;

/// A coordinator's tick: every `period`, a late tick delayed rather than bunched.
pub(super) fn ticker(period: std::time::Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

impl Broker {
    /// The log groups this broker leads now (whose coordinators run here).
    pub(super) fn led_groups(&self) -> Vec<Arc<HostedGroup>> {
        self.log_groups()
            .into_iter()
            .map(|(_, g)| g)
            .filter(|g| g.check_leader().is_ok())
            .collect()
    }
}

/// The key of a barrier record (see [`PerGroup::lock`]).
pub(super) const BARRIER: &[u8] = b"\x01barrier";

/// Writes `record` about `key_name` into the state partition `state` (acks=all).
pub(super) async fn write<R: Serialize>(
    group: &HostedGroup,
    state: PartitionKey,
    key_name: &str,
    record: &R,
) -> Result<(), BrokerError> {
    let value = serde_json::to_vec(record).map_err(|e| BrokerError::Invalid(e.to_string()))?;
    let message = Message {
        key: Some(Bytes::copy_from_slice(key_name.as_bytes())),
        value: Some(Bytes::from(value)),
        headers: Vec::new(),
        timestamp_ms: now_ms(),
    };
    let payload = Bytes::from(batch::encode_batch(&[message]));
    group
        .append((state, 1, payload), Acks::All, 0)
        .await
        .map_err(|e| BrokerError::Replication(format!("writing a coordinator record: {e}")))?;
    Ok(())
}

/// Hands every record of the state partition `state` to `apply`, in order (one that does
/// not decode is logged and skipped).
pub(super) fn replay<R: DeserializeOwned>(
    group: &HostedGroup,
    state: PartitionKey,
    mut apply: impl FnMut(R),
) -> Result<(), BrokerError> {
    let storage = group.storage();
    let (mut next, end) = storage.offsets(state).map_err(BrokerError::Read)?;
    while next < end {
        let batches = storage
            .read(state, next, 1 << 20)
            .map_err(BrokerError::Read)?;
        if batches.is_empty() {
            break;
        }
        for b in batches {
            next = b.base_offset + u64::from(b.count);
            let messages = batch::decode_batch(&b.payload, b.count as usize)
                .map_err(|e| BrokerError::Invalid(format!("coordinator state: {e}")))?;
            for m in messages {
                let Some(value) = m.value else { continue };
                match serde_json::from_slice::<R>(&value) {
                    Ok(record) => apply(record),
                    Err(e) => {
                        tracing::warn!(log_group = group.id(), partition = ?state, error = %e, "a coordinator record does not decode; skipped")
                    }
                }
            }
        }
    }
    Ok(())
}

/// A coordinator's state in each log group this broker leads (transactions, consumer
/// groups, delayed delivery): loaded once per leadership epoch of its group, behind an
/// async lock that serializes its decisions with their writes.
#[derive(Debug)]
pub(super) struct PerGroup<T>(std::sync::Mutex<HashMap<u32, Arc<tokio::sync::Mutex<Loaded<T>>>>>);

impl<T> Default for PerGroup<T> {
    fn default() -> Self {
        PerGroup(Default::default())
    }
}

/// One log group's coordinator state; derefs to it (always loaded once locked through
/// [`PerGroup::lock`]).
#[derive(Debug)]
pub(super) struct Loaded<T> {
    /// The leadership epoch it was loaded in (`None`: load again).
    epoch: Option<u64>,
    state: Option<T>,
}

impl<T> Loaded<T> {
    /// Makes the next lock load it again (what it did may not have happened).
    pub(super) fn unload(&mut self) {
        self.epoch = None;
    }

    /// Whether it was loaded (in some epoch).
    pub(super) fn is_loaded(&self) -> bool {
        self.epoch.is_some() && self.state.is_some()
    }
}

impl<T> std::ops::Deref for Loaded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.state
            .as_ref()
            .expect("a coordinator state is loaded once locked")
    }
}

impl<T> std::ops::DerefMut for Loaded<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.state
            .as_mut()
            .expect("a coordinator state is loaded once locked")
    }
}

/// A locked coordinator state.
pub(super) type Locked<T> = tokio::sync::OwnedMutexGuard<Loaded<T>>;

impl<T> PerGroup<T> {
    /// The state of `group` (this broker must lead it), locked; unless it was loaded in the
    /// group's current leadership epoch, the group first holds and applies every record
    /// written before this broker led it, then the state is rebuilt by `load` (a replay of
    /// the state partition `barrier_key`). `what` and `count` name it in the log.
    ///
    /// "Every record written before": a barrier record (no value, skipped by replays) is
    /// written to the state partition at acks=all and the load waits until it is visible.
    /// A leader's raft can know less than its log holds — a broker restarted in the term
    /// it led re-establishes that term without a new entry, so a linearizable read can
    /// return before records it wrote before the restart are committed again — and a load
    /// that missed its own last records would act on them a second time.
    pub(super) async fn lock(
        &self,
        broker: &Broker,
        (group, barrier_key): (&HostedGroup, PartitionKey),
        load: impl FnOnce() -> Result<T, BrokerError>,
        (what, count): (&str, impl Fn(&T) -> usize),
    ) -> Result<Locked<T>, BrokerError> {
        group.check_leader().map_err(|e| broker.group_error(e))?;
        let cell = self
            .0
            .lock()
            .expect("coordinator states lock poisoned")
            .entry(group.id())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(Loaded {
                    epoch: None,
                    state: None,
                }))
            })
            .clone();
        let mut loaded = cell.lock_owned().await;
        let epoch = group.epoch();
        if loaded.epoch == Some(epoch) && loaded.state.is_some() {
            return Ok(loaded);
        }
        group
            .ensure_applied()
            .await
            .map_err(|e| broker.group_error(e))?;
        let barrier = Message {
            key: Some(Bytes::from_static(BARRIER)),
            value: None,
            headers: Vec::new(),
            timestamp_ms: now_ms(),
        };
        let payload = Bytes::from(batch::encode_batch(&[barrier]));
        group
            .append((barrier_key, 1, payload), Acks::All, 0)
            .await
            .map_err(|e| broker.group_error(e))?;
        if !group
            .storage()
            .caught_up(std::time::Duration::from_secs(5))
            .await
        {
            return Err(BrokerError::Replication(format!(
                "log group {} has not yet made visible what it committed; the {what} coordinator loads on the next try",
                group.id()
            )));
        }
        let state = load()?;
        tracing::info!(
            log_group = group.id(),
            epoch,
            entries = count(&state),
            "{what} coordinator loaded"
        );
        loaded.state = Some(state);
        loaded.epoch = Some(epoch);
        Ok(loaded)
    }

    /// Every log group's state cell, loaded or not (a caller keeps those of the groups
    /// it leads now: a coordinator it was keeps its old state).
    pub(super) fn cells(&self) -> Vec<(u32, Arc<tokio::sync::Mutex<Loaded<T>>>)> {
        self.0
            .lock()
            .expect("coordinator states lock poisoned")
            .iter()
            .map(|(g, c)| (*g, c.clone()))
            .collect()
    }
}
