//! Every exit of a daemon leaves its reason in its log: a fatal error is logged (with its
//! causes) before the process exits with code 1, in the log's own format, and said once
//! more on stderr for whoever started it by hand.

use std::process::Command;

#[test]
fn a_daemon_that_cannot_start_logs_why_before_it_exits() {
    let tmp = tempfile::tempdir().unwrap();
    // A store path under a regular file: the store cannot be opened.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let store = format!("embedded:{}/control.redb", file.display());
    let out = Command::new(meridian_tests::binary("control-plane"))
        .args([
            "--store",
            &store,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-json",
        ])
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("starting control-plane");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fatal: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["level"] == "ERROR")
        .collect();
    assert_eq!(fatal.len(), 1, "one ERROR line says why: {stdout}");
    let fields = &fatal[0]["fields"];
    assert_eq!(fields["message"], "exiting on a fatal error", "{stdout}");
    assert_eq!(fields["daemon"], "control-plane", "{stdout}");
    let error = fields["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("opening the metadata store") && error.contains(&store),
        "the error names the store and the cause: {error}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("control-plane: opening the metadata store"),
        "{stderr}"
    );
}
