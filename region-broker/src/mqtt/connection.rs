//! One MQTT connection: its CONNECT, its session (taken over from an earlier connection
//! of the same client id, or new), then packets in and messages out until it ends, and
//! its will when it ends without a DISCONNECT.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use meridian_client::Record;
use meridian_proto::mqtt::packet::*;
use meridian_proto::mqtt::{self, DecodeError, QoS, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::Mqtt;
use super::feed;
use super::record::{Message, max_qos, min_qos};
use super::session::{AckOutcome, Inbound, Outbound, Qos2, Resend};
use super::topics::{self, TopicError};

/// A session as a broker keeps it between connections.
pub(crate) struct SessionSlot {
    /// Told a new generation when another connection takes the session over.
    takeover: watch::Sender<u64>,
    /// The owner its record was last written with (`stored.rs`): a record of another
    /// owner means another broker took the session over since.
    owner: std::sync::Mutex<String>,
    state: Arc<tokio::sync::Mutex<SessionState>>,
}

struct Subscription {
    share: Option<String>,
    filter: String,
    qos: QoS,
    no_local: bool,
    retain_as_published: bool,
    id: Option<usize>,
}

struct SessionState {
    /// Subscriptions by their filter as the client wrote it.
    subscriptions: BTreeMap<String, Subscription>,
    outbound: Outbound,
    inbound: Inbound,
    /// Feeds by (Meridian topic, share).
    feeds: HashMap<(String, Option<String>), tokio::task::JoinHandle<()>>,
    /// Boxed: a channel allocates its slots in blocks up front, so an idle session's
    /// queue costs a block of pointers, not of messages.
    queue_tx: mpsc::Sender<Box<feed::Item>>,
    queue: mpsc::Receiver<Box<feed::Item>>,
    /// Seconds the session outlives its connection.
    expiry: u32,
    /// Bumped when a connection ends; an expiry or will timer of an older generation
    /// does nothing.
    generation: u64,
    /// A connection holds it now.
    connected: bool,
    /// A persistent session's consumer group (its positions in the log).
    group: Option<String>,
    /// Who wrote its record last (`stored.rs`).
    owner: String,
    /// Where each message in flight to the client is in the log, by packet id.
    acks: HashMap<u16, Place>,
    /// How far the client has acknowledged, per (group, topic, partition).
    progress: HashMap<Place3, Progress>,
    /// The expiry and will timers of its last disconnect, stopped when it is resumed.
    timers: Vec<tokio::task::AbortHandle>,
}

type Place3 = (String, String, u32);
type Place = (Place3, u64);

/// A partition's messages handed to a session: committed up to the first one in flight.
#[derive(Debug, Default)]
struct Progress {
    next: u64,
    /// Offsets in flight, each with how many deliveries of it are.
    in_flight: BTreeMap<u64, u32>,
    committed: Option<u64>,
}

impl Progress {
    fn point(&self) -> u64 {
        self.in_flight
            .first_key_value()
            .map_or(self.next, |(&o, _)| o)
    }
}

impl SessionState {
    /// The client acknowledged packet `pkid`: its message is no longer in flight.
    fn acked(&mut self, pkid: u16) {
        if let Some((key, offset)) = self.acks.remove(&pkid)
            && let Some(p) = self.progress.get_mut(&key)
            && let Some(n) = p.in_flight.get_mut(&offset)
        {
            *n -= 1;
            if *n == 0 {
                p.in_flight.remove(&offset);
            }
        }
    }

    /// What to commit now: each (group, topic, partition) whose point moved.
    fn take_commits(&mut self) -> Vec<(Place3, u64)> {
        let mut out = Vec::new();
        for (key, p) in &mut self.progress {
            let point = p.point();
            if p.committed != Some(point) {
                p.committed = Some(point);
                out.push((key.clone(), point));
            }
        }
        out
    }

    /// Its record, as stored.
    fn record(&self) -> super::stored::StoredSession {
        super::stored::StoredSession {
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(raw, s)| super::stored::StoredSubscription {
                    filter: raw.clone(),
                    qos: super::stored::qos_number(s.qos),
                    no_local: s.no_local,
                    retain_as_published: s.retain_as_published,
                    id: s.id,
                })
                .collect(),
            expiry: self.expiry,
            owner: self.owner.clone(),
        }
    }

    fn stop_feeds(&mut self) {
        for (_, f) in self.feeds.drain() {
            f.abort();
        }
    }
}

impl Drop for SessionState {
    fn drop(&mut self) {
        self.stop_feeds();
    }
}

/// Why a connection ends, as MQTT 5 tells the client (3.1.1 just closes).
struct Close {
    reason: DisconnectReasonCode,
    why: String,
    /// Whether the will is published.
    will: bool,
}

impl Close {
    fn protocol(reason: DisconnectReasonCode, why: impl Into<String>) -> Close {
        Close {
            reason,
            why: why.into(),
            will: true,
        }
    }
}

