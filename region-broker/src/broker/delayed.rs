//! Delayed delivery: a produce with a deliver-at time is held as a *timer* by the
//! partition's log group and appended to the partition when it is due, at a new offset,
//! visible from then on (the consumer sees the producer's timestamp and the fire's append
//! time).
//!
//! Where timers live: every log group's partition [`TIMERS_KEY`] (outside the catalog,
//! never mirrored; index directory [`TIMERS_TOPIC`]). A timer is one record there, written
//! at the produce's ack level before the produce is answered: its destination, its
//! deliver-at time and the batch as the producer sent it. The record's offset is the
//! timer's id. So timers are replicated with the log group, survive restarts and leader
//! changes, and cost memory only as a key each in the decision core ([`schedule`]).
//!
//! Firing (the leader, `run_delayed`, every [`TICK`]): the due timers' batches are read
//! back, merged per destination partition (messages unchanged, in due order), and a
//! [`schedule::Round`] record naming them and each partition's end is written *before*
//! the merged batches are appended. A new leader replays the timers partition (from the
//! checkpoint [`LOW`]: every timer below it has fired) and checks the last round: a merged
//! batch it does not find at or after the recorded end was never appended (the old leader
//! died between the two writes), and its timers fire again. So a timer fires once.
//!
//! Across regions, the fired batch is an ordinary local batch: the mirror ships it at its
//! fire time, so the other regions see it then too.

pub mod schedule;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::batch::{self, Message};
use schedule::{Fire, Limits, Round, Schedule, Timer};

use super::coordinator_state::{Locked, PerGroup};
use super::{Acks, Broker, BrokerError, HostedGroup, Produced, now_ms};
use crate::storage::PartitionKey;

/// The id of every log group's timers partition; the catalog never gives it.
pub const TIMERS_TOPIC_ID: u32 = u32::MAX - 2;
/// Its name (its index directory).
pub const TIMERS_TOPIC: &str = "__timers";
/// Its partition key in each log group.
pub const TIMERS_KEY: PartitionKey = (TIMERS_TOPIC_ID, 0);
/// The pseudo consumer offset on the timers partition below which every timer has fired
/// (a replay starts there). `\u{1}` starts names no consumer group can have, which
/// listings leave out.
const LOW: &str = "\u{1}delayed/low";
/// How often the leader looks for due timers.
const TICK: Duration = Duration::from_millis(10);
/// How often the checkpoint moves.
const CHECKPOINT: Duration = Duration::from_secs(5);
/// A timer record's key; a round record's.
const TIMER: &[u8] = b"timer";
const ROUND: &[u8] = b"round";

/// The schedules of the log groups this broker leads.
#[derive(Debug, Default)]
pub struct Delayed {
    limits: Limits,
    loaded: PerGroup<Timers>,
}

/// One log group's timers as its leader holds them.
#[derive(Debug)]
struct Timers {
    schedule: Schedule,
    /// The next offset of the timers partition to read.
    next: u64,
    /// The checkpoint last written, and when.
    low: u64,
    low_at_ms: i64,
    /// When timers were last looked at for re-arming.
    aged_at_ms: i64,
}

/// A timer as its record holds it.
struct TimerRecord {
    deliver_at_ms: i64,
    destination: PartitionKey,
    count: u32,
    /// The batch as the producer sent it.
    payload: Bytes,
    /// When the timer was first written (its record's message timestamp, kept by a
    /// re-armed copy, so the copy's bytes are the same whoever writes them).
    stamped_ms: i64,
}

impl TimerRecord {
    fn encode(&self) -> Bytes {
        let header = |k: &str, v: String| (k.to_owned(), Some(Bytes::from(v)));
        Bytes::from(batch::encode_batch(&[Message {
            key: Some(Bytes::from_static(TIMER)),
            value: Some(self.payload.clone()),
            headers: vec![
                header("deliver-at", self.deliver_at_ms.to_string()),
                header("topic-id", self.destination.0.to_string()),
                header("partition", self.destination.1.to_string()),
                header("count", self.count.to_string()),
            ],
            timestamp_ms: self.stamped_ms,
        }]))
    }

