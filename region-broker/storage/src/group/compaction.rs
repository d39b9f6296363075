//! Compacted partitions in a shared journal (the decisions are `crate::compaction`'s):
//!
//! - the indexer feeds each compacted partition's key map as it indexes, under the
//!   partition's index lock, so a read sees the map and the index agree;
//! - a read leaves out what is no longer live: whole batches are skipped, and a batch with
//!   some live messages names the others ([`ReadBatch::removed`]);
//! - before retention deletes a segment, each live message in it is *carried*: written
//!   again at the journal's end as a [`RecordKind::Carried`] record under its own offset,
//!   which the index then points at. An unreplicated group writes the copies itself; a
//!   replicated one lists them ([`LogGroup::carries_held_back`]) for its leader to commit
//!   through the group's log, as it does for offsets. The segment goes on a later round,
//!   once the copies are indexed and durable.

use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use meridian_proto::batch;
use meridian_proto::record::{self, RecordHeader, RecordKind};
use tokio::sync::{mpsc, oneshot};

use super::{Body, Command, LogGroup, ReadBatch, Shared, closed, now_ms};
use crate::compaction::{Compaction, KeyMap, Seen};
use crate::index::PartitionIndex;
use crate::transactions::{Marker, TxnEvent};
use crate::{AppendError, Appended, PartitionKey, ReadError};

/// What retention found of compacted partitions below a segment boundary.
pub(super) enum Carry {
    /// Nothing live below it: the segment may go.
    Clear,
    /// These live messages must be carried first.
    Needed(Vec<(PartitionKey, u64)>),
    /// Not yet: a carried copy is not durable, or compaction gave up on a partition with
    /// messages below it.
    Wait,
}

impl LogGroup {
    /// Makes partition `key` compacted with `policy`, or (`None`) not any more. The first
    /// time, its key map is built from every message it holds; later calls change the
    /// policy and forget the tombstones whose time is up. Called by the broker on every
    /// retention pass.
    pub fn set_compaction(
        &self,
        key: PartitionKey,
        policy: Option<Compaction>,
    ) -> Result<(), ReadError> {
        let index = self.shared.index(key)?;
        let mut index = index.lock().expect("index lock poisoned");
        let Some(policy) = policy else {
            self.shared
                .compacted
                .lock()
                .expect("compacted lock poisoned")
                .remove(&key);
            index.mark_compacted(false)?;
            return Ok(());
        };
        index.mark_compacted(true)?;
        let mut compacted = self
            .shared
            .compacted
            .lock()
            .expect("compacted lock poisoned");
        if let Some(map) = compacted.get_mut(&key) {
            map.set_policy(policy);
            map.expire_tombstones(now_ms());
            return Ok(());
        }
        let mut map = KeyMap::new(policy, self.shared.config.compaction_keys_max);
        self.shared.rebuild_keys(&index, &mut map)?;
        let (keys, overflowed) = map.stats();
        tracing::info!(dir = %self.shared.dir_display, topic_id = key.0, partition = key.1, keys, overflowed, "partition compacted");
        compacted.insert(key, map);
        Ok(())
    }

    /// A compacted partition's keys held and whether compaction gave up on it (more keys
    /// than `compaction_keys_max`); `None` when it is not compacted.
    pub fn compaction_stats(&self, key: PartitionKey) -> Option<(usize, bool)> {
        self.shared
            .compacted
            .lock()
            .expect("compacted lock poisoned")
            .get(&key)
            .map(KeyMap::stats)
    }