/// A will, kept while its connection lasts.
struct Will {
    message: Message,
    delay: u32,
    /// Its message expiry interval (s), from when it is published.
    expiry: Option<u32>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How long a connection waits for its session while another connection lets it go.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// How long a write to a client may take before the connection is closed.
const WRITE_WAIT: Duration = Duration::from_secs(30);

/// How long a SUBSCRIBE waits for its feeds to start before its SUBACK goes anyway.
const FEEDS_START_WAIT: Duration = Duration::from_secs(15);

/// Feeds (Meridian topics read) of one session, at most.
const FEEDS_MAX: usize = 256;

/// Bytes of retained messages one SUBSCRIBE sends at most (the rest are not sent: logged).
const RETAINED_BURST_BYTES: usize = 16 << 20;

/// How often a session commits how far its client acknowledged (what a broker's death
/// may deliver again).
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// What a stored PUBLISH is answered with once its record is acknowledged.
enum Stored {
    Qos0,
    Qos1(u16),
    Qos2(u16),
}

type StoreResult = (Stored, Result<(), String>);

/// Serves one connection until it ends.
pub(super) async fn run<S>(mqtt: Arc<Mqtt>, mut stream: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Grows with what arrives: an idle connection holds little.
    let mut buf = BytesMut::with_capacity(256);
    let max = mqtt.config.packet_bytes_max;
    // The CONNECT, within the connect timeout.
    let connect = tokio::time::timeout(
        Duration::from_millis(mqtt.config.connect_timeout_ms),
        read_connect(&mut stream, &mut buf, max),
    )
    .await;
    let (version, packet) = match connect {
        Ok(Ok(Some(c))) => c,
        Ok(Ok(None)) => return,
        Ok(Err(DecodeError::Level(level))) => {
            // Answered in 3.1.1's form, which every level reads (MQTT 3.1.1 3.2.2.3).
            let refuse = Packet::ConnAck(ConnAck {
                session_present: false,
                code: ConnectReturnCode::UnsupportedProtocolVersion,
                properties: None,
            });
            let mut out = BytesMut::new();
            let _ = mqtt::encode(Version::V311, &refuse, &mut out);
            let _ = stream.write_all(&out).await;
            tracing::debug!(%peer, level, "MQTT CONNECT of an unserved protocol level refused");
            return;
        }
        Ok(Err(e)) => {
            metrics::counter!("meridian_mqtt_bad_packets_total").increment(1);
            tracing::debug!(%peer, error = %e, "MQTT connection closed before CONNECT");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "MQTT connection sent no CONNECT in time");
            return;
        }
    };
    let Packet::Connect(connect, will, login) = packet else {
        return;
    };
    let mut conn = Connection {
        mqtt: mqtt.clone(),
        version,
        out: BytesMut::new(),
        client_id: String::new(),
        client_max_packet: u32::MAX,
        keep_alive: 0,
        will: None,
        stores: FuturesOrdered::new(),
        problem_info: true,
        storing: std::collections::HashSet::new(),
        commit_task: None,
    };
    let _ = login; // Authentication arrives with issue 17; any user is let in.
    let session = match conn.accept(connect, will).await {
        Ok(s) => s,
        Err(code) => {
            let refuse = Packet::ConnAck(ConnAck {
                session_present: false,
                code,
                properties: None,
            });
            let mut out = BytesMut::new();
            let _ = mqtt::encode(version, &refuse, &mut out);
            let _ = stream.write_all(&out).await;
            return;
        }
    };
    let (slot, mut state, mut takeover) = session;
    metrics::counter!("meridian_mqtt_connects_total").increment(1);
    let close = conn
        .serve(&mut stream, &mut buf, &mut state, &mut takeover)
        .await;
    // Whatever was written last (a SUBACK, a DISCONNECT) goes out before the close.
    if let Some(c) = &close
        && conn.version == Version::V5
        && c.reason != DisconnectReasonCode::NormalDisconnection
    {
        let props = conn.problem_info.then(|| DisconnectProperties {
            session_expiry_interval: None,
            reason_string: Some(c.why.clone()),
            user_properties: Vec::new(),
            server_reference: None,
        });
        conn.send(&Packet::Disconnect(Disconnect {
            reason_code: c.reason,
            properties: props,
        }));
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let _ = stream.write_all(&conn.out).await;
        let _ = stream.shutdown().await;
    })
    .await;
    if let Some(c) = &close {
        tracing::debug!(%peer, client = %conn.client_id, why = %c.why, "MQTT connection closed");
    }
    let publish_will = close.as_ref().is_none_or(|c| c.will);
    let will = if publish_will { conn.will.take() } else { None };
    conn.end(slot, state, will).await;
}

