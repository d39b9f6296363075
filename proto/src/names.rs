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
