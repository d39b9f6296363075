//! Replication of one log group's journal between the brokers of a region: openraft over
//! the journal ([`raft`]: the raft log *is* the journal), master-slave pull replication
//! ([`master_slave`]) and the pull protocol both use to ship journal ranges ([`pull`]), and
//! the inter-broker gRPC transport carrying them ([`transport`]).
//!
//! This layer knows storage and the broker's configuration, never the log-group layer or
//! the broker core above it: it replicates whatever log group it is handed.

pub mod master_slave;
pub mod pull;
pub mod raft;
pub mod transport;

use serde::{Deserialize, Serialize};

/// How a log group replicates (a topic's partitions are placed on groups of its strategy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// openraft over the journal.
    #[default]
    Raft,
    /// A named master; slaves pull by journal position.
    MasterSlave,
}

/// A replication strategy's name that is neither `raft` nor `master-slave`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown replication strategy {0:?}: use raft or master-slave")]
pub struct UnknownStrategy(pub String);

impl Strategy {
    /// Parses the user's spelling; empty is the default.
    pub fn parse(text: &str) -> Result<Strategy, UnknownStrategy> {
        match text {
            "" | "raft" => Ok(Strategy::Raft),
            "master-slave" => Ok(Strategy::MasterSlave),
            other => Err(UnknownStrategy(other.to_owned())),
        }
    }

    /// The user's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Raft => "raft",
            Strategy::MasterSlave => "master-slave",
        }
    }
}
