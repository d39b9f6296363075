//! Retry and dead letters: the consumer's decision core (messages and the clock in,
//! what to deliver, redeliver, retry or dead-letter out; no I/O).
//!
//! With a [`RetryPolicy`], every message a consumer returns must be acknowledged (`ack`)
//! or negatively acknowledged (`nack`, or not acknowledged within the policy's
//! `ack_timeout`). The group's committed offset in a partition never passes a message
//! that is neither, so a consumer that dies redelivers it.
//!
//! A nacked message is retried `backoff` later, up to `max_attempts` deliveries in all,
//! then moved to the group's dead-letter topic (`GROUP.dlq`) with headers saying why, how
//! often and from where ([`REASON`], [`ATTEMPTS`], [`ORIGIN_TOPIC`], ...):
//!
//! - on a partition without strict order, through the group's retry topic (`GROUP.retry`,
//!   a delayed send: durable, the consumer may die meanwhile); the original is done.
//! - on a strictly ordered topic's partition, in place: the message waits in the consumer,
//!   and so do the later messages *of its key* (a message without a key holds the
//!   keyless ones), while other keys go on; one message per key is out at a time, so a
//!   later one is never processed before an earlier one of its key finished.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use crate::ConsumedMessage;

/// The delivery this is (1 for the first), on a message from the retry topic.
pub const ATTEMPT: &str = "meridian-attempt";
/// Deliveries made before a message was dead-lettered.
pub const ATTEMPTS: &str = "meridian-attempts";
/// Why the last delivery failed (the application's reason, or a processing timeout).
pub const REASON: &str = "meridian-reason";
/// Where the message was first consumed from: topic, partition, offset.
pub const ORIGIN_TOPIC: &str = "meridian-origin-topic";
/// See [`ORIGIN_TOPIC`].
pub const ORIGIN_PARTITION: &str = "meridian-origin-partition";
/// See [`ORIGIN_TOPIC`].
pub const ORIGIN_OFFSET: &str = "meridian-origin-offset";
/// The consumer group that gave up on it.
pub const GROUP: &str = "meridian-group";

/// The group's retry topic.
pub fn retry_topic(group: &str) -> String {
    format!("{group}.retry")
}

/// The group's dead-letter topic.
pub fn dead_letter_topic(group: &str) -> String {
    format!("{group}.dlq")
}

/// How a consumer retries what it nacks.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// The wait before the n-th retry is `backoff[n - 1]` (the last repeats).
    pub backoff: Vec<Duration>,
    /// Deliveries in all (the first included) before the message is dead-lettered.
    pub max_attempts: u32,
    /// A message neither acked nor nacked this long after it was returned is nacked
    /// ("processing timed out"); `None`: never.
    pub ack_timeout: Option<Duration>,
    /// Messages a partition has out (returned, not finished) or held (a strictly ordered
    /// one's waiting keys) at most: fetching it pauses at the bound.
    pub held_max: usize,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            backoff: [1, 5, 10, 30, 60, 120, 300, 600]
                .map(Duration::from_secs)
                .to_vec(),
            max_attempts: 16,
            ack_timeout: None,
            held_max: 10_000,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `n` (1 for the first retry).
    pub fn wait(&self, n: u32) -> Duration {
        let i = (n.max(1) as usize - 1).min(self.backoff.len().saturating_sub(1));
        self.backoff
            .get(i)
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}

/// What to do with a nacked message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Send it to the retry topic, due then, as delivery `attempt`.
    RetryLater {
        /// The delivery it will be.
        attempt: u32,
        /// When (ms since the epoch).
        deliver_at_ms: i64,
    },
    /// It waits here (a strictly ordered partition), holding its key.
    RetryHere {
        /// The delivery it will be.
        attempt: u32,
    },
    /// Attempts exhausted: to the dead-letter topic.
    DeadLetter {
        /// Deliveries made.
        attempts: u32,
    },
}

/// A partition: topic and index.
type TopicPartition = (String, u32);

