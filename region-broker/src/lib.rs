//! Meridian's data plane: the `region-broker` daemon, in layers that depend only downwards:
//!
//! - protocol adapters: [`grpc`] (the Broker gRPC service) and [`kafka`] (the Kafka
//!   listener and its consumer-group coordinator), which reach other brokers of the region
//!   through the internal region client (`meridian-region-client`), never the public SDK;
//! - the broker core, [`broker`]: one map of hosted log groups, the topic catalog, the
//!   region's directory and view, routing of requests to partitions;
//! - the log-group layer, [`log_group`]: one hosted log group's storage and replication
//!   strategy, and every per-group operation;
//! - [`replication`]: raft over the journal, master-slave, the pull protocol and the
//!   inter-broker transport;
//! - [`storage`]: the journal engine (journal, queue indexes, recovery, retention), with no
//!   knowledge of networks or protocols: the `meridian-storage` crate, re-exported here.
//!
//! [`config`] is read by every layer. The binary in `src/bin/region-broker.rs` reads the
//! configuration and wires the layers together; `layers_tests.rs` checks the direction.

pub mod broker;
pub mod config;
pub mod grpc;
pub mod kafka;
pub mod log_group;
pub mod mqtt;
pub mod replication;
pub use meridian_storage as storage;

#[cfg(test)]
mod layers_tests;
