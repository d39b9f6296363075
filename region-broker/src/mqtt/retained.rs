//! Retained messages: the retained topic (`mqtt.retained_topic`; key: the MQTT topic
//! name, an empty value clears it) is the record of them, so every broker of the region,
//! and every region the topic is mirrored to, knows them; each broker reads it whole
//! from its start and keeps the latest per name in memory, at most `mqtt.retained_max`.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meridian_client::{ConsumerConfig, StartFrom};

use super::Mqtt;
use super::record::Message;
use super::topics;

/// The latest retained message of each name.
pub(super) struct Retained {
    max: usize,
    messages: RwLock<BTreeMap<String, Message>>,
}

impl Retained {
    pub(super) fn new(max: usize) -> Retained {
        Retained {
            max,
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

/// Reads the retained topic from its start and follows it, creating it (one partition)
/// when it does not exist yet.
pub(super) async fn follow(mqtt: Arc<Mqtt>) {
    let topic = mqtt.config.retained_topic.clone();
    let mut warned = false;
    let mut consumer = loop {
        let attempt = async {
            let (client, _) = mqtt.client().await?;
            let partitions = match client.describe_topic(&topic).await {
                Ok(t) => t.partitions.len() as u32,
                Err(_) => {
                    mqtt.create_topic(&topic, 1).await?;
                    1
                }
            };
            let mut c = client.consumer(ConsumerConfig {
                start: StartFrom::Beginning,
                ..ConsumerConfig::default()
            });
            c.assign(&topic, &(0..partitions).collect::<Vec<_>>())
                .await?;
            Ok::<_, meridian_client::ClientError>(c)
        };
        match attempt.await {
            Ok(c) => break c,
            Err(e) => {
                if !warned {
                    tracing::warn!(topic, error = %e, "retained MQTT messages are not read yet: create the retained topic (meridian topic create {topic}); retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    tracing::info!(topic, "reading retained MQTT messages");
    loop {
        match consumer.poll(Duration::from_secs(5)).await {
            Ok(batch) => {
                for r in batch {
                    let Some(name) = r
                        .key
                        .as_ref()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .map(str::to_owned)
                    else {
                        continue;
                    };
                    let mut m = Message::of_record(name.clone(), r.value, &r.headers);
                    m.retain = true;
                    mqtt.retained.set(name, m);
                }
            }
            Err(e) => {
                tracing::debug!(topic, error = %e, "reading retained MQTT messages; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
