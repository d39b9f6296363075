//! The MQTT listener: MQTT 3.1.1 and 5 over TCP and WebSocket, so devices publish to and
//! subscribe at any broker of their region, and what they publish is an ordinary record
//! of an ordinary topic (Kafka and native consumers read it; what Kafka producers write,
//! devices receive).
//!
//! - Codec: `meridian_proto::mqtt` (rumqttc's codecs, one model for both versions).
//! - Where names live: [`topics`] (a name's first level names the Meridian topic, or an
//!   `[[mqtt.mapping]]`); the record layout: [`record`].
//! - Per connection: `connection.rs` (CONNECT, the packet loop, the end and its will),
//!   around the session's packet-id state machines ([`session`], pure). `publish.rs`: a
//!   PUBLISH is written by the broker's own idempotent producer (the native SDK, connected
//!   to this region: the partition's leader may be another broker), keyed by its topic
//!   name, so one MQTT topic keeps its order; its PUBACK (QoS 1) or PUBREC (QoS 2) goes
//!   out once the record is acknowledged at the topic's ack level, in the order the
//!   PUBLISHes came, and never for a record not written.
//! - `deliver.rs`: subscriptions read the log: each session has a feed per Meridian topic
//!   its filters may match (`feed.rs`), from the end at the time of the SUBSCRIBE; a
//!   shared subscription `$share/G/F` is a consumer group (`mqtt-share.G`) over every
//!   broker, so its members split the partitions. A persistent session's feeds read as
//!   its own consumer group, committed as its client acknowledges.
//! - `sessions.rs`: the sessions a broker holds (connected, or kept for their expiry);
//!   `stored.rs`: the region's record of each persistent session, so its client resumes
//!   it at any broker of the region, also after the broker it used died.
//! - Retained messages: written to the topic like any message and to the retained topic
//!   (`mqtt.retained_topic`, key: the name), which every broker reads whole into memory
//!   (`retained.rs`).
//!
//! Bounds (`[mqtt]`): connections in all and per address, packet size (refused from the
//! fixed header), CONNECT within `connect_timeout_ms`, keep-alive at most
//! `keep_alive_max_s`, the receive maximum and the in-flight window, topic aliases,
//! sessions, subscriptions per session, messages queued per session, retained messages.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_client::{Client, Producer, ProducerConfig};
use meridian_daemon::listener::{Admission, Refusals};
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::config::MqttConfig;

mod connection;
mod deliver;
mod feed;
mod keyed;
mod publish;
pub mod record;
mod retained;
pub mod session;
mod sessions;
mod stored;
pub mod topics;
mod websocket;

use sessions::SessionSlot;

/// What every MQTT connection of a broker shares.
pub struct Mqtt {
    broker: Arc<Broker>,
    config: MqttConfig,
    topics: topics::Topics,
    /// The native client of this region and its producer, made on first use (the
    /// broker's gRPC API is up by then).
    client: tokio::sync::OnceCell<(Client, Producer)>,
    /// Sessions by client id: connected, or kept for their expiry.
    sessions: Mutex<HashMap<String, Arc<SessionSlot>>>,
    retained: retained::Retained,
    /// The region's persistent sessions.
    stored: stored::Stored,
    /// The region's topic names, refreshed every [`TOPICS_REFRESH`].
    topic_names: tokio::sync::watch::Sender<Arc<Vec<String>>>,
    /// When the last read of the topic list started (ms since the epoch).
    topics_read_ms: std::sync::atomic::AtomicI64,
    /// One on-demand read of the topic list at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Topics found not to exist, and when (at most [`UNKNOWN_MAX`]): a PUBLISH to one is
    /// refused without asking the region again for a second.
    unknown: Mutex<HashMap<String, i64>>,
    admission: Arc<Admission>,
}

impl std::fmt::Debug for Mqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mqtt")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Topics remembered as not existing, at most.
const UNKNOWN_MAX: usize = 1024;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How often the topic list (which topics wildcard filters reach) is read again.
const TOPICS_REFRESH: Duration = Duration::from_secs(2);