/// The messages of one key on a strictly ordered partition, oldest first; the front one is
/// out (delivered, not finished) or waiting to be delivered again.
#[derive(Debug, Default)]
struct KeyQueue {
    messages: VecDeque<ConsumedMessage>,
    /// The front's state: out, or due again at (ms); `None`: not delivered.
    front: Option<Front>,
    /// The front's delivery count so far.
    attempt: u32,
}

#[derive(Debug, Clone, Copy)]
enum Front {
    Out,
    DueAt(i64),
}

/// A message delivered and not finished.
#[derive(Debug)]
struct Out {
    /// When it was delivered (ms).
    since: i64,
    /// Which delivery it is.
    attempt: u32,
    message: ConsumedMessage,
}

#[derive(Debug, Default)]
struct Part {
    /// Delivered, not finished, by offset.
    out: BTreeMap<u64, Out>,
    /// Strictly ordered partitions only: the queues by key.
    keys: HashMap<Option<Bytes>, KeyQueue>,
}

impl Part {
    /// Messages this partition has out or holds.
    fn held(&self) -> usize {
        self.out.len() + self.keys.values().map(|q| q.messages.len()).sum::<usize>()
    }
}

/// What the consumer has out and holds, per partition.
#[derive(Debug)]
pub(crate) struct Tracker {
    policy: RetryPolicy,
    parts: BTreeMap<TopicPartition, Part>,
    /// Partitions of strictly ordered topics.
    ordered: std::collections::BTreeSet<TopicPartition>,
}

fn key_of(m: &ConsumedMessage) -> TopicPartition {
    (m.topic.clone(), m.partition)
}

/// The delivery a message from the retry topic is (1 otherwise).
pub(crate) fn attempt_of(m: &ConsumedMessage) -> u32 {
    header(m, ATTEMPT).and_then(|v| v.parse().ok()).unwrap_or(1)
}

fn header<'a>(m: &'a ConsumedMessage, name: &str) -> Option<&'a str> {
    m.headers
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| std::str::from_utf8(v.as_ref()?).ok())
}

impl Tracker {
    pub(crate) fn new(policy: RetryPolicy) -> Tracker {
        Tracker {
            policy,
            parts: BTreeMap::new(),
            ordered: Default::default(),
        }
    }

    pub(crate) fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Marks a partition as one of a strictly ordered topic (retried in place).
    pub(crate) fn set_ordered(&mut self, tp: TopicPartition) {
        self.ordered.insert(tp);
    }

    /// Forgets a partition (given up, or the consumer starts it over).
    pub(crate) fn forget(&mut self, tp: &TopicPartition) {
        self.parts.remove(tp);
    }

    /// Whether fetching `tp` should pause (it holds `held_max` messages).
    pub(crate) fn paused(&self, tp: &TopicPartition) -> bool {
        self.parts
            .get(tp)
            .is_some_and(|p| p.held() >= self.policy.held_max)
    }

    /// Takes fetched messages in; returns those to deliver now (with whatever waiting
    /// message is due again), each marked out.
    pub(crate) fn deliver(
        &mut self,
        fetched: Vec<ConsumedMessage>,
        now_ms: i64,
    ) -> Vec<ConsumedMessage> {
        let mut out = Vec::new();
        for m in fetched {
            let tp = key_of(&m);
            let part = self.parts.entry(tp.clone()).or_default();
            if self.ordered.contains(&tp) {
                part.keys
                    .entry(m.key.clone())
                    .or_default()
                    .messages
                    .push_back(m);
            } else {
                part.out.insert(
                    m.offset,
                    Out {
                        since: now_ms,
                        attempt: attempt_of(&m),
                        message: m.clone(),
                    },
                );
                out.push(m);
            }
        }
        // The front of every ordered key not out: new, or due again.
        for part in self.parts.values_mut() {
            for q in part.keys.values_mut() {
                let ready = match q.front {
                    None => true,
                    Some(Front::DueAt(at)) => at <= now_ms,
                    Some(Front::Out) => false,
                };
                if let (true, Some(m)) = (ready, q.messages.front()) {
                    q.front = Some(Front::Out);
                    q.attempt = q.attempt.max(attempt_of(m) - 1) + 1;
                    let mut m = m.clone();
                    set_attempt(&mut m, q.attempt);
                    part.out.insert(
                        m.offset,
                        Out {
                            since: now_ms,
                            attempt: q.attempt,
                            message: m.clone(),
                        },
                    );
                    out.push(m);
                }
            }
        }
        out.sort_by(|a, b| {
            (&a.topic, a.partition, a.offset).cmp(&(&b.topic, b.partition, b.offset))
        });
        out
    }

