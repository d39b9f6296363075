//! Validation of user-chosen names (topics, consumer groups).
//!
//! Names become directory names on disk and keys in the control store, so they are held to
//! Kafka's rule: 1 to 249 characters of `[A-Za-z0-9._-]`, and never `.` or `..`.

/// Longest accepted topic or group name, as in Kafka.
pub const NAME_LEN_MAX: usize = 249;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} name is empty")]
    Empty {
        /// What was being named ("topic", "group").
        kind: &'static str,
    },
    /// The name is longer than [`NAME_LEN_MAX`].
    #[error("{kind} name is {len} characters long; the limit is {NAME_LEN_MAX}")]
    TooLong {
        /// What was being named.
        kind: &'static str,
        /// The name's length.
        len: usize,
    },
    /// The name holds a character outside `[A-Za-z0-9._-]`.
    #[error(
        "{kind} name {name:?} has the character {bad:?}; use only letters, digits, '.', '_' and '-'"
    )]
    BadChar {
        /// What was being named.
        kind: &'static str,
        /// The refused name.
        name: String,
        /// The first refused character.
        bad: char,
    },
    /// The name is `.` or `..`.
    #[error("{kind} name {name:?} is reserved")]
    Reserved {
        /// What was being named.
        kind: &'static str,
        /// The refused name.
        name: String,
    },
}

/// Checks a topic or consumer-group name.
pub fn validate(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > NAME_LEN_MAX {
        return Err(NameError::TooLong {
            kind,
            len: name.len(),
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadChar {
            kind,
            name: name.to_owned(),
            bad,
        });
    }
    if name == "." || name == ".." {
        return Err(NameError::Reserved {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Where a broadcast group's instance keeps its positions: `{group}/{instance}`, a name
/// no group can have (`/` is not allowed in one), so it never meets a group's own.
pub fn instance_offsets(group: &str, instance: &str) -> String {
    format!("{group}/{instance}")
}

/// Checks the name offsets are committed under: a group's, or a broadcast group's
/// instance's ([`instance_offsets`]).
pub fn validate_offsets_owner(name: &str) -> Result<(), NameError> {
    match name.split_once('/') {
        Some((group, instance)) => {
            validate("group", group)?;
            validate("instance", instance)
        }
        None => validate("group", name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate("topic", "orders.eu-west_1").is_ok());
        assert_eq!(
            validate("topic", ""),
            Err(NameError::Empty { kind: "topic" })
        );
        assert!(matches!(
            validate("topic", "a/b"),
            Err(NameError::BadChar { bad: '/', .. })
        ));
        assert!(matches!(
            validate("topic", ".."),
            Err(NameError::Reserved { .. })
        ));
        assert!(matches!(
            validate("group", &"x".repeat(250)),
            Err(NameError::TooLong { len: 250, .. })
        ));
        assert!(validate("group", &"x".repeat(249)).is_ok());
    }

    #[test]
    fn an_instances_offsets_owner_is_no_groups_name() {
        let owner = instance_offsets("g", "host-1");
        assert!(validate_offsets_owner(&owner).is_ok());
        assert!(validate("group", &owner).is_err());
        assert!(validate_offsets_owner("g").is_ok());
        assert!(validate_offsets_owner("g/a/b").is_err());
        assert!(validate_offsets_owner("/a").is_err());
    }
}

/// `HOST:PORT` split into the host (a DNS name, an IPv4 address, or an IPv6 one in
/// brackets) and the port: how daemons are addressed, by name or address (a broker's
/// advertised address, the control plane's). None when it is not one.
pub fn host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let fine = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
    fine.then_some((host, port))
}

#[cfg(test)]
mod host_port_tests {
    use super::host_port;

    #[test]
    fn names_and_addresses_with_a_port_are_taken_and_nothing_else() {
        assert_eq!(host_port("localhost:7070"), Some(("localhost", 7070)));
        assert_eq!(
            host_port("b-0.us-east-brokers.meridian.svc.cluster.local:9092"),
            Some(("b-0.us-east-brokers.meridian.svc.cluster.local", 9092))
        );
        assert_eq!(host_port("127.0.0.1:1"), Some(("127.0.0.1", 1)));
        assert_eq!(host_port("[::1]:7070"), Some(("::1", 7070)));
        for bad in [
            "localhost",
            ":7070",
            "host:",
            "host:70000",
            "a b:1",
            "h/x:1",
        ] {
            assert_eq!(host_port(bad), None, "{bad}");
        }
    }
}
