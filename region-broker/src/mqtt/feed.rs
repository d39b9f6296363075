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
    /// The consumer group its position is committed under, if any (a share's, or a
    /// persistent session's).
    pub(super) group: Option<String>,
    /// Where it is: topic, partition, offset.
    pub(super) place: (String, u32, u64),
    /// The message.
    pub(super) message: Message,
}

/// The consumer group of share `name`.
pub(super) fn share_group(name: &str) -> String {
    format!("mqtt-share.{name}")
}

/// Starts the feed of `topic` (through `share`, if given), reading from `session_group`'s
/// committed positions for a persistent session being resumed (`resume`), else from the
/// end; `ready` is told once it reads from its
/// starting place (what is written after that reaches the session). The session commits
/// what its client acknowledged (`connection.rs`); a persistent session's starting
/// places are committed here at once, so what is written while it is away waits for it.
pub(super) fn spawn(
    client: Client,
    topics: Arc<Topics>,
    (topic, share): (String, Option<String>),
    (session_group, resume): (Option<String>, bool),
    queue: mpsc::Sender<Box<Item>>,
    ready: oneshot::Sender<()>,
) -> tokio::task::JoinHandle<()> {
    let group = match &share {
        Some(s) => Some(share_group(s)),
        None => session_group,
    };
    tokio::spawn(async move {
        let mut ready = Some(ready);
        let mut consumer = loop {
            let attempt = async {
                // A share reads as its group; a resumed session from its positions; a new
                // subscription from the end, whatever its group held before.
                let reads_as = match (&share, resume) {
                    (Some(_), _) | (None, true) => group.clone(),
                    (None, false) => None,
                };
                let mut c = client.consumer(ConsumerConfig {
                    group: reads_as,
                    start: StartFrom::End,
                    assignor: "round-robin".to_owned(),
                    // The session commits what its client acknowledged; a share's
                    // partition that moves to another member starts there, so what this
                    // session held unacknowledged is delivered again, never skipped.
                    commit_on_rebalance: false,
                    ..ConsumerConfig::default()
                });
                if share.is_some() {
                    c.subscribe(&topic).await?;
                } else {
                    let n = client.describe_topic(&topic).await?.partitions.len() as u32;
                    c.assign(&topic, &(0..n).collect::<Vec<_>>()).await?;
                    if group.is_some() {
                        for (t, p, offset) in c.positions().collect::<Vec<_>>() {
                            let g = group.as_deref().unwrap_or_default();
                            client.commit_offset(g, t, p, offset).await?;
                        }
                    }
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
            // No more than the session's queue has room for (the rest stays in the log).
            let room = queue.capacity().max(1);
            let batch = match consumer.poll_up_to(Duration::from_secs(5), room).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(topic, error = %e, "an MQTT feed's read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for r in batch {
                let name = topics.name_of(&topic, r.key.as_deref());
                let place = (topic.clone(), r.partition, r.offset);
                let message = Message::of_record(name, r.value, &r.headers);
                let item = Item {
                    share: share.clone(),
                    group: group.clone(),
                    place,
                    message,
                };
                if queue.send(Box::new(item)).await.is_err() {
                    return;
                }
            }
        }
    })
}
