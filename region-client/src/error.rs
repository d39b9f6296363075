//! Why a call to a region failed: what failed, and the broker's own words when it refused.

use std::time::Duration;

/// Why a call to a region's brokers or its control plane failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RegionError {
    /// No connection to the process.
    #[error(
        "cannot connect to {addr}: {reason} (is it running? start the platform with `meridian up`)"
    )]
    Connect {
        /// The address tried.
        addr: String,
        /// The transport's reason.
        reason: String,
    },
    /// An address that is not `host:port` or a URI.
    #[error("bad address {addr:?}: {reason}")]
    BadAddress {
        /// The address given.
        addr: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// No address of this kind was given.
    #[error("no {0} address given")]
    NoAddress(&'static str),
    /// The broker (or control plane) refused or failed the request.
    #[error("{message}")]
    Broker {
        /// gRPC status code.
        code: tonic::Code,
        /// The broker's message.
        message: String,
    },
    /// A process did not answer in time.
    #[error("{0} did not answer within {1:?}")]
    NoAnswer(&'static str, Duration),
    /// Redirects and retries went on for this long without an answer.
    #[error("no broker answered within {0:?} of redirects and retries")]
    GaveUp(Duration),
}

impl RegionError {
    /// The gRPC code, when the broker answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            RegionError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for RegionError {
    fn from(s: tonic::Status) -> Self {
        let message = if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown {
            format!("broker unavailable: {}", s.message())
        } else {
            s.message().to_owned()
        };
        RegionError::Broker {
            code: s.code(),
            message,
        }
    }
}

/// The error and its sources, joined: transport errors hide the useful part in a source.
pub fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
