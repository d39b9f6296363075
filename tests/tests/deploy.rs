//! The deployment files in `deploy/` as an operator uses them: every systemd unit passes
//! `systemd-analyze verify` with nothing to say (an unknown key or a bad value is only a
//! warning to systemd, so any output fails), and each unit's own command line, given the
//! example configuration beside it (addresses moved to free loopback ports, paths into a
//! temporary directory), starts its daemon: the four alive on `/healthz`, then ready on
//! `/readyz` (the control plane leading, the broker registered, the mirror knowing its
//! region and reaching its broker). The image, compose file and Helm chart pass their
//! linters (hadolint, the Compose specification's schema, Kubernetes' schemas on the
//! rendered chart), and every daemon command line in them names only flags the daemon
//! has (`tests/deploy/check_deploy.py`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_tests::mirror::issue_certs;
use meridian_tests::{Daemon, bin_dir, free_addr, http_get};

/// The workspace's `deploy/`.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Each unit (file name → text).
fn units() -> BTreeMap<String, String> {
    let mut units = BTreeMap::new();
    for entry in std::fs::read_dir(deploy_dir().join("systemd")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "service") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            units.insert(name, std::fs::read_to_string(&path).unwrap());
        }
    }
    units
}

/// A unit's `ExecStart=` words.
fn exec_start(unit: &str) -> Vec<String> {
    unit.lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has an ExecStart")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// A unit with its programs taken from this build instead of `/usr/local/bin`.
fn built(unit: &str) -> String {
    unit.replace(
        "/usr/local/bin/",
        &format!("{}/", bin_dir().canonicalize().unwrap().display()),
    )
}

#[test]
fn the_image_compose_file_and_chart_pass_their_linters_and_name_real_flags() {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh creates the venv with the deploy linters",
        python.display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/check_deploy.py");
    let mut cmd = Command::new(python);
    cmd.arg(script).arg(deploy_dir()).arg(bin_dir());
    let (code, out, err) = meridian_tests::run(cmd, None);
    assert_eq!(code, 0, "check_deploy.py:\n{out}\n{err}");
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn every_unit_passes_systemd_analyze_verify_silently() {
    let units = units();
    assert_eq!(
        units.keys().cloned().collect::<Vec<_>>(),
        [
            "meridian-console.service",
            "meridian-control-plane.service",
            "meridian-mirror.service",
            "meridian-region-broker.service",
        ],
        "a unit for each daemon"
    );
    let tmp = tempfile::tempdir().unwrap();
    for (name, text) in &units {
        let path = tmp.path().join(name);
        std::fs::write(&path, built(text)).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze runs (Debian's systemd package)");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{name}: systemd-analyze verify said:\n{said}"
        );
        for hardening in [
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=",
        ] {
            assert!(text.contains(hardening), "{name} lacks {hardening}");
        }
    }
}

/// The example configuration `name` with `set` keys replaced (`a.b` for a key of table `a`).
fn example(name: &str, set: &[(&str, toml::Value)]) -> String {
    let text = std::fs::read_to_string(deploy_dir().join("config").join(name)).unwrap();
    let mut config: toml::Table = toml::from_str(&text).unwrap();
    for (key, value) in set {
        match key.split_once('.') {
            Some((table, k)) => {
                config
                    .get_mut(table)
                    .and_then(|t| t.as_table_mut())
                    .unwrap_or_else(|| panic!("{name} has no [{table}]"))
                    .insert(k.to_owned(), value.clone());
            }
            None => {
                assert!(config.contains_key(*key), "{name} has no {key}");
                config.insert((*key).to_owned(), value.clone());
            }
        }
    }
    toml::to_string(&config).unwrap()
}

fn text(s: impl Into<String>) -> toml::Value {
    toml::Value::String(s.into())
}

/// Starts the unit's command line with its configuration at `config`.
fn start(unit: &str, config: &Path, log: PathBuf) -> Daemon {
    let words = exec_start(&built(unit));
    let program = Path::new(&words[0])
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let binary = [
        "control-plane",
        "region-broker",
        "mirror",
        "meridian-console",
    ]
    .into_iter()
    .find(|b| *b == program)
    .unwrap_or_else(|| panic!("the unit starts {program}, not one of Meridian's daemons"));
    let args = words[1..]
        .iter()
        .map(|w| {
            if w.starts_with("/etc/meridian/") {
                config.display().to_string()
            } else {
                w.clone()
            }
        })
        .collect();
    Daemon::start(binary, binary, args, log)
}

/// Waits until `GET path` at `addr` answers 200.
async fn answers(addr: std::net::SocketAddr, path: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(a) = http_get(addr, path).await
            && a.split_whitespace().nth(1) == Some("200")
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {path} did not answer 200 within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_unit_starts_its_daemon_with_the_example_configuration() {
    let units = units();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let write = |name: &str, body: String| {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let (cp_api, cp_ops) = (free_addr(), free_addr());
    let cp_config = write(
        "control-plane.toml",
        example(
            "control-plane.toml",
            &[
                ("listen", text(cp_api.to_string())),
                ("metrics_listen", text(cp_ops.to_string())),
                (
                    "store",
                    text(format!("embedded:{}", dir.join("control.redb").display())),
                ),
            ],
        ),
    );
    let _cp = start(
        &units["meridian-control-plane.service"],
        &cp_config,
        dir.join("control-plane.log"),
    );
    let broker_ops = free_addr();
    let broker_config = write(
        "region-broker.toml",
        example(
            "region-broker.toml",
            &[
                ("data_dir", text(dir.join("broker").display().to_string())),
                ("grpc_listen", text(free_addr().to_string())),
                ("kafka_listen", text(free_addr().to_string())),
                ("mqtt_listen", text(free_addr().to_string())),
                ("metrics_listen", text(broker_ops.to_string())),
                (
                    "control",
                    toml::Value::Array(vec![text(cp_api.to_string())]),
                ),
                ("replication.raft_listen", text(free_addr().to_string())),
            ],
        ),
    );
    let _broker = start(
        &units["meridian-region-broker.service"],
        &broker_config,
        dir.join("region-broker.log"),
    );
    let certs = dir.join("certs");
    issue_certs(&certs, &["us-east", "eu-west"]);
    let mirror_ops = free_addr();
    let mirror_config = write(
        "mirror.toml",
        example(
            "mirror.toml",
            &[
                ("control", text(cp_api.to_string())),
                (
                    "listen",
                    text(meridian_tests::mirror::free_udp_addr().to_string()),
                ),
                ("metrics_listen", text(mirror_ops.to_string())),
                (
                    "peers",
                    toml::Value::Array(vec![text(format!(
                        "eu-west={}",
                        meridian_tests::mirror::free_udp_addr()
                    ))]),
                ),
                ("ca", text(certs.join("ca.pem").display().to_string())),
                (
                    "cert",
                    text(certs.join("us-east.pem").display().to_string()),
                ),
                ("key", text(certs.join("us-east.key").display().to_string())),
            ],
        ),
    );
    let _mirror = start(
        &units["meridian-mirror.service"],
        &mirror_config,
        dir.join("mirror.log"),
    );
    let console_ops = free_addr();
    let mut console: toml::Table = toml::from_str(&example("console.toml", &[])).unwrap();
    console.insert("listen".into(), text(free_addr().to_string()));
    console.insert("metrics_listen".into(), text(console_ops.to_string()));
    console.insert("control".into(), text(cp_api.to_string()));
    console.insert(
        "audit_log".into(),
        text(dir.join("audit.log").display().to_string()),
    );
    // A real hash in place of the example's placeholder.
    let hash = {
        let mut cmd = Command::new(meridian_tests::binary("meridian-console"));
        cmd.arg("hash-password");
        let (code, out, err) = meridian_tests::run(cmd, Some(b"s3cret\n"));
        assert_eq!(code, 0, "{err}");
        out.trim().to_owned()
    };
    console["users"].as_array_mut().unwrap()[0]
        .as_table_mut()
        .unwrap()
        .insert("password_hash".into(), text(hash));
    let console_config = write("console.toml", toml::to_string(&console).unwrap());
    let _console = start(
        &units["meridian-console.service"],
        &console_config,
        dir.join("console.log"),
    );

    // Alive first, every daemon; then ready, every daemon.
    for path in ["/healthz", "/readyz"] {
        for (addr, what) in [
            (cp_ops, "the control plane"),
            (broker_ops, "the broker"),
            (mirror_ops, "the mirror"),
            (console_ops, "the console"),
        ] {
            answers(addr, path, what).await;
        }
    }
}
