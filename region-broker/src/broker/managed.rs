//! A managed broker (`control` configured): it registers with the control plane under a
//! lease, renews it with heartbeats that report the log groups it leads, and long-polls its
//! region's *view* — the region's brokers, log groups with replicas and leaders, topics and
//! deleted topic ids — which it applies: it starts the groups it is a replica of (the first
//! replica of a new raft group initializes its membership), stops and deletes the groups it
//! no longer is a replica of, and brings its topic catalog in line.
//!
//! The view is kept on disk (`region-view.pb`) and applied at start before serving, so a
//! broker restarted while no control plane is up serves what it served before. Nothing on
//! the data path asks the control plane anything.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::settings::TimestampType;
use meridian_proto::v1;
use openraft::BasicNode;
use prost::Message;

use super::replicated::GroupRole;
use super::{Acks, Broker, BrokerError, Strategy, Topic};
use crate::config::Peer;

/// What the broker holds of the control plane's view.
#[derive(Debug, Default)]
pub(super) struct ViewState {
    hash: u64,
    version: u64,
    /// The control plane that granted the lease, and the lease.
    lease: Option<(String, i64)>,
    /// Stopping cleanly: register no more.
    stopping: bool,
    /// Leader of each group of the region, as reported.
    leaders: BTreeMap<u32, u32>,
    /// Every log group of the region, led or not.
    groups: Vec<u32>,
    /// Each log group's replicas as the control plane placed them (the first its
    /// preferred leader).
    placed: BTreeMap<u32, Vec<u32>>,
    /// Until when the lease surely holds: the last renewal's send time plus the lease time.
    /// Past it the control plane may have given this broker up and moved a strictly
    /// ordered topic's home: such writes are refused.
    lease_until: Option<tokio::time::Instant>,
    /// A view from the control plane (not only the saved one) was applied.
    fresh: bool,
}

impl ViewState {
    /// Whether this broker holds a lease of the control plane now.
    pub(super) fn is_registered(&self) -> bool {
        self.lease.is_some()
    }
}

/// Why this broker may not take writes of a strictly ordered topic homed in its region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum HomeRefused {
    /// No view from the control plane since start.
    #[error("it has not heard from the control plane since it started")]
    NotHeard,
    /// The lease may have expired.
    #[error("its control-plane lease may have lapsed")]
    LeaseLapsed,
}

/// Why a control-plane session ended.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("{0}")]
    Address(tonic::transport::Error),
    #[error("connecting: {0}")]
    Connect(tonic::transport::Error),
    #[error("registering: {}", .0.message())]
    Register(tonic::Status),
    #[error("watching the region: {}", .0.message())]
    Watch(tonic::Status),
    #[error("applying region view {version}: {source}")]
    Apply {
        version: u64,
        source: Box<BrokerError>,
    },
    #[error("the lease was lost")]
    LeaseLost,
}

const VIEW_FILE: &str = "region-view.pb";
/// How long one `WatchRegion` long poll waits.
const WATCH_WAIT_MS: u32 = 10_000;
/// How often the heartbeat task looks for a change worth reporting at once.
const REPORT_POLL: Duration = Duration::from_millis(100);

impl Broker {
    /// Whether this broker may take writes of a strictly ordered topic homed in its region:
    /// it applied a view from the control plane and its lease surely still holds.
    pub(super) fn may_write_home(&self) -> Result<(), HomeRefused> {
        let view = self.view.read().expect("view lock poisoned");
        if !view.fresh {
            return Err(HomeRefused::NotHeard);
        }
        match view.lease_until {
            Some(until) if tokio::time::Instant::now() < until => Ok(()),
            _ => Err(HomeRefused::LeaseLapsed),
        }
    }

    /// `group`'s replicas as the control plane placed them (`None` in a static region, or
    /// before a view placed it).
    pub(super) fn placed_replicas(&self, group: u32) -> Option<Vec<u32>> {
        self.view
            .read()
            .expect("view lock poisoned")
            .placed
            .get(&group)
            .cloned()
    }

    /// The leader of `group` as the control plane last reported it.
    pub(super) fn reported_leader(&self, group: u32) -> Option<u32> {
        self.view
            .read()
            .expect("view lock poisoned")
            .leaders
            .get(&group)
            .copied()
    }

    /// Every log group of the region, sorted: the control plane's in a managed region,
    /// else this broker's (a static region's brokers all hold every group).
    pub fn region_log_groups(&self) -> Vec<u32> {
        if !self.config.control.is_empty() {
            return self.view.read().expect("view lock poisoned").groups.clone();
        }
        let mut groups: Vec<u32> = self.log_groups().into_iter().map(|(g, _)| g).collect();
        groups.sort_unstable();
        groups
    }

