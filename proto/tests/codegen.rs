//! The generated gRPC code is committed (so building needs no `protoc`); this test
//! regenerates it and fails when the committed file is stale.
//!
//! Refresh with `MERIDIAN_UPDATE_CODEGEN=1 cargo test -p meridian-proto --test codegen`.

use std::path::PathBuf;

#[test]
fn codegen_is_fresh() {
    // The directory at run time, not the one baked in at compile time: CI builds in a fresh
    // clone elsewhere but may reuse a test binary compiled from another checkout.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let root = root.as_path();
    let out = tempfile::tempdir().unwrap();
    tonic_prost_build::configure()
        .out_dir(out.path())
        .bytes(".")
        .emit_rerun_if_changed(false)
        .compile_protos(&[root.join("proto/meridian.proto")], &[root.join("proto")])
        .expect("protoc is needed to check generated code: apt-get install protobuf-compiler");
    let fresh = std::fs::read_to_string(out.path().join("meridian.v1.rs")).unwrap();
    let committed_path = root.join("src/generated/meridian.v1.rs");
    if std::env::var_os("MERIDIAN_UPDATE_CODEGEN").is_some() {
        std::fs::write(&committed_path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: run MERIDIAN_UPDATE_CODEGEN=1 cargo test -p meridian-proto --test codegen",
        committed_path.display()
    );
}
