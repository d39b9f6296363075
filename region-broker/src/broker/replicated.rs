//! Replicated log groups on this broker: starting replication (a static region's groups
//! at start, a managed broker's as its region view assigns them), starting and stopping
//! one group's raft or master-slave replica, and what the broker reports of the groups it
//! hosts — leaders, epochs, replicas. A request for a group this broker does not lead is
//! answered with [`BrokerError::NotLeader`] naming the leader's address from the
//! directory. How each group replicates is the log-group layer's ([`HostedGroup`]).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use openraft::error::RaftError;
use openraft::{BasicNode, Raft};

use super::{Broker, BrokerError, LogGroupState, group_dir};
use crate::log_group::Replication;
use crate::replication::master_slave::MasterSlaveGroup;
use crate::replication::raft::{
    Command, CommandResult, JournalLogStore, JournalStateMachine, Shipping, joining,
};
use crate::replication::transport::{GrpcNetwork, Peers, RaftTransportService};

/// What replication needs to open more groups after start.
#[derive(Debug)]
pub(super) struct Replicator {
    node_id: u64,
    raft_config: Arc<openraft::Config>,
    pub(super) peers: Peers,
    pub(super) transport: RaftTransportService,
}

/// How one log group replicates on this broker.
#[derive(Debug, Clone)]
pub(super) enum GroupRole {
    /// By raft; `initialize` names the first members when this broker sets them up.
    Raft {
        initialize: Option<BTreeMap<u64, BasicNode>>,
    },
    /// Master-slave with this initial master and these other replicas.
    MasterSlave {
        master: u32,
        others: Vec<crate::config::Peer>,
    },
}

impl Broker {
    /// The mutual TLS of the replication transport (its listener serves with it), once
    /// replication started with one configured.
    pub fn replication_tls(&self) -> Option<Arc<meridian_security::tls::PeerTls>> {
        self.replication.get()?.peers.tls().cloned()
    }

    /// Starts replication. A statically configured region starts one raft per log group
    /// (the broker with the lowest id initializes their membership, all peers, on its first
    /// start) or a master-slave replica for the groups configured so; a managed broker
    /// starts the groups its region view assigns it, later.
    pub async fn start_replication(
        self: &Arc<Self>,
        transport: &RaftTransportService,
    ) -> Result<(), BrokerError> {
        let config = &self.config;
        let node_id = u64::from(config.broker_id);
        let raft_config = openraft::Config {
            cluster_name: format!("meridian-{}", config.region),
            heartbeat_interval: 100,
            election_timeout_min: 600,
            election_timeout_max: 1200,
            // A snapshot names a journal position; a follower installing it ships the journal
            // up to there from a peer (`JournalStateMachine::ship`). What it covers, raft
            // purges and retention may delete.
            snapshot_policy: match config.replication.snapshot_entries {
                0 => openraft::SnapshotPolicy::Never,
                n => openraft::SnapshotPolicy::LogsSinceLast(n),
            },
            max_in_snapshot_log_to_keep: config.replication.snapshot_entries.clamp(1, 1000),
            // A broker whose disk was replaced comes back with an empty journal: the leader
            // starts its replication over (from a snapshot if the log was purged) rather
            // than stopping. Raft's safety assumes a replica keeps what it acknowledged, so
            // a wiped replica must not be one of a quorum that is also lost.
            allow_log_reversion: Some(true),
            // Entries are whole produce batches (up to batch_bytes_max each): keep one
            // append RPC to a bounded size.
            max_payload_entries: 32,
            ..openraft::Config::default()
        };
        let raft_config = Arc::new(
            raft_config
                .validate()
                .map_err(|e| BrokerError::Invalid(format!("raft configuration: {e}")))?,
        );
        let r = &config.replication;
        let tls = match (&r.tls_ca, &r.tls_cert, &r.tls_key) {
            (Some(ca), Some(cert), Some(key)) => {
                let name = meridian_security::certs::broker_name(&config.region);
                let tls = meridian_security::tls::PeerTls::load(ca, cert, key, &name)
                    .map_err(|e| {
                        BrokerError::Invalid(format!(
                            "the replication transport's TLS (replication.tls_ca, tls_cert, tls_key): {e:#}"
                        ))
                    })?;
                Some(Arc::new(tls))
            }
            _ => None,
        };
        let peers = Peers::new(tls);
        let broker = Arc::downgrade(self);
        peers.set_in_sync_source(Arc::new(move |g| {
            broker.upgrade()?.log_group(g)?.in_sync_as_observed()
        }));
        self.replication
            .set(Replicator {
                node_id,
                raft_config,
                peers,
                transport: transport.clone(),
            })
            .map_err(|_| BrokerError::Replication("replication already started".into()))?;
        // Every group hosted so far replicates from now on: none takes a write before its
        // replication runs.
        for (_, group) in self.log_groups() {
            self.host(Arc::new(group.with_replication(Replication::Starting)));
        }
        if !config.control.is_empty() {
            return Ok(());
        }
        let members: BTreeMap<u64, BasicNode> = config
            .replication
            .peers
            .iter()
            .map(|p| {
                (
                    u64::from(p.id),
                    BasicNode {
                        addr: p.raft.clone(),
                    },
                )
            })
            .collect();
        let initializes = members.keys().next() == Some(&node_id);
        for (g, _) in self.log_groups() {
            let role = match config.master_slave_master(g) {
                Some(master) => GroupRole::MasterSlave {
                    master,
                    others: config
                        .replication
                        .peers
                        .iter()
                        .filter(|p| p.id != config.broker_id)
                        .cloned()
                        .collect(),
                },
                None => GroupRole::Raft {
                    initialize: initializes.then(|| members.clone()),
                },
            };
            self.start_group(g, role).await?;
        }
        Ok(())
    }