/// Resolves once another connection took the session (its generation is not `mine`).
async fn taken_over(rx: &mut watch::Receiver<u64>, mine: u64) {
    loop {
        let now = *rx.borrow_and_update();
        if now != mine {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Reads until a whole CONNECT is buffered: its version and packet; `None` when the peer
/// closed first.
async fn read_connect<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: u32,
) -> Result<Option<(Version, Packet)>, DecodeError> {
    loop {
        if let Some(v) = mqtt::connect_version(buf)?
            && let Some(p) = mqtt::decode(v, buf, max)?
        {
            return Ok(Some((v, p)));
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

struct Connection {
    mqtt: Arc<Mqtt>,
    version: Version,
    out: BytesMut,
    client_id: String,
    client_max_packet: u32,
    keep_alive: u16,
    will: Option<Will>,
    /// PUBLISHes being stored, answered in the order they came (MQTT 4.6).
    stores: FuturesOrdered<Pin<Box<dyn Future<Output = StoreResult> + Send>>>,
    /// MQTT 5's request problem information: reason strings may be sent.
    problem_info: bool,
    /// QoS 2 packet ids whose PUBLISH is being stored (a resent one is answered when the
    /// first is stored, not before).
    storing: std::collections::HashSet<u16>,
    /// The commit in flight; it answers with the places it failed to commit.
    commit_task: Option<tokio::task::JoinHandle<Vec<Place3>>>,
}

type Attached = (
    Arc<SessionSlot>,
    tokio::sync::OwnedMutexGuard<SessionState>,
    (watch::Receiver<u64>, u64),
);

impl Connection {
    /// Checks the CONNECT, takes or makes the session and sends CONNACK.
    async fn accept(
        &mut self,
        connect: Connect,
        will: Option<LastWill>,
    ) -> Result<Attached, ConnectReturnCode> {
        let mqtt = self.mqtt.clone();
        let cfg = &mqtt.config;
        let props = connect.properties.clone().unwrap_or_default();
        if props.authentication_method.is_some() {
            return Err(ConnectReturnCode::BadAuthenticationMethod);
        }
        if props.receive_maximum == Some(0) || props.max_packet_size == Some(0) {
            return Err(ConnectReturnCode::ProtocolError);
        }
        self.problem_info = props.request_problem_info != Some(0);
        self.client_max_packet = props.max_packet_size.unwrap_or(u32::MAX);
        let mut assigned = None;
        let client_id = if connect.client_id.is_empty() {
            if self.version == Version::V311 && !connect.clean_start {
                return Err(ConnectReturnCode::ClientIdentifierNotValid);
            }
            let id = format!("meridian-{:016x}", rand_id());
            assigned = Some(id.clone());
            id
        } else if connect.client_id.len() > 1024 {
            return Err(ConnectReturnCode::ClientIdentifierNotValid);
        } else {
            connect.client_id.clone()
        };
        self.client_id = client_id.clone();
        // Keep-alive: at most the configured one; none asked for gets it too.
        let asked = connect.keep_alive;
        self.keep_alive = if asked == 0 || asked > cfg.keep_alive_max_s {
            cfg.keep_alive_max_s
        } else {
            asked
        };
        if let Some(w) = will {
            let name = String::from_utf8(w.topic.to_vec())
                .map_err(|_| ConnectReturnCode::TopicNameInvalid)?;
            topics::validate_name(&name).map_err(|_| ConnectReturnCode::TopicNameInvalid)?;
            self.mqtt
                .topics
                .topic_of(&name)
                .map_err(|_| ConnectReturnCode::TopicNameInvalid)?;
            let p = w.properties.clone().unwrap_or(LastWillProperties {
                delay_interval: None,
                payload_format_indicator: None,
                message_expiry_interval: None,
                content_type: None,
                response_topic: None,
                correlation_data: None,
                user_properties: Vec::new(),
            });
            let publish = Publish {
                dup: false,
                qos: w.qos,
                retain: w.retain,
                topic: w.topic.clone(),
                pkid: 0,
                payload: w.message.clone(),
                properties: Some(PublishProperties {
                    payload_format_indicator: p.payload_format_indicator,
                    message_expiry_interval: p.message_expiry_interval,
                    topic_alias: None,
                    response_topic: p.response_topic,
                    correlation_data: p.correlation_data,
                    user_properties: p.user_properties,
                    subscription_identifiers: Vec::new(),
                    content_type: p.content_type,
                }),
            };
            self.will = Some(Will {
                message: Message::of_publish(name, &publish, &client_id, now_ms()),
                delay: p.delay_interval.unwrap_or(0),
                expiry: p.message_expiry_interval,
            });
        }
        // 3.1.1: a persistent session lasts until a clean one replaces it (here: the
        // longest expiry granted); MQTT 5: what the client asks, at most that.
        let expiry = match self.version {
            Version::V311 if !connect.clean_start => cfg.session_expiry_max_s,
            Version::V311 => 0,
            Version::V5 => props
                .session_expiry_interval
                .unwrap_or(0)
                .min(cfg.session_expiry_max_s),
        };
        // A session that may be resumed or kept: answered once this broker knows the
        // region's stored sessions (a broker just started reads them first).
        if (!connect.clean_start || expiry > 0) && !self.mqtt.stored.read.known().await {
            tracing::warn!(client = %client_id, "the region's MQTT sessions are not read yet; this session may not be resumed or kept beyond this broker");
        }
        let window = props
            .receive_maximum
            .unwrap_or(cfg.inflight_max)
            .min(cfg.inflight_max);
        let (slot, present) = self.mqtt.attach(&client_id, connect.clean_start, window)?;
        // Another connection of this client id is told to go (any generation but ours),
        // then its state is ours.
        let mut mine = 0;
        slot.takeover.send_modify(|g| {
            *g += 1;
            mine = *g;
        });
        let takeover = (slot.takeover.subscribe(), mine);
        let mut state = tokio::time::timeout(LOCK_WAIT, slot.state.clone().lock_owned())
            .await
            .map_err(|_| ConnectReturnCode::ServerBusy)?;
        for t in state.timers.drain(..) {
            t.abort();
        }
        state.connected = true;
        state.generation += 1;
        state.expiry = expiry;
        state.outbound.set_window(window);
        state.inbound.reconnect();
        state.group = (expiry > 0).then(|| super::stored::group_of(&client_id));
        state.owner = format!("{}/{:016x}", self.mqtt.broker.config().broker_id, rand_id());
        *slot.owner.lock().expect("owner lock poisoned") = state.owner.clone();
        // The region's record: ended for a session that does not outlive its connection,
        // taken over (and its feeds started from its positions) for one that does.
        let saved = if expiry == 0 {
            match self.mqtt.stored.get(&client_id) {
                Some(_) => self.mqtt.save_session(&client_id, None).await,
                None => Ok(()),
            }
        } else {
            self.mqtt
                .save_session(&client_id, Some(&state.record()))
                .await
        };
        if let Err(e) = saved {
            tracing::warn!(client = %client_id, error = %e, "an MQTT session's record was not written; it lives on this broker only");
        }
        if state.feeds.is_empty() && !state.subscriptions.is_empty() {
            // Resumed from the region's record: each feed from the session's positions.
            self.update_feeds(&mut state, true).await;
        }
        let granted_expiry = props.session_expiry_interval.map(|_| expiry);
        let connack = ConnAck {
            session_present: present,
            code: ConnectReturnCode::Success,
            properties: (self.version == Version::V5).then(|| ConnAckProperties {
                session_expiry_interval: granted_expiry
                    .filter(|e| Some(*e) != props.session_expiry_interval),
                receive_max: Some(cfg.receive_maximum),
                max_qos: None,
                retain_available: Some(1),
                max_packet_size: Some(cfg.packet_bytes_max),
                assigned_client_identifier: assigned,
                topic_alias_max: Some(cfg.topic_alias_max),
                reason_string: None,
                user_properties: Vec::new(),
                wildcard_subscription_available: Some(1),
                subscription_identifiers_available: Some(1),
                shared_subscription_available: Some(1),
                server_keep_alive: (self.keep_alive != asked).then_some(self.keep_alive),
                response_information: None,
                server_reference: None,
                authentication_method: None,
                authentication_data: None,
            }),
        };
        self.send(&Packet::ConnAck(connack));
        // A resumed session sends again what was in flight.
        for r in state.outbound.resend() {
            match r {
                Resend::Publish(p) => self.send(&Packet::Publish(*p)),
                Resend::Release(pkid) => self.send(&Packet::PubRel(PubRel::new(pkid, None))),
            }
        }
        Ok((slot, state, takeover))
    }

    /// Appends a packet to what is written next.
    fn send(&mut self, p: &Packet) {
        if let Err(e) = mqtt::encode(self.version, p, &mut self.out) {
            tracing::warn!(client = %self.client_id, error = %e, "an MQTT packet could not be encoded");
        }
    }

    /// Packets in and messages out until the connection ends: `None` when the client
    /// closed it (or disconnected normally with `will: false` set).
    async fn serve<S>(
        &mut self,
        stream: &mut S,
        buf: &mut BytesMut,
        state: &mut SessionState,
        (takeover, mine): &mut (watch::Receiver<u64>, u64),
    ) -> Option<Close>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let idle = Duration::from_millis(u64::from(self.keep_alive) * 1500);
        let mut deadline = tokio::time::Instant::now() + idle;
        let mut topic_names = self.mqtt.topic_names.subscribe();
        let mut commits = tokio::time::interval(COMMIT_INTERVAL);
        commits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mine = *mine;
        let cap = usize::from(self.mqtt.config.receive_maximum);
        // Packets already buffered behind the CONNECT.
        if let Err(c) = self.handle_buffered(buf, state).await {
            return Some(c);
        }
        loop {
            if !self.out.is_empty() {
                // A client that stops reading is closed, not waited for.
                match tokio::time::timeout(WRITE_WAIT, stream.write_all(&self.out)).await {
                    Ok(Ok(())) => self.out.clear(),
                    _ => return None,
                }
            }
            tokio::select! {
                // Not read while its stores in flight are at the receive maximum (QoS 0
                // too): the client waits, its bytes in the socket.
                read = stream.read_buf(buf), if self.stores.len() < cap => {
                    match read {
                        Ok(0) | Err(_) => return None,
                        Ok(_) => {}
                    }
                    deadline = tokio::time::Instant::now() + idle;
                    if let Err(c) = self.handle_buffered(buf, state).await {
                        return Some(c);
                    }
                }
                Some((stored, result)) = self.stores.next(), if !self.stores.is_empty() => {
                    if let Err(c) = self.stored(state, stored, result) {
                        return Some(c);
                    }
                }
                item = state.queue.recv(), if state.outbound.has_room() => {
                    if let Some(item) = item {
                        self.deliver(state, item);
                    }
                }
                _ = topic_names.changed() => {
                    self.update_feeds(state, false).await;
                }
                _ = commits.tick() => self.commit(state),
                _ = taken_over(takeover, mine) => {
                    return Some(Close {
                        reason: DisconnectReasonCode::SessionTakenOver,
                        why: "another connection took the session over".into(),
                        will: true,
                    });
                }
                _ = tokio::time::sleep_until(deadline), if self.stores.len() < cap => {
                    return Some(Close::protocol(
                        DisconnectReasonCode::KeepAliveTimeout,
                        format!("nothing received for 1.5 times the keep-alive ({} s)", self.keep_alive),
                    ));
                }
            }
        }
    }

    /// Handles every whole packet in `buf`.
    async fn handle_buffered(
        &mut self,
        buf: &mut BytesMut,
        state: &mut SessionState,
    ) -> Result<(), Close> {
        loop {
            let packet = match mqtt::decode(self.version, buf, self.mqtt.config.packet_bytes_max) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(DecodeError::TooLarge { size, max }) => {
                    metrics::counter!("meridian_mqtt_bad_packets_total").increment(1);
                    return Err(Close::protocol(
                        DisconnectReasonCode::PacketTooLarge,
                        format!("a packet of {size} bytes is over the {max}-byte limit"),
                    ));
                }
                Err(e) => {
                    metrics::counter!("meridian_mqtt_bad_packets_total").increment(1);
                    return Err(Close::protocol(
                        DisconnectReasonCode::MalformedPacket,
                        e.to_string(),
                    ));
                }
            };
            self.handle(packet, state).await?;
        }
    }

    async fn handle(&mut self, packet: Packet, state: &mut SessionState) -> Result<(), Close> {
        match packet {
            Packet::Publish(p) => self.publish(p, state).await,
            Packet::PubAck(a) => {
                if state.outbound.puback(a.pkid) == AckOutcome::Done {
                    state.acked(a.pkid);
                }
                Ok(())
            }
            Packet::PubRec(r) => {
                let failed = !matches!(
                    r.reason,
                    PubRecReason::Success | PubRecReason::NoMatchingSubscribers
                );
                match state.outbound.pubrec(r.pkid, failed) {
                    AckOutcome::Release(pkid) => {
                        self.send(&Packet::PubRel(PubRel::new(pkid, None)));
                    }
                    AckOutcome::Done => state.acked(r.pkid),
                    AckOutcome::Unknown => {}
                }
                Ok(())
            }
            Packet::PubComp(c) => {
                if state.outbound.pubcomp(c.pkid) == AckOutcome::Done {
                    state.acked(c.pkid);
                }
                Ok(())
            }
            Packet::PubRel(r) => {
                let mut comp = PubComp::new(r.pkid, None);
                if !state.inbound.release(r.pkid) {
                    comp.reason = PubCompReason::PacketIdentifierNotFound;
                }
                self.send(&Packet::PubComp(comp));
                Ok(())
            }
            Packet::Subscribe(s) => self.subscribe(s, state).await,
            Packet::Unsubscribe(u) if u.filters.is_empty() => Err(Close::protocol(
                DisconnectReasonCode::MalformedPacket,
                "an UNSUBSCRIBE without filters",
            )),
            Packet::Unsubscribe(u) => {
                let reasons = u
                    .filters
                    .iter()
                    .map(|f| match state.subscriptions.remove(f) {
                        Some(_) => UnsubAckReason::Success,
                        None => UnsubAckReason::NoSubscriptionExisted,
                    })
                    .collect();
                self.update_feeds(state, false).await;
                self.save(state).await;
                self.send(&Packet::UnsubAck(UnsubAck {
                    pkid: u.pkid,
                    reasons,
                    properties: None,
                }));
                Ok(())
            }
            Packet::PingReq(_) => {
                self.send(&Packet::PingResp(PingResp));
                Ok(())
            }
            Packet::Disconnect(d) => {
                let expiry = d
                    .properties
                    .as_ref()
                    .and_then(|p| p.session_expiry_interval);
                if let Some(e) = expiry {
                    if state.expiry == 0 && e != 0 {
                        return Err(Close::protocol(
                            DisconnectReasonCode::ProtocolError,
                            "a session that expires at once cannot be given an expiry at DISCONNECT",
                        ));
                    }
                    state.expiry = e.min(self.mqtt.config.session_expiry_max_s);
                }
                Err(Close {
                    reason: DisconnectReasonCode::NormalDisconnection,
                    why: "the client disconnected".into(),
                    will: d.reason_code == DisconnectReasonCode::DisconnectWithWillMessage,
                })
            }
            Packet::Connect(..) => Err(Close::protocol(
                DisconnectReasonCode::ProtocolError,
                "a second CONNECT on one connection",
            )),
            Packet::Auth(_) => Err(Close::protocol(
                DisconnectReasonCode::ProtocolError,
                "AUTH without an authentication method",
            )),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp(_) => {
                Err(Close::protocol(
                    DisconnectReasonCode::ProtocolError,
                    "a packet only a server sends",
                ))
            }
        }
    }

    /// An inbound PUBLISH: checked, then stored; answered when stored.
    async fn publish(&mut self, p: Publish, state: &mut SessionState) -> Result<(), Close> {
        metrics::counter!("meridian_mqtt_publishes_received_total").increment(1);
        let alias = p.properties.as_ref().and_then(|pr| pr.topic_alias);
        let topic = String::from_utf8(p.topic.to_vec()).map_err(|_| {
            Close::protocol(
                DisconnectReasonCode::MalformedPacket,
                "a topic name is not UTF-8",
            )
        })?;
        let name = state
            .inbound
            .topic(topic, alias, self.mqtt.config.topic_alias_max)
            .map_err(|e| Close::protocol(DisconnectReasonCode::TopicAliasInvalid, e.to_string()))?;
        let refusal = match topics::validate_name(&name) {
            Err(TopicError::Wildcard(_)) | Err(TopicError::Malformed(_)) => {
                return Err(Close::protocol(
                    DisconnectReasonCode::TopicNameInvalid,
                    format!("the topic name {name:?} holds a wildcard or NUL, or is empty"),
                ));
            }
            Err(e) => Some(e.to_string()),
            Ok(()) => match self.mqtt.topics.topic_of(&name) {
                Err(e) => Some(e.to_string()),
                Ok(t) => self.mqtt.refuse_topic(t).await,
            },
        };
        let qos2 = match state
            .inbound
            .publish(p.qos, p.pkid, self.mqtt.config.receive_maximum)
        {
            Ok(q) => q,
            Err(e) => {
                let reason = match e {
                    super::session::InboundError::ReceiveMaximum(_) => {
                        DisconnectReasonCode::ReceiveMaximumExceeded
                    }
                    _ => DisconnectReasonCode::ProtocolError,
                };
                return Err(Close::protocol(reason, e.to_string()));
            }
        };
        if qos2 == Some(Qos2::Duplicate) {
            // Stored before: answered again, not stored again (while the first is still
            // being stored, its answer is the answer).
            if !self.storing.contains(&p.pkid) {
                self.send(&Packet::PubRec(PubRec::new(p.pkid, None)));
            }
            return Ok(());
        }
        if qos2 == Some(Qos2::Store) {
            self.storing.insert(p.pkid);
        }
        let stored = match p.qos {
            QoS::AtMostOnce => Stored::Qos0,
            QoS::AtLeastOnce => Stored::Qos1(p.pkid),
            QoS::ExactlyOnce => Stored::Qos2(p.pkid),
        };
        if let Some(why) = refusal {
            // Refused: MQTT 5 says why in the acknowledgement (a QoS 0 PUBLISH has none:
            // dropped, counted); 3.1.1 has no way to, so the connection is closed and
            // nothing is acknowledged that was not stored.
            metrics::counter!("meridian_mqtt_publishes_refused_total").increment(1);
            return match (self.version, p.qos) {
                (Version::V5, QoS::AtMostOnce) => {
                    tracing::debug!(client = %self.client_id, why, "a QoS 0 PUBLISH was refused");
                    Ok(())
                }
                (Version::V5, _) => {
                    self.stores
                        .push_back(Box::pin(std::future::ready((stored, Err(why)))));
                    Ok(())
                }
                (Version::V311, _) => {
                    Err(Close::protocol(DisconnectReasonCode::TopicNameInvalid, why))
                }
            };
        }
        let message = Message::of_publish(name, &p, &self.client_id, now_ms());
        let retained_refusal = if !message.retain {
            None
        } else if !self.mqtt.retained.read.known().await {
            // Its copy could not be written (the topic is made at a region's first start)
            // nor checked against the limit.
            Some(format!(
                "this broker has not read the region's retained messages yet (topic {}); publish again shortly",
                self.mqtt.config.retained_topic
            ))
        } else if !message.payload.is_empty() && !self.mqtt.retained.has_room_for(&message.name) {
            Some(format!(
                "this broker holds its most retained messages ({}): mqtt.retained_max",
                self.mqtt.config.retained_max
            ))
        } else {
            None
        };
        if let Some(why) = retained_refusal {
            if self.version == Version::V311 {
                return Err(Close::protocol(DisconnectReasonCode::QuotaExceeded, why));
            }
            self.stores
                .push_back(Box::pin(std::future::ready((stored, Err(why)))));
            return Ok(());
        }
        let write = self.mqtt.store(message).await;
        self.stores
            .push_back(Box::pin(async move { (stored, write.await) }));
        Ok(())
    }

    /// A PUBLISH's record is acknowledged (or refused): answer it.
    fn stored(
        &mut self,
        state: &mut SessionState,
        stored: Stored,
        result: Result<(), String>,
    ) -> Result<(), Close> {
        let failed = result.err();
        if let Some(why) = &failed {
            metrics::counter!("meridian_mqtt_publishes_refused_total").increment(1);
            tracing::debug!(client = %self.client_id, why, "an MQTT PUBLISH was not stored");
        }
        if let Stored::Qos2(pkid) = stored {
            self.storing.remove(&pkid);
            if failed.is_some() {
                state.inbound.failed(pkid);
            }
        }
        if let Some(why) = failed.clone().filter(|_| self.version == Version::V311) {
            // 3.1.1's acknowledgements carry no reason: one sent now would tell the client
            // its message was stored. The connection is closed unanswered instead, and the
            // client sends the message again when it reconnects.
            return Err(Close::protocol(
                DisconnectReasonCode::ImplementationSpecificError,
                why,
            ));
        }
        // MQTT 5: the refusal's reason, unless the client asked for none.
        let reason_string = failed.as_ref().filter(|_| self.problem_info).cloned();
        match stored {
            Stored::Qos0 => {}
            Stored::Qos1(pkid) => {
                state.inbound.acknowledged();
                let mut ack = PubAck::new(pkid, None);
                if failed.is_some() {
                    ack.reason = PubAckReason::ImplementationSpecificError;
                    ack.properties = reason_string.map(|r| PubAckProperties {
                        reason_string: Some(r),
                        user_properties: Vec::new(),
                    });
                }
                self.send(&Packet::PubAck(ack));
            }
            Stored::Qos2(pkid) => {
                let mut rec = PubRec::new(pkid, None);
                if failed.is_some() {
                    rec.reason = PubRecReason::ImplementationSpecificError;
                    rec.properties = reason_string.map(|r| PubRecProperties {
                        reason_string: Some(r),
                        user_properties: Vec::new(),
                    });
                }
                self.send(&Packet::PubRec(rec));
            }
        }
        Ok(())
    }

    /// A SUBSCRIBE: each filter checked and granted, retained messages sent, feeds started.
    async fn subscribe(&mut self, s: Subscribe, state: &mut SessionState) -> Result<(), Close> {
        let id = s.properties.as_ref().and_then(|p| p.id);
        let mut codes = Vec::with_capacity(s.filters.len());
        let mut retained = Vec::new();
        for f in &s.filters {
            let parsed = match topics::parse_filter(&f.path) {
                Ok(p) => p,
                Err(_) => {
                    codes.push(SubscribeReasonCode::TopicFilterInvalid);
                    continue;
                }
            };
            if let Some(share) = &parsed.share
                && meridian_proto::names::validate("group", &feed::share_group(share)).is_err()
            {
                codes.push(SubscribeReasonCode::TopicFilterInvalid);
                continue;
            }
            if parsed.share.is_some() && f.nolocal {
                return Err(Close::protocol(
                    DisconnectReasonCode::ProtocolError,
                    "no-local on a shared subscription",
                ));
            }
            let new = !state.subscriptions.contains_key(&f.path);
            if new && state.subscriptions.len() >= self.mqtt.config.subscriptions_max {
                codes.push(SubscribeReasonCode::QuotaExceeded);
                continue;
            }
            let send_retained = parsed.share.is_none()
                && match f.retain_forward_rule {
                    RetainForwardRule::OnEverySubscribe => true,
                    RetainForwardRule::OnNewSubscribe => new,
                    RetainForwardRule::Never => false,
                };
            if send_retained {
                retained.push((parsed.filter.clone(), f.qos, id));
            }
            state.subscriptions.insert(
                f.path.clone(),
                Subscription {
                    share: parsed.share,
                    filter: parsed.filter,
                    qos: f.qos,
                    no_local: f.nolocal,
                    retain_as_published: f.preserve_retain,
                    id,
                },
            );
            codes.push(SubscribeReasonCode::Success(f.qos));
        }
        // The feeds read from here on before the SUBACK goes: nothing written after the
        // SUBACK is missed; a persistent session's record holds the subscription first.
        self.update_feeds(state, false).await;
        self.save(state).await;
        self.send(&Packet::SubAck(SubAck {
            pkid: s.pkid,
            return_codes: codes,
            properties: None,
        }));
        let now = now_ms();
        let start = self.out.len();
        for (filter, qos, id) in retained {
            for m in self.mqtt.retained.matching(&filter) {
                if m.expired(now) {
                    continue;
                }
                if self.out.len() - start > RETAINED_BURST_BYTES {
                    tracing::warn!(client = %self.client_id, filter, "retained messages past {RETAINED_BURST_BYTES} bytes for one SUBSCRIBE were not sent");
                    break;
                }
                let q = min_qos(qos, m.qos);
                let publish = m.publish(q, true, id.into_iter().collect(), now);
                let _ = self.emit(state, publish);
            }
        }
        Ok(())
    }

    /// Writes a persistent session's record (its subscriptions changed).
    async fn save(&mut self, state: &SessionState) {
        if state.expiry == 0 {
            return;
        }
        if let Err(e) = self
            .mqtt
            .save_session(&self.client_id, Some(&state.record()))
            .await
        {
            tracing::warn!(client = %self.client_id, error = %e, "an MQTT session's record was not written; it lives on this broker only");
        }
    }

    /// Starts the feeds the subscriptions need and stops the others.
    /// `resume`: a session resumed from the region's record, whose feeds start from its
    /// committed positions; otherwise new feeds start at the end (and say so in the
    /// session's positions).
    async fn update_feeds(&mut self, state: &mut SessionState, resume: bool) {
        let mut names = self.mqtt.topic_names.borrow().clone();
        // A filter naming a topic the list does not show (made since it was read): the
        // list is read again now, so the feed starts before the SUBACK.
        let missing = state.subscriptions.values().any(|s| {
            self.mqtt
                .topics
                .topic_of(&s.filter)
                .is_ok_and(|t| !names.iter().any(|n| n == t))
        });
        if missing {
            names = self.mqtt.refresh_topics().await;
        }
        let mut wanted: Vec<(String, Option<String>)> = Vec::new();
        for s in state.subscriptions.values() {
            let mut topics: Vec<String> = self
                .mqtt
                .topics
                .topics_for(&s.filter, &names)
                .into_iter()
                .map(str::to_owned)
                .collect();
            // A literal first level whose topic the list does not show yet (made a moment
            // ago): tried anyway; its feed waits for it.
            if let Ok(t) = self.mqtt.topics.topic_of(&s.filter)
                && !s.filter.contains(['+', '#'])
                && !topics.iter().any(|x| x == t)
            {
                topics.push(t.to_owned());
            }
            for t in topics {
                let key = (t, s.share.clone());
                if !wanted.contains(&key) && !self.mqtt.is_internal(&key.0) {
                    wanted.push(key);
                }
            }
        }
        state.feeds.retain(|k, f| {
            let keep = wanted.contains(k);
            if !keep {
                f.abort();
            }
            keep
        });
        let Ok((client, _)) = self.mqtt.client().await else {
            return;
        };
        let mut starting = Vec::new();
        for key in wanted {
            if state.feeds.contains_key(&key) {
                continue;
            }
            if state.feeds.len() >= FEEDS_MAX {
                tracing::warn!(client = %self.client_id, topic = key.0, "a session reads at most {FEEDS_MAX} topics; this one is not read");
                continue;
            }
            let (tx, rx) = oneshot::channel();
            let task = feed::spawn(
                client.clone(),
                Arc::new(self.mqtt.topics.clone()),
                key.clone(),
                (state.group.clone(), resume),
                state.queue_tx.clone(),
                tx,
            );
            // Waited for when its topic exists (a literal first level may name one that
            // does not, yet: its feed starts when it does).
            if names.contains(&key.0) {
                starting.push(rx);
            }
            state.feeds.insert(key, task);
        }
        // One deadline for all of them: a feed that cannot start does not hold the
        // connection for long (on a loaded broker a feed takes a few calls to start).
        let _ =
            tokio::time::timeout(FEEDS_START_WAIT, futures_util::future::join_all(starting)).await;
    }

    /// A record from a feed: sent once, at the highest QoS its matching subscriptions
    /// grant (at most its own), with their subscription ids.
    fn deliver(&mut self, state: &mut SessionState, item: Box<feed::Item>) {
        let m = &item.message;
        let now = now_ms();
        let (topic, partition, offset) = item.place.clone();
        let key = item.group.clone().map(|g| (g, topic, partition));
        if let Some(k) = &key {
            let p = state.progress.entry(k.clone()).or_default();
            p.next = p.next.max(offset + 1);
        }
        if m.expired(now) {
            return;
        }
        let mut qos: Option<QoS> = None;
        let mut retain = false;
        let mut ids = Vec::new();
        for s in state.subscriptions.values() {
            if s.share != item.share || !topics::matches(&s.filter, &m.name) {
                continue;
            }
            if s.no_local && m.client.as_deref() == Some(self.client_id.as_str()) {
                continue;
            }
            qos = Some(qos.map_or(s.qos, |q| max_qos(q, s.qos)));
            retain |= s.retain_as_published && m.retain;
            ids.extend(s.id);
        }
        let Some(granted) = qos else {
            return;
        };
        let publish = m.publish(min_qos(granted, m.qos), retain, ids, now);
        // In flight until the client acknowledges it: its position is not committed past.
        if let (Some(pkid), Some(k)) = (self.emit(state, publish), key)
            && let Some(p) = state.progress.get_mut(&k)
        {
            *p.in_flight.entry(offset).or_insert(0) += 1;
            state.acks.insert(pkid, (k, offset));
        }
    }

    /// Commits how far the client acknowledged, in the background: one commit at a time,
    /// a place that failed is committed again at the next tick.
    fn commit(&mut self, state: &mut SessionState) {
        if let Some(t) = &self.commit_task {
            if !t.is_finished() {
                return;
            }
            let failed = self
                .commit_task
                .take()
                .and_then(futures_util::FutureExt::now_or_never)
                .and_then(Result::ok)
                .unwrap_or_default();
            for key in failed {
                if let Some(p) = state.progress.get_mut(&key) {
                    p.committed = None;
                }
            }
        }
        let commits = state.take_commits();
        if commits.is_empty() {
            return;
        }
        let mqtt = self.mqtt.clone();
        self.commit_task = Some(tokio::spawn(async move {
            let Ok((client, _)) = mqtt.client().await else {
                return commits.into_iter().map(|(k, _)| k).collect();
            };
            let mut failed = Vec::new();
            for ((group, topic, partition), offset) in commits {
                if let Err(e) = client
                    .commit_offset(&group, &topic, partition, offset)
                    .await
                {
                    tracing::debug!(group, topic, partition, error = %e, "an MQTT session's position was not committed");
                    failed.push((group, topic, partition));
                }
            }
            failed
        }));
    }

    /// Sends a PUBLISH: QoS 0 as it is, QoS 1 and 2 through the session's window (the
    /// caller checked for room; a retained burst past it waits in the window's stead).
    fn emit(&mut self, state: &mut SessionState, publish: Publish) -> Option<u16> {
        if publish.size() > self.client_max_packet as usize {
            // MQTT 5 3.1.2.25: never sent over the client's maximum; dropped.
            metrics::counter!("meridian_mqtt_deliveries_dropped_total").increment(1);
            return None;
        }
        metrics::counter!("meridian_mqtt_deliveries_total").increment(1);
        if publish.qos == QoS::AtMostOnce {
            self.send(&Packet::Publish(publish));
            return None;
        }
        match state.outbound.send(publish.clone()) {
            Some(p) => {
                let pkid = p.pkid;
                self.send(&Packet::Publish(p));
                Some(pkid)
            }
            None => {
                // The window is full (retained messages on SUBSCRIBE): sent at QoS 0.
                let mut p = publish;
                p.qos = QoS::AtMostOnce;
                self.send(&Packet::Publish(p));
                None
            }
        }
    }

    /// The connection ended: the will (now or after its delay, unless the session is
    /// resumed first), and the session kept for its expiry or dropped.
    async fn end(
        &mut self,
        slot: Arc<SessionSlot>,
        mut state: tokio::sync::OwnedMutexGuard<SessionState>,
        will: Option<Will>,
    ) {
        // Stores in flight are not waited for (their answers cannot be sent): a QoS 2 id
        // among them is released, so the client's resend is stored, not taken for a
        // duplicate of one that may have failed (a resend may store it twice; never lose).
        for pkid in self.storing.drain() {
            state.inbound.failed(pkid);
        }
        self.stores = FuturesOrdered::new();
        self.commit(&mut state);
        state.connected = false;
        state.generation += 1;
        let generation = state.generation;
        let expiry = state.expiry;
        drop(state);
        let mqtt = self.mqtt.clone();
        let mut timers = Vec::new();
        if let Some(mut w) = will {
            let delay = w.delay.min(expiry);
            let (mqtt, weak) = (mqtt.clone(), Arc::downgrade(&slot));
            timers.push(
                tokio::spawn(async move {
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
                        let Some(slot) = weak.upgrade() else {
                            return;
                        };
                        let s = slot.state.lock().await;
                        if s.connected || s.generation != generation {
                            return;
                        }
                    }
                    // The message expiry interval runs from the will's publication.
                    w.message.expiry_at = w
                        .expiry
                        .map(|e| now_ms().saturating_add(i64::from(e) * 1000));
                    metrics::counter!("meridian_mqtt_wills_total").increment(1);
                    if let Err(e) = mqtt.store(w.message).await.await {
                        tracing::warn!(error = %e, "an MQTT will could not be published");
                    }
                })
                .abort_handle(),
            );
        }
        let client_id = self.client_id.clone();
        if expiry == 0 {
            mqtt.detach(&client_id, &slot, generation).await;
        } else {
            let weak = Arc::downgrade(&slot);
            timers.push(
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(expiry))).await;
                    if let Some(slot) = weak.upgrade() {
                        mqtt.detach(&client_id, &slot, generation).await;
                    }
                })
                .abort_handle(),
            );
        }
        // Stopped if the session is resumed first.
        if let Ok(mut s) = slot.state.try_lock() {
            s.timers.extend(timers);
        }
    }
}

fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(now_ms());
    h.finish()
}

impl Mqtt {
    /// The session of `client_id`: the kept one (resumed unless `clean`), or a new one;
    /// and whether one was resumed.
    fn attach(
        &self,
        client_id: &str,
        clean: bool,
        window: u16,
    ) -> Result<(Arc<SessionSlot>, bool), ConnectReturnCode> {
        let mut sessions = self.sessions.lock().expect("sessions lock poisoned");
        let stored_owner = self.stored.get(client_id).map(|s| s.owner);
        if let Some(slot) = sessions.get(client_id)
            && !clean
            && stored_owner
                .as_ref()
                .is_none_or(|o| *o == *slot.owner.lock().expect("owner lock poisoned"))
        {
            return Ok((slot.clone(), true));
        }
        // Not held here: the region's record of it (written by another broker, maybe one
        // that died), resumed with its subscriptions; its positions are in the log.
        let stored = (!clean).then(|| self.stored.get(client_id)).flatten();
        if let Some(s) = &stored {
            tracing::info!(client = client_id, subscriptions = s.subscriptions.len(), owner = %s.owner, "an MQTT session resumed from the region's record");
        }
        let mut subscriptions = BTreeMap::new();
        for s in stored.iter().flat_map(|s| &s.subscriptions) {
            if let Ok(parsed) = topics::parse_filter(&s.filter) {
                subscriptions.insert(
                    s.filter.clone(),
                    Subscription {
                        share: parsed.share,
                        filter: parsed.filter,
                        qos: super::stored::qos_of(s.qos),
                        no_local: s.no_local,
                        retain_as_published: s.retain_as_published,
                        id: s.id,
                    },
                );
            }
        }
        if !sessions.contains_key(client_id) && sessions.len() >= self.config.sessions_max {
            return Err(ConnectReturnCode::QuotaExceeded);
        }
        let (queue_tx, queue) = mpsc::channel(self.config.session_queue_max);
        let slot = Arc::new(SessionSlot {
            takeover: match sessions.get(client_id) {
                // A clean start (or a newer record elsewhere) replaces a kept session: its
                // connection is told to go.
                Some(old) => {
                    old.takeover.send_modify(|g| *g += 1);
                    watch::Sender::new(0)
                }
                None => watch::Sender::new(0),
            },
            state: Arc::new(tokio::sync::Mutex::new(SessionState {
                subscriptions,
                outbound: Outbound::new(window),
                inbound: Inbound::default(),
                feeds: HashMap::new(),
                queue_tx,
                queue,
                expiry: 0,
                generation: 0,
                connected: false,
                group: None,
                owner: String::new(),
                acks: HashMap::new(),
                progress: HashMap::new(),
                timers: Vec::new(),
            })),
            owner: std::sync::Mutex::new(String::new()),
        });
        sessions.insert(client_id.to_owned(), slot.clone());
        metrics::gauge!("meridian_mqtt_sessions").set(sessions.len() as f64);
        Ok((slot, stored.is_some()))
    }