    fn decode(m: &Message) -> Option<TimerRecord> {
        let header = |k: &str| -> Option<&str> {
            m.headers
                .iter()
                .find(|(name, _)| name == k)
                .and_then(|(_, v)| std::str::from_utf8(v.as_ref()?).ok())
        };
        Some(TimerRecord {
            deliver_at_ms: header("deliver-at")?.parse().ok()?,
            destination: (
                header("topic-id")?.parse().ok()?,
                header("partition")?.parse().ok()?,
            ),
            count: header("count")?.parse().ok()?,
            payload: m.value.clone()?,
            stamped_ms: m.timestamp_ms,
        })
    }
}

/// Due timers' messages merged into one batch for one partition.
struct Merge {
    timers: Vec<Timer>,
    messages: Vec<Message>,
    /// Their batches' bytes.
    bytes: usize,
}

/// A record of the timers partition.
enum Entry {
    Timer(u64, TimerRecord),
    Round(Round),
}

impl Broker {
    /// Holds a batch for `partition` of `topic` until `deliver_at_ms`: written as a timer
    /// at the ack level, answered with the timer's id as `base_offset`.
    pub async fn produce_delayed(
        &self,
        (topic, partition): (&str, u32),
        messages: Vec<Message>,
        acks: Option<Acks>,
        epoch: u64,
        deliver_at_ms: i64,
    ) -> Result<Produced, BrokerError> {
        let topic = self.topic(topic)?;
        let acks = acks.unwrap_or(topic.acks);
        let (group, key) = self.locate(&topic, partition)?;
        if let Some(home) = &topic.home {
            self.check_home(&topic.name, home)?;
        }
        let (count, payload, _) = self.encode_produce(&topic, messages, None)?;
        {
            let loaded = self.delayed_state(&group).await?;
            loaded.schedule.admit(deliver_at_ms, now_ms())?;
        }
        let record = TimerRecord {
            deliver_at_ms,
            destination: key,
            count,
            payload,
            stamped_ms: now_ms(),
        }
        .encode();
        let produced = group
            .append((TIMERS_KEY, 1, record), acks, epoch)
            .await
            .map_err(|e| self.group_error(e))?;
        metrics::counter!("meridian_delayed_scheduled_total").increment(1);
        Ok(produced)
    }

    /// Fires due timers in the log groups this broker leads, every [`TICK`].
    pub async fn run_delayed(self: Arc<Self>) {
        let mut tick = super::coordinator_state::ticker(TICK);
        loop {
            tick.tick().await;
            for group in self.led_groups() {
                if let Err(e) = self.fire_round(&group).await {
                    tracing::warn!(log_group = group.id(), error = %e, "delayed messages not fired this round; retried");
                }
            }
        }
    }

    /// One round in `group`: reads new timers, fires the due ones, moves the checkpoint.
    async fn fire_round(&self, group: &HostedGroup) -> Result<(), BrokerError> {
        let mut loaded = self.delayed_state(group).await?;
        let storage = group.storage().clone();
        let from = loaded.next;
        let (next, entries) = tokio::task::spawn_blocking(move || read_entries(&storage, from))
            .await
            .map_err(|e| BrokerError::Replication(format!("reading timers failed: {e}")))??;
        loaded.next = next;
        for entry in entries {
            match entry {
                Entry::Timer(id, t) => loaded.schedule.add((t.deliver_at_ms, id)),
                Entry::Round(r) => loaded.schedule.fired(r),
            }
        }
        metrics::gauge!("meridian_delayed_pending", "log_group" => group.id().to_string())
            .set(loaded.schedule.len() as f64);
        let now = now_ms();
        let due = loaded.schedule.due(now);
        if !due.is_empty() {
            if let Err(e) = self.fire(group, &mut loaded, &due).await {
                // Whatever was appended or not, the next round reloads and checks.
                loaded.unload();
                return Err(e);
            }
            metrics::counter!("meridian_delayed_fired_total").increment(due.len() as u64);
        }
        if let Err(e) = self.rearm_aging(group, &mut loaded, now).await {
            loaded.unload();
            return Err(e);
        }
        if now - loaded.low_at_ms >= CHECKPOINT.as_millis() as i64 {
            let low = loaded.schedule.lowest_id().unwrap_or(loaded.next);
            if low > loaded.low {
                group
                    .commit_offset(LOW, TIMERS_KEY, low, Vec::new())
                    .await
                    .map_err(|e| self.group_error(e))?;
                loaded.low = low;
            }
            loaded.low_at_ms = now;
        }
        Ok(())
    }

