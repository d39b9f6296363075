//! Meridian's control plane. Today: the metadata store ([`store`]) with its two
//! implementations, etcd and an embedded single-file store, behind one trait and one
//! conformance suite; the typed, validated records it keeps ([`metadata`]); and placement
//! of partitions and log-group replicas ([`placement`]). The control-plane daemon, broker
//! leases, routing and the admin API build on these.

pub mod api;
mod callers;
pub mod config;
pub mod election;
pub mod metadata;
pub mod placement;
pub mod reconcile;
pub mod state;
pub mod store;
pub mod topics;
