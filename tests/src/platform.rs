//! The platform as real processes: a real etcd, control-plane daemons, and regions of
//! managed brokers (registered with the control plane, hosting what it assigns).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_client::Client;
use meridian_proto::v1::{self, control_plane_client::ControlPlaneClient};

use crate::{BrokerProcess, binary, free_addr};

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    free_addr().port()
}

/// A single-member etcd on free loopback ports, stopped (by pid) when dropped.
pub struct Etcd {
    child: Child,
    /// Its client URL.
    pub endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts an etcd (Debian's `etcd-server`, which the test script installs).
pub fn start_etcd() -> Etcd {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "test", "--data-dir"])
        .arg(dir.path().join("etcd"))
        .args(["--listen-client-urls", &endpoint])
        .args(["--advertise-client-urls", &endpoint])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("test={peer_url}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting etcd: install Debian's etcd-server (scripts/test.sh does)");
    let mut etcd = Etcd {
        child,
        endpoint,
        _dir: dir,
    };
    // Its ports are only picked, not held, until etcd binds them: return once both listen,
    // so a port picked next (by this test or `meridian up`'s range) cannot be one of them.
    let deadline = Instant::now() + Duration::from_secs(30);
    let listening = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    while !(listening(client) && listening(peer)) {
        if let Ok(Some(status)) = etcd.child.try_wait() {
            panic!("etcd exited during start-up ({status}) on ports {client} and {peer}");
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not listen on 127.0.0.1:{client} and :{peer} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    etcd
}

/// One control-plane process, stopped (by pid) when dropped.
pub struct ControlPlaneProcess {
    /// Its id.
    pub id: String,
    /// Its API address.
    pub addr: String,
    /// Its operational endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub metrics: String,
    daemon: crate::Daemon,
}

impl ControlPlaneProcess {
    /// Starts one on free ports with `store` (`embedded:PATH` or `etcd:URL`), a 2 s leader
    /// lease, its log in `log_dir`, and extra `flags`.
    pub fn start(id: &str, store: &str, log_dir: &Path, flags: &[&str]) -> ControlPlaneProcess {
        let addr = format!("127.0.0.1:{}", free_port());
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = vec![
            "--id".into(),
            id.into(),
            "--listen".into(),
            addr.clone(),
            "--metrics-listen".into(),
            metrics.clone(),
            "--store".into(),
            store.into(),
            "--leader-lease-ms".into(),
            "2000".into(),
        ];
        args.extend(flags.iter().map(|f| f.to_string()));
        ControlPlaneProcess {
            id: id.into(),
            addr,
            metrics,
            daemon: crate::Daemon::start(
                "control-plane",
                &format!("control-plane {id}"),
                args,
                log_dir.join(format!("{id}.log")),
            ),
        }
    }

    /// One process on an embedded store in `dir` (its only process), once it leads.
    pub async fn embedded(dir: &Path, flags: &[&str]) -> ControlPlaneProcess {
        let store = format!("embedded:{}", dir.join("control.redb").display());
        let cp = ControlPlaneProcess::start("cp-1", &store, dir, flags);
        cp.wait_leader(Duration::from_secs(30)).await;
        cp
    }

    /// Starts the process (again) with the same arguments.
    pub fn spawn(&mut self) {
        self.daemon.spawn();
    }

    /// Sends `signal` to the process (SIGSTOP pauses it: nothing it serves answers).
    pub fn signal(&self, signal: i32) {
        self.daemon.signal(signal);
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.daemon.running()
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        self.daemon.kill9();
    }

    /// SIGTERM and wait; whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        self.daemon.terminate()
    }

    /// What it answers to `Status`, if it answers.
    pub async fn status(&self) -> Option<v1::ControlStatusResponse> {
        let mut c = control_client(&self.addr).await.ok()?;
        Some(
            c.status(v1::ControlStatusRequest {})
                .await
                .ok()?
                .into_inner(),
        )
    }

    /// A client of this process.
    pub async fn client(&self) -> ControlPlaneClient<meridian_proto::auth::Authed> {
        control_client(&self.addr)
            .await
            .expect("connect to the control plane")
    }

    /// Waits until this process knows a leader.
    pub async fn wait_leader(&self, limit: Duration) -> String {
        self.wait_leader_other_than(None, limit).await
    }

    /// Waits until this process knows a leader other than `not`.
    pub async fn wait_leader_other_than(&self, not: Option<&str>, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.status().await
                && let Some(l) = s.leader_id
                && Some(l.as_str()) != not
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "control plane {} knows no leader after {limit:?}; log:\n{}",
                self.id,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }
}

/// A client of the control-plane process at `addr`, carrying this process's token when
/// one is set (`meridian_proto::auth::set_token`).
pub async fn control_client(
    addr: &str,
) -> Result<ControlPlaneClient<meridian_proto::auth::Authed>, tonic::transport::Error> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    Ok(ControlPlaneClient::new(
        meridian_proto::auth::connect(endpoint).await?,
    ))
}

/// A region of managed brokers.
#[derive(Debug)]
pub struct ManagedRegion {
    /// Its name.
    pub name: String,
    /// The brokers, by id - 1.
    pub brokers: Vec<BrokerProcess>,
    /// Their Kafka addresses, by id - 1, when started with `--kafka-listen auto`.
    pub kafka: Vec<String>,
    /// Their MQTT addresses, by id - 1, when started with `--mqtt-listen auto`.
    pub mqtt: Vec<String>,
    dir: PathBuf,
    control: String,
    flags: Vec<String>,
}

