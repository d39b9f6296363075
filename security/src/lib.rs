//! Security pieces several Meridian crates share, in a crate of their own so that the
//! `meridian` command, the console and the mirror each depend on it rather than on each
//! other: [`password`] hashes and checks the console's passwords (argon2), [`certs`]
//! issues the CA and per-region certificates of the mirrors' mutual TLS (rcgen).

pub mod certs;
pub mod password;
