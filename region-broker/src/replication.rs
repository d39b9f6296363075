//! Replication of log groups: the raft storage layer over the journal ([`raft`]) and the
//! inter-broker raft transport over gRPC ([`transport`]). Not wired into the broker's produce
//! path yet; master-slave pull replication, acks by quorum and multi-broker regions come next
//! (issue 3).

pub mod raft;
pub mod transport;