    /// Carried records this replica indexed since it opened (recovery's included).
    pub fn carried_total(&self) -> u64 {
        self.shared
            .carried
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// In a replicated group, the compacted partitions' live messages retention waits to
    /// see carried past the segment it would delete, for the leader to commit
    /// ([`LogGroup::carried_payload`]) through the group's log.
    pub fn carries_held_back(&self) -> Vec<(PartitionKey, u64)> {
        let (boundary, held) = self
            .shared
            .carries_held
            .lock()
            .expect("carries lock poisoned")
            .clone();
        // Those carried since the list was made point past the boundary already.
        held.into_iter()
            .filter(|&(key, offset)| {
                self.shared.index(key).is_ok_and(|index| {
                    let index = index.lock().expect("index lock poisoned");
                    index
                        .get(offset)
                        .ok()
                        .flatten()
                        .is_some_and(|e| e.position < boundary)
                })
            })
            .collect()
    }

    /// What carrying the message at `offset` writes: the record's flags and
    /// [`record::encode_carried`] payload; `None` when the message is gone or no longer
    /// live (nothing to carry).
    pub fn carried_payload(
        &self,
        key: PartitionKey,
        offset: u64,
    ) -> Result<Option<(u8, Bytes)>, ReadError> {
        self.shared.carried_payload(key, offset)
    }

    /// Writes a carried record for the message at `offset` (from
    /// [`LogGroup::carried_payload`]): an unreplicated group's, or a master's.
    pub async fn append_carried(
        &self,
        key: PartitionKey,
        offset: u64,
        flags: u8,
        payload: Bytes,
    ) -> Result<Appended, AppendError> {
        self.send(
            key,
            Body::Carried {
                offset,
                flags,
                payload,
            },
        )
        .await
    }
}

impl Shared {
    /// Builds a key map from the messages `index` points at, in offset order.
    fn rebuild_keys(&self, index: &PartitionIndex, map: &mut KeyMap) -> Result<(), ReadError> {
        let start = self.journal.start();
        let mut seen = HashSet::new();
        for offset in index.earliest()..index.end() {
            let Some(entry) = index.get(offset)? else {
                continue;
            };
            if entry.is_hole() || entry.position < start || !seen.insert(entry.position) {
                continue;
            }
            let (h, payload) = self.journal.read(entry.position)?;
            observe(map, &h, &payload, index.earliest());
        }
        Ok(())
    }

    /// Builds every compacted partition's key map again (after a truncation cut records
    /// they took in).
    pub(super) fn rebuild_compacted(&self) -> Result<(), ReadError> {
        let policies: Vec<(PartitionKey, Compaction)> = self
            .compacted
            .lock()
            .expect("compacted lock poisoned")
            .iter()
            .map(|(k, m)| (*k, m.policy()))
            .collect();
        for (key, policy) in policies {
            let Ok(index) = self.index(key) else {
                continue;
            };
            let index = index.lock().expect("index lock poisoned");
            let mut map = KeyMap::new(policy, self.config.compaction_keys_max);
            self.rebuild_keys(&index, &mut map)?;
            self.compacted
                .lock()
                .expect("compacted lock poisoned")
                .insert(key, map);
        }
        Ok(())
    }

    /// Whether a carried record's message is still live where its partition's keys are
    /// known (a rebuild before they are takes every copy).
    pub(super) fn carried_still_live(
        &self,
        key: PartitionKey,
        h: &RecordHeader,
        payload: &Bytes,
    ) -> bool {
        let Some((_, rest)) = record::split_carried(payload) else {
            return false;
        };
        let Ok(split) = record::split_batch(h.flags, &rest) else {
            return false;
        };
        let Ok(messages) = batch::decode_batch(&split.batch, 1) else {
            return false;
        };
        self.still_live(key, h.base_offset, messages[0].key.as_deref())
    }

    /// Takes a just-indexed record of partition `key` into its key map, if it is compacted.
    pub(super) fn observe_compacted(&self, key: PartitionKey, h: &RecordHeader, payload: &Bytes) {
        if let Some(map) = self
            .compacted
            .lock()
            .expect("compacted lock poisoned")
            .get_mut(&key)
        {
            observe(map, h, payload, 0);
        }
    }

