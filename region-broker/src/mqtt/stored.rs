//! Persistent sessions as the region keeps them: a record per client id in the sessions
//! topic (`mqtt.sessions_topic`), read whole by every broker ([`follow`]), so a client
//! resumes its session at any broker of its region, also after the broker it used died.
//! What a session has not acknowledged is in the log: its feeds read under a consumer
//! group of its own ([`group_of`]), committed as its client acknowledges.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use meridian_proto::mqtt::QoS;
use serde::{Deserialize, Serialize};

use super::Mqtt;

/// A persistent session's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredSession {
    /// Its subscriptions.
    pub(super) subscriptions: Vec<StoredSubscription>,
    /// Seconds it outlives a connection.
    pub(super) expiry: u32,
    /// The connection that wrote it last (region, broker and a random nonce): only it ends the
    /// session at expiry, not a broker that held it before.
    pub(super) owner: String,
}

/// One subscription of a stored session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct StoredSubscription {
    /// The filter as the client wrote it (with `$share/…`).
    pub(super) filter: String,
    /// Its QoS (0–2).
    pub(super) qos: u8,
    /// No-local.
    pub(super) no_local: bool,
    /// Retain-as-published.
    pub(super) retain_as_published: bool,
    /// Subscription identifier.
    pub(super) id: Option<usize>,
}

/// QoS as stored.
pub(super) fn qos_of(n: u8) -> QoS {
    match n {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// The consumer group a persistent session's positions are committed under: its client
/// id in hex (any client id makes a valid, distinct group name), cut and hashed when long.
pub(super) fn group_of(client_id: &str) -> String {
    use std::fmt::Write;
    let mut hex = String::with_capacity(2 * client_id.len());
    for b in client_id.bytes().take(100) {
        let _ = write!(hex, "{b:02x}");
    }
    if client_id.len() > 100 {
        // FNV-1a of the whole id: stable across brokers and restarts.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in client_id.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let _ = write!(hex, ".{h:016x}");
    }
    format!("mqtt-session.{hex}")
}

/// Every stored session the region knows, at most `max`.
pub(super) struct Stored {
    max: usize,
    sessions: RwLock<HashMap<String, StoredSession>>,
    /// Whether the sessions topic has been read to its end since start.
    pub(super) read: crate::broker::state_topic::Read,
}

impl Stored {
    pub(super) fn new(max: usize) -> Stored {
        Stored {
            max,
            read: crate::broker::state_topic::Read::new(),
            sessions: RwLock::new(HashMap::new()),
        }
    }

    /// `client_id`'s stored session.
    pub(super) fn get(&self, client_id: &str) -> Option<StoredSession> {
        self.sessions
            .read()
            .expect("sessions lock poisoned")
            .get(client_id)
            .cloned()
    }

    /// The first `max` records by client id, and how many there are.
    pub(super) fn list(&self, max: usize) -> (Vec<(String, StoredSession)>, usize) {
        let s = self.sessions.read().expect("sessions lock poisoned");
        let mut ids: Vec<&String> = s.keys().collect();
        ids.sort_unstable();
        let listed = ids
            .into_iter()
            .take(max)
            .map(|id| (id.clone(), s[id].clone()))
            .collect();
        (listed, s.len())
    }

    fn set(&self, client_id: String, session: Option<StoredSession>) {
        let mut s = self.sessions.write().expect("sessions lock poisoned");
        match session {
            None => {
                s.remove(&client_id);
            }
            Some(session) if s.len() < self.max || s.contains_key(&client_id) => {
                s.insert(client_id, session);
            }
            Some(_) => {
                metrics::counter!("meridian_mqtt_stored_sessions_dropped_total").increment(1);
            }
        }
        metrics::gauge!("meridian_mqtt_stored_sessions").set(s.len() as f64);
    }
}

/// Reads the sessions topic whole and follows it.
pub(super) async fn follow(mqtt: Arc<Mqtt>) {
    let topic = mqtt.config.sessions_topic.clone();
    let this = mqtt.clone();
    let mqtt2 = mqtt.clone();
    crate::broker::state_topic::follow(
        mqtt.broker.clone(),
        topic,
        "mqtt.sessions_topic",
        move |client_id, r| {
            let session = r
                .value
                .filter(|v| !v.is_empty())
                .and_then(|v| serde_json::from_slice::<StoredSession>(&v).ok());
            if let Some(s) = &session {
                this.moved_elsewhere(&client_id, &s.owner);
            }
            this.stored.set(client_id, session);
        },
        &mqtt2.stored.read,
    )
    .await
}

impl Mqtt {
    /// Writes `client_id`'s session record (`None`: the session ended), acknowledged at
    /// the topic's ack level before this returns.
    pub(super) async fn save_session(
        &self,
        client_id: &str,
        session: Option<&StoredSession>,
    ) -> Result<(), String> {
        let value = match session {
            Some(s) => serde_json::to_vec(s).map_err(|e| e.to_string())?,
            None => Vec::new(),
        };
        let record = meridian_proto::batch::Message {
            key: Some(bytes::Bytes::copy_from_slice(client_id.as_bytes())),
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: crate::broker::now_ms(),
        };
        let sent = self.producer.send(&self.config.sessions_topic, record);
        super::publish::stored(sent)
            .await
            .map_err(|e| format!("the session record: {e}"))?;
        // Known here at once (the follower sees it a moment later).
        self.stored.set(client_id.to_owned(), session.cloned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_id_makes_a_distinct_valid_group() {
        let long = "x".repeat(2000);
        let longer = format!("{long}y");
        let ids = ["a", "A", "dev/1 é", "", &long, &longer];
        let groups: Vec<String> = ids.iter().map(|i| group_of(i)).collect();
        for g in &groups {
            meridian_proto::names::validate("group", g).unwrap();
        }
        let distinct: std::collections::HashSet<_> = groups.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