    /// Writes again the timers whose records retention would soon delete (written more
    /// than half the journal's retention ago), so a timer outlives any retention: a round
    /// naming them (their destination the timers partition itself), then their copies,
    /// each the same bytes as the record it replaces. Looked at every quarter of the
    /// retention (every 5 s at most).
    async fn rearm_aging(
        &self,
        group: &HostedGroup,
        loaded: &mut Timers,
        now: i64,
    ) -> Result<(), BrokerError> {
        let Some(retention) = self.group_config.retention else {
            return Ok(());
        };
        let retention = retention.as_millis().min(i64::MAX as u128) as i64;
        if now - loaded.aged_at_ms < (retention / 4).clamp(100, CHECKPOINT.as_millis() as i64) {
            return Ok(());
        }
        loaded.aged_at_ms = now;
        let storage = group.storage();
        // Records before this one were written more than half the retention ago.
        let young = match storage
            .offset_for_time(TIMERS_KEY, now - retention / 2)
            .map_err(BrokerError::Read)?
        {
            Some((offset, _)) => offset,
            None => storage.offsets(TIMERS_KEY).map_err(BrokerError::Read)?.1,
        };
        if young <= loaded.low {
            return Ok(());
        }
        let aging = loaded.schedule.older_than(young);
        if aging.is_empty() {
            return Ok(());
        }
        let end = storage.offsets(TIMERS_KEY).map_err(BrokerError::Read)?.1;
        let mut fires = Vec::new();
        let mut copies = Vec::new();
        for (at, id) in aging {
            let Some(t) = read_timer(storage, id)? else {
                loaded.schedule.forget((at, id));
                continue;
            };
            fires.push(Fire {
                topic_id: TIMERS_KEY.0,
                partition: TIMERS_KEY.1,
                end,
                timers: vec![(at, id)],
            });
            copies.push((TIMERS_KEY, 1, t.encode()));
        }
        if fires.is_empty() {
            return Ok(());
        }
        let n = fires.len();
        self.commit_round(group, loaded, Round { fires }, copies)
            .await?;
        tracing::debug!(
            log_group = group.id(),
            timers = n,
            "timers near the retention written again"
        );
        metrics::counter!("meridian_delayed_rearmed_total").increment(n as u64);
        Ok(())
    }

