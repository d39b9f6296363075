//! A topic read whole into memory by key, and followed: the retained messages and the
//! persistent sessions are such topics. Created (one partition) when it does not exist.

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::batch::Message;

use crate::broker::region_reader::{RegionReader, Start};

use super::Mqtt;

/// How long a caller waits for a keyed topic to be read (at start, or while the topic is
/// made).
const READY_WAIT: Duration = Duration::from_secs(15);

/// How long a region's first broker waits for enough brokers to give a state topic its
/// replicas before it makes the topic with what the regions have.
const REPLICAS_WAIT: Duration = Duration::from_secs(10);

/// Whether a followed topic has been read to its end since start.
pub(super) struct Read(tokio::sync::watch::Sender<bool>);

impl Read {
    pub(super) fn new() -> Read {
        Read(tokio::sync::watch::Sender::new(false))
    }

    /// Waits (at most [`READY_WAIT`]) until the topic has been read to its end (so it
    /// exists to write to, and what it held is known); whether it has.
    pub(super) async fn known(&self) -> bool {
        let mut ready = self.0.subscribe();
        tokio::time::timeout(READY_WAIT, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Reads `topic` from its start and hands every record with a UTF-8 key to `apply`, for
/// as long as the broker runs; `read` is told once it has read to the end.
pub(super) async fn follow(
    mqtt: Arc<Mqtt>,
    topic: String,
    mut apply: impl FnMut(String, Message) + Send,
    read: &Read,
) {
    let caught_up = &read.0;
    let started = std::time::Instant::now();
    let mut warned = false;
    let mut reader = loop {
        let attempt = async {
            let partitions = match mqtt.broker.topic(&topic) {
                Ok(t) => t.groups.len() as u32,
                Err(_) => {
                    let wait = started.elapsed() < REPLICAS_WAIT;
                    mqtt.create_state_topic(&topic, 1, wait).await?;
                    // Made here or elsewhere: read once this broker knows it.
                    mqtt.broker
                        .topic(&topic)
                        .map_err(|e| e.to_string())?
                        .groups
                        .len() as u32
                }
            };
            let mut reader = RegionReader::new(mqtt.broker.clone(), &topic);
            for p in 0..partitions {
                reader.start(p, Start::Beginning).await?;
            }
            Ok::<_, String>(reader)
        };
        match attempt.await {
            Ok(c) => break c,
            // While a region starts (its brokers registering, the topic being made) a few
            // tries fail; past that, it needs someone.
            Err(e) if !warned && started.elapsed() > REPLICAS_WAIT => {
                tracing::warn!(topic, error = %e, "an MQTT state topic is not read yet (retained messages and persistent sessions wait for it); retrying");
                warned = true;
            }
            Err(e) => tracing::debug!(topic, error = %e, "an MQTT state topic is not read yet"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tracing::info!(topic, "reading an MQTT state topic");
    loop {
        // Short polls until the first empty one (the end, as of then), then long polls.
        let wait = if *caught_up.borrow() {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(100)
        };
        match reader.poll(wait, usize::MAX).await {
            Ok(batch) if batch.is_empty() => {
                caught_up.send_if_modified(|c| !std::mem::replace(c, true));
            }
            Ok(batch) => {
                for r in batch {
                    let m = r.fetched.message;
                    let Some(key) = m
                        .key
                        .as_ref()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .map(str::to_owned)
                    else {
                        continue;
                    };
                    apply(key, m);
                }
            }
            Err(e) => {
                tracing::debug!(topic, error = %e, "reading an MQTT state topic; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
