//! The decisions of client quotas, without I/O: which quota applies to a request (Kafka's
//! order of precedence over user and client-id entities), and how long a client that went
//! past its rate is throttled (a token bucket).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The quota keys enforced: bytes a second a client may produce, and fetch.
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
/// See [`PRODUCER_BYTE_RATE`].
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";

/// What a request spends of its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Bytes produced.
    Produce,
    /// Bytes fetched.
    Fetch,
}

impl Kind {
    /// The quota key of this kind.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Produce => PRODUCER_BYTE_RATE,
            Kind::Fetch => CONSUMER_BYTE_RATE,
        }
    }
}

/// One component of an entity: a name, or the default (every name without its own).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Name {
    /// Kafka's `<default>`.
    Default,
    /// One user or client id.
    Named(String),
}

/// Whom quotas apply to: a user, a client id, or both (each named or the default).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entity {
    /// The user component, if any.
    pub user: Option<Name>,
    /// The client-id component, if any.
    pub client_id: Option<Name>,
}

/// The text of a default component in an entity's key (no user or client id is named so:
/// names are printable characters without `,` and `=` here).
const DEFAULT: &str = "<default>";

impl Entity {
    /// The entity's key in the quotas topic: `user=alice,client-id=<default>`.
    pub fn key(&self) -> String {
        let part = |kind: &str, n: &Option<Name>| {
            n.as_ref().map(|n| match n {
                Name::Default => format!("{kind}={DEFAULT}"),
                Name::Named(s) => format!("{kind}={s}"),
            })
        };
        [part("user", &self.user), part("client-id", &self.client_id)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The entity a key names; `None` for a key that names none.
    pub fn parse(key: &str) -> Option<Entity> {
        let mut e = Entity {
            user: None,
            client_id: None,
        };
        for part in key.split(',') {
            let (kind, name) = part.split_once('=')?;
            let name = match name {
                DEFAULT => Name::Default,
                "" => return None,
                n => Name::Named(n.to_owned()),
            };
            let slot = match kind {
                "user" => &mut e.user,
                "client-id" => &mut e.client_id,
                _ => return None,
            };
            if slot.replace(name).is_some() {
                return None;
            }
        }
        (e.user.is_some() || e.client_id.is_some()).then_some(e)
    }

    /// Refuses a name an entity key cannot carry.
    pub fn check_name(name: &str) -> Result<(), String> {
        if name.is_empty() || name.len() > 255 {
            return Err(format!("{name:?}: a name is 1 to 255 bytes"));
        }
        if name == DEFAULT || name.contains([',', '=']) || name.chars().any(char::is_control) {
            return Err(format!(
                "{name:?}: a quota's user or client id has no ',', '=' or control characters and is not {DEFAULT}"
            ));
        }
        Ok(())
    }
}

/// Who is metered: the user and client id of the entity that applies, with the request's
/// own names where it says default (each user under a default user quota has its own).
pub type Metered = (Option<String>, Option<String>);

/// Every entity's quotas.
#[derive(Debug, Default, Clone)]
pub struct QuotaTable {
    entries: BTreeMap<Entity, BTreeMap<String, f64>>,
}

impl QuotaTable {
    /// Sets an entity's quotas (an empty map deletes them); false when the table holds
    /// `max` entities and this is another.
    pub fn set(&mut self, entity: Entity, quotas: BTreeMap<String, f64>, max: usize) -> bool {
        if quotas.is_empty() {
            self.entries.remove(&entity);
            return true;
        }
        if !self.entries.contains_key(&entity) && self.entries.len() >= max {
            return false;
        }
        self.entries.insert(entity, quotas);
        true
    }

    /// Whether no entity has quotas (then nothing is metered).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An entity's quotas.
    pub fn get(&self, entity: &Entity) -> Option<&BTreeMap<String, f64>> {
        self.entries.get(entity)
    }

    /// Every entity and its quotas.
    pub fn iter(&self) -> impl Iterator<Item = (&Entity, &BTreeMap<String, f64>)> {
        self.entries.iter()
    }

    /// The quota of `kind` for a request of `user` with `client_id`, and who it meters, by
    /// Kafka's precedence: user and client id, user and default client, user alone,
    /// default user and client id, default user and default client, default user alone,
    /// client id alone, default client alone.
    pub fn resolve(&self, user: &str, client_id: &str, kind: Kind) -> Option<(f64, Metered)> {
        use Name::{Default, Named};
        let (u, c) = (|| Named(user.to_owned()), || Named(client_id.to_owned()));
        let order = [
            (Some(u()), Some(c())),
            (Some(u()), Some(Default)),
            (Some(u()), None),
            (Some(Default), Some(c())),
            (Some(Default), Some(Default)),
            (Some(Default), None),
            (None, Some(c())),
            (None, Some(Default)),
        ];
        order.into_iter().find_map(|(user_part, client_part)| {
            let metered = (
                user_part.as_ref().map(|_| user.to_owned()),
                client_part.as_ref().map(|_| client_id.to_owned()),
            );
            let entity = Entity {
                user: user_part,
                client_id: client_part,
            };
            let rate = *self.entries.get(&entity)?.get(kind.key())?;
            Some((rate, metered))
        })
    }
}

/// How long one response may throttle its client at most; what a larger debt owes is
/// carried to the client's next requests.
pub const THROTTLE_MAX: Duration = Duration::from_secs(30);

/// A token bucket of `rate` bytes a second holding at most a second's worth: a client
/// under its rate is never throttled; past it, each request is throttled until the bytes
/// it took would have been earned.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub fn new(rate: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: rate,
            at: now,
        }
    }

    /// Takes `bytes` at `now`; how long the client is to wait (zero while under its rate).
    pub fn take(&mut self, rate: f64, bytes: u64, now: Instant) -> Duration {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * rate;
        self.tokens = (self.tokens + earned).min(rate) - bytes as f64;
        self.at = now;
        if self.tokens >= 0.0 || rate <= 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(-self.tokens / rate).min(THROTTLE_MAX)
    }

    /// Whether it is full again at `now` (forgetting it changes nothing).
    pub fn is_full(&self, rate: f64, now: Instant) -> bool {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate >= rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(user: Option<Name>, client_id: Option<Name>) -> Entity {
        Entity { user, client_id }
    }

    fn named(s: &str) -> Option<Name> {
        Some(Name::Named(s.into()))
    }

    #[test]
    fn keys_round_trip_and_bad_ones_name_no_entity() {
        for e in [
            entity(named("alice"), None),
            entity(None, Some(Name::Default)),
            entity(Some(Name::Default), named("app-1")),
        ] {
            assert_eq!(Entity::parse(&e.key()), Some(e.clone()), "{}", e.key());
        }
        for bad in ["", "user=", "ip=1.2.3.4", "user=a,user=b", "user"] {
            assert_eq!(Entity::parse(bad), None, "{bad}");
        }
        assert!(Entity::check_name("a,b").is_err());
        assert!(Entity::check_name("<default>").is_err());
        assert!(Entity::check_name("app-1").is_ok());
    }

    #[test]
    fn the_most_specific_entity_applies_in_kafkas_order() {
        let mut t = QuotaTable::default();
        let rate = |r: f64| BTreeMap::from([(PRODUCER_BYTE_RATE.to_owned(), r)]);
        t.set(entity(None, Some(Name::Default)), rate(8.0), 10);
        assert_eq!(
            t.resolve("bob", "x", Kind::Produce),
            Some((8.0, (None, Some("x".into())))),
            "a default client quota meters each client id alone"
        );
        t.set(entity(None, named("x")), rate(7.0), 10);
        t.set(entity(Some(Name::Default), None), rate(6.0), 10);
        assert_eq!(
            t.resolve("bob", "x", Kind::Produce),
            Some((6.0, (Some("bob".into()), None))),
            "a default user quota comes before any client-id-only one"
        );
        t.set(entity(named("bob"), None), rate(3.0), 10);
        t.set(entity(named("bob"), named("x")), rate(1.0), 10);
        assert_eq!(t.resolve("bob", "x", Kind::Produce).unwrap().0, 1.0);
        assert_eq!(t.resolve("bob", "y", Kind::Produce).unwrap().0, 3.0);
        assert_eq!(t.resolve("eve", "x", Kind::Produce).unwrap().0, 6.0);
        assert_eq!(t.resolve("eve", "x", Kind::Fetch), None, "no fetch quota");
        // Deleting, and the bound.
        assert!(t.set(entity(named("bob"), named("x")), BTreeMap::new(), 10));
        assert_eq!(t.resolve("bob", "x", Kind::Produce).unwrap().0, 3.0);
        assert!(!t.set(entity(named("new"), None), rate(1.0), 4));
    }

    #[test]
    fn a_bucket_throttles_by_what_went_past_the_rate_and_no_more() {
        let start = Instant::now();
        let mut b = Bucket::new(1000.0, start);
        // A second's worth passes at once; the next byte owes a millisecond.
        assert_eq!(b.take(1000.0, 1000, start), Duration::ZERO);
        assert_eq!(b.take(1000.0, 500, start), Duration::from_millis(500));
        // Waiting out the throttle pays the debt: at the rate, no more throttling.
        let t = start + Duration::from_millis(500);
        assert_eq!(b.take(1000.0, 0, t), Duration::ZERO);
        let t = t + Duration::from_millis(100);
        assert_eq!(b.take(1000.0, 100, t), Duration::ZERO);
        assert!(!b.is_full(1000.0, t));
        assert!(b.is_full(1000.0, t + Duration::from_secs(1)));
        // A huge request is throttled at most THROTTLE_MAX; the rest is owed after.
        let mut b = Bucket::new(10.0, start);
        assert_eq!(b.take(10.0, 1_000_000, start), THROTTLE_MAX);
        assert!(b.take(10.0, 0, start + THROTTLE_MAX) > Duration::ZERO);
    }
}