    /// Opens log group `g` (if not open) and starts its replication in `role`.
    pub(super) async fn start_group(
        self: &Arc<Self>,
        g: u32,
        role: GroupRole,
    ) -> Result<(), BrokerError> {
        let r = self
            .replication
            .get()
            .ok_or_else(|| BrokerError::Replication("replication is not running".into()))?;
        // Replicated however the broker was configured: a managed broker learns its peers
        // from the control plane, not from its config.
        // Opening recovers the group's journal from disk (seconds on a busy disk): off the
        // async workers, or the task beside it on the same worker (the control-plane
        // heartbeat, say) waits that long and the broker's lease lapses.
        let this = self.clone();
        let hosted = tokio::task::spawn_blocking(move || this.open_log_group(g, true))
            .await
            .map_err(|e| BrokerError::Replication(format!("opening log group {g}: {e}")))??;
        let group = hosted.storage().clone();
        let dir = group_dir(&self.config.data_dir, g);
        r.transport.register_journal(g, group.clone());
        match role {
            GroupRole::MasterSlave { master, others } => {
                let replica = MasterSlaveGroup::open_with(
                    g,
                    group,
                    &dir,
                    (self.config.broker_id, master),
                    self.config.replication.sync_replicas as usize,
                    others,
                    r.peers.master_slave_call(),
                )?;
                r.transport.register_master_slave(g, replica.clone());
                tokio::spawn(replica.clone().run());
                self.host(Arc::new(
                    hosted.with_replication(Replication::MasterSlave(replica)),
                ));
            }
            GroupRole::Raft { initialize } => {
                let store = JournalLogStore::open(group.clone(), &dir)?;
                // A replica joining the group campaigns only once caught up ([`joining`]).
                let joining = joining::is_joining(&dir, initialize.is_some(), store.is_empty());
                let mark = if joining {
                    Some(joining::mark(&dir)?)
                } else {
                    None
                };
                let raft_config = if joining {
                    Arc::new(openraft::Config {
                        enable_elect: false,
                        ..(*r.raft_config).clone()
                    })
                } else {
                    r.raft_config.clone()
                };
                let mut sm =
                    JournalStateMachine::open(group.clone(), &dir)?.with_shipping(Shipping {
                        me: r.node_id,
                        group: g,
                        call: r.peers.master_slave_call(),
                    });
                // In a statically configured region log group 0 carries the catalog.
                if g == 0 && self.config.control.is_empty() {
                    sm = self.with_catalog_hooks(sm);
                }
                let network = GrpcNetwork::new(g, r.peers.clone());
                let raft = Raft::new(r.node_id, raft_config, network, store, sm)
                    .await
                    .map_err(|e| {
                        BrokerError::Replication(format!("starting raft for log group {g}: {e}"))
                    })?;
                if let Some(mark) = mark {
                    tokio::spawn(joining::until_caught_up(raft.clone(), mark, g));
                }
                r.transport.register(g, raft.clone());
                self.host(Arc::new(
                    hosted.with_replication(Replication::Raft(raft.clone())),
                ));
                if let Some(members) = initialize {
                    match raft.initialize(members).await {
                        Ok(()) => {
                            tracing::info!(group = g, "initialized the log group's raft membership")
                        }
                        // Already initialized on an earlier start: nothing to do.
                        Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(
                            _,
                        ))) => {}
                        Err(e) => {
                            return Err(BrokerError::Replication(format!(
                                "initializing log group {g}: {e}"
                            )));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops hosting log group `g`: its replication stops, the group closes, and with
    /// `delete` its directory goes (the group's replicas are elsewhere now).
    pub(super) async fn stop_group(&self, g: u32, delete: bool) -> Result<(), BrokerError> {
        if let Some(r) = self.replication.get() {
            r.transport.unregister(g);
        }
        if let Some(hosted) = self.log_group(g) {
            hosted.stop_replication().await;
        }
        let hosted = self
            .log_groups
            .write()
            .expect("log groups lock poisoned")
            .remove(&g);
        if let Some(hosted) = hosted {
            tokio::task::spawn_blocking(move || hosted.storage().close())
                .await
                .map_err(|e| BrokerError::Replication(format!("closing log group {g}: {e}")))?;
        }
        if delete {
            let dir = group_dir(&self.config.data_dir, g);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        tracing::info!(group = g, deleted = delete, "stopped hosting the log group");
        Ok(())
    }

    /// Stops every group's raft and master-slave task.
    pub async fn stop_replication(&self) {
        for (_, group) in self.log_groups() {
            group.stop_replication().await;
        }
    }

    /// Fails with `NotLeader` unless this broker leads log group `g` (or does not host it).
    pub(super) fn require_leader(&self, g: u32) -> Result<(), BrokerError> {
        match self.log_group(g) {
            Some(group) => group.check_leader().map_err(|e| self.group_error(e)),
            None => Ok(()),
        }
    }

    pub(super) fn not_leader(&self, log_group: u32, leader: Option<u64>) -> BrokerError {
        let leader = leader.and_then(|id| self.peer(u32::try_from(id).ok()?));
        BrokerError::NotLeader {
            log_group,
            epoch: self.epoch(log_group),
            leader_id: leader.as_ref().map(|p| p.id),
            leader: leader.map(|p| p.grpc),
        }
    }

    /// The region's brokers as this broker knows them (configured peers, or the control
    /// plane's view).
    pub fn directory(&self) -> Vec<crate::config::Peer> {
        self.directory
            .read()
            .expect("directory lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// A broker of the region, from the directory.
    pub(super) fn peer(&self, id: u32) -> Option<crate::config::Peer> {
        self.directory
            .read()
            .expect("directory lock poisoned")
            .get(&id)
            .cloned()
    }

    /// Log group `g`'s leadership epoch: its raft term or master-slave epoch.
    pub fn epoch(&self, g: u32) -> u64 {
        self.log_group(g).map_or(0, |group| group.epoch())
    }

    /// Replicates a command through log group `g`'s raft; returns once a quorum holds it
    /// and it is applied here.
    pub(super) async fn replicate(
        &self,
        g: u32,
        command: Command,
    ) -> Result<CommandResult, BrokerError> {
        let group = self
            .log_group(g)
            .ok_or_else(|| BrokerError::Replication("replication is not running".into()))?;
        group
            .replicate(command)
            .await
            .map_err(|e| self.group_error(e))
    }

    /// Sets a master-slave group's epoch and master on this broker (a failover step).
    pub async fn set_master(
        &self,
        g: u32,
        epoch: u64,
        master: Option<u32>,
    ) -> Result<(), BrokerError> {
        let group = self.log_group(g).ok_or_else(|| {
            BrokerError::Invalid(format!(
                "log group {g} is not replicated master-slave on this broker"
            ))
        })?;
        group
            .set_master(epoch, master)
            .await
            .map_err(|e| self.group_error(e))
    }

    /// Adds and removes voting replicas of a raft group (on its leader). An added broker is
    /// first a learner and catches up; it votes once it has.
    pub async fn change_replicas(
        &self,
        g: u32,
        add: &[u32],
        remove: &[u32],
    ) -> Result<(), BrokerError> {
        const NOT_RAFT: &str = "replicas of master-slave groups are fixed by configuration";
        let group = self
            .log_group(g)
            .filter(|group| group.raft().is_some())
            .ok_or_else(|| {
                BrokerError::Invalid(format!(
                    "log group {g} is not replicated by raft here: {NOT_RAFT}"
                ))
            })?;
        self.require_leader(g)?;
        let peer = |id: u32| {
            self.peer(id).ok_or_else(|| {
                BrokerError::Invalid(format!("broker {id} is not a broker of this region"))
            })
        };
        let add = add
            .iter()
            .map(|&id| Ok((id, peer(id)?.raft)))
            .collect::<Result<Vec<_>, BrokerError>>()?;
        for &id in remove {
            peer(id)?;
        }
        let voters = group
            .change_replicas(&add, remove)
            .await
            .map_err(|e| self.group_error(e))?;
        tracing::info!(group = g, ?voters, "log group replicas changed");
        Ok(())
    }

    /// Hands raft group `g`'s leadership (held here) to voter `to` (`None`: its preferred
    /// replica, the first of [`Broker::replicas_of`]) and waits up to `wait` for the
    /// election.
    pub async fn transfer_leadership(
        &self,
        g: u32,
        to: Option<u32>,
        wait: std::time::Duration,
    ) -> Result<crate::log_group::Transferred, BrokerError> {
        // A group hosted elsewhere is answered "not leader" with its leader's address.
        let group = self.hosted(g)?;
        let to = match to {
            Some(to) => to,
            None => *self.replicas_of(g).first().ok_or_else(|| {
                BrokerError::Invalid(format!(
                    "log group {g} is not replicated by raft here: a master-slave group changes master by failover (meridian log-group failover)"
                ))
            })?,
        };
        group
            .transfer_leadership(to, wait)
            .await
            .map_err(|e| self.group_error(e))
    }

    /// The brokers holding log group `g`, as far as this broker knows: raft's voters where
    /// it hosts the group, in the order the group prefers them as leader
    /// ([`crate::log_group::preference_order`], by the control plane's placement in a
    /// managed region; Kafka's first replica is the preferred one), else the leader alone
    /// (empty when it knows none).
    pub fn replicas_of(&self, g: u32) -> Vec<u32> {
        let voters = self
            .log_group(g)
            .map(|group| group.voters())
            .unwrap_or_default();
        if !voters.is_empty() {
            let placed = self.placed_replicas(g);
            return crate::log_group::preference_order(g, voters, placed.as_deref());
        }
        self.leader_id(g).into_iter().collect()
    }

    /// The replicas of log group `g` in sync (Kafka's ISR): the leader's own view when this
    /// broker leads the group; on a raft follower what the leader last announced with its
    /// heartbeats (for [`ANNOUNCED_FOR`](crate::replication::in_sync::ANNOUNCED_FOR));
    /// otherwise every replica.
    pub fn in_sync_replicas(&self, g: u32) -> Vec<u32> {
        self.log_group(g)
            .and_then(|group| group.in_sync())
            .or_else(|| {
                let r = self.replication.get()?;
                r.transport.announced().get(g, std::time::Instant::now())
            })
            .unwrap_or_else(|| self.replicas_of(g))
    }

    /// The replication state of every log group on this broker.
    pub fn log_groups_info(&self) -> Vec<LogGroupState> {
        self.log_groups()
            .into_iter()
            .map(|(_, group)| group.state())
            .collect()
    }
}
