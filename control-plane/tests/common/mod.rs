//! Shared by the control-plane tests: a real etcd on free loopback ports (the harness of
//! `meridian-tests`).

pub(crate) use meridian_tests::platform::{free_port, start_etcd};