    /// Fires `due`: the round record first, then the merged batches.
    async fn fire(
        &self,
        group: &HostedGroup,
        loaded: &mut Timers,
        due: &[Timer],
    ) -> Result<(), BrokerError> {
        let storage = group.storage();
        // The due timers' batches, merged per destination (in due order), each merge at
        // most a batch's size.
        let mut merged: BTreeMap<PartitionKey, Vec<Merge>> = BTreeMap::new();
        for &(at, id) in due {
            let Some(t) = read_timer(storage, id)? else {
                tracing::warn!(
                    log_group = group.id(),
                    timer = id,
                    "a timer's record is gone (retention); it is dropped"
                );
                loaded.schedule.forget((at, id));
                continue;
            };
            let messages = batch::decode_batch(&t.payload, t.count as usize)
                .map_err(|e| BrokerError::Invalid(format!("timer {id}: {e}")))?;
            let size = t.payload.len();
            let chunks = merged.entry(t.destination).or_default();
            match chunks.last_mut() {
                Some(m) if m.bytes + size <= self.config.batch_bytes_max => {
                    m.timers.push((at, id));
                    m.messages.extend(messages);
                    m.bytes += size;
                }
                _ => chunks.push(Merge {
                    timers: vec![(at, id)],
                    messages,
                    bytes: size,
                }),
            }
        }
        let mut fires = Vec::new();
        let mut appends = Vec::new();
        for (key, chunks) in merged {
            let end = storage.offsets(key).map_or(0, |(_, end)| end);
            for Merge {
                timers, messages, ..
            } in chunks
            {
                fires.push(Fire {
                    topic_id: key.0,
                    partition: key.1,
                    end,
                    timers,
                });
                let count = messages.len() as u32;
                appends.push((key, count, Bytes::from(batch::encode_batch(&messages))));
            }
        }
        if fires.is_empty() {
            return Ok(());
        }
        self.commit_round(group, loaded, Round { fires }, appends)
            .await
    }

    /// The one way a round happens (a fire or a re-arm): its record first (acks=all), its
    /// timers no longer pending, then its batches. The batches go to different partitions
    /// (or are one partition's chunks): appended together, so one flush carries them. A new
    /// leader checks the last round's batches (`appended`).
    async fn commit_round(
        &self,
        group: &HostedGroup,
        loaded: &mut Timers,
        round: Round,
        batches: Vec<(PartitionKey, u32, Bytes)>,
    ) -> Result<(), BrokerError> {
        write_entry(
            group,
            ROUND,
            serde_json::to_vec(&round).expect("a round encodes"),
        )
        .await?;
        loaded.schedule.fired(round);
        let results = futures_util::future::join_all(
            batches.into_iter().map(|b| group.append(b, Acks::All, 0)),
        )
        .await;
        for r in results {
            r.map_err(|e| self.group_error(e))?;
        }
        Ok(())
    }

    /// The timers of `group`, loaded if this broker has not loaded them in the group's
    /// current leadership epoch; locked.
    async fn delayed_state(&self, group: &HostedGroup) -> Result<Locked<Timers>, BrokerError> {
        self.delayed
            .loaded
            .lock(
                self,
                (group, TIMERS_KEY),
                || load(group, self.delayed.limits.clone()),
                ("delayed delivery", |t: &Timers| t.schedule.len()),
            )
            .await
    }
}

/// The timers rebuilt from the timers partition (from the checkpoint on), the last round
/// checked: timers whose merged batch is not in its partition are pending again.
fn load(group: &HostedGroup, limits: Limits) -> Result<Timers, BrokerError> {
    let storage = group.storage();
    let (earliest, _) = storage.offsets(TIMERS_KEY).map_err(BrokerError::Read)?;
    let start = storage
        .committed_offset(LOW, TIMERS_KEY)
        .unwrap_or(earliest)
        .max(earliest);
    let (end, entries) = read_entries(storage, start)?;
    let mut schedule = Schedule::new(limits);
    for entry in entries {
        match entry {
            Entry::Timer(id, t) => schedule.add((t.deliver_at_ms, id)),
            Entry::Round(r) => schedule.fired(r),
        }
    }
    if let Some(round) = schedule.take_last_round() {
        for fire in round.fires {
            if !appended(storage, &fire)? {
                tracing::warn!(
                    log_group = group.id(),
                    topic_id = fire.topic_id,
                    partition = fire.partition,
                    timers = fire.timers.len(),
                    "a fired batch was never appended (its leader stopped between the round and the append): firing again"
                );
                schedule.refire(&fire.timers);
            }
        }
    }
    Ok(Timers {
        schedule,
        next: end,
        low: start,
        low_at_ms: now_ms(),
        aged_at_ms: 0,
    })
}

