//! Security pieces several Meridian crates share ([`acl`]: Kafka's ACL model and its
//! decision), in a crate of their own so that the
//! `meridian` command, the console and the mirror each depend on it rather than on each
//! other: [`password`] hashes and checks the console's passwords (argon2), [`certs`]
//! issues the CA and per-region certificates of the mirrors' mutual TLS (rcgen), [`scram`] the
//! SCRAM exchange and credentials of Kafka's SASL, [`tls`] listeners' TLS identities, read
//! again when their files change, [`tokens`] the API tokens of the gRPC APIs (the tokens
//! file read again when it changes too).

pub mod acl;
pub mod certs;
pub mod password;
pub mod scram;
pub mod tls;
pub mod tokens;
mod watched;
