//! Daemons behind names (issue 17): a broker and a control plane listen on addresses but
//! are reached at names (`--grpc-advertise`, `--kafka-advertise`, `--advertise`), as in
//! Kubernetes, where a pod's address is in no certificate. Their TLS certificates here are
//! valid for `localhost` only, not for the 127.0.0.1 they listen on: the control plane
//! registers the broker under its name, the CLI reaches it there through the control
//! plane's routing over TLS, and Kafka clients are told the name (Metadata and
//! FindCoordinator). A bad name is refused at start.

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_tests::{Daemon, binary, free_addr, http_get, run};

/// Waits until `addr` answers `path` 200.
async fn ready(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(a) = http_get(addr, "/readyz").await
            && a.split_whitespace().nth(1) == Some("200")
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what} not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_and_control_plane_are_reached_at_their_advertised_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let certs = dir.join("certs");
    let mut c = Command::new(binary("meridian"));
    c.args(["certs", "--dir"])
        .arg(&certs)
        .args(["--server", "named", "--names", "localhost"]);
    let (code, _, err) = run(c, None);
    assert_eq!(code, 0, "meridian certs: {err}");
    let file = |name: &str| certs.join(name).display().to_string();
    let (ca, cert, key) = (file("ca.pem"), file("named.pem"), file("named.key"));

    let (cp_api, cp_ops) = (free_addr(), free_addr());
    let cp_name = format!("localhost:{}", cp_api.port());
    let store = format!("embedded:{}", dir.join("control.redb").display());
    let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let _cp = Daemon::start(
        "control-plane",
        "the control plane",
        args(&[
            "--listen",
            &cp_api.to_string(),
            "--advertise",
            &cp_name,
            "--metrics-listen",
            &cp_ops.to_string(),
            "--store",
            &store,
            "--region",
            "r",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--grpc-ca",
            &ca,
        ]),
        dir.join("cp.log"),
    );
    ready(cp_ops, "the control plane").await;

    let (grpc, kafka, ops, raft) = (free_addr(), free_addr(), free_addr(), free_addr());
    let (grpc_name, kafka_name) = (
        format!("localhost:{}", grpc.port()),
        format!("localhost:{}", kafka.port()),
    );
    let broker_args = |grpc_advertise: &str| {
        args(&[
            "--broker-id",
            "1",
            "--region",
            "r",
            "--data-dir",
            &dir.join("broker").display().to_string(),
            "--control",
            &cp_name,
            "--grpc-listen",
            &grpc.to_string(),
            "--grpc-advertise",
            grpc_advertise,
            "--kafka-listen",
            &kafka.to_string(),
            "--kafka-advertise",
            &kafka_name,
            "--metrics-listen",
            &ops.to_string(),
            "--raft-listen",
            &raft.to_string(),
            "--grpc-tls-cert",
            &cert,
            "--grpc-tls-key",
            &key,
            "--grpc-ca",
            &ca,
        ])
    };
    // A name that is not HOST:PORT: refused at start, naming the key.
    let mut bad = Command::new(binary("region-broker"));
    bad.args(broker_args("localhost"));
    let (code, out, err) = run(bad, None);
    assert_ne!(code, 0);
    assert!(
        format!("{out}{err}").contains("grpc_advertise"),
        "{out}{err}"
    );
    let _broker = Daemon::start(
        "region-broker",
        "the broker",
        broker_args(&grpc_name),
        dir.join("broker.log"),
    );
    ready(ops, "the broker").await;

    // The CLI, trusting the CA: the control plane by its name, and the broker where the
    // control plane routes it — its name, which its certificate is valid for.
    let cli = |list: &[&str], stdin: Option<&str>| {
        let mut c = Command::new(binary("meridian"));
        c.args(["--control", &cp_name])
            .args(list)
            .env("MERIDIAN_CA", &ca)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env_remove("MERIDIAN_TOKEN")
            .env_remove("MERIDIAN_BROKER")
            .env_remove("MERIDIAN_CONTROL");
        run(c, stdin.map(str::as_bytes))
    };
    let (code, out, err) = cli(&["--json", "broker", "list"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&grpc_name), "registered by its name: {out}");
    let (code, _, err) = cli(&["topic", "create", "named", "--partitions", "1"], None);
    assert_eq!(code, 0, "{err}");
    let lines: String = (0..100).map(|i| format!("m{i}\n")).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _, err) = cli(&["produce", "named"], Some(&lines));
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "produce at the broker's name: {err}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (code, out, err) = cli(
        &["consume", "named", "--from", "beginning", "--max", "100"],
        None,
    );
    assert_eq!(code, 0, "consume at the broker's name: {err}");
    assert_eq!(out.lines().count(), 100, "{out}");

    // Kafka clients are told the name.
    let mut kcat = Command::new("kcat");
    kcat.args(["-b", &kafka.to_string(), "-L", "-t", "named", "-m", "10"]);
    let (code, out, err) = run(kcat, None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("broker 1 at {kafka_name}")),
        "Metadata names the advertised listener: {out}"
    );
}
