//! The `[replication]` section: how a region's brokers replicate its log groups (raft or
//! master-slave), and the mutual TLS of the replication transport.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::ValueError;

/// The `[replication]` section: a static description of the region's brokers. With peers, every
/// log group is a raft group over all of them (replication factor = number of brokers).
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Address of the inter-broker raft transport.
    pub raft_listen: Option<SocketAddr>,
    /// Every broker of the region, this one included; empty: this broker runs alone.
    pub peers: Vec<Peer>,
    /// Log groups replicated master-slave instead of raft, each with its initial master
    /// (the epoch and master then live in the group's `master-slave.json`; a controlled
    /// failover moves them). Log group 0 carries the topic catalog and is always raft.
    pub master_slave: Vec<MasterSlaveGroup>,
    /// Slaves that must hold a record before a master-slave group commits it (quorum acks
    /// wait for this many).
    pub sync_replicas: u32,
    /// Replicas (the leader included) that must hold a batch before an `acks=all` produce
    /// is answered, and that must be in sync for one to be written at all (Kafka's
    /// `min.insync.replicas`); 0 or anything up to the commit quorum: the quorum.
    pub min_insync_replicas: u32,
    /// A raft group snapshots after this many entries (0: never); what a snapshot covers,
    /// retention may delete, and a replica behind it catches up by installing the snapshot
    /// (the journal shipped from a peer).
    pub snapshot_entries: u64,
    /// The CA (PEM) that signs the region's broker certificates: with `tls_cert` and
    /// `tls_key`, the replication transport speaks mutual TLS and takes only peers whose
    /// certificate this CA signed for `broker.REGION.meridian` (`meridian certs
    /// --brokers REGION`).
    pub tls_ca: Option<PathBuf>,
    /// This broker's certificate chain (PEM) for the replication transport.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM, its owner's only).
    pub tls_key: Option<PathBuf>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            raft_listen: None,
            peers: Vec::new(),
            master_slave: Vec::new(),
            sync_replicas: 1,
            min_insync_replicas: 0,
            snapshot_entries: 10_000,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// A log group replicated master-slave, and the broker that is its master at first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct MasterSlaveGroup {
    /// The log group.
    pub group: u32,
    /// Broker id of its initial master.
    pub master: u32,
}

impl MasterSlaveGroup {
    /// Parses `GROUP=MASTER_ID`.
    pub fn parse(text: &str) -> Result<MasterSlaveGroup, ValueError> {
        let usage = || ValueError::MasterSlave(text.to_owned());
        let (group, master) = text.split_once('=').ok_or_else(usage)?;
        Ok(MasterSlaveGroup {
            group: group.trim().parse().map_err(|_| usage())?,
            master: master.trim().parse().map_err(|_| usage())?,
        })
    }
}

/// One broker of the region.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Its broker id.
    pub id: u32,
    /// Its raft transport address.
    pub raft: String,
    /// Its gRPC API address (where clients are redirected).
    pub grpc: String,
    /// Its Kafka listener, when known (Kafka clients are told to go there).
    #[serde(default)]
    pub kafka: Option<String>,
}

impl Peer {
    /// Parses `ID=RAFT_ADDR,GRPC_ADDR[,KAFKA_ADDR]`.
    pub fn parse(text: &str) -> Result<Peer, ValueError> {
        let usage = || ValueError::Peer(text.to_owned());
        let (id, addrs) = text.split_once('=').ok_or_else(usage)?;
        let (raft, rest) = addrs.split_once(',').ok_or_else(usage)?;
        let (grpc, kafka) = match rest.split_once(',') {
            Some((g, k)) => (g, Some(k)),
            None => (rest, None),
        };
        let id = id.parse().map_err(|_| usage())?;
        for a in [raft, grpc].into_iter().chain(kafka) {
            a.parse::<SocketAddr>()
                .map_err(|e| ValueError::PeerAddress {
                    address: a.to_owned(),
                    peer: text.to_owned(),
                    source: e,
                })?;
        }
        Ok(Peer {
            id,
            raft: raft.to_owned(),
            grpc: grpc.to_owned(),
            kafka: kafka.map(str::to_owned),
        })
    }
}