    /// For a read of partition `key` (its index held): `None` when the partition is not
    /// compacted; otherwise the indexes, within batch `b`, of its messages no longer live.
    pub(super) fn removed_in(&self, key: PartitionKey, b: &ReadBatch) -> Option<Vec<u32>> {
        let compacted = self.compacted.lock().expect("compacted lock poisoned");
        let map = compacted.get(&key)?;
        if b.is_marker() {
            return Some(Vec::new());
        }
        let now = now_ms();
        let Ok(messages) = batch::decode_batch(&b.payload, b.count as usize) else {
            // Served as stored: the reader reports the batch that does not decode.
            return Some(Vec::new());
        };
        Some(
            messages
                .iter()
                .enumerate()
                .filter(|(i, m)| !map.is_live(b.base_offset + *i as u64, m.key.as_deref(), now))
                .map(|(i, _)| i as u32)
                .collect(),
        )
    }

    /// What retention must do for compacted partitions before deleting the segments below
    /// `boundary`.
    pub(super) fn compacted_below(&self, boundary: u64) -> io::Result<Carry> {
        let synced = self.progress.lock().expect("progress lock poisoned").synced;
        let start = self.journal.start();
        let indexes: Vec<(PartitionKey, Arc<Mutex<PartitionIndex>>)> = self
            .indexes
            .read()
            .expect("indexes lock poisoned")
            .iter()
            .map(|(k, i)| (*k, i.clone()))
            .collect();
        let mut needed = Vec::new();
        for (key, index) in indexes {
            let index = index.lock().expect("index lock poisoned");
            let compacted = self.compacted.lock().expect("compacted lock poisoned");
            let Some(map) = compacted.get(&key) else {
                // Compacted before a restart, its keys not known again yet: nothing of it
                // may go until they are.
                if index.is_marked_compacted() {
                    return Ok(Carry::Wait);
                }
                continue;
            };
            let (live, pending) = (map.live_offsets(now_ms()), map.pending_offsets());
            drop(compacted);
            let Some(live) = live else {
                // Compaction gave up here: its messages below the boundary pin the segment.
                if index.any_between(start, boundary)? {
                    return Ok(Carry::Wait);
                }
                continue;
            };
            // An open transaction's messages may become their keys' latest at its commit:
            // their segment waits for the transaction to end.
            for offset in pending {
                if index
                    .get(offset)?
                    .is_some_and(|e| !e.is_hole() && e.position < boundary)
                {
                    return Ok(Carry::Wait);
                }
            }
            for offset in live {
                let Some(e) = index.get(offset)? else {
                    continue;
                };
                if e.is_hole() {
                    continue;
                }
                if e.position < boundary {
                    needed.push((key, offset));
                } else if e.carried && e.position + u64::from(e.size) > synced {
                    return Ok(Carry::Wait);
                }
            }
        }
        Ok(if needed.is_empty() {
            Carry::Clear
        } else {
            Carry::Needed(needed)
        })
    }

    /// Carries `needed` (an unreplicated group: written here, waited for).
    pub(super) fn carry_forward(
        &self,
        needed: &[(PartitionKey, u64)],
        tx: &mpsc::Sender<Command>,
    ) -> io::Result<()> {
        for &(key, offset) in needed {
            let Some((flags, payload)) = self
                .carried_payload(key, offset)
                .map_err(|e| io::Error::other(e.to_string()))?
            else {
                continue;
            };
            let (reply, rx) = oneshot::channel();
            tx.blocking_send(Command::Append {
                key,
                body: Body::Carried {
                    offset,
                    flags,
                    payload,
                },
                reply,
            })
            .map_err(|_| closed())?;
            rx.blocking_recv()
                .map_err(|_| closed())?
                .map_err(io::Error::other)?;
            metrics::counter!("meridian_compaction_carried_total").increment(1);
        }
        Ok(())
    }