/// Whether `fire`'s merged batch is in its partition at or after its recorded end (for
/// a re-arm, whose destination is the timers partition: its timer's copy).
fn appended(storage: &crate::storage::LogGroup, fire: &Fire) -> Result<bool, BrokerError> {
    let key = (fire.topic_id, fire.partition);
    let mut messages = Vec::new();
    let mut copy = None;
    for &(_, id) in &fire.timers {
        let Some(t) = read_timer(storage, id)? else {
            // Gone with retention: nothing to fire again.
            return Ok(true);
        };
        if key == TIMERS_KEY {
            copy = Some(t.encode());
            continue;
        }
        messages.extend(
            batch::decode_batch(&t.payload, t.count as usize)
                .map_err(|e| BrokerError::Invalid(format!("timer {id}: {e}")))?,
        );
    }
    let expected = match copy {
        Some(c) => c.to_vec(),
        None => batch::encode_batch(&messages),
    };
    let Ok((_, latest)) = storage.offsets(key) else {
        // The partition is gone (its topic deleted).
        return Ok(true);
    };
    let mut offset = fire.end;
    while offset < latest {
        let batches = storage
            .read(key, offset, 1 << 20)
            .map_err(BrokerError::Read)?;
        let Some(last) = batches.last() else { break };
        offset = last.base_offset + u64::from(last.count);
        if batches
            .iter()
            .any(|b| b.txn.is_none() && b.origin.is_none() && b.payload == expected[..])
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The timer `id` (`None`: its record is gone).
fn read_timer(
    storage: &crate::storage::LogGroup,
    id: u64,
) -> Result<Option<TimerRecord>, BrokerError> {
    let batches = match storage.read(TIMERS_KEY, id, 1) {
        Ok(b) => b,
        Err(crate::storage::ReadError::OffsetOutOfRange { .. }) => return Ok(None),
        Err(e) => return Err(BrokerError::Read(e)),
    };
    let Some(b) = batches.into_iter().find(|b| b.base_offset == id) else {
        return Ok(None);
    };
    let m = batch::decode_batch(&b.payload, b.count as usize)
        .map_err(|e| BrokerError::Invalid(format!("timer {id}: {e}")))?;
    Ok(m.first().and_then(TimerRecord::decode))
}

/// The timers partition's records from `from` to its end; and the end.
fn read_entries(
    storage: &crate::storage::LogGroup,
    from: u64,
) -> Result<(u64, Vec<Entry>), BrokerError> {
    let (_, end) = storage.offsets(TIMERS_KEY).map_err(BrokerError::Read)?;
    let mut next = from;
    let mut out = Vec::new();
    while next < end {
        let batches = storage
            .read(TIMERS_KEY, next, 1 << 20)
            .map_err(BrokerError::Read)?;
        if batches.is_empty() {
            break;
        }
        for b in batches {
            next = b.base_offset + u64::from(b.count);
            let Ok(messages) = batch::decode_batch(&b.payload, b.count as usize) else {
                tracing::warn!(
                    offset = b.base_offset,
                    "a timers record does not decode; skipped"
                );
                continue;
            };
            let Some(m) = messages.first() else { continue };
            match m.key.as_deref() {
                Some(TIMER) => match TimerRecord::decode(m) {
                    Some(t) => out.push(Entry::Timer(b.base_offset, t)),
                    None => tracing::warn!(
                        offset = b.base_offset,
                        "a timer record does not decode; skipped"
                    ),
                },
                Some(ROUND) => match m.value.as_deref().map(serde_json::from_slice::<Round>) {
                    Some(Ok(r)) => out.push(Entry::Round(r)),
                    _ => tracing::warn!(
                        offset = b.base_offset,
                        "a round record does not decode; skipped"
                    ),
                },
                _ => {}
            }
        }
    }
    Ok((next, out))
}

/// Writes a round record (acks=all).
async fn write_entry(group: &HostedGroup, key: &[u8], value: Vec<u8>) -> Result<(), BrokerError> {
    let message = Message {
        key: Some(Bytes::copy_from_slice(key)),
        value: Some(Bytes::from(value)),
        headers: Vec::new(),
        timestamp_ms: now_ms(),
    };
    group
        .append(
            (TIMERS_KEY, 1, Bytes::from(batch::encode_batch(&[message]))),
            Acks::All,
            0,
        )
        .await
        .map_err(|e| BrokerError::Replication(format!("writing a delayed-delivery round: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log_group::Replication;

    const DEST: PartitionKey = (1, 0);

    fn group(dir: &std::path::Path) -> HostedGroup {
        let storage = crate::storage::LogGroup::open(
            dir,
            crate::storage::GroupConfig {
                segment_bytes: 1 << 20,
                ..crate::storage::GroupConfig::default()
            },
            &[(TIMERS_KEY, TIMERS_TOPIC.into()), (DEST, "t".into())],
        )
        .unwrap();
        HostedGroup::new(0, 1, Arc::new(storage), Replication::Standalone, 0)
    }

    fn payload(v: &str) -> Bytes {
        Bytes::from(batch::encode_batch(&[Message {
            key: None,
            value: Some(Bytes::copy_from_slice(v.as_bytes())),
            headers: Vec::new(),
            timestamp_ms: 1,
        }]))
    }

    async fn timer(g: &HostedGroup, at: i64, v: &str) -> Timer {
        let record = TimerRecord {
            deliver_at_ms: at,
            destination: DEST,
            count: 1,
            payload: payload(v),
            stamped_ms: 1,
        }
        .encode();
        let p = g
            .append((TIMERS_KEY, 1, record), Acks::All, 0)
            .await
            .unwrap();
        (at, p.base_offset)
    }

    /// A new leader's load (after what was written is visible, as `PerGroup::lock` waits).
    async fn reload(g: &HostedGroup) -> Schedule {
        assert!(g.storage().caught_up(Duration::from_secs(5)).await);
        load(g, Limits::default()).unwrap().schedule
    }

    async fn round(g: &HostedGroup, timers: Vec<Timer>) -> Round {
        let end = g.storage().offsets(DEST).unwrap().1;
        let r = Round {
            fires: vec![Fire {
                topic_id: DEST.0,
                partition: DEST.1,
                end,
                timers,
            }],
        };
        write_entry(g, ROUND, serde_json::to_vec(&r).unwrap())
            .await
            .unwrap();
        r
    }

    /// The leader dies between a round's record and its append: the next load finds the
    /// batch missing and fires those timers again; once appended, a load fires nothing.
    #[tokio::test]
    async fn a_round_whose_batch_never_landed_fires_again_and_one_that_did_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let g = group(dir.path());
        let a = timer(&g, 10, "a").await;
        let b = timer(&g, 20, "b").await;
        let c = timer(&g, 99, "c").await;
        assert_eq!(reload(&g).await.len(), 3);

        // The round is recorded; nothing appended (an unrelated batch lands meanwhile).
        round(&g, vec![a, b]).await;
        g.append((DEST, 1, payload("other")), Acks::All, 0)
            .await
            .unwrap();
        let s = reload(&g).await;
        assert_eq!(s.due(50), [a, b], "a and b fire again");
        assert_eq!(s.len(), 3);

        // This time the merged batch lands after its round: nothing fires twice.
        round(&g, vec![a, b]).await;
        let mut merged = batch::decode_batch(&payload("a"), 1).unwrap();
        merged.extend(batch::decode_batch(&payload("b"), 1).unwrap());
        g.append(
            (DEST, 2, Bytes::from(batch::encode_batch(&merged))),
            Acks::All,
            0,
        )
        .await
        .unwrap();
        let s = reload(&g).await;
        assert!(s.due(50).is_empty());
        assert_eq!(s.due(100), [c]);
    }
}
