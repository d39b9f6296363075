//! A topic read whole into memory by key, and followed: the retained messages and the
//! persistent sessions are such topics. Created (one partition) when it does not exist.

use std::sync::Arc;
use std::time::Duration;

use meridian_client::{ConsumedMessage, ConsumerConfig, StartFrom};

use super::Mqtt;

/// How long a caller waits for a keyed topic to be read (at start, or while the topic is
/// made).
const READY_WAIT: Duration = Duration::from_secs(15);

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
    mut apply: impl FnMut(String, ConsumedMessage) + Send,
    read: &Read,
) {
    let caught_up = &read.0;
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
                    tracing::warn!(topic, error = %e, "an MQTT state topic is not read yet (create it: meridian topic create {topic}); retrying");
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    };
    tracing::info!(topic, "reading an MQTT state topic");
    loop {
        // Short polls until the first empty one (the end, as of then), then long polls.
        let wait = if *caught_up.borrow() {
            Duration::from_secs(5)
        } else {
            Duration::from_millis(100)
        };
        match consumer.poll(wait).await {
            Ok(batch) if batch.is_empty() => {
                caught_up.send_if_modified(|c| !std::mem::replace(c, true));
            }
            Ok(batch) => {
                for r in batch {
                    let Some(key) = r
                        .key
                        .as_ref()
                        .and_then(|k| std::str::from_utf8(k).ok())
                        .map(str::to_owned)
                    else {
                        continue;
                    };
                    apply(key, r);
                }
            }
            Err(e) => {
                tracing::debug!(topic, error = %e, "reading an MQTT state topic; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
