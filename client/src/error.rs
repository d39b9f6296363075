//! Client errors: what failed, and the broker's own words when it refused.

/// Why a client call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No connection to the broker.
    #[error(
        "cannot connect to broker {addr}: {reason} (is it running? start one with `meridian up`)"
    )]
    Connect {
        /// The address tried.
        addr: String,
        /// The transport's reason.
        reason: String,
    },
    /// The broker refused or failed the request.
    #[error("{message}")]
    Broker {
        /// gRPC status code.
        code: tonic::Code,
        /// The broker's message.
        message: String,
    },
    /// The producer was dropped before the message was sent.
    #[error("producer closed before the message was sent")]
    ProducerClosed,
    /// A caller error, such as a consumer with nothing assigned.
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The gRPC code, when the broker answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        let message = if s.code() == tonic::Code::Unavailable || s.code() == tonic::Code::Unknown {
            format!("broker unavailable: {}", s.message())
        } else {
            s.message().to_owned()
        };
        ClientError::Broker {
            code: s.code(),
            message,
        }
    }
}

impl From<meridian_region_client::RegionError> for ClientError {
    fn from(e: meridian_region_client::RegionError) -> Self {
        use meridian_region_client::RegionError;
        match e {
            RegionError::Connect { addr, reason } => ClientError::Connect { addr, reason },
            RegionError::Broker { code, message } => ClientError::Broker { code, message },
            other => ClientError::Usage(other.to_string()),
        }
    }
}
