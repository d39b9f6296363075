//! Every exit of a daemon leaves its reason in its log: a fatal error is logged (with its
//! causes) before the process exits with code 1, in the log's own format, and said once
//! more on stderr for whoever started it by hand. Every daemon's operational endpoint
//! tells alive (`/healthz`) from ready (`/readyz`) and answers only its own paths.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_tests::platform::ControlPlaneProcess;
use meridian_tests::{BrokerProcess, free_addr, http_get};

/// The status code and body of `GET path` at `addr`.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let answer = http_get(addr, path).await.unwrap();
    let status = meridian_tests::http_status(&answer);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_is_alive_at_once_and_ready_once_registered() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlaneProcess::embedded(tmp.path(), &["--region", "r"]).await;
    let cp_ops: SocketAddr = cp.metrics.parse().unwrap();
    assert_eq!(get(cp_ops, "/readyz").await, (200, "ready\n".to_owned()));
    assert_eq!(get(cp_ops, "/healthz").await.0, 200);
    // The control plane paused: a broker starting now cannot register.
    cp.signal(libc::SIGSTOP);
    let raft = free_addr().to_string();
    let flags = ["--broker-id", "1", "--region", "r", "--control", &cp.addr];
    let broker = BrokerProcess::start(
        &tmp.path().join("b1"),
        &[&flags[..], &["--raft-listen", &raft]].concat(),
    )
    .await
    .unwrap();
    let ops = broker.metrics;
    assert_eq!(get(ops, "/healthz").await, (200, "ok\n".to_owned()));
    let (code, why) = get(ops, "/readyz").await;
    assert_eq!(code, 503, "{why}");
    assert!(why.contains("not registered"), "{why}");
    // Only its own paths: metrics at /metrics, nothing at any other.
    let (code, text) = get(ops, "/metrics").await;
    assert_eq!(code, 200, "{text}");
    assert_eq!(get(ops, "/").await.0, 404);
    assert_eq!(get(ops, "/metrics/x").await.0, 404);
    // The control plane back: the broker registers and is ready.
    cp.signal(libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, why) = get(ops, "/readyz").await;
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready 30 s after the control plane came back: {why}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_back_from_a_pause_is_ready_only_once_caught_up() {
    let tmp = tempfile::tempdir().unwrap();
    let region = meridian_tests::Region::start(tmp.path(), 3, &["--log-groups", "1"])
        .await
        .unwrap();
    let client = region.client().await;
    client.create_topic("t", 1).await.unwrap();
    let ready = |i: usize| get(region.brokers[i].metrics, "/readyz");
    let deadline = Instant::now() + Duration::from_secs(30);
    for i in 0..3 {
        while ready(i).await.0 != 200 {
            assert!(Instant::now() < deadline, "broker {} never ready", i + 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let leader = region.leader_of("t", 0).await.expect("a leader");
    let f = (leader + 1) % 3;
    region.brokers[f].signal(libc::SIGSTOP);
    // 8 MB written while it is paused, acknowledged by the other two.
    let producer = client.producer(meridian_client::ProducerConfig::default());
    let mut sent = Vec::new();
    for i in 0..8000u32 {
        let value = format!("{i:01024}");
        sent.push(
            producer
                .send(meridian_client::Record::new("t", value))
                .await,
        );
    }
    for s in sent {
        s.await.expect("acknowledged without the paused follower");
    }
    // Past the lag that takes it out of the in-sync set, and past the last announcement
    // it heard.
    tokio::time::sleep(Duration::from_secs(4)).await;
    // How far the others hold each group's log: all of it written while f was paused.
    let groups = region.log_group_ids().await;
    let mut written = Vec::new();
    for &g in &groups {
        let mut most = 0;
        for i in (0..3).filter(|&i| i != f) {
            most = most.max(region.log_group(i, g).await.map_or(0, |l| l.last_index));
        }
        written.push((g, most));
    }
    region.brokers[f].signal(libc::SIGCONT);
    // Its first answer: not ready — or, when it caught up before the probe reached it
    // (8 MB on loopback can take less than a probe's round trip on a fast machine), ready
    // holding everything already (its logs only grow: behind now was behind then).
    let (code, why) = ready(f).await;
    if code == 200 {
        for &(g, most) in &written {
            let held = region.log_group(f, g).await.map_or(0, |l| l.last_index);
            assert!(
                held >= most,
                "ready at once after a pause, behind its leader: log group {g}: {held} of {most} ({why})"
            );
        }
    } else {
        assert_eq!(code, 503, "{why}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, why) = ready(f).await;
        if code == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not ready 60 s after resuming: {why}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Ready: it holds every group's log as far as the others did when it resumed.
    for (g, most) in written {
        let held = region.log_group(f, g).await.map_or(0, |l| l.last_index);
        assert!(held >= most, "log group {g}: {held} of {most}");
    }
}

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

#[test]
fn a_secret_others_may_read_stops_the_daemon_with_the_fix() {
    let tmp = tempfile::tempdir().unwrap();
    // The console's configuration holds password hashes: left readable by all, refused.
    let config = tmp.path().join("console.toml");
    std::fs::write(&config, "").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = Command::new(meridian_tests::binary("meridian-console"))
        .args(["--config", &config.display().to_string()])
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .expect("starting meridian-console");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("may be read by other users (mode 644)")
            && stderr.contains(&format!("chmod 600 {}", config.display())),
        "{stderr}"
    );
}
