//! A session's feed of one Meridian topic: a consumer of all its partitions (from the end
//! at the time of the SUBSCRIBE) or, for a shared subscription, a member of the share's
//! consumer group, handing each record to the session's queue. The queue is bounded
//! (`mqtt.session_queue_max`): a feed whose session does not keep up waits, and what it
//! has not read stays in the log.

use std::sync::Arc;
use std::time::Duration;

use meridian_client::{Client, ConsumerConfig, StartFrom};
use tokio::sync::{mpsc, oneshot};

use super::record::Message;
use super::topics::Topics;

/// One record for a session.
#[derive(Debug)]
pub(super) struct Item {
    /// The share it came through (`$share/NAME/…`), if any.
    pub(super) share: Option<String>,
    /// The message.
    pub(super) message: Message,
}

/// The consumer group of share `name`.
pub(super) fn share_group(name: &str) -> String {
    format!("mqtt-share.{name}")
}

/// Starts the feed of `topic` (through `share`, if given); `ready` is told once it reads
/// from its starting place (what is written after that reaches the session).
pub(super) fn spawn(
    client: Client,
    topics: Arc<Topics>,
    (topic, share): (String, Option<String>),
    queue: mpsc::Sender<Item>,
    ready: oneshot::Sender<()>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ready = Some(ready);
        let mut consumer = loop {
            let attempt = async {
                let mut c = client.consumer(ConsumerConfig {
                    group: share.as_deref().map(share_group),
                    start: StartFrom::End,
                    assignor: "round-robin".to_owned(),
                    ..ConsumerConfig::default()
                });
                if share.is_some() {
                    c.subscribe(&topic).await?;
                } else {
                    let n = client.describe_topic(&topic).await?.partitions.len() as u32;
                    c.assign(&topic, &(0..n).collect::<Vec<_>>()).await?;
                }
                Ok::<_, meridian_client::ClientError>(c)
            };
            match attempt.await {
                Ok(c) => break c,
                Err(e) => {
                    tracing::debug!(topic, error = %e, "an MQTT feed cannot start yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        if let Some(r) = ready.take() {
            let _ = r.send(());
        }
        loop {
            let batch = match consumer.poll_up_to(Duration::from_secs(5), 256).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(topic, error = %e, "an MQTT feed's read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            let any = !batch.is_empty();
            for r in batch {
                let name = topics.name_of(&topic, r.key.as_deref());
                let message = Message::of_record(name, r.value, &r.headers);
                let item = Item {
                    share: share.clone(),
                    message,
                };
                if queue.send(item).await.is_err() {
                    return;
                }
            }
            // A share's members commit what they handed on, so another member goes on
            // from there when the group moves a partition.
            if any
                && share.is_some()
                && let Err(e) = consumer.commit().await
            {
                tracing::debug!(topic, error = %e, "an MQTT share's commit failed");
            }
        }
    })
}
