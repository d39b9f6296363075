//! Meridian's mirror agent: links this region with every other region over QUIC (quinn)
//! with mutual TLS, ships the committed local-origin batches of every multi-region topic
//! and appends what other regions ship, idempotently on the origin.
//!
//! - [`link`]: the link protocol (hello/resume, the window, acknowledgements, stream
//!   replacement, refusals) as state machines without I/O, driven by frames, reads,
//!   appends and a clock; tested by `tests/link_sim.rs` against a faulty simulated link.
//! - [`sender`]: the shell shipping to each peer region over quinn (one connection per peer
//!   region, one stream per log group of this region), driving `link::sender`.
//! - [`receiver`]: the shell accepting peers and appending through this region's brokers,
//!   driving `link::receiver`.
//! - [`views`]: what the control plane says of this region and the peers (brokers, log
//!   groups, which topics each region holds).
//! - [`tls`]: certificates (issued by `meridian-security`) and the QUIC transport settings.
//! - [`frames`]: the link protocol's frames (`meridian_proto::mirror`) on a QUIC stream,
//!   and why a stream stopped.

pub mod config;
pub mod frames;
pub mod link;
pub mod receiver;
pub mod sender;
pub mod tls;
pub mod views;
