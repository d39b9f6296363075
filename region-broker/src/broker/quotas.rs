//! Client quotas: Kafka's produce and fetch byte rates per user and client id
//! (`rules.rs`: which applies, and the token bucket). The quotas live in a state topic
//! (`auth.quotas_topic`: key an entity, `user=alice,client-id=<default>`; value its quotas
//! as JSON, empty to delete) that every broker reads whole and follows, spanning every
//! region when managed, as the ACLs do. Each broker meters what it serves itself, as each
//! Kafka broker does: a client spread over three brokers may take three times its rate.

pub mod rules;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rules::{Bucket, Entity, Kind, Metered, QuotaTable};

use super::Broker;
use super::state_topic;

/// Buckets a broker keeps at most (one per metered user and client id with a quota); past
/// it the full ones, then all, are forgotten (a client starts again with a full one).
pub const METERS_MAX: usize = 100_000;

/// Every entity's quotas, and this broker's meters.
#[derive(Debug)]
pub struct Quotas {
    table: RwLock<QuotaTable>,
    meters: Mutex<HashMap<(Kind, Metered), Bucket>>,
    read: state_topic::Read,
    started: AtomicBool,
    writer: state_topic::Writer,
}

/// Why quotas were not set.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// A bad entity, key or value.
    #[error("{0}")]
    Invalid(String),
    /// `auth.quotas_max` entities have quotas already.
    #[error("the region keeps quotas for at most {0} entities (auth.quotas_max): delete one first")]
    Full(usize),
    /// The quotas topic is not read or written now.
    #[error("{0}")]
    Unavailable(String),
}

impl Quotas {
    pub(super) fn new() -> Quotas {
        Quotas {
            table: RwLock::new(QuotaTable::default()),
            meters: Mutex::new(HashMap::new()),
            read: state_topic::Read::new(),
            started: AtomicBool::new(false),
            writer: state_topic::Writer::default(),
        }
    }

    /// A record of the quotas topic: an entity's quotas set, or deleted.
    fn apply(&self, key: &str, value: Option<&[u8]>, max: usize) {
        let Some(entity) = Entity::parse(key) else {
            tracing::warn!(key, "a quotas record whose key names no entity; skipped");
            return;
        };
        let quotas = match value.filter(|v| !v.is_empty()) {
            None => BTreeMap::new(),
            Some(v) => match serde_json::from_slice::<BTreeMap<String, f64>>(v) {
                Ok(q) => q,
                Err(_) => {
                    tracing::warn!(key, "a quotas record that is not a map of rates; skipped");
                    return;
                }
            },
        };
        if !self
            .table
            .write()
            .expect("quotas lock poisoned")
            .set(entity, quotas, max)
        {
            metrics::counter!("meridian_quotas_dropped_total").increment(1);
        }
    }

    /// Every entity with quotas, and them.
    pub fn list(&self) -> Vec<(Entity, BTreeMap<String, f64>)> {
        self.table
            .read()
            .expect("quotas lock poisoned")
            .iter()
            .map(|(e, q)| (e.clone(), q.clone()))
            .collect()
    }

    /// Meters `bytes` of `kind` for `user` with `client_id` at `now`: how long the client
    /// is to be throttled (zero without a quota, or under it).
    pub fn take(
        &self,
        kind: Kind,
        user: &str,
        client_id: &str,
        bytes: u64,
        now: Instant,
    ) -> Duration {
        // Every Produce and Fetch passes here: with no quota set (the usual case) it
        // costs a read lock, not the eight entity lookups of `resolve`.
        let table = self.table.read().expect("quotas lock poisoned");
        if table.is_empty() {
            return Duration::ZERO;
        }
        let Some((rate, metered)) = table.resolve(user, client_id, kind) else {
            return Duration::ZERO;
        };
        drop(table);
        let mut meters = self.meters.lock().expect("meters lock poisoned");
        if meters.len() >= METERS_MAX && !meters.contains_key(&(kind, metered.clone())) {
            meters.retain(|_, b| !b.is_full(rate, now));
            if meters.len() >= METERS_MAX {
                meters.clear();
            }
        }
        let throttle = meters
            .entry((kind, metered))
            .or_insert_with(|| Bucket::new(rate, now))
            .take(rate, bytes, now);
        if !throttle.is_zero() {
            metrics::counter!("meridian_kafka_throttled_total", "kind" => kind.key()).increment(1);
        }
        throttle
    }
}

