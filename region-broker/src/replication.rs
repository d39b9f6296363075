//! Replication of one log group's journal between the brokers of a region: openraft over
//! the journal ([`raft`]: the raft log *is* the journal), master-slave pull replication
//! ([`master_slave`]) and the pull protocol both use to ship journal ranges ([`pull`]), and
//! the inter-broker gRPC transport carrying them ([`transport`]), and which replicas are in
//! sync ([`in_sync`], Kafka's ISR, decided without I/O).
//!
//! This layer knows storage and the broker's configuration, never the log-group layer or
//! the broker core above it: it replicates whatever log group it is handed.

pub mod in_sync;
pub mod master_slave;
pub mod pull;
pub mod raft;
pub mod transport;

pub use meridian_proto::settings::{Strategy, UnknownStrategy};
