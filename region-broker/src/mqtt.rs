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

use crate::broker::region_producer::RegionProducer;
use meridian_daemon::listener::{Admission, Refusals};
use tokio::net::TcpListener;

use crate::broker::Broker;
use crate::config::MqttConfig;

mod connection;
mod deliver;
mod feed;
mod login;
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
    /// What the listener writes (publishes, retained and session records) goes through
    /// the broker's own idempotent producer.
    producer: Arc<RegionProducer>,
    /// Sessions by client id: connected, or kept for their expiry.
    sessions: Mutex<HashMap<String, Arc<SessionSlot>>>,
    retained: retained::Retained,
    /// The region's persistent sessions.
    stored: stored::Stored,
    /// The region's topic names (the broker's catalog), read again every
    /// [`TOPICS_REFRESH`] and on demand; sessions with wildcard filters watch it.
    topic_names: tokio::sync::watch::Sender<Arc<Vec<String>>>,
    admission: Arc<Admission>,
    /// The TCP listener's TLS identity, when it speaks TLS.
    tls: Option<meridian_security::tls::ServerTls>,
}

impl std::fmt::Debug for Mqtt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mqtt")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How often the topic list (which topics wildcard filters reach) is read again.
const TOPICS_REFRESH: Duration = Duration::from_secs(2);

impl Mqtt {
    /// The shared state of a broker's MQTT listeners; the TCP listener speaks TLS when
    /// `mqtt.tls_cert` and `mqtt.tls_key` are set, asking for client certificates as
    /// `mqtt.tls_client_auth` says (an error names a file that does not load).
    pub fn new(broker: Arc<Broker>) -> anyhow::Result<Arc<Mqtt>> {
        let config = broker.config().mqtt.clone();
        let admission = Admission::new(
            "MQTT",
            "mqtt.",
            config.connections_max,
            config.connections_per_address_max,
        );
        let tls = meridian_security::tls::listener_tls(
            "mqtt.",
            config.tls_cert.as_deref(),
            config.tls_key.as_deref(),
            config.tls_client_auth,
            config.tls_client_ca.as_deref(),
        )?;
        if !config.allow_anonymous {
            broker.start_credentials();
        }
        if broker.config().auth.acls_enabled {
            broker.start_acls();
        }
        Ok(Arc::new(Mqtt {
            tls,
            topics: topics::Topics::new(config.mapping.clone()),
            retained: retained::Retained::new(config.retained_max),
            stored: stored::Stored::new(config.sessions_max),
            config,
            producer: RegionProducer::new(broker.clone()),
            broker,
            sessions: Mutex::new(HashMap::new()),
            topic_names: tokio::sync::watch::Sender::new(Arc::new(Vec::new())),
            admission,
        }))
    }

    /// Reads the topic list from the broker's catalog again; the list as it is now.
    fn refresh_topics(&self) -> Arc<Vec<String>> {
        let names: Vec<String> = self.broker.topics().into_iter().map(|t| t.name).collect();
        self.topic_names.send_if_modified(|old| {
            let changed = **old != names;
            if changed {
                *old = Arc::new(names);
            }
            changed
        });
        self.topic_names.borrow().clone()
    }

    /// The retained and sessions topics: the broker's, not its clients'.
    fn is_internal(&self, topic: &str) -> bool {
        topic == self.config.retained_topic || topic == self.config.sessions_topic
    }

    /// Why a PUBLISH to Meridian topic `topic` is refused, if it is: an internal topic, or
    /// one that does not exist.
    fn refuse_topic(&self, topic: &str) -> Option<String> {
        if self.is_internal(topic) {
            return Some(format!("the topic {topic:?} is the MQTT listener's own"));
        }
        self.broker.topic(topic).is_err().then(|| {
            format!(
                "the topic {topic:?} does not exist: create it (meridian topic create {topic}) or map the name elsewhere ([[mqtt.mapping]])"
            )
        })
    }

    /// Keeps the topic list fresh and the retained messages read, for as long as the
    /// listeners run.
    fn start(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                this.refresh_topics();
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
                let Some(tls) = &mqtt.tls else {
                    return connection::run(mqtt, stream, peer, None).await;
                };
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                let handshake = tokio::time::timeout(
                    Duration::from_millis(mqtt.config.connect_timeout_ms),
                    acceptor.accept(stream),
                );
                match handshake.await {
                    Ok(Ok(tls)) => {
                        let name = meridian_security::tls::certificate_name(tls.get_ref().1);
                        connection::run(mqtt, tls, peer, name).await
                    }
                    Ok(Err(e)) => {
                        metrics::counter!("meridian_mqtt_tls_handshake_failures_total")
                            .increment(1);
                        tracing::debug!(%peer, error = %e, "MQTT TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "MQTT TLS handshake not done in time"),
                }
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
                    Ok(Ok(ws)) => connection::run(mqtt, ws, peer, None).await,
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
