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
}
