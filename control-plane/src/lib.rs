//! Meridian's control plane. Today: the metadata store ([`store`]) with its two
//! implementations, etcd and an embedded single-file store, behind one trait and one
//! conformance suite. Placement, leases of brokers, routing and the admin API build on it.

pub mod store;
