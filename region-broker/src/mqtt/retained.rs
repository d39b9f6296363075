//! Retained messages: the retained topic (`mqtt.retained_topic`; key: the MQTT topic
//! name, an empty value clears it) is the record of them, so every broker of the region,
//! and every region the topic is mirrored to, knows them; each broker reads it whole
//! from its start and keeps the latest per name in memory, at most `mqtt.retained_max`.

use super::Mqtt;
use super::record::Message;
use super::topics;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

/// The latest retained message of each name.
pub(super) struct Retained {
    max: usize,
    messages: RwLock<BTreeMap<String, Message>>,
    /// Whether the retained topic has been read to its end since start.
    pub(super) read: crate::broker::state_topic::Read,
}

impl Retained {
    pub(super) fn new(max: usize) -> Retained {
        Retained {
            max,
            read: crate::broker::state_topic::Read::new(),
            messages: RwLock::new(BTreeMap::new()),
        }
    }

    /// The retained messages `filter` matches.
    pub(super) fn matching(&self, filter: &str) -> Vec<Message> {
        self.messages
            .read()
            .expect("retained lock poisoned")
            .iter()
            .filter(|(name, _)| topics::matches(filter, name))
            .map(|(_, m)| m.clone())
            .collect()
    }

    /// Whether a retained message for `name` may be kept: one is already, or there is
    /// room for one more.
    pub(super) fn has_room_for(&self, name: &str) -> bool {
        let m = self.messages.read().expect("retained lock poisoned");
        m.len() < self.max || m.contains_key(name)
    }

    /// Sets (or, with an empty payload, clears) `name`'s retained message.
    fn set(&self, name: String, message: Message) {
        let mut m = self.messages.write().expect("retained lock poisoned");
        if message.payload.is_empty() {
            m.remove(&name);
        } else if m.len() < self.max || m.contains_key(&name) {
            m.insert(name, message);
        } else {
            metrics::counter!("meridian_mqtt_retained_dropped_total").increment(1);
        }
        metrics::gauge!("meridian_mqtt_retained_messages").set(m.len() as f64);
    }
}

/// Reads the retained topic whole and follows it.
pub(super) async fn follow(mqtt: Arc<Mqtt>) {
    let topic = mqtt.config.retained_topic.clone();
    let this = mqtt.clone();
    let read = mqtt.clone();
    crate::broker::state_topic::follow(
        mqtt.broker.clone(),
        topic,
        "mqtt.retained_topic",
        move |name, r| {
            let mut m = Message::of_record(name.clone(), r.value, &r.headers);
            m.retain = true;
            this.retained.set(name, m);
        },
        &read.retained.read,
    )
    .await
}