    /// The log groups this broker leads now (raft leader or master), with their epochs.
    pub fn leading(&self) -> Vec<(u32, u64)> {
        // Polled every 100 ms by the heartbeat task.
        self.log_groups
            .read()
            .expect("log groups lock poisoned")
            .iter()
            .filter_map(|(g, group)| Some((*g, group.leading()?)))
            .collect()
    }

    /// `(hash, version)` of the region view applied last.
    pub fn applied_view(&self) -> (u64, u64) {
        let v = self.view.read().expect("view lock poisoned");
        (v.hash, v.version)
    }

    /// Applies the view saved by an earlier run, if any (before serving).
    pub async fn apply_saved_view(self: &Arc<Self>) -> Result<(), BrokerError> {
        let path = self.config.data_dir.join(VIEW_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let view = v1::RegionView::decode(bytes.as_slice()).map_err(|e| {
            BrokerError::Invalid(format!(
                "{} does not decode ({e}): delete it and the broker fetches a fresh view",
                path.display()
            ))
        })?;
        tracing::info!(
            version = view.version,
            "applying the region view saved by the last run"
        );
        self.apply_view(&view).await
    }

    /// Brings this broker in line with `view` (see the module's doc), then saves it.
    pub async fn apply_view(self: &Arc<Self>, view: &v1::RegionView) -> Result<(), BrokerError> {
        let me = self.config.broker_id;
        {
            let mut directory = self.directory.write().expect("directory lock poisoned");
            for b in &view.brokers {
                directory.insert(
                    b.id,
                    Peer {
                        id: b.id,
                        raft: b.raft.clone(),
                        grpc: b.grpc.clone(),
                        kafka: (!b.kafka.is_empty()).then(|| b.kafka.clone()),
                    },
                );
                // Raft reaches a broker where it is now, whatever its membership entry says.
                if let Some(r) = self.replication.get() {
                    r.peers.set_address(u64::from(b.id), b.raft.clone());
                }
            }
        }
        // Deleted ids first, so no group ever indexes a dead topic's records as unknown.
        for &id in &view.retired {
            let retired = self
                .catalog
                .read()
                .expect("catalog lock poisoned")
                .retired()
                .contains(&id);
            if !retired {
                self.catalog
                    .write()
                    .expect("catalog lock poisoned")
                    .retire(id)?;
                for (_, g) in self.log_groups() {
                    g.storage().retire_topic(id);
                }
            }
        }
        // Topics before groups: a group opened below picks its partitions from the catalog.
        let wanted: BTreeMap<&str, &v1::TopicInRegion> =
            view.topics.iter().map(|t| (t.name.as_str(), t)).collect();
        for local in self.topics() {
            match wanted.get(local.name.as_str()) {
                Some(t) if t.id == local.id => {}
                _ => self.delete_topic_local(&local.name)?,
            }
        }
        for t in &view.topics {
            let acks = Acks::parse(&t.acks).map_err(|e| BrokerError::Invalid(e.to_string()))?;
            let home = (!t.home.is_empty()).then(|| super::catalog::Home {
                region: t.home.clone(),
                epoch: t.home_epoch,
                closed: t.home_closed,
            });
            let txn_default =
                super::transactions::coordinator::Outcome::parse_default(&t.txn_default)
                    .map_err(BrokerError::Invalid)?;
            let timestamp_type = TimestampType::parse(&t.timestamp_type)
                .map_err(|e| BrokerError::Invalid(e.to_string()))?;
            let configs: BTreeMap<String, String> = t
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let config = meridian_proto::topic_config::TopicConfig::parse(&configs)
                .map_err(|e| BrokerError::Invalid(e.to_string()))?;
            let retention_ms = super::retention::parse(&t.retention)
                .map_err(|e| BrokerError::Invalid(format!("topic {}: {e}", t.name)))?;
            let held = self.topic(&t.name).ok();
            if held.as_ref().is_some_and(|h| {
                h.groups == t.groups
                    && h.acks == acks
                    && h.home == home
                    && h.txn_default == txn_default
                    && h.timestamp_type == timestamp_type
                    && h.config == config
                    && h.retention_ms == retention_ms
            }) {
                continue;
            }
            self.create_topic_local(Topic {
                name: t.name.clone(),
                id: t.id,
                groups: t.groups.clone(),
                created_ms: t.created_ms,
                replication: Strategy::parse(&t.strategy)
                    .map_err(|e| BrokerError::Invalid(e.to_string()))?,
                acks,
                home,
                txn_default,
                timestamp_type,
                config,
                retention_ms,
            })?;
        }
        let hosted: BTreeSet<u32> = self.log_groups().into_iter().map(|(g, _)| g).collect();
        for g in &view.groups {
            let mine = g.replicas.contains(&me);
            let running = self.log_group(g.id).is_some_and(|h| h.is_replicating());
            // One group failing to start (a peer not known yet, say) does not keep the others
            // from starting; the next view tries it again.
            if mine && !running {
                tracing::info!(group = g.id, replicas = ?g.replicas, strategy = %g.strategy, "hosting a log group the control plane assigned");
                let started = match self.role_of(g) {
                    Ok(role) => self.start_group(g.id, role).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = started {
                    tracing::warn!(group = g.id, error = %e, "cannot start the log group yet");
                }
            } else if !mine && hosted.contains(&g.id) {
                // Raft has moved the group's membership past this broker: its copy is stale.
                self.stop_group(g.id, true).await?;
            }
        }
        self.apply_takeover(view);
        {
            let mut state = self.view.write().expect("view lock poisoned");
            state.hash = view.hash;
            state.version = view.version;
            state.leaders = view
                .groups
                .iter()
                .filter_map(|g| g.leader.map(|l| (g.id, l)))
                .collect();
            state.placed = view
                .groups
                .iter()
                .map(|g| (g.id, g.replicas.clone()))
                .collect();
            state.groups = view.groups.iter().map(|g| g.id).collect();
            state.groups.sort_unstable();
        }
        // Saved with every broker ever known (not only the live ones), so a restart can
        // reach the replicas of its groups before the control plane answers.
        let mut saved = view.clone();
        saved.brokers = self
            .directory()
            .into_iter()
            .map(|p| v1::BrokerEndpoint {
                id: p.id,
                region: self.config.region.clone(),
                grpc: p.grpc,
                raft: p.raft,
                live: view.brokers.iter().any(|b| b.id == p.id),
                kafka: p.kafka.unwrap_or_default(),
                version: String::new(),
            })
            .collect();
        let path = self.config.data_dir.join(VIEW_FILE);
        let tmp = path.with_extension("pb.tmp");
        std::fs::write(&tmp, saved.encode_to_vec())?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// How this broker replicates `group`.
    fn role_of(&self, group: &v1::LogGroupPlacement) -> Result<GroupRole, BrokerError> {
        let me = self.config.broker_id;
        let peer = |id: u32| {
            self.peer(id).ok_or_else(|| {
                BrokerError::Replication(format!(
                    "log group {} names broker {id}, which the region view does not list",
                    group.id
                ))
            })
        };
        match Strategy::parse(&group.strategy).map_err(|e| BrokerError::Invalid(e.to_string()))? {
            Strategy::MasterSlave => Ok(GroupRole::MasterSlave {
                master: group.replicas.first().copied().unwrap_or(me),
                others: group
                    .replicas
                    .iter()
                    .filter(|&&b| b != me)
                    .map(|&b| peer(b))
                    .collect::<Result<_, _>>()?,
            }),
            Strategy::Raft => {
                let initialize = if group.changes == 0 && group.replicas.first() == Some(&me) {
                    let mut members = BTreeMap::new();
                    for &b in &group.replicas {
                        members.insert(
                            u64::from(b),
                            BasicNode {
                                addr: peer(b)?.raft,
                            },
                        );
                    }
                    Some(members)
                } else {
                    None
                };
                Ok(GroupRole::Raft { initialize })
            }
        }
    }

    /// Keeps this broker registered and its view current, until the process stops. Every
    /// failure is logged and retried; the data path never waits on any of it.
    pub async fn run_managed(self: Arc<Self>) {
        let control = self.config.control.clone();
        let mut next = 0;
        loop {
            if self.view.read().expect("view lock poisoned").stopping {
                return;
            }
            let addr = &control[next % control.len()];
            if let Err(e) = self.session(addr).await {
                tracing::warn!(control = %addr, error = %e, "control plane session ended; retrying");
                next += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    /// One registration: heartbeats and view watches until something fails.
    async fn session(self: &Arc<Self>, addr: &str) -> Result<(), SessionError> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(SessionError::Address)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let channel = meridian_proto::auth::connect(endpoint)
            .await
            .map_err(SessionError::Connect)?;
        let mut client = v1::control_plane_client::ControlPlaneClient::new(channel);
        let c = &self.config;
        let registered = client
            .register_broker(v1::RegisterBrokerRequest {
                broker: Some(v1::BrokerEndpoint {
                    id: c.broker_id,
                    region: c.region.clone(),
                    grpc: c.grpc_address(),
                    raft: c
                        .replication
                        .raft_listen
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    live: true,
                    kafka: c.kafka_address().unwrap_or_default(),
                    version: env!("CARGO_PKG_VERSION").to_owned(),
                }),
            })
            .await
            .map_err(SessionError::Register)?
            .into_inner();
        tracing::info!(control = %addr, region = %c.region, lease = registered.lease, "registered with the control plane");
        self.view.write().expect("view lock poisoned").lease =
            Some((addr.to_owned(), registered.lease));
        let ttl = Duration::from_millis(registered.ttl_ms);
        self.view.write().expect("view lock poisoned").lease_until = None;
        let heartbeat = tokio::spawn(heartbeats(
            self.clone(),
            client.clone(),
            registered.lease,
            ttl,
        ));
        let result = async {
            loop {
                let (hash, _) = self.applied_view();
                let view = client
                    .watch_region(v1::WatchRegionRequest {
                        region: c.region.clone(),
                        known_hash: hash,
                        wait_ms: WATCH_WAIT_MS,
                    })
                    .await
                    .map_err(SessionError::Watch)?
                    .into_inner();
                if view.hash != hash {
                    self.apply_view(&view)
                        .await
                        .map_err(|e| SessionError::Apply {
                            version: view.version,
                            source: Box::new(e),
                        })?;
                }
                self.view.write().expect("view lock poisoned").fresh = true;
                if heartbeat.is_finished() {
                    return Err(SessionError::LeaseLost);
                }
            }
        }
        .await;
        heartbeat.abort();
        result
    }
}

impl Broker {
    /// Gives the lease up (a clean stop), so routes drop this broker at once. Best effort:
    /// without an answer within a second the lease simply expires.
    pub async fn deregister(&self) {
        let lease = {
            let mut view = self.view.write().expect("view lock poisoned");
            view.stopping = true;
            view.lease.take()
        };
        let Some((addr, lease)) = lease else {
            return;
        };
        let request = v1::DeregisterBrokerRequest {
            region: self.config.region.clone(),
            id: self.config.broker_id,
            lease,
        };
        let call = async {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?;
            let channel = meridian_proto::auth::connect(endpoint)
                .await
                .map_err(|e| e.to_string())?;
            v1::control_plane_client::ControlPlaneClient::new(channel)
                .deregister_broker(request)
                .await
                .map_err(|s| s.message().to_owned())
        };
        match tokio::time::timeout(Duration::from_secs(1), call).await {
            Ok(Ok(_)) => tracing::info!("deregistered from the control plane"),
            Ok(Err(e)) => tracing::warn!(error = %e, "deregistering; the lease will expire"),
            Err(_) => tracing::warn!("deregistering timed out; the lease will expire"),
        }
    }
}

/// Renews the lease every `interval`, and at once when what this broker leads or the view it
/// applied changes. Ends when the lease is lost or the control plane stops answering.
async fn heartbeats(
    broker: Arc<Broker>,
    mut client: v1::control_plane_client::ControlPlaneClient<meridian_proto::auth::Authed>,
    lease: i64,
    ttl: Duration,
) {
    let interval = (ttl / 3).max(REPORT_POLL);
    let mut reported = None;
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let now = (broker.leading(), broker.applied_view().1);
        if reported.as_ref() == Some(&now) && last_sent.elapsed() < interval {
            tokio::time::sleep(REPORT_POLL).await;
            continue;
        }
        let request = v1::BrokerHeartbeatRequest {
            region: broker.config.region.clone(),
            id: broker.config.broker_id,
            lease,
            leading: now
                .0
                .iter()
                .map(|&(group, epoch)| v1::GroupLeadership { group, epoch })
                .collect(),
            applied_version: now.1,
        };
        let sent = tokio::time::Instant::now();
        match tokio::time::timeout(
            interval.max(Duration::from_secs(1)),
            client.broker_heartbeat(request),
        )
        .await
        {
            Ok(Ok(_)) => {
                reported = Some(now);
                last_sent = tokio::time::Instant::now();
                // Renewed no earlier than it was sent: it holds at least a lease from then.
                broker.view.write().expect("view lock poisoned").lease_until = Some(sent + ttl);
            }
            Ok(Err(status)) => {
                tracing::warn!(error = %status.message(), "heartbeat refused");
                return;
            }
            Err(_) => {
                tracing::warn!("heartbeat timed out");
                return;
            }
        }
    }
}
