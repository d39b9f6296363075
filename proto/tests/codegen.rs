//! Generated protobuf code is committed, so building needs no `protoc`: our gRPC API in
//! `src/generated/`, and etcd's API in the vendored `third_party/etcd-client/src/generated/`.
//! These tests regenerate both with `protox` (a protobuf compiler written in Rust, so the
//! tests need no `protoc` either) and fail when a committed file is stale.
//!
//! Refresh with `MERIDIAN_UPDATE_CODEGEN=1 cargo test -p meridian-proto --test codegen`.

use std::path::{Path, PathBuf};

/// The crate's directory at run time, not the one baked in at compile time: CI builds in a
/// fresh clone elsewhere but may reuse a test binary compiled from another checkout.
fn crate_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Compiles `protos` (relative to `include`) with protox, generates the Rust code with
/// `configure`'s settings into a temporary directory, and compares each of `outputs` with
/// its committed copy in `committed` (or overwrites it when refreshing).
fn check_fresh(
    include: &Path,
    protos: &[&str],
    configure: impl FnOnce(tonic_prost_build::Builder) -> tonic_prost_build::Builder,
    committed: &Path,
    outputs: &[&str],
) {
    let fds = protox::compile(protos, [include]).unwrap_or_else(|e| {
        panic!(
            "protox cannot compile {protos:?} under {}: {e}",
            include.display()
        )
    });
    let out = tempfile::tempdir().unwrap();
    configure(tonic_prost_build::configure())
        // What `compile_protos` adds itself and `compile_fds` does not.
        .type_attribute(".", "#[allow(clippy::all)]")
        .out_dir(out.path())
        .emit_rerun_if_changed(false)
        .compile_fds(fds)
        .expect("generating Rust code from the descriptor set");
    let update = std::env::var_os("MERIDIAN_UPDATE_CODEGEN").is_some();
    for name in outputs {
        let fresh = std::fs::read_to_string(out.path().join(name)).unwrap();
        let committed_path = committed.join(name);
        if update {
            std::fs::write(&committed_path, &fresh).unwrap();
            continue;
        }
        let current = std::fs::read_to_string(&committed_path).unwrap_or_default();
        assert!(
            current == fresh,
            "{} is stale: run MERIDIAN_UPDATE_CODEGEN=1 cargo test -p meridian-proto --test codegen",
            committed_path.display()
        );
    }
}

#[test]
fn meridian_api_is_fresh() {
    let root = crate_dir();
    check_fresh(
        &root.join("proto"),
        &["meridian.proto"],
        |b| b.bytes("."),
        &root.join("src/generated"),
        &["meridian.v1.rs"],
    );
}

/// As etcd-client 0.21.1's own build script configured it (client only).
#[test]
fn etcd_api_is_fresh() {
    let etcd = crate_dir().join("../third_party/etcd-client");
    check_fresh(
        &etcd.join("proto"),
        &[
            "etcd/api/authpb/auth.proto",
            "etcd/api/etcdserverpb/rpc.proto",
            "etcd/api/mvccpb/kv.proto",
            "etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
            "etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
        ],
        |b| b.build_server(false),
        &etcd.join("src/generated"),
        &[
            "authpb.rs",
            "etcdserverpb.rs",
            "mvccpb.rs",
            "v3electionpb.rs",
            "v3lockpb.rs",
        ],
    );
}