impl Mqtt {
    /// The shared state of a broker's MQTT listeners.
    pub fn new(broker: Arc<Broker>) -> Arc<Mqtt> {
        let config = broker.config().mqtt.clone();
        let admission = Admission::new(
            "MQTT",
            "mqtt.",
            config.connections_max,
            config.connections_per_address_max,
        );
        Arc::new(Mqtt {
            topics: topics::Topics::new(config.mapping.clone()),
            retained: retained::Retained::new(config.retained_max),
            stored: stored::Stored::new(config.sessions_max),
            config,
            broker,
            client: tokio::sync::OnceCell::new(),
            sessions: Mutex::new(HashMap::new()),
            topic_names: tokio::sync::watch::Sender::new(Arc::new(Vec::new())),
            topics_read_ms: std::sync::atomic::AtomicI64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
            unknown: Mutex::new(HashMap::new()),
            admission,
        })
    }

    /// The region's client and the producer every connection writes through.
    async fn client(&self) -> Result<&(Client, Producer), meridian_client::ClientError> {
        self.client
            .get_or_try_init(|| async {
                let own = self.broker.config().grpc_listen.to_string();
                let client = Client::connect(&own).await?;
                let producer = client.producer(ProducerConfig {
                    linger: Duration::from_millis(1),
                    ..ProducerConfig::default()
                });
                Ok((client, producer))
            })
            .await
    }

    /// The region's topic list as it is at least as new as this call: one read for all
    /// callers waiting together (a read started after they asked serves them all).
    async fn refresh_topics(&self) -> Arc<Vec<String>> {
        use std::sync::atomic::Ordering;
        let asked = now_ms();
        let _one = self.refreshing.lock().await;
        if self.topics_read_ms.load(Ordering::Relaxed) < asked {
            return self.read_topics().await;
        }
        self.topic_names.borrow().clone()
    }

    /// Reads the region's topic list; the list as it is now (the old one if the region
    /// does not answer).
    async fn read_topics(&self) -> Arc<Vec<String>> {
        self.topics_read_ms
            .fetch_max(now_ms(), std::sync::atomic::Ordering::Relaxed);
        let listed = match self.client().await {
            Ok((client, _)) => client.list_topics().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match listed {
            Ok(list) => {
                let names: Vec<String> = list.into_iter().map(|t| t.name).collect();
                self.topic_names.send_if_modified(|old| {
                    let changed = **old != names;
                    if changed {
                        *old = Arc::new(names);
                    }
                    changed
                });
            }
            Err(e) => tracing::debug!(error = %e, "listing topics for MQTT"),
        }
        self.topic_names.borrow().clone()
    }

    /// Creates topic `name` with `partitions` in this region: through the control plane in
    /// a managed region (spanning this region; an SRE may create it wider first), else
    /// through the broker.
    async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<(), meridian_client::ClientError> {
        let control = &self.broker.config().control;
        if control.is_empty() {
            let (client, _) = self.client().await?;
            return client.create_topic(name, partitions).await.map(drop);
        }
        let control = control.join(",");
        let spec = meridian_proto::v1::TopicSpec {
            name: name.to_owned(),
            partitions,
            regions: vec![self.broker.config().region.clone()],
            ..Default::default()
        };
        let client = meridian_region_client::control::connect_control(&control)
            .await
            .map_err(|e| meridian_client::ClientError::Usage(e.to_string()))?;
        meridian_region_client::control::on_control_leader(client, &control, |mut c| {
            let spec = spec.clone();
            async move {
                c.create_topic(meridian_proto::v1::ControlCreateTopicRequest { spec: Some(spec) })
                    .await
            }
        })
        .await
        .map(drop)
        .map_err(|s| {
            meridian_client::ClientError::Usage(format!(
                "the control plane refused: {}",
                s.message()
            ))
        })
    }

    /// The retained and sessions topics: the broker's, not its clients'.
    fn is_internal(&self, topic: &str) -> bool {
        topic == self.config.retained_topic || topic == self.config.sessions_topic
    }

    /// Why a PUBLISH to Meridian topic `topic` is refused, if it is: an internal topic, or
    /// one that does not exist (asked again of the region at most once a second).
    async fn refuse_topic(&self, topic: &str) -> Option<String> {
        if self.is_internal(topic) {
            return Some(format!("the topic {topic:?} is the MQTT listener's own"));
        }
        let known = |names: &Arc<Vec<String>>| names.iter().any(|n| n == topic);
        let listed = self.topic_names.borrow().clone();
        let refused = || {
            Some(format!(
                "the topic {topic:?} does not exist: create it (meridian topic create {topic}) or map the name elsewhere ([[mqtt.mapping]])"
            ))
        };
        if known(&listed) {
            return None;
        }
        let recently_unknown = self
            .unknown
            .lock()
            .expect("unknown topics lock poisoned")
            .get(topic)
            .is_some_and(|&at| now_ms() - at < 1000);
        if recently_unknown {
            return refused();
        }
        if known(&self.refresh_topics().await) {
            return None;
        }
        let mut unknown = self.unknown.lock().expect("unknown topics lock poisoned");
        if unknown.len() >= UNKNOWN_MAX {
            unknown.clear();
        }
        unknown.insert(topic.to_owned(), now_ms());
        refused()
    }

    /// Keeps the topic list fresh and the retained messages read, for as long as the
    /// listeners run.
    fn start(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.read_topics().await;
                tokio::time::sleep(TOPICS_REFRESH).await;
            }
        });
        let this = self.clone();
        tokio::spawn(async move { retained::follow(this).await });
        let this = self.clone();
        tokio::spawn(async move { stored::follow(this).await });
    }
}