    fn carried_payload(
        &self,
        key: PartitionKey,
        offset: u64,
    ) -> Result<Option<(u8, Bytes)>, ReadError> {
        let index = self.index(key)?;
        let index = index.lock().expect("index lock poisoned");
        let Some(e) = index.get(offset)? else {
            return Ok(None);
        };
        if e.is_hole() || e.position < self.journal.start() {
            return Ok(None);
        }
        let (h, payload) = self.journal.read(e.position)?;
        let corrupt = |reason| {
            ReadError::Journal(crate::ReadFailure::Corrupt {
                position: e.position,
                reason,
            })
        };
        let (time, flags, body) = match h.kind {
            RecordKind::Carried => {
                let (time, rest) = record::split_carried(&payload)
                    .ok_or_else(|| corrupt("a carried record without its time"))?;
                (time, h.flags, rest)
            }
            _ => (h.append_time_ms, h.flags, payload),
        };
        let split = record::split_batch(flags, &body)
            .map_err(|_| corrupt("a batch's producer or origin prefix does not decode"))?;
        let messages = batch::decode_batch(&split.batch, h.count as usize)
            .map_err(|_| corrupt("a compacted partition's batch does not decode"))?;
        let Some(message) = offset
            .checked_sub(h.base_offset)
            .and_then(|i| messages.into_iter().nth(i as usize))
        else {
            return Err(corrupt("indexed record does not hold the offset"));
        };
        // Superseded (or a tombstone whose time is up) since the list was made: it goes
        // with its segment, never copied past a newer value of its key.
        if !self.still_live(key, offset, message.key.as_deref()) {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut out_flags = 0;
        if let Some(origin) = &split.origin {
            origin.encode(&mut out);
            out_flags = record::FLAG_ORIGIN;
        }
        out.extend_from_slice(&batch::encode_batch(&[message]));
        Ok(Some((out_flags, record::encode_carried(time, &out))))
    }

    /// Notes, for a replicated group, the messages retention waits to see carried past
    /// `boundary`.
    pub(super) fn hold_carries(&self, boundary: u64, needed: Vec<(PartitionKey, u64)>) {
        *self.carries_held.lock().expect("carries lock poisoned") = (boundary, needed);
    }

    /// Whether the message at `offset` of `key` (with `message_key`) is still live where
    /// the partition is compacted (always, where it is not).
    pub(super) fn still_live(
        &self,
        key: PartitionKey,
        offset: u64,
        message_key: Option<&[u8]>,
    ) -> bool {
        self.compacted
            .lock()
            .expect("compacted lock poisoned")
            .get(&key)
            .is_none_or(|map| map.is_live(offset, message_key, now_ms()))
    }
}

/// Feeds a record's messages at or past `from` into `map`.
fn observe(map: &mut KeyMap, h: &RecordHeader, payload: &Bytes, from: u64) {
    match h.kind {
        RecordKind::Carried => {
            let Some((time, rest)) = record::split_carried(payload) else {
                return;
            };
            let Ok(split) = record::split_batch(h.flags, &rest) else {
                return;
            };
            observe_messages(map, h, &split.batch, time, from, None);
        }
        RecordKind::Batch => match TxnEvent::of_record(h, payload) {
            Some(TxnEvent::Marker {
                producer_id,
                marker,
                ..
            }) => map.end_transaction(producer_id, marker == Marker::Commit),
            event => {
                let Ok(split) = record::split_batch(h.flags, payload) else {
                    return;
                };
                let producer = match event {
                    Some(TxnEvent::Batch { producer_id, .. }) => Some(producer_id),
                    _ => None,
                };
                observe_messages(map, h, &split.batch, h.append_time_ms, from, producer);
            }
        },
        _ => {}
    }
}

fn observe_messages(
    map: &mut KeyMap,
    h: &RecordHeader,
    payload: &Bytes,
    append_time_ms: i64,
    from: u64,
    transaction: Option<i64>,
) {
    let Ok(messages) = batch::decode_batch(payload, h.count as usize) else {
        metrics::counter!("meridian_compaction_undecodable_total").increment(1);
        return;
    };
    for (i, m) in messages.iter().enumerate() {
        let offset = h.base_offset + i as u64;
        if offset < from {
            continue;
        }
        map.observe(
            Seen {
                offset,
                key: m.key.as_ref(),
                tombstone: m.value.is_none(),
                append_time_ms,
            },
            transaction,
        );
    }
}
