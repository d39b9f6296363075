//! Check-back: the producers of each producer group keep a stream open to every broker
//! (the `CheckBack` RPC); a coordinator with a native transaction in doubt asks them, one
//! after the other, how the producer's local transaction ended, and takes the first
//! definite answer. Bounded: [`LISTENERS_PER_GROUP_MAX`] streams per group,
//! [`LISTENERS_MAX`] in all, [`QUERIES_MAX`] questions awaiting answers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meridian_proto::v1;
use tokio::sync::{mpsc, oneshot};

use super::coordinator::{Outcome, Transaction};

/// Streams one producer group may keep open to one broker.
pub const LISTENERS_PER_GROUP_MAX: usize = 64;
/// Streams a broker keeps open in all.
pub const LISTENERS_MAX: usize = 4_096;
/// Questions awaiting an answer at once.
pub const QUERIES_MAX: usize = 4_096;
/// Questions queued on one stream before it counts as stalled (it is skipped).
pub const STREAM_QUEUE: usize = 16;
/// How long one producer has to answer.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// The producers listening for check-backs, and the questions awaiting answers.
#[derive(Debug, Default)]
pub struct CheckBacks {
    listeners: Mutex<HashMap<String, Vec<Listener>>>,
    queries: Mutex<HashMap<u64, oneshot::Sender<Option<Outcome>>>>,
    next: AtomicU64,
}

#[derive(Debug)]
struct Listener {
    id: u64,
    queries: mpsc::Sender<v1::CheckBackQuery>,
}

/// Why a stream was not registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The group has as many streams here as it may.
    #[error(
        "producer group {group:?} has {LISTENERS_PER_GROUP_MAX} check-back streams on this broker already: close one first"
    )]
    GroupFull {
        /// The group.
        group: String,
    },
    /// The broker has as many streams as it may.
    #[error("this broker serves {LISTENERS_MAX} check-back streams already: retry later")]
    Full,
}

impl CheckBacks {
    /// Registers a stream answering for `group`: its id and the queries it is to answer.
    pub fn register(
        &self,
        group: &str,
    ) -> Result<(u64, mpsc::Receiver<v1::CheckBackQuery>), RegisterError> {
        let mut listeners = self.listeners.lock().expect("listeners lock poisoned");
        let total: usize = listeners.values().map(Vec::len).sum();
        if total >= LISTENERS_MAX {
            return Err(RegisterError::Full);
        }
        let of_group = listeners.entry(group.to_owned()).or_default();
        if of_group.len() >= LISTENERS_PER_GROUP_MAX {
            return Err(RegisterError::GroupFull {
                group: group.to_owned(),
            });
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        of_group.push(Listener { id, queries: tx });
        metrics::gauge!("meridian_check_back_streams").increment(1.0);
        Ok((id, rx))
    }

    /// Forgets a stream (it closed).
    pub fn unregister(&self, group: &str, id: u64) {
        let mut listeners = self.listeners.lock().expect("listeners lock poisoned");
        if let Some(of_group) = listeners.get_mut(group) {
            let before = of_group.len();
            of_group.retain(|l| l.id != id);
            if of_group.len() < before {
                metrics::gauge!("meridian_check_back_streams").decrement(1.0);
            }
            if of_group.is_empty() {
                listeners.remove(group);
            }
        }
    }

    /// A producer's answer to query `query` (none: it does not know).
    pub fn answer(&self, query: u64, outcome: Option<Outcome>) {
        if let Some(waiting) = self
            .queries
            .lock()
            .expect("queries lock poisoned")
            .remove(&query)
        {
            let _ = waiting.send(outcome);
        }
    }

    /// Asks the producers of `group`, one after the other, how `txn` ended: the first
    /// definite answer, or `None` when nobody knows (no producer listening, none answered
    /// in time, all answered unknown).
    pub async fn ask(&self, group: &str, txn: &Transaction) -> Option<Outcome> {
        let streams: Vec<mpsc::Sender<v1::CheckBackQuery>> = self
            .listeners
            .lock()
            .expect("listeners lock poisoned")
            .get(group)
            .map(|ls| ls.iter().map(|l| l.queries.clone()).collect())
            .unwrap_or_default();
        for stream in streams {
            let query = self.next.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            {
                let mut queries = self.queries.lock().expect("queries lock poisoned");
                if queries.len() >= QUERIES_MAX {
                    return None;
                }
                queries.insert(query, tx);
            }
            let sent = stream.try_send(v1::CheckBackQuery {
                query,
                id: txn.id.clone(),
                producer_id: txn.producer_id,
                producer_epoch: i32::from(txn.epoch),
                number: txn.number,
                participants: super::wire::partitions_to_wire(&txn.participants),
                started_ms: txn.started_ms,
            });
            let answer = match sent {
                Ok(()) => tokio::time::timeout(ANSWER_WAIT, rx)
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten(),
                Err(_) => None,
            };
            self.queries
                .lock()
                .expect("queries lock poisoned")
                .remove(&query);
            if answer.is_some() {
                return answer;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::broker::transactions::coordinator::Phase;

    fn txn() -> Transaction {
        Transaction {
            id: "t".into(),
            producer_id: 7,
            epoch: 1,
            phase: Phase::Ongoing,
            number: 3,
            participants: BTreeSet::new(),
            offset_groups: BTreeSet::new(),
            offsets: Vec::new(),
            timeout_ms: 1000,
            started_ms: Some(5),
            updated_ms: 5,
            producer_group: Some("g".into()),
            check_backs: 1,
            next_check_ms: None,
            decided_by: None,
        }
    }

    #[tokio::test]
    async fn the_first_definite_answer_decides_and_nobody_listening_is_none() {
        let c = std::sync::Arc::new(CheckBacks::default());
        assert_eq!(c.ask("g", &txn()).await, None);
        let (_, mut unsure) = c.register("g").unwrap();
        let (_, mut sure) = c.register("g").unwrap();
        let answering = c.clone();
        tokio::spawn(async move {
            let q = unsure.recv().await.unwrap();
            assert_eq!((q.id.as_str(), q.number), ("t", 3));
            answering.answer(q.query, None);
            let q = sure.recv().await.unwrap();
            answering.answer(q.query, Some(Outcome::Commit));
        });
        assert_eq!(c.ask("g", &txn()).await, Some(Outcome::Commit));
        assert!(c.queries.lock().unwrap().is_empty());
    }

    #[test]
    fn streams_are_bounded_per_group_and_forgotten_when_closed() {
        let c = CheckBacks::default();
        let ids: Vec<u64> = (0..LISTENERS_PER_GROUP_MAX)
            .map(|_| c.register("g").unwrap().0)
            .collect();
        assert!(matches!(
            c.register("g"),
            Err(RegisterError::GroupFull { .. })
        ));
        assert!(c.register("other").is_ok());
        c.unregister("g", ids[0]);
        assert!(c.register("g").is_ok());
    }
}
