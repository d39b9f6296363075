//! Meridian's mirror agent: links this region with every other region over QUIC (quinn)
//! with mutual TLS, ships the committed local-origin batches of every multi-region topic
//! and appends what other regions ship, idempotently on the origin.
//!
//! - [`sender`]: one connection per peer region, one stream per log group of this region.
//! - [`receiver`]: accepts peers, resumes each origin group where this region's holdings
//!   end, appends in order.
//! - [`views`]: what the control plane says of this region and the peers (brokers, log
//!   groups, which topics each region holds).
//! - [`tls`]: certificates (issued with rcgen) and the QUIC transport settings.
//! - [`link`]: the link protocol as state machines without I/O, which `sender` and
//!   `receiver` drive.
//! - [`frames`]: the link protocol's frames (`meridian_proto::mirror`) on a QUIC stream.

pub mod config;
pub mod frames;
pub mod link;
pub mod receiver;
pub mod sender;
pub mod tls;
pub mod views;