impl ManagedRegion {
    /// Starts `n` brokers of region `name` registering with `control` (comma-separated
    /// addresses), data under `dir`, extra `flags`; waits until all are registered.
    pub async fn start(
        dir: &Path,
        name: &str,
        n: u32,
        control: &str,
        flags: &[&str],
    ) -> anyhow::Result<ManagedRegion> {
        let mut region = ManagedRegion {
            name: name.into(),
            brokers: Vec::new(),
            kafka: Vec::new(),
            mqtt: Vec::new(),
            dir: dir.to_owned(),
            control: control.into(),
            flags: flags.iter().map(|f| f.to_string()).collect(),
        };
        for _ in 0..n {
            region.add_broker().await?;
        }
        Ok(region)
    }

    /// Starts one more broker; returns its id.
    pub async fn add_broker(&mut self) -> anyhow::Result<u32> {
        let id = self.brokers.len() as u32 + 1;
        let raft = free_addr().to_string();
        let id_text = id.to_string();
        let mut flags: Vec<&str> = vec![
            "--broker-id",
            &id_text,
            "--region",
            &self.name,
            "--raft-listen",
            &raft,
            "--control",
            &self.control,
        ];
        // `--kafka-listen auto`, `--mqtt-listen auto`: a free address for each broker.
        let kafka = free_addr().to_string();
        let mqtt = free_addr().to_string();
        let (mut kafka_auto, mut mqtt_auto) = (false, false);
        for f in &self.flags {
            if f == "auto" && flags.last() == Some(&"--kafka-listen") {
                flags.push(&kafka);
                kafka_auto = true;
            } else if f == "auto" && flags.last() == Some(&"--mqtt-listen") {
                flags.push(&mqtt);
                mqtt_auto = true;
            } else {
                flags.push(f);
            }
        }
        if kafka_auto {
            self.kafka.push(kafka.clone());
        }
        if mqtt_auto {
            self.mqtt.push(mqtt.clone());
        }
        let dir = self.dir.join(format!("{}-broker-{id}", self.name));
        self.brokers
            .push(BrokerProcess::start_at(&dir, free_addr(), &flags).await?);
        self.wait_registered(id).await?;
        Ok(id)
    }

    /// Waits until broker `id` holds a lease.
    async fn wait_registered(&self, id: u32) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.live().await.contains(&id) {
                return Ok(());
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "broker {id} of {} did not register within 30 s; log:\n{}",
                    self.name,
                    self.brokers[id as usize - 1].log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The ids of the region's brokers the control plane lists as live.
    pub async fn live(&self) -> Vec<u32> {
        for addr in self.control.split(',') {
            let Ok(mut c) = control_client(addr).await else {
                continue;
            };
            if let Ok(r) = c
                .list_brokers(v1::ListBrokersRequest {
                    region: self.name.clone(),
                })
                .await
            {
                return r.into_inner().brokers.iter().map(|b| b.id).collect();
            }
        }
        Vec::new()
    }

    /// The region's log groups as the control plane places them.
    pub async fn groups(&self) -> Vec<v1::LogGroupPlacement> {
        for addr in self.control.split(',') {
            let Ok(mut c) = control_client(addr).await else {
                continue;
            };
            if let Ok(r) = c
                .list_log_groups(v1::ListLogGroupsRequest {
                    region: self.name.clone(),
                })
                .await
            {
                return r.into_inner().groups;
            }
        }
        Vec::new()
    }

    /// The gRPC addresses of the running brokers, comma-separated.
    pub fn bootstrap(&self) -> String {
        crate::bootstrap(&self.brokers)
    }

    /// A client of the running brokers.
    pub async fn client(&self) -> Client {
        crate::client_of(&self.brokers).await
    }
}

/// Runs `meridian --control CONTROL ARGS`; returns (exit code, stdout, stderr).
pub fn meridian_control(control: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("meridian"))
        .args(["--control", control])
        .args(args)
        .env("XDG_CONFIG_HOME", "/nonexistent-meridian-test")
        .stdin(Stdio::null())
        .output()
        .expect("run meridian");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A platform of managed regions on one control plane: the control plane on the embedded
/// store under `dir`, knowing `regions` (brokers' leases 2 s, so a killed region is seen
/// down quickly), `brokers` brokers in each region started with `flags`, and mirror
/// certificates for those regions in `dir/certs`.
pub async fn managed_regions(
    dir: &Path,
    regions: &[&str],
    brokers: u32,
    flags: &[&str],
) -> (ControlPlaneProcess, Vec<ManagedRegion>, PathBuf) {
    let certs = dir.join("certs");
    crate::mirror::issue_certs(&certs, regions);
    let mut cp_flags = vec!["--broker-lease-ms", "2000"];
    for r in regions {
        cp_flags.extend(["--region", r]);
    }
    let cp = ControlPlaneProcess::embedded(dir, &cp_flags).await;
    let mut started = Vec::new();
    for r in regions {
        started.push(
            ManagedRegion::start(dir, r, brokers, &cp.addr, flags)
                .await
                .unwrap(),
        );
    }
    (cp, started, certs)
}
