//! Meridian's data plane: the storage engine and the `region-broker` daemon.
//!
//! [`storage`] is a self-contained engine (journal, queue indexes, recovery, retention) with
//! no knowledge of networks or protocols. [`broker`] puts topics, partitions and consumer
//! offsets on top of a set of log groups, and [`grpc`] serves them. The binary in
//! `src/bin/region-broker.rs` reads configuration and wires it all up.
//!
//! [`replication`] holds the raft storage over the journal (the raft log *is* the journal);
//! the raft network, master-slave replication and multi-broker regions are not wired yet,
//! nor the Kafka and MQTT listeners.

pub mod broker;
pub mod config;
pub mod grpc;
pub mod kafka;
pub mod replication;
pub mod storage;