    /// Drops `client_id`'s session if it is still `slot` at `generation` (not resumed
    /// since, not replaced).
    async fn detach(&self, client_id: &str, slot: &Arc<SessionSlot>, generation: u64) {
        let mut state = slot.state.lock().await;
        if state.connected || state.generation != generation {
            return;
        }
        state.stop_feeds();
        state.subscriptions.clear();
        // The region's record ends with it, unless another broker took the session since.
        if self
            .stored
            .get(client_id)
            .is_some_and(|s| s.owner == state.owner)
            && let Err(e) = self.save_session(client_id, None).await
        {
            tracing::warn!(client = client_id, error = %e, "an expired MQTT session's record was not ended");
        }
        drop(state);
        let mut sessions = self.sessions.lock().expect("sessions lock poisoned");
        if sessions
            .get(client_id)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
        {
            sessions.remove(client_id);
        }
        metrics::gauge!("meridian_mqtt_sessions").set(sessions.len() as f64);
    }

    /// Writes a message as a record of its topic (and, when retained, of the retained
    /// topic): the future of its acknowledgement.
    async fn store(
        &self,
        message: Message,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let topic = match self.topics.topic_of(&message.name) {
            Ok(t) => t.to_owned(),
            Err(e) => return Box::pin(std::future::ready(Err(e.to_string()))),
        };
        let (_, producer) = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                let why = format!("this broker cannot reach its region: {e}");
                return Box::pin(std::future::ready(Err(why)));
            }
        };
        let key = Bytes::copy_from_slice(message.name.as_bytes());
        let mut record = Record::new(topic, message.payload.clone()).key(key.clone());
        for (k, v) in message.headers() {
            record = match v {
                Some(v) => record.header(k, v),
                None => record.null_header(k),
            };
        }
        let sent = producer.send(record).await;
        let retained = if message.retain {
            let mut r =
                Record::new(self.config.retained_topic.clone(), message.payload.clone()).key(key);
            for (k, v) in message.headers() {
                if let Some(v) = v {
                    r = r.header(k, v);
                }
            }
            Some(producer.send(r).await)
        } else {
            None
        };
        Box::pin(async move {
            sent.await.map_err(|e| e.to_string())?;
            if let Some(r) = retained {
                r.await.map_err(|e| format!("the retained copy: {e}"))?;
            }
            Ok(())
        })
    }
}
