//! Passwords as the console's configuration file keeps them: argon2id PHC strings with a
//! random salt; and random hex for session ids, CSRF tokens and generated passwords.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

/// Why a password could not be hashed, or a stored hash is unusable.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The operating system gave no random bytes for a salt.
    #[error("no randomness for a salt: {0}")]
    Randomness(getrandom::Error),
    /// Hashing failed (or the salt was refused).
    #[error("hashing: {0}")]
    Hashing(argon2::password_hash::Error),
    /// A stored hash is not an argon2 PHC string.
    #[error("not an argon2 PHC string ({0})")]
    NotAHash(argon2::password_hash::Error),
}

/// Hashes a password for the configuration file (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(PasswordError::Randomness)?;
    let salt = SaltString::encode_b64(&salt).map_err(PasswordError::Hashing)?;
    Ok(argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map_err(PasswordError::Hashing)?
        .to_string())
}

/// Checks that `hash` is a PHC string [`verify_password`] can use.
pub fn check_hash(hash: &str) -> Result<(), PasswordError> {
    PasswordHash::new(hash)
        .map(|_| ())
        .map_err(PasswordError::NotAHash)
}

/// Whether `password` matches `hash` (false too when `hash` does not parse).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|hash| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// `n` random bytes as hex: session ids, CSRF tokens, generated passwords.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).expect("the OS gives random bytes");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only() {
        let hash = hash_password("s3cret").unwrap();
        check_hash(&hash).unwrap();
        assert!(verify_password("s3cret", &hash));
        assert!(!verify_password("secret", &hash));
        // A random salt: the same password hashes differently.
        assert_ne!(hash, hash_password("s3cret").unwrap());
        assert!(check_hash("plain").is_err());
        assert!(!verify_password("plain", "plain"));
    }

    #[test]
    fn random_hex_has_two_digits_per_byte() {
        let a = random_hex(8);
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_hex(8));
    }
}
