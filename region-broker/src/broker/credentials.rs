//! The region's users and their SASL credentials: a state topic (`auth.credentials_topic`,
//! key `MECHANISM:user`, value a SCRAM [`Credential`] as JSON, empty to delete) that every
//! broker reads whole and follows, as Kafka keeps SCRAM credentials in its metadata log. In
//! a managed region the topic spans every region, so a user set in one region
//! authenticates in all of them (a client that fails over keeps its credentials).
//!
//! Only SCRAM credentials are kept (salt, iterations, StoredKey, ServerKey), never a
//! password; SASL/PLAIN is checked against them (`Credential::matches`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use meridian_security::scram::{Credential, Mechanism};

use super::Broker;
use super::state_topic;

/// Every user's credentials, as read from the credentials topic.
pub struct Credentials {
    users: RwLock<BTreeMap<String, BTreeMap<Mechanism, Credential>>>,
    read: state_topic::Read,
    started: AtomicBool,
    writer: state_topic::Writer,
    /// Salts made-up names are challenged with (`ServerExchange::unknown_user`).
    unknown_secret: [u8; 32],
}

impl std::fmt::Debug for Credentials {
    // No secrets: the users' names and mechanisms only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("users", &self.list(&[]).len())
            .finish_non_exhaustive()
    }
}

/// Why a credential was not set.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// A bad name or credential.
    #[error("{0}")]
    Invalid(String),
    /// `auth.users_max` users are kept already.
    #[error("the region keeps at most {0} users (auth.users_max): delete one first")]
    Full(usize),
    /// Deleting a credential the user does not have.
    #[error("user {0:?} has no {1} credential")]
    NotFound(String, &'static str),
    /// The credentials topic is not read or written now.
    #[error("{0}")]
    Unavailable(String),
}

/// A user as listed: the mechanisms it has and their iterations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub user: String,
    pub mechanisms: Vec<(Mechanism, u32)>,
}

impl Credentials {
    pub(super) fn new() -> Credentials {
        let mut unknown_secret = [0u8; 32];
        getrandom::fill(&mut unknown_secret).expect("the OS gives random bytes");
        Credentials {
            users: RwLock::new(BTreeMap::new()),
            read: state_topic::Read::new(),
            started: AtomicBool::new(false),
            writer: state_topic::Writer::default(),
            unknown_secret,
        }
    }

    /// The secret a made-up name's salt is derived from.
    pub fn unknown_secret(&self) -> &[u8] {
        &self.unknown_secret
    }

    /// `user`'s credential for `mechanism`, if it has one.
    pub fn get(&self, user: &str, mechanism: Mechanism) -> Option<Credential> {
        self.users
            .read()
            .expect("credentials lock poisoned")
            .get(user)?
            .get(&mechanism)
            .cloned()
    }

    /// Whether `password` is `user`'s, checked against the user's strongest SCRAM
    /// credential (Kafka's PLAIN, MQTT's CONNECT). Costs PBKDF2's iterations, the same for
    /// a name that does not exist: call it off the async workers.
    pub fn verify_password(&self, user: &str, password: &[u8]) -> bool {
        let found = Mechanism::ALL
            .into_iter()
            .find_map(|m| self.get(user, m).map(|c| (m, c)));
        match found {
            Some((m, c)) => c.matches(m, password),
            None => {
                let _ = Credential::new(Mechanism::Sha512, password, b"unknown", 8192);
                false
            }
        }
    }

    /// [`Credentials::verify_password`] on a blocking thread, once the credentials are
    /// read; an error when they cannot be.
    pub async fn check_password(
        broker: &Arc<Broker>,
        user: &str,
        password: &[u8],
    ) -> Result<bool, String> {
        broker.credentials().await?;
        let (broker, user, password) = (broker.clone(), user.to_owned(), password.to_vec());
        tokio::task::spawn_blocking(move || broker.credentials.verify_password(&user, &password))
            .await
            .map_err(|e| format!("checking a password: {e}"))
    }

    /// Every user (of `only`, when given), by name.
    pub fn list(&self, only: &[String]) -> Vec<UserInfo> {
        let users = self.users.read().expect("credentials lock poisoned");
        users
            .iter()
            .filter(|(u, _)| only.is_empty() || only.contains(u))
            .map(|(user, m)| UserInfo {
                user: user.clone(),
                mechanisms: m.iter().map(|(m, c)| (*m, c.iterations)).collect(),
            })
            .collect()
    }

    /// Applies one record of the credentials topic.
    fn apply(&self, key: &str, value: Option<&[u8]>, users_max: usize) {
        let Some((mechanism, user)) = key
            .split_once(':')
            .and_then(|(m, u)| Some((Mechanism::from_name(m)?, u)))
        else {
            tracing::warn!(
                key,
                "a credentials record with a key that names no mechanism; skipped"
            );
            return;
        };
        let credential = match value.filter(|v| !v.is_empty()) {
            None => None,
            Some(v) => match serde_json::from_slice::<Credential>(v) {
                Ok(c) if c.check(mechanism).is_ok() => Some(c),
                _ => {
                    tracing::warn!(
                        key,
                        "a credentials record that is not a credential; skipped"
                    );
                    return;
                }
            },
        };
        let mut users = self.users.write().expect("credentials lock poisoned");
        match credential {
            Some(c) => {
                if !users.contains_key(user) && users.len() >= users_max {
                    metrics::counter!("meridian_credentials_dropped_total").increment(1);
                    return;
                }
                users
                    .entry(user.to_owned())
                    .or_default()
                    .insert(mechanism, c);
            }
            None => {
                if let Some(m) = users.get_mut(user) {
                    m.remove(&mechanism);
                    if m.is_empty() {
                        users.remove(user);
                    }
                }
            }
        }
        metrics::gauge!("meridian_credentials_users").set(users.len() as f64);
    }
}

