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
    /// The brokers named the log group serving the request, and its leader did not answer
    /// (or it had none) for as long as the request was retried.
    #[error(
        "log group {group} is unavailable: {}; {why}. See what is wrong with `meridian cluster health`: a raft group elects a new leader once a majority of its replicas answer (start the brokers that are down); a master-slave group is failed over with `meridian log-group failover {group}`",
        match leader {
            Some((id, addr)) => format!("its leader, broker {id} at {addr}, does not answer"),
            None => "it has no leader".to_owned(),
        }
    )]
    GroupUnavailable {
        /// The log group.
        group: u32,
        /// Its leader as the brokers last named it: id and address.
        leader: Option<(u32, String)>,
        /// The last failure.
        why: String,
    },
}

/// What "not the leader" answers said of the log group a request needs, kept while it is
/// retried: the group, and the leader they named.
#[derive(Debug, Default, Clone)]
pub(crate) struct GroupHint {
    group: Option<u32>,
    leader_id: Option<u32>,
    leader: Option<String>,
}

impl GroupHint {
    /// Notes what a "not the leader" status says.
    pub(crate) fn note(&mut self, status: &tonic::Status) {
        let header = |name: &str| {
            status
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if let Some(g) = header(crate::LOG_GROUP_HEADER).and_then(|g| g.parse().ok()) {
            if self.group != Some(g) {
                *self = GroupHint {
                    group: Some(g),
                    ..GroupHint::default()
                };
            }
            // A leader named earlier is kept when a later answer names none (the control
            // plane stops naming a leader whose broker's lease ran out): it is the broker
            // an operator looks at.
            if let Some(id) = header(crate::LEADER_ID_HEADER).and_then(|id| id.parse().ok()) {
                self.leader_id = Some(id);
                self.leader = header(crate::LEADER_HEADER);
            }
        }
    }

    /// The error a call gives up with: `last`, or, when the brokers named the group and
    /// the last failure is its leader not answering (or none leading), the group's
    /// unavailability naming them.
    pub(crate) fn give_up(&self, last: RegionError) -> RegionError {
        let unanswered = matches!(
            &last,
            RegionError::Connect { .. } | RegionError::NoAnswer(..) | RegionError::GaveUp(_)
        ) || matches!(
            &last,
            RegionError::Broker { code, .. }
                if matches!(code, tonic::Code::Unavailable | tonic::Code::DeadlineExceeded)
        );
        // Still redirected at the end: no broker leads it (an election, or a group starting).
        let leaderless = matches!(
            &last,
            RegionError::Broker {
                code: tonic::Code::FailedPrecondition,
                ..
            }
        );
        match self.group {
            Some(group) if unanswered || leaderless => RegionError::GroupUnavailable {
                group,
                leader: self
                    .leader_id
                    .zip(self.leader.clone())
                    .filter(|_| !leaderless),
                why: last.to_string(),
            },
            _ => last,
        }
    }
}

impl RegionError {
    /// The gRPC code, when the broker answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            RegionError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A failure of the broker at `addr`: the status, naming the broker when it did not
    /// answer (the transport's words alone do not say which).
    pub(crate) fn at(addr: &str, s: tonic::Status) -> RegionError {
        match s.code() {
            code @ (tonic::Code::Unavailable | tonic::Code::Unknown) => RegionError::Broker {
                code,
                message: format!("broker at {addr} unavailable: {}", s.message()),
            },
            _ => RegionError::from(s),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn not_leader(group: &str, leader: Option<(&str, &str)>) -> tonic::Status {
        let mut s = tonic::Status::failed_precondition("this broker does not lead log group 3");
        s.metadata_mut()
            .insert(crate::LOG_GROUP_HEADER, group.parse().unwrap());
        if let Some((id, addr)) = leader {
            s.metadata_mut()
                .insert(crate::LEADER_ID_HEADER, id.parse().unwrap());
            s.metadata_mut()
                .insert(crate::LEADER_HEADER, addr.parse().unwrap());
        }
        s
    }

    #[test]
    fn a_call_that_gives_up_names_the_group_and_the_leader_that_did_not_answer() {
        let mut hint = GroupHint::default();
        let refused = RegionError::Broker {
            code: tonic::Code::InvalidArgument,
            message: "too large".into(),
        };
        // Nothing named: the last error as it was; a refusal stays a refusal.
        assert!(matches!(
            hint.give_up(RegionError::GaveUp(Duration::from_secs(1))),
            RegionError::GaveUp(_)
        ));
        hint.note(&not_leader("3", Some(("2", "127.0.0.1:9"))));
        assert!(matches!(hint.give_up(refused), RegionError::Broker { .. }));
        let e = hint.give_up(RegionError::NoAnswer("broker", Duration::from_secs(5)));
        let text = e.to_string();
        assert!(
            text.starts_with("log group 3 is unavailable: its leader, broker 2 at 127.0.0.1:9, does not answer; broker did not answer within 5s.")
                && text.contains("meridian cluster health")
                && text.contains("meridian log-group failover 3"),
            "{text}"
        );
        // A later answer naming no leader (its broker's lease ran out) keeps the one named:
        // it is the broker that does not answer.
        hint.note(&not_leader("3", None));
        let silent = RegionError::at(
            "127.0.0.1:9",
            tonic::Status::unavailable("no answer from the broker within 10s"),
        );
        let text = hint.give_up(silent).to_string();
        assert!(
            text.starts_with("log group 3 is unavailable: its leader, broker 2 at 127.0.0.1:9, does not answer; broker at 127.0.0.1:9 unavailable: no answer"),
            "{text}"
        );
        // Another group named: nothing of the first is kept. Still redirected when it gave
        // up: the group has no leader.
        hint.note(&not_leader("4", None));
        let e = hint.give_up(RegionError::from(not_leader("4", None)));
        assert!(
            e.to_string()
                .starts_with("log group 4 is unavailable: it has no leader;"),
            "{e}"
        );
    }
}
