//! State topics: topics a broker reads whole into memory by key, and follows — MQTT's
//! retained messages and persistent sessions, Kafka's SASL credentials. Created (one
//! partition) when they do not exist; in a managed region they span every region, so
//! what they hold follows a client that fails over.

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::batch::Message;

use crate::broker::region_reader::{RegionReader, Start};

use super::Broker;
use super::region_producer::RegionProducer;

/// How long a caller waits for a keyed topic to be read (at start, or while the topic is
/// made).
const READY_WAIT: Duration = Duration::from_secs(15);

/// How long a region's first broker waits for enough brokers to give a state topic its
/// replicas before it makes the topic with what the regions have.
const REPLICAS_WAIT: Duration = Duration::from_secs(10);

/// Whether a followed topic has been read to its end since start.
#[derive(Debug)]
pub(crate) struct Read(tokio::sync::watch::Sender<bool>);

impl Read {
    pub(crate) fn new() -> Read {
        Read(tokio::sync::watch::Sender::new(false))
    }

    /// Waits (at most [`READY_WAIT`]) until the topic has been read to its end (so it
    /// exists to write to, and what it held is known); whether it has.
    pub(crate) async fn known(&self) -> bool {
        let mut ready = self.0.subscribe();
        tokio::time::timeout(READY_WAIT, ready.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// Replicas a state topic asks for, as a topic does by default once its region has that
/// many brokers.
const STATE_REPLICAS: u32 = 3;

/// Reads `topic` from its start and hands every record with a UTF-8 key to `apply`, for
/// as long as the broker runs; `read` is told once it has read to the end. `setting` names
/// the configuration key that names the topic (for errors).
pub(crate) async fn follow(
    broker: Arc<Broker>,
    topic: String,
    setting: &str,
    mut apply: impl FnMut(String, Message) + Send,
    read: &Read,
) {
    follow_made(broker, topic, setting, true, &mut apply, read).await
}

/// [`follow`]; with `create_missing` false a topic that does not exist is waited for
/// (made by whoever first writes to it), not made.
pub(crate) async fn follow_made(
    broker: Arc<Broker>,
    topic: String,
    setting: &str,
    create_missing: bool,
    mut apply: impl FnMut(String, Message) + Send,
    read: &Read,
) {
    let caught_up = &read.0;
    let started = std::time::Instant::now();
    let mut warned = false;
    let mut reader = loop {
        let attempt = async {
            let partitions = match broker.topic(&topic) {
                Ok(t) => t.groups.len() as u32,
                Err(_) if !create_missing => return Err(format!("{topic} is not made yet")),
                Err(_) => {
                    let wait = started.elapsed() < REPLICAS_WAIT;
                    create(&broker, &topic, 1, wait, setting).await?;
                    // Made here or elsewhere: read once this broker knows it.
                    broker
                        .topic(&topic)
                        .map_err(|e| e.to_string())?
                        .groups
                        .len() as u32
                }
            };
            let mut reader = RegionReader::new(broker.clone(), &topic);
            for p in 0..partitions {
                reader.start(p, Start::Beginning).await?;
            }
            Ok::<_, String>(reader)
        };
        match attempt.await {
            Ok(c) => break c,
            // While a region starts (its brokers registering, the topic being made) a few
            // tries fail; past that, it needs someone.
            Err(e) if create_missing && !warned && started.elapsed() > REPLICAS_WAIT => {
                tracing::warn!(topic, error = %e, "a state topic is not read yet (what it holds waits for it); retrying");
                warned = true;
            }
            Err(e) => tracing::debug!(topic, error = %e, "a state topic is not read yet"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    tracing::info!(topic, "reading a state topic");
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
                tracing::debug!(topic, error = %e, "reading a state topic; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Creates state topic `name` (`partitions`). In a managed region through the control
/// plane, spanning every region (a device that reaches another region after a failover
/// resumes its session there and sees the retained messages) with
/// [`STATE_REPLICAS`] replicas while `wait_for_replicas` (a region's first broker
/// asks before the others registered; after a while it takes what the regions have);
/// a topic another broker or region made first is taken as made, when it spans this
/// region. In a static region through the broker.
pub(crate) async fn create(
    broker: &Broker,
    name: &str,
    partitions: u32,
    wait_for_replicas: bool,
    setting: &str,
) -> Result<(), String> {
    let config = broker.config();
    if config.control.is_empty() {
        // Through log group 0's leader, wherever it is.
        let region = broker.region_client().await.map_err(|e| e.to_string())?;
        let request = meridian_proto::v1::CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            ..Default::default()
        };
        return region
            .call(|mut c| {
                let r = request.clone();
                async move { c.create_topic(r).await }
            })
            .await
            .map(drop)
            .map_err(|e| e.to_string());
    }
    let refused = |s: tonic::Status| format!("the control plane refused: {}", s.message());
    let control = config.control.join(",");
    let spec = meridian_proto::v1::TopicSpec {
        name: name.to_owned(),
        partitions,
        regions: Vec::new(),
        replication_factor: if wait_for_replicas { STATE_REPLICAS } else { 0 },
        ..Default::default()
    };
    let client = meridian_region_client::control::connect_control(&control)
        .await
        .map_err(|e| e.to_string())?;
    let created =
        meridian_region_client::control::on_control_leader(client.clone(), &control, |mut c| {
            let spec = spec.clone();
            async move {
                c.create_topic(meridian_proto::v1::ControlCreateTopicRequest { spec: Some(spec) })
                    .await
            }
        })
        .await;
    match created {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => {
            let topic = client
                .clone()
                .describe_topic(meridian_proto::v1::TopicNameRequest {
                    name: name.to_owned(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            let regions = topic.spec.map(|s| s.regions).unwrap_or_default();
            if regions.is_empty() || regions.contains(&config.region) {
                return Ok(());
            }
            Err(format!(
                "topic {name:?} exists but spans {} only, not region {} (it was made before this region was): name another for this region ({setting}); until then what this region keeps in it is refused",
                regions.join(", "),
                config.region
            ))
        }
        Err(s) => Err(refused(s)),
    }
}

/// Writes a state topic's records through one producer of the broker, made on first use.
#[derive(Default)]
pub(crate) struct Writer(std::sync::OnceLock<Arc<RegionProducer>>);

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Writer")
            .field(&self.0.get().is_some())
            .finish()
    }
}

impl Writer {
    /// Writes `key` = `value` (empty: deleted) to `topic`, acknowledged at the topic's ack
    /// level before this returns.
    pub(crate) async fn write(
        &self,
        broker: &Arc<Broker>,
        topic: &str,
        key: &str,
        value: Vec<u8>,
    ) -> Result<(), String> {
        let record = Message {
            key: Some(bytes::Bytes::copy_from_slice(key.as_bytes())),
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: super::now_ms(),
        };
        let producer = self.0.get_or_init(|| RegionProducer::new(broker.clone()));
        let stored = producer.send(topic, record).map_err(|e| e.to_string())?;
        match stored.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("writing to {topic}: {e}")),
            Err(_) => Err("the broker's producer stopped".to_owned()),
        }
    }
}