impl Broker {
    /// Starts reading the credentials topic (once; later calls do nothing).
    pub fn start_credentials(self: &Arc<Self>) {
        if self.credentials.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let broker = self.clone();
        tokio::spawn(async move {
            let topic = broker.config().auth.credentials_topic.clone();
            let max = broker.config().auth.users_max;
            let this = broker.clone();
            state_topic::follow(
                broker.clone(),
                topic,
                "auth.credentials_topic",
                move |key, m| this.credentials.apply(&key, m.value.as_deref(), max),
                &broker.credentials.read,
            )
            .await
        });
    }

    /// The users' credentials, once the credentials topic has been read (at most 15 s
    /// after start; false if it has not been by then).
    pub async fn credentials(self: &Arc<Self>) -> Result<&Credentials, String> {
        self.start_credentials();
        if self.credentials.read.known().await {
            Ok(&self.credentials)
        } else {
            Err(format!(
                "the credentials topic {:?} is not read yet: the region's brokers may still be starting",
                self.config().auth.credentials_topic
            ))
        }
    }

    /// Sets (`Some`) or deletes (`None`) `user`'s credential for `mechanism`, written to
    /// the credentials topic and acknowledged before this returns.
    pub async fn set_credential(
        self: &Arc<Self>,
        user: &str,
        mechanism: Mechanism,
        credential: Option<Credential>,
    ) -> Result<(), SetError> {
        meridian_proto::names::validate("user", user)
            .map_err(|e| SetError::Invalid(e.to_string()))?;
        if let Some(c) = &credential {
            c.check(mechanism).map_err(|e| {
                SetError::Invalid(format!("the {} credential: {e}", mechanism.name()))
            })?;
        }
        let credentials = self.credentials().await.map_err(SetError::Unavailable)?;
        let max = self.config().auth.users_max;
        if credential.is_some()
            && credentials.list(&[user.to_owned()]).is_empty()
            && credentials.list(&[]).len() >= max
        {
            return Err(SetError::Full(max));
        }
        if credential.is_none() && credentials.get(user, mechanism).is_none() {
            return Err(SetError::NotFound(user.to_owned(), mechanism.name()));
        }
        let value = match &credential {
            Some(c) => serde_json::to_vec(c).expect("a credential serializes"),
            None => Vec::new(),
        };
        let key = format!("{}:{user}", mechanism.name());
        self.credentials
            .writer
            .write(
                self,
                &self.config().auth.credentials_topic,
                &key,
                value.clone(),
            )
            .await
            .map_err(SetError::Unavailable)?;
        // Known here at once (the follower sees it a moment later).
        credentials.apply(&key, Some(&value), max);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_set_replace_and_delete_and_the_bound_holds() {
        let c = Credentials::new();
        let cred = |pw: &[u8]| {
            serde_json::to_vec(&Credential::new(Mechanism::Sha512, pw, b"salt", 4096).unwrap())
                .unwrap()
        };
        c.apply("SCRAM-SHA-512:alice", Some(&cred(b"a")), 2);
        c.apply("SCRAM-SHA-512:bob", Some(&cred(b"b")), 2);
        // Past the bound: dropped.
        c.apply("SCRAM-SHA-512:carol", Some(&cred(b"c")), 2);
        assert!(c.get("carol", Mechanism::Sha512).is_none());
        // Replaced, and a user's second mechanism is not a new user.
        c.apply("SCRAM-SHA-512:alice", Some(&cred(b"a2")), 2);
        assert!(
            c.get("alice", Mechanism::Sha512)
                .unwrap()
                .matches(Mechanism::Sha512, b"a2")
        );
        // Keys naming no mechanism, and values that are not credentials, change nothing.
        c.apply("alice", Some(&cred(b"x")), 2);
        c.apply("SCRAM-SHA-1:alice", Some(&cred(b"x")), 2);
        c.apply("SCRAM-SHA-512:bob", Some(b"not json"), 2);
        assert!(
            c.get("bob", Mechanism::Sha512).is_some(),
            "garbage is skipped"
        );
        c.apply("SCRAM-SHA-512:bob", Some(b""), 2);
        assert!(c.get("bob", Mechanism::Sha512).is_none(), "empty deletes");
        c.apply("SCRAM-SHA-512:alice", None, 2);
        assert!(c.list(&[]).is_empty());
        // A name with a colon: split at the first (mechanism names have none).
        c.apply("SCRAM-SHA-512:a:b", Some(&cred(b"x")), 2);
        assert_eq!(c.list(&[]).first().unwrap().user, "a:b");
    }
}
