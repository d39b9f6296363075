//! Replication of log groups: the raft storage layer over the journal ([`raft`]), the
//! inter-broker transport over gRPC ([`transport`]), and master-slave pull replication
//! ([`master_slave`]).

pub mod master_slave;
pub mod pull;
pub mod raft;
pub mod transport;