impl Broker {
    /// Starts reading the quotas topic (once; later calls do nothing).
    pub fn start_quotas(self: &Arc<Self>) {
        if self.quotas.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let broker = self.clone();
        tokio::spawn(async move {
            let topic = broker.config().auth.quotas_topic.clone();
            let max = broker.config().auth.quotas_max;
            let this = broker.clone();
            // Made by the first quota set: a region that never sets one has no such topic.
            state_topic::follow_made(
                broker.clone(),
                topic,
                "auth.quotas_topic",
                false,
                move |key, m| this.quotas.apply(&key, m.value.as_deref(), max),
                &broker.quotas.read,
            )
            .await
        });
    }

    /// The quotas, once the quotas topic has been read (at most 15 s after start).
    pub async fn quotas(self: &Arc<Self>) -> Result<&Quotas, String> {
        self.start_quotas();
        if self.quotas.read.known().await {
            Ok(&self.quotas)
        } else {
            Err(format!(
                "the quotas topic {:?} is not read yet: the region's brokers may still be starting",
                self.config().auth.quotas_topic
            ))
        }
    }

    /// The throttle for `bytes` of `kind` by `user` with `client_id` (zero before the
    /// quotas topic is read: nothing is throttled by quotas not known yet).
    pub fn throttle(&self, kind: Kind, user: &str, client_id: &str, bytes: u64) -> Duration {
        self.quotas
            .take(kind, user, client_id, bytes, Instant::now())
    }

    /// Changes an entity's quotas: `ops` set a key to a rate, or remove it (`None`);
    /// written to the quotas topic and acknowledged before this returns. With
    /// `validate_only`, only checked.
    pub async fn alter_quotas(
        self: &Arc<Self>,
        entity: Entity,
        ops: Vec<(String, Option<f64>)>,
        validate_only: bool,
    ) -> Result<(), QuotaError> {
        for (key, value) in &ops {
            if key != rules::PRODUCER_BYTE_RATE && key != rules::CONSUMER_BYTE_RATE {
                return Err(QuotaError::Invalid(format!(
                    "quota {key:?} is not enforced here: set {} or {}",
                    rules::PRODUCER_BYTE_RATE,
                    rules::CONSUMER_BYTE_RATE
                )));
            }
            if let Some(v) = value
                && !(v.is_finite() && *v >= 1.0)
            {
                return Err(QuotaError::Invalid(format!(
                    "quota {key} = {v}: a rate is at least 1 byte a second"
                )));
            }
        }
        if validate_only {
            return Ok(());
        }
        let topic = &self.config().auth.quotas_topic;
        if self.topic(topic).is_err() {
            state_topic::create(self, topic, 1, false, "auth.quotas_topic")
                .await
                .map_err(QuotaError::Unavailable)?;
        }
        let quotas = self.quotas().await.map_err(QuotaError::Unavailable)?;
        let max = self.config().auth.quotas_max;
        let mut values = quotas
            .table
            .read()
            .expect("quotas lock poisoned")
            .get(&entity)
            .cloned()
            .unwrap_or_default();
        let new = values.is_empty();
        for (key, value) in ops {
            match value {
                Some(v) => values.insert(key, v),
                None => values.remove(&key),
            };
        }
        if new && !values.is_empty() && quotas.list().len() >= max {
            return Err(QuotaError::Full(max));
        }
        let value = if values.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&values).expect("rates serialize")
        };
        let key = entity.key();
        quotas
            .writer
            .write(self, &self.config().auth.quotas_topic, &key, value.clone())
            .await
            .map_err(QuotaError::Unavailable)?;
        quotas.apply(&key, Some(&value), max);
        Ok(())
    }
}