/// Serves MQTT over TCP on `listener` (and over WebSocket on `ws`, when given) until the
/// process ends.
pub async fn serve(mqtt: Arc<Mqtt>, listener: Option<TcpListener>, ws: Option<TcpListener>) {
    mqtt.start();
    let tcp = listener.map(|l| {
        let mqtt = mqtt.clone();
        tokio::spawn(async move {
            accept(mqtt, l, |mqtt, stream, peer| async move {
                connection::run(mqtt, stream, peer).await
            })
            .await
        })
    });
    let ws = ws.map(|l| {
        let mqtt = mqtt.clone();
        tokio::spawn(async move {
            accept(mqtt, l, |mqtt, stream, peer| async move {
                let handshake = tokio::time::timeout(
                    Duration::from_millis(mqtt.config.connect_timeout_ms),
                    websocket::accept(stream, mqtt.config.packet_bytes_max as usize + 16),
                );
                match handshake.await {
                    Ok(Ok(ws)) => connection::run(mqtt, ws, peer).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "MQTT WebSocket handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "MQTT WebSocket handshake not done in time"),
                }
            })
            .await
        })
    });
    for t in [tcp, ws].into_iter().flatten() {
        let _ = t.await;
    }
}

async fn accept<F, Fut>(mqtt: Arc<Mqtt>, listener: TcpListener, serve: F)
where
    F: Fn(Arc<Mqtt>, tokio::net::TcpStream, SocketAddr) -> Fut + Send + Sync + 'static + Clone,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut refusals = Refusals::new("MQTT");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting an MQTT connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ticket = match mqtt.admission.admit(peer.ip()) {
            Ok(t) => t,
            Err(refused) => {
                metrics::counter!("meridian_mqtt_connections_refused_total").increment(1);
                refusals.note(&peer, &refused);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mqtt = mqtt.clone();
        let serve = serve.clone();
        tokio::spawn(async move {
            metrics::gauge!("meridian_mqtt_connections").increment(1.0);
            serve(mqtt, stream, peer).await;
            metrics::gauge!("meridian_mqtt_connections").decrement(1.0);
            drop(ticket);
        });
    }
}
