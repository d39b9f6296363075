//! A broker's MQTT sessions: each client id's slot (taken over by a newer connection of
//! the same id), the session state a connection works on (subscriptions, the outbound
//! window, feeds, what is in flight and how far the client acknowledged), and attaching
//! a connection to one — the kept session, the region's record of it, or a new one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use meridian_proto::mqtt::QoS;
use meridian_proto::mqtt::packet::ConnectReturnCode;
use meridian_proto::v1;
use tokio::sync::{mpsc, watch};

use super::Mqtt;
use super::feed;
use super::session::{Inbound, Outbound};
use super::topics;

/// A session as a broker keeps it between connections.
pub(crate) struct SessionSlot {
    /// Told a new generation when another connection takes the session over.
    pub(super) takeover: watch::Sender<u64>,
    /// The owner its record was last written with (`stored.rs`): a record of another
    /// owner means another broker took the session over since.
    pub(super) owner: std::sync::Mutex<String>,
    pub(super) state: Arc<tokio::sync::Mutex<SessionState>>,
    /// What operators are shown of it (`ListMqttSessions`).
    pub(super) view: Arc<std::sync::Mutex<View>>,
}

/// What operators are shown of a session, kept beside its state (whose lock its
/// connection holds for as long as it lasts): updated as the session connects, changes
/// its subscriptions, commits and disconnects.
#[derive(Debug, Clone, Default)]
pub(super) struct View {
    pub(super) connected: bool,
    pub(super) peer: String,
    pub(super) protocol: &'static str,
    pub(super) since_ms: i64,
    pub(super) expiry: u32,
    pub(super) subscriptions: Vec<String>,
    pub(super) in_flight: u32,
    pub(super) queued: u32,
}

pub(super) struct Subscription {
    pub(super) share: Option<String>,
    pub(super) filter: String,
    pub(super) qos: QoS,
    pub(super) no_local: bool,
    pub(super) retain_as_published: bool,
    pub(super) id: Option<usize>,
}

pub(super) struct SessionState {
    /// Its [`View`] (shared with its slot).
    pub(super) view: Arc<std::sync::Mutex<View>>,
    /// Subscriptions by their filter as the client wrote it.
    pub(super) subscriptions: BTreeMap<String, Subscription>,
    pub(super) outbound: Outbound,
    pub(super) inbound: Inbound,
    /// Feeds by (Meridian topic, share).
    pub(super) feeds: HashMap<(String, Option<String>), tokio::task::JoinHandle<()>>,
    /// Boxed: a channel allocates its slots in blocks up front, so an idle session's
    /// queue costs a block of pointers, not of messages.
    pub(super) queue_tx: mpsc::Sender<Box<feed::Item>>,
    pub(super) queue: mpsc::Receiver<Box<feed::Item>>,
    /// Seconds the session outlives its connection.
    pub(super) expiry: u32,
    /// Bumped when a connection ends; an expiry or will timer of an older generation
    /// does nothing.
    pub(super) generation: u64,
    /// A connection holds it now.
    pub(super) connected: bool,
    /// A persistent session's consumer group (its positions in the log).
    pub(super) group: Option<String>,
    /// Who wrote its record last (`stored.rs`).
    pub(super) owner: String,
    /// Where each message in flight to the client is in the log, by packet id.
    pub(super) acks: HashMap<u16, Place>,
    /// How far the client has acknowledged, per (group, topic, partition).
    pub(super) progress: HashMap<Place3, Progress>,
    /// The expiry and will timers of its last disconnect, stopped when it is resumed.
    pub(super) timers: Vec<tokio::task::AbortHandle>,
}

pub(super) type Place3 = (String, String, u32);
pub(super) type Place = (Place3, u64);

/// A partition's messages handed to a session: committed up to the first one in flight.
#[derive(Debug, Default)]
pub(super) struct Progress {
    pub(super) next: u64,
    /// Offsets in flight, each with how many deliveries of it are.
    pub(super) in_flight: BTreeMap<u64, u32>,
    pub(super) committed: Option<u64>,
}

impl Progress {
    pub(super) fn point(&self) -> u64 {
        self.in_flight
            .first_key_value()
            .map_or(self.next, |(&o, _)| o)
    }
}

impl SessionState {
    /// Updates what operators are shown of its subscriptions and expiry.
    pub(super) fn show_subscriptions(&self) {
        let mut v = self.view.lock().expect("view lock poisoned");
        v.expiry = self.expiry;
        v.subscriptions = self
            .subscriptions
            .iter()
            .map(|(raw, s)| format!("{raw}@{}", super::record::qos_number(s.qos)))
            .collect();
    }

