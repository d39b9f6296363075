//! The coordinators' state partitions (transactions, consumer groups): one per
//! coordinator kind in every log group, outside the catalog and never mirrored. A
//! coordinator writes each record, keyed by what it is about, as a JSON message with
//! acks=all before acting on it, and a new leader replays every record to rebuild it.

use bytes::Bytes;
use meridian_proto::batch::{self, Message};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Acks, Broker, BrokerError, HostedGroup, now_ms};
use crate::storage::PartitionKey;

/// The key of a barrier record (see [`reload_in_epoch`]).
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

/// Makes `state` the coordinator of `group`'s current leadership epoch: unless it was
/// loaded in that epoch (`loaded_epoch`), the group first holds and applies every record
/// written before this broker led it, then `state` is rebuilt by `load` (a replay of the
/// state partition `barrier_key`). `what` and `count` name it in the log.
///
/// "Every record written before": a barrier record (no value, skipped by replays) is
/// written to the state partition at acks=all and the load waits until it is visible. A
/// leader's raft can know less than its log holds — a broker restarted in the term it led
/// re-establishes that term without a new entry, so a linearizable read can return
/// before records it wrote before the restart are committed again — and a load that
/// missed its own last records would act on them a second time.
pub(super) async fn reload_in_epoch<T>(
    broker: &Broker,
    (group, barrier_key): (&HostedGroup, PartitionKey),
    loaded_epoch: &mut Option<u64>,
    state: &mut T,
    load: impl FnOnce() -> Result<T, BrokerError>,
    (what, count): (&str, impl Fn(&T) -> usize),
) -> Result<(), BrokerError> {
    let epoch = group.epoch();
    if *loaded_epoch == Some(epoch) {
        return Ok(());
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
    *state = load()?;
    *loaded_epoch = Some(epoch);
    tracing::info!(
        log_group = group.id(),
        epoch,
        entries = count(state),
        "{what} coordinator loaded"
    );
    Ok(())
}
