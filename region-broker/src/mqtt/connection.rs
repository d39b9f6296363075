//! One MQTT connection: its CONNECT, its session (taken over from an earlier connection
//! of the same client id, or new), then packets in and messages out until it ends, and
//! its will when it ends without a DISCONNECT.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use meridian_proto::mqtt::packet::*;
use meridian_proto::mqtt::{self, DecodeError, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::Mqtt;
use super::deliver::COMMIT_INTERVAL;
use super::publish::StoreResult;
use super::record::Message;
use super::session::{AckOutcome, Resend};
use super::sessions::{Place3, SessionSlot, SessionState};
use super::topics;

/// Why a connection ends, as MQTT 5 tells the client (3.1.1 just closes).
pub(super) struct Close {
    pub(super) reason: DisconnectReasonCode,
    pub(super) why: String,
    /// Whether the will is published.
    pub(super) will: bool,
}

impl Close {
    pub(super) fn protocol(reason: DisconnectReasonCode, why: impl Into<String>) -> Close {
        Close {
            reason,
            why: why.into(),
            will: true,
        }
    }
}

/// A will, kept while its connection lasts.
pub(super) struct Will {
    pub(super) message: Message,
    pub(super) delay: u32,
    /// Its message expiry interval (s), from when it is published.
    pub(super) expiry: Option<u32>,
}

pub(super) use crate::broker::now_ms;

/// How long a connection waits for its session while another connection lets it go.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// How long a write to a client may take before the connection is closed.
const WRITE_WAIT: Duration = Duration::from_secs(30);
/// Serves one connection until it ends.
///
/// `certified`: the common name of the client's certificate, when it presented one the
/// listener checked: its user name, no password asked.
pub(super) async fn run<S>(
    mqtt: Arc<Mqtt>,
    mut stream: S,
    peer: SocketAddr,
    certified: Option<String>,
) where
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
        principal: format!(
            "User:{}",
            certified.as_deref().unwrap_or_else(|| login
                .as_ref()
                .map(|l| l.username.as_str())
                .filter(|u| !u.is_empty())
                .unwrap_or("ANONYMOUS"))
        ),
        host: peer.ip().to_string(),
    };
    let checked = match &certified {
        Some(_) => Ok(()),
        None => super::login::check(&mqtt, login.as_ref(), peer).await,
    };
    let accepted = match checked {
        Ok(()) => conn.accept(connect, will).await,
        Err(code) => Err(code),
    };
    let session = match accepted {
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
    {
        let mut v = state.view.lock().expect("view lock poisoned");
        v.connected = true;
        v.peer = peer.to_string();
        v.protocol = match version {
            Version::V311 => "3.1.1",
            Version::V5 => "5",
        };
        v.since_ms = now_ms();
    }
    state.show_subscriptions();
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

pub(super) struct Connection {
    pub(super) mqtt: Arc<Mqtt>,
    pub(super) version: Version,
    pub(super) out: BytesMut,
    pub(super) client_id: String,
    pub(super) client_max_packet: u32,
    pub(super) keep_alive: u16,
    pub(super) will: Option<Will>,
    /// PUBLISHes being stored, answered in the order they came (MQTT 4.6).
    pub(super) stores: FuturesOrdered<Pin<Box<dyn Future<Output = StoreResult> + Send>>>,
    /// MQTT 5's request problem information: reason strings may be sent.
    pub(super) problem_info: bool,
    /// QoS 2 packet ids whose PUBLISH is being stored (a resent one is answered when the
    /// first is stored, not before).
    pub(super) storing: std::collections::HashSet<u16>,
    /// The commit in flight; it answers with the places it failed to commit.
    pub(super) commit_task: Option<tokio::task::JoinHandle<Vec<Place3>>>,
    /// Who connected (`User:NAME`; `User:ANONYMOUS` without a user name), and from where:
    /// what the ACLs are asked about.
    pub(super) principal: String,
    pub(super) host: String,
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
        state.owner = format!("{}{:016x}", self.mqtt.owner_prefix(), rand_id());
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
    pub(super) fn send(&mut self, p: &Packet) {
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
        state.show_progress();
        {
            let mut v = state.view.lock().expect("view lock poisoned");
            v.connected = false;
            v.since_ms = now_ms();
        }
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