    /// Updates what operators are shown of its messages in flight and queued.
    pub(super) fn show_progress(&self) {
        let mut v = self.view.lock().expect("view lock poisoned");
        v.in_flight = self.acks.len() as u32;
        v.queued = self.queue.len() as u32;
    }

    /// The client acknowledged packet `pkid`: its message is no longer in flight.
    pub(super) fn acked(&mut self, pkid: u16) {
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
    pub(super) fn take_commits(&mut self) -> Vec<(Place3, u64)> {
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
    pub(super) fn record(&self) -> super::stored::StoredSession {
        super::stored::StoredSession {
            subscriptions: self
                .subscriptions
                .iter()
                .map(|(raw, s)| super::stored::StoredSubscription {
                    filter: raw.clone(),
                    qos: super::record::qos_number(s.qos),
                    no_local: s.no_local,
                    retain_as_published: s.retain_as_published,
                    id: s.id,
                })
                .collect(),
            expiry: self.expiry,
            owner: self.owner.clone(),
        }
    }

    pub(super) fn stop_feeds(&mut self) {
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

/// Sessions, and records, `ListMqttSessions` lists at most.
const LIST_MAX: usize = 2_000;

impl Mqtt {
    /// What `ListMqttSessions` answers: the sessions this broker holds and the region's
    /// session records it has read, the first [`LIST_MAX`] of each by client id.
    pub fn list_sessions(&self) -> v1::ListMqttSessionsResponse {
        let (held, sessions_total): (Vec<(String, View)>, usize) = {
            let sessions = self.sessions.lock().expect("sessions lock poisoned");
            let mut ids: Vec<&String> = sessions.keys().collect();
            ids.sort_unstable();
            let listed = ids
                .into_iter()
                .take(LIST_MAX)
                .map(|id| {
                    let v = sessions[id]
                        .view
                        .lock()
                        .expect("view lock poisoned")
                        .clone();
                    (id.clone(), v)
                })
                .collect();
            (listed, sessions.len())
        };
        let (stored, stored_total) = self.stored.list(LIST_MAX);
        v1::ListMqttSessionsResponse {
            broker_id: self.broker.config().broker_id,
            serving: true,
            sessions: held
                .into_iter()
                .map(|(client_id, v)| v1::MqttSessionInfo {
                    client_id,
                    connected: v.connected,
                    peer: v.peer,
                    protocol: v.protocol.to_owned(),
                    since_ms: v.since_ms,
                    expiry_s: v.expiry,
                    subscriptions: v.subscriptions,
                    in_flight: v.in_flight,
                    queued: v.queued,
                })
                .collect(),
            sessions_total: sessions_total as u32,
            stored: stored
                .into_iter()
                .map(|(client_id, s)| v1::MqttStoredSession {
                    client_id,
                    subscriptions: s
                        .subscriptions
                        .iter()
                        .map(|f| format!("{}@{}", f.filter, f.qos))
                        .collect(),
                    expiry_s: s.expiry,
                    owner: s.owner,
                })
                .collect(),
            stored_total: stored_total as u32,
        }
    }

    /// How the owners of this broker's connections start: its region and id (the
    /// sessions topic spans every region).
    pub(super) fn owner_prefix(&self) -> String {
        let config = self.broker.config();
        format!("{}/{}/", config.region, config.broker_id)
    }

    /// The region's record of `client_id` was written by `owner`. When that is another
    /// broker's connection, the session moved there (a client id is connected once in
    /// MQTT): a connection holding it here is told to go, as a local takeover is.
    pub(super) fn moved_elsewhere(&self, client_id: &str, owner: &str) {
        if owner.starts_with(&self.owner_prefix()) {
            return;
        }
        let sessions = self.sessions.lock().expect("sessions lock poisoned");
        if let Some(slot) = sessions.get(client_id)
            && slot.view.lock().expect("view lock poisoned").connected
        {
            tracing::info!(
                client = client_id,
                owner,
                "an MQTT session was taken over at another broker; its connection here is closed"
            );
            slot.takeover.send_modify(|g| *g += 1);
        }
    }

    /// The session of `client_id`: the kept one (resumed unless `clean`), or a new one;
    /// and whether one was resumed.
    pub(super) fn attach(
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
        let view = Arc::new(std::sync::Mutex::new(View::default()));
        let slot = Arc::new(SessionSlot {
            view: view.clone(),
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
                view,
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
    pub(super) async fn detach(&self, client_id: &str, slot: &Arc<SessionSlot>, generation: u64) {
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
}
