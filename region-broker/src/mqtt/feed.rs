//! A session's feed of one Meridian topic: a consumer of all its partitions (from the end
//! at the time of the SUBSCRIBE) or, for a shared subscription, a member of the share's
//! consumer group, handing each record to the session's queue. The queue is bounded
//! (`mqtt.session_queue_max`): a feed whose session does not keep up waits, and what it
//! has not read stays in the log.

use std::sync::Arc;
use std::time::Duration;

use meridian_region_client::membership::{Member, Subscription};
use tokio::sync::{mpsc, oneshot};

use crate::broker::Broker;
use crate::broker::region_reader::{Read, RegionReader, Start};

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
    broker: Arc<Broker>,
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
        let mut source = loop {
            let started = match &share {
                Some(_) => {
                    Source::join_share(&broker, &topic, group.as_deref().unwrap_or_default()).await
                }
                None => Source::read_all(&broker, &topic, group.as_deref(), resume).await,
            };
            match started {
                Ok(s) => break s,
                Err(e) => {
                    tracing::debug!(topic, error = %e, "an MQTT feed cannot start yet; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        };
        let _ = ready.send(());
        loop {
            // No more than the session's queue has room for (the rest stays in the log).
            let room = queue.capacity().max(1);
            let batch = match source.poll(room).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(topic, error = %e, "an MQTT feed's read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            };
            for r in batch {
                let m = r.fetched.message;
                let name = topics.name_of(&topic, m.key.as_deref());
                let place = (topic.clone(), r.partition, r.fetched.offset);
                let message = Message::of_record(name, m.value, &m.headers);
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

/// How long a feed waits for messages in one poll.
const POLL_WAIT: Duration = Duration::from_secs(5);
/// How long a share's member waits in one poll: its assignment may change meanwhile.
const SHARE_POLL_WAIT: Duration = Duration::from_secs(1);
/// A share member's session with its group's coordinator.
const SHARE_SESSION: Duration = Duration::from_secs(10);

/// Where a feed's records come from: every partition of its topic, or the partitions its
/// share's group assigns this member.
enum Source {
    All(RegionReader),
    Share {
        member: Box<Member>,
        reader: RegionReader,
        group: String,
    },
}

impl Source {
    /// Every partition: from the group's commits when resuming a persistent session,
    /// else from the end; a persistent session's starting places committed at once.
    async fn read_all(
        broker: &Arc<Broker>,
        topic: &str,
        group: Option<&str>,
        resume: bool,
    ) -> Result<Source, String> {
        let partitions = broker.topic(topic).map_err(|e| e.to_string())?.groups.len() as u32;
        let mut reader = RegionReader::new(broker.clone(), topic);
        for p in 0..partitions {
            let offset = match group {
                Some(g) if resume => reader.start_committed(p, g, Start::End).await?,
                _ => reader.start(p, Start::End).await?,
            };
            if let Some(g) = group {
                broker.commit_offset_anywhere(g, topic, p, offset).await?;
            }
        }
        Ok(Source::All(reader))
    }

    /// A member of the share's consumer group: the group splits the partitions among the
    /// share's members at every broker.
    async fn join_share(broker: &Arc<Broker>, topic: &str, group: &str) -> Result<Source, String> {
        broker.topic(topic).map_err(|e| e.to_string())?;
        let coordinator = broker.region_client().await.map_err(|e| e.to_string())?;
        let sub = Subscription {
            topics: [topic.to_owned()].into(),
            client_id: "meridian-mqtt".to_owned(),
            assignor: "round-robin".to_owned(),
            session: SHARE_SESSION,
            instance: String::new(),
            instance_idle: Duration::ZERO,
        };
        let member = Member::join(Arc::new(coordinator.clone()), group, sub)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Source::Share {
            member: Box::new(member),
            reader: RegionReader::new(broker.clone(), topic),
            group: group.to_owned(),
        })
    }

    /// Up to `max` records.
    async fn poll(&mut self, max: usize) -> Result<Vec<Read>, String> {
        match self {
            Source::All(reader) => reader.poll(POLL_WAIT, max).await,
            Source::Share {
                member,
                reader,
                group,
            } => {
                let changes = member.changes().await.map_err(|e| e.to_string())?;
                if changes.lost {
                    let held: Vec<u32> = reader.positions().map(|(p, _)| p).collect();
                    for p in held {
                        reader.stop(p);
                    }
                }
                // A partition that moves on is not committed here: the session commits
                // what its client acknowledged, so what this member held unacknowledged
                // is delivered again by the next, never skipped.
                for tp in &changes.revoked {
                    reader.stop(tp.1);
                    member.own(tp, false);
                }
                if !changes.revoked.is_empty() {
                    member.beat_now().await.map_err(|e| e.to_string())?;
                }
                for tp in &changes.added {
                    reader.start_committed(tp.1, group, Start::End).await?;
                    member.own(tp, true);
                }
                if !member.holds_lease() {
                    return Ok(Vec::new());
                }
                let read = reader.poll(SHARE_POLL_WAIT, max).await?;
                // The lease ran out while reading: these partitions may be another's now.
                Ok(if member.holds_lease() {
                    read
                } else {
                    Vec::new()
                })
            }
        }
    }
}
