//! Replication of log groups. Today: the raft storage layer over the journal ([`raft`]),
//! checked by openraft's storage test suite. The raft network, elections across brokers,
//! master-slave pull replication and acks by quorum come next (issue 3).

pub mod raft;