    /// Whether some message waits to be delivered again, or a key's next one is ready.
    pub(crate) fn has_ready(&self, now_ms: i64) -> bool {
        self.parts.values().flat_map(|p| p.keys.values()).any(|q| {
            !q.messages.is_empty()
                && match q.front {
                    None => true,
                    Some(Front::DueAt(at)) => at <= now_ms,
                    Some(Front::Out) => false,
                }
        })
    }

    /// The message was processed.
    pub(crate) fn ack(&mut self, m: &ConsumedMessage) {
        self.finish(m);
    }

    /// The message failed: what to do with it. A retry or dead letter the caller made
    /// durable is then [`Tracker::handed_off`]; a retry here needs nothing more.
    pub(crate) fn nack(&mut self, m: &ConsumedMessage, now_ms: i64) -> Verdict {
        let tp = key_of(m);
        let attempt = self
            .parts
            .get(&tp)
            .and_then(|p| p.out.get(&m.offset))
            .map_or_else(|| attempt_of(m), |o| o.attempt);
        if attempt >= self.policy.max_attempts {
            return Verdict::DeadLetter { attempts: attempt };
        }
        let wait = self.policy.wait(attempt).as_millis() as i64;
        if self.ordered.contains(&tp) {
            if let Some(part) = self.parts.get_mut(&tp) {
                part.out.remove(&m.offset);
                if let Some(q) = part.keys.get_mut(&m.key)
                    && q.messages.front().is_some_and(|f| f.offset == m.offset)
                {
                    q.front = Some(Front::DueAt(now_ms + wait));
                }
            }
            return Verdict::RetryHere {
                attempt: attempt + 1,
            };
        }
        Verdict::RetryLater {
            attempt: attempt + 1,
            deliver_at_ms: now_ms + wait,
        }
    }

    /// A nacked message is safe elsewhere (the retry or dead-letter topic): done here.
    pub(crate) fn handed_off(&mut self, m: &ConsumedMessage) {
        self.finish(m);
    }

    fn finish(&mut self, m: &ConsumedMessage) {
        let Some(part) = self.parts.get_mut(&key_of(m)) else {
            return;
        };
        part.out.remove(&m.offset);
        if let Some(q) = part.keys.get_mut(&m.key)
            && q.messages.front().is_some_and(|f| f.offset == m.offset)
        {
            q.messages.pop_front();
            q.front = None;
            q.attempt = 0;
            if q.messages.is_empty() {
                part.keys.remove(&m.key);
            }
        }
    }

    /// Messages out past the ack timeout at `now_ms`.
    pub(crate) fn timed_out(&self, now_ms: i64) -> Vec<ConsumedMessage> {
        let Some(limit) = self.policy.ack_timeout else {
            return Vec::new();
        };
        let limit = limit.as_millis() as i64;
        self.parts
            .values()
            .flat_map(|p| p.out.values())
            .filter(|o| now_ms - o.since > limit)
            .map(|o| o.message.clone())
            .collect()
    }

