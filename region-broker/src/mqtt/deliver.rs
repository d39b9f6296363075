//! Outbound messages: SUBSCRIBE and UNSUBSCRIBE turned into feeds (a reader per Meridian
//! topic the filters reach), retained messages on SUBSCRIBE, each fed record delivered
//! once at the QoS its subscriptions grant, and the commits of how far the client
//! acknowledged.

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::mqtt::QoS;
use meridian_proto::mqtt::packet::*;
use tokio::sync::oneshot;

use crate::broker::acls::Principal;
use meridian_security::acl::{Operation, ResourceType};

use super::connection::{Close, Connection, now_ms};
use super::feed;
use super::record::{max_qos, min_qos};
use super::sessions::{SessionState, Subscription};
use super::topics;

/// How long a SUBSCRIBE waits for its feeds to start before its SUBACK goes anyway.
const FEEDS_START_WAIT: Duration = Duration::from_secs(15);

/// Feeds (Meridian topics read) of one session, at most.
const FEEDS_MAX: usize = 256;

/// Bytes of retained messages one SUBSCRIBE sends at most (the rest are not sent: logged).
const RETAINED_BURST_BYTES: usize = 16 << 20;

/// How often a session commits how far its client acknowledged (what a broker's death
/// may deliver again).
pub(super) const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

impl Connection {
    /// Whether the ACLs let this client do `operation` on each of the Meridian `topics`.
    /// The check owns what it reads, so no borrow of the connection (not `Sync`) is held
    /// across it.
    pub(super) fn may(
        &self,
        operation: Operation,
        topics: Vec<String>,
    ) -> impl Future<Output = bool> + Send + 'static {
        let check = self.mqtt.broker.config().auth.acls_enabled.then(|| {
            let broker = self.mqtt.broker.clone();
            (broker, self.principal.clone(), self.host.clone())
        });
        async move {
            let Some((broker, principal, host)) = check else {
                return true;
            };
            for topic in &topics {
                let who = Principal {
                    name: &principal,
                    host: &host,
                };
                if !broker
                    .authorize(who, operation, ResourceType::Topic, topic)
                    .await
                {
                    return false;
                }
            }
            true
        }
    }

    /// The topics a client must be allowed to read to subscribe to `filter`: every
    /// existing topic it may match, and, when its first level is a wildcard (topics made
    /// later are reached too), every topic (`*`). None when ACLs are off.
    fn read_targets(&self, filter: &str) -> Vec<String> {
        if !self.mqtt.broker.config().auth.acls_enabled {
            return Vec::new();
        }
        let mut targets = Vec::new();
        if filter.starts_with(['+', '#']) {
            targets.push("*".to_owned());
        }
        let names = self.mqtt.refresh_topics();
        targets.extend(
            self.mqtt
                .topics
                .topics_for(filter, &names)
                .into_iter()
                .map(str::to_owned),
        );
        if let Ok(t) = self
            .mqtt
            .topics
            .topic_of(filter.trim_end_matches(['#', '+', '/']))
            && !t.is_empty()
        {
            targets.push(t.to_owned());
        }
        targets
    }

    /// A SUBSCRIBE: each filter checked and granted, retained messages sent, feeds started.
    pub(super) async fn subscribe(
        &mut self,
        s: Subscribe,
        state: &mut SessionState,
    ) -> Result<(), Close> {
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
            if !self
                .may(Operation::Read, self.read_targets(&parsed.filter))
                .await
            {
                codes.push(SubscribeReasonCode::NotAuthorized);
                continue;
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

    /// Its subscriptions changed: shown so, and a persistent session's record written.
    pub(super) async fn save(&mut self, state: &SessionState) {
        state.show_subscriptions();
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
    pub(super) async fn update_feeds(&mut self, state: &mut SessionState, resume: bool) {
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
            names = self.mqtt.refresh_topics();
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
                self.mqtt.broker.clone(),
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
    pub(super) fn deliver(&mut self, state: &mut SessionState, item: Box<feed::Item>) {
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
    pub(super) fn commit(&mut self, state: &mut SessionState) {
        state.show_progress();
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
            let mut failed = Vec::new();
            for ((group, topic, partition), offset) in commits {
                if let Err(e) = mqtt
                    .broker
                    .commit_offset_anywhere(&group, &topic, partition, offset)
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
    pub(super) fn emit(&mut self, state: &mut SessionState, publish: Publish) -> Option<u16> {
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
}