    /// The lowest offset of `tp` not finished (out, or held here): the group's commit must
    /// not pass it.
    pub(crate) fn unfinished(&self, tp: &TopicPartition) -> Option<u64> {
        let p = self.parts.get(tp)?;
        let out = p.out.keys().next().copied();
        let held = p
            .keys
            .values()
            .filter_map(|q| q.messages.front().map(|m| m.offset))
            .min();
        match (out, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Sets a message's delivery count header (a redelivery in place says which it is).
fn set_attempt(m: &mut ConsumedMessage, attempt: u32) {
    m.headers.retain(|(k, _)| k != ATTEMPT);
    if attempt > 1 {
        m.headers
            .push((ATTEMPT.to_owned(), Some(Bytes::from(attempt.to_string()))));
    }
}

/// The headers of a retried or dead-lettered copy of `m`: its own, with where it came
/// from (kept from its first consumption), the reason, and `extra`.
pub(crate) fn copy_headers(
    m: &ConsumedMessage,
    reason: &str,
    extra: &[(&str, String)],
) -> Vec<(String, Option<Bytes>)> {
    let origin = [
        (ORIGIN_TOPIC, m.topic.clone()),
        (ORIGIN_PARTITION, m.partition.to_string()),
        (ORIGIN_OFFSET, m.offset.to_string()),
    ];
    let mut out: Vec<(String, Option<Bytes>)> = m
        .headers
        .iter()
        .filter(|(k, _)| ![ATTEMPT, ATTEMPTS, REASON, GROUP].contains(&k.as_str()))
        .cloned()
        .collect();
    for (k, v) in origin {
        if header(m, k).is_none() {
            out.push((k.to_owned(), Some(Bytes::from(v))));
        }
    }
    out.push((REASON.to_owned(), Some(Bytes::from(reason.to_owned()))));
    for (k, v) in extra {
        out.push(((*k).to_owned(), Some(Bytes::from(v.clone()))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(topic: &str, offset: u64, key: Option<&str>) -> ConsumedMessage {
        ConsumedMessage {
            topic: topic.into(),
            partition: 0,
            offset,
            key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
            value: Some(Bytes::from(format!("v{offset}"))),
            headers: Vec::new(),
            timestamp_ms: 0,
            append_time_ms: 0,
            origin_region: String::new(),
            origin_position: 0,
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: vec![Duration::from_millis(100), Duration::from_millis(300)],
            max_attempts: 3,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn unordered_retries_later_through_the_retry_topic_then_dead_letters() {
        let mut t = Tracker::new(policy());
        let got = t.deliver(vec![msg("t", 0, None), msg("t", 1, None)], 0);
        assert_eq!(got.len(), 2);
        assert_eq!(
            t.nack(&got[0], 10),
            Verdict::RetryLater {
                attempt: 2,
                deliver_at_ms: 110
            }
        );
        assert_eq!(
            t.unfinished(&("t".into(), 0)),
            Some(0),
            "not yet handed off"
        );
        t.handed_off(&got[0]);
        t.ack(&got[1]);
        assert_eq!(t.unfinished(&("t".into(), 0)), None);
        // Its retried copy, delivery 3, is the last.
        let mut again = msg("g.retry", 0, None);
        again.headers = copy_headers(&got[0], "boom", &[(ATTEMPT, "3".into())]);
        let again = t.deliver(vec![again], 500).remove(0);
        assert_eq!(t.nack(&again, 600), Verdict::DeadLetter { attempts: 3 });
        let dlq = copy_headers(&again, "boom", &[(ATTEMPTS, "3".into())]);
        let h = |k: &str| {
            dlq.iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| String::from_utf8(v.clone().unwrap().to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(h(ORIGIN_TOPIC), ["t"], "where it was first consumed, once");
        assert_eq!(h(ORIGIN_OFFSET), ["0"]);
        assert_eq!(h(REASON), ["boom"]);
        assert_eq!(h(ATTEMPTS), ["3"]);
    }

    #[test]
    fn an_ordered_key_waits_for_its_retry_while_other_keys_go_on() {
        let mut t = Tracker::new(policy());
        t.set_ordered(("t".into(), 0));
        let fetched = vec![
            msg("t", 0, Some("a")),
            msg("t", 1, Some("a")),
            msg("t", 2, Some("b")),
            msg("t", 3, Some("b")),
        ];
        let got = t.deliver(fetched, 0);
        let offsets: Vec<u64> = got.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, [0, 2], "one per key at a time");
        assert_eq!(t.nack(&got[0], 0), Verdict::RetryHere { attempt: 2 });
        t.ack(&got[1]);
        // b goes on; a waits its backoff.
        let got = t.deliver(Vec::new(), 50);
        assert_eq!(got.iter().map(|m| m.offset).collect::<Vec<_>>(), [3]);
        assert_eq!(t.unfinished(&("t".into(), 0)), Some(0));
        t.ack(&got[0]);
        // a's first comes again, as delivery 2; then its second.
        let got = t.deliver(Vec::new(), 100);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].offset, attempt_of(&got[0])), (0, 2));
        t.ack(&got[0]);
        let got = t.deliver(Vec::new(), 100);
        assert_eq!(got.iter().map(|m| m.offset).collect::<Vec<_>>(), [1]);
        t.ack(&got[0]);
        assert_eq!(t.unfinished(&("t".into(), 0)), None);
    }

    #[test]
    fn a_message_out_past_the_ack_timeout_is_due_for_a_nack() {
        let mut t = Tracker::new(RetryPolicy {
            ack_timeout: Some(Duration::from_millis(500)),
            ..policy()
        });
        let got = t.deliver(vec![msg("t", 0, None), msg("t", 1, None)], 0);
        t.ack(&got[1]);
        assert!(t.timed_out(500).is_empty(), "not yet");
        let late = t.timed_out(501);
        assert_eq!(late.iter().map(|m| m.offset).collect::<Vec<_>>(), [0]);
        assert!(matches!(
            t.nack(&late[0], 501),
            Verdict::RetryLater { attempt: 2, .. }
        ));
    }

    #[test]
    fn a_partition_pauses_at_its_held_bound() {
        let mut t = Tracker::new(RetryPolicy {
            held_max: 2,
            ..policy()
        });
        let tp = ("t".to_string(), 0);
        let got = t.deliver(vec![msg("t", 0, None), msg("t", 1, None)], 0);
        assert!(t.paused(&tp), "two out, the bound");
        t.ack(&got[0]);
        assert!(!t.paused(&tp));
    }

    proptest! {
        /// On an ordered partition, whatever the application acks or nacks and when: each
        /// key's messages finish in offset order, every message finishes (acked or dead-
        /// lettered) exactly once, and the commit bound never passes an unfinished one.
        #[test]
        fn ordered_keys_finish_in_order_and_the_commit_never_passes_one(
            keys in proptest::collection::vec(0u8..4, 1..60),
            fails in proptest::collection::vec(any::<bool>(), 200),
        ) {
            let mut t = Tracker::new(policy());
            t.set_ordered(("t".into(), 0));
            let all: Vec<ConsumedMessage> = keys
                .iter()
                .enumerate()
                .map(|(o, k)| msg("t", o as u64, Some(&k.to_string())))
                .collect();
            let mut now = 0;
            let mut next = 0usize;
            let mut finished: Vec<u64> = Vec::new();
            let mut step = 0usize;
            while finished.len() < all.len() {
                prop_assert!(step < 10_000, "stuck");
                let fetched: Vec<_> = all[next..all.len().min(next + 5)].to_vec();
                next = all.len().min(next + 5);
                now += 150;
                for m in t.deliver(fetched, now) {
                    let bound = t.unfinished(&("t".into(), 0)).unwrap();
                    prop_assert!(finished.iter().all(|f| *f != m.offset), "delivered after it finished");
                    prop_assert!(bound <= m.offset);
                    if fails[step % fails.len()] {
                        match t.nack(&m, now) {
                            Verdict::DeadLetter { .. } => { t.handed_off(&m); finished.push(m.offset); }
                            Verdict::RetryHere { .. } => {}
                            Verdict::RetryLater { .. } => prop_assert!(false, "ordered retries here"),
                        }
                    } else {
                        t.ack(&m);
                        finished.push(m.offset);
                    }
                    step += 1;
                }
            }
            let mut sorted = finished.clone();
            sorted.sort_unstable();
            sorted.dedup();
            prop_assert_eq!(sorted.len(), all.len(), "each finishes once");
            for k in 0..4u8 {
                let of_key: Vec<u64> = finished
                    .iter()
                    .copied()
                    .filter(|o| keys[*o as usize] == k)
                    .collect();
                prop_assert!(of_key.windows(2).all(|w| w[0] < w[1]), "key {} out of order: {:?}", k, of_key);
            }
            prop_assert_eq!(t.unfinished(&("t".into(), 0)), None);
        }
    }
}
