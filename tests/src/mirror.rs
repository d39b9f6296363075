//! Mirror agents as real processes, with certificates issued by the real CLI.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::binary;

/// A free UDP port on 127.0.0.1 (QUIC listens on UDP), as [`crate::free_addr`] picks them.
pub fn free_udp_addr() -> SocketAddr {
    crate::free_port_where(|port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok())
}

/// Issues a CA and a mirror certificate per region into `dir` with `meridian certs`.
pub fn issue_certs(dir: &Path, regions: &[&str]) {
    let out = Command::new(binary("meridian"))
        .args(["certs", "--dir"])
        .arg(dir)
        .args(["--regions", &regions.join(",")])
        .output()
        .expect("run meridian certs");
    assert!(
        out.status.success(),
        "meridian certs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One `mirror` process, stopped (by pid) when dropped.
pub struct MirrorProcess {
    /// Its region.
    pub region: String,
    /// Its QUIC (UDP) address.
    pub listen: SocketAddr,
    /// Its /metrics address.
    pub metrics: SocketAddr,
    daemon: crate::Daemon,
}

impl MirrorProcess {
    /// Starts the mirror of `region` on `listen`, shipping to `peers` (region, address),
    /// with the certificates in `certs` and extra `flags`; its log goes to `dir`.
    pub fn start(
        dir: &Path,
        region: &str,
        control: &str,
        listen: SocketAddr,
        peers: &[(String, SocketAddr)],
        certs: &Path,
        flags: &[&str],
    ) -> MirrorProcess {
        let metrics = crate::free_addr();
        let mut args: Vec<String> = vec![
            "--region".into(),
            region.into(),
            "--control".into(),
            control.into(),
            "--listen".into(),
            listen.to_string(),
            "--metrics-listen".into(),
            metrics.to_string(),
            "--ca".into(),
            certs.join("ca.pem").display().to_string(),
            "--cert".into(),
            certs.join(format!("{region}.pem")).display().to_string(),
            "--key".into(),
            certs.join(format!("{region}.key")).display().to_string(),
        ];
        for (r, a) in peers {
            args.push("--peer".into());
            args.push(format!("{r}={a}"));
        }
        args.extend(flags.iter().map(|f| f.to_string()));
        MirrorProcess {
            region: region.into(),
            listen,
            metrics,
            daemon: crate::Daemon::start(
                "mirror",
                &format!("mirror {region}"),
                args,
                dir.join(format!("mirror-{region}-{}.log", listen.port())),
            ),
        }
    }

    /// Starts the process (again) with the same arguments.
    pub fn spawn(&mut self) {
        self.daemon.spawn();
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        self.daemon.kill9();
    }

    /// SIGTERM and wait; whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        self.daemon.terminate()
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        self.daemon.log_text()
    }

    /// The sum of a metric's samples (all label sets) on its /metrics page.
    pub async fn metric(&self, name: &str) -> f64 {
        crate::metric(self.metrics, name).await
    }
}

/// Mirrors linking regions `x` and `y` both ways: `x`'s dials `y`'s, which knows `x`'s as
/// a peer (as `meridian up` links two regions).
pub fn link_pair(
    dir: &Path,
    control: &str,
    pair: (&str, &str),
    certs: &Path,
) -> (MirrorProcess, MirrorProcess) {
    link_pair_with(dir, control, pair, certs, &[])
}

/// [`link_pair`], both mirrors started with extra `flags`.
pub fn link_pair_with(
    dir: &Path,
    control: &str,
    (x, y): (&str, &str),
    certs: &Path,
    flags: &[&str],
) -> (MirrorProcess, MirrorProcess) {
    let (lx, ly) = (free_udp_addr(), free_udp_addr());
    let mx = MirrorProcess::start(dir, x, control, lx, &[(y.into(), ly)], certs, flags);
    let peers_of_y = format!("{x}={lx}");
    let mut flags_of_y = vec!["--peer", &peers_of_y];
    flags_of_y.extend_from_slice(flags);
    let my = MirrorProcess::start(dir, y, control, ly, &[], certs, &flags_of_y);
    (mx, my)
}

/// Regions `x` and `y` of one broker each (with extra broker flags each) under an embedded
/// control plane, and the certificates of their mirrors in `dir/certs`: the set-up of the
/// tests that link two regions.
pub struct TwoRegions {
    /// The mirrors' certificates.
    pub certs: std::path::PathBuf,
    /// The control plane.
    pub control: crate::platform::ControlPlaneProcess,
    /// Region x.
    pub x: crate::platform::ManagedRegion,
    /// Region y.
    pub y: crate::platform::ManagedRegion,
}

impl TwoRegions {
    /// Starts them under `dir`.
    pub async fn start(dir: &Path, x_flags: &[&str], y_flags: &[&str]) -> TwoRegions {
        use crate::platform::{ControlPlaneProcess, ManagedRegion};
        let certs = dir.join("certs");
        issue_certs(&certs, &["x", "y"]);
        let control = ControlPlaneProcess::embedded(dir, &["--region", "x", "--region", "y"]).await;
        let x = ManagedRegion::start(dir, "x", 1, &control.addr, x_flags)
            .await
            .expect("region x starts");
        let y = ManagedRegion::start(dir, "y", 1, &control.addr, y_flags)
            .await
            .expect("region y starts");
        TwoRegions {
            certs,
            control,
            x,
            y,
        }
    }

    /// Creates `topic` with `partitions` (one replica) in both regions through the control
    /// plane, and waits until both regions' brokers have it (30 s at most).
    pub async fn create_topic(&self, topic: &str, partitions: u32) {
        let n = partitions.to_string();
        let args = [
            "topic",
            "create",
            topic,
            "--partitions",
            &n,
            "--replicas",
            "1",
        ];
        let (code, _, err) = crate::platform::meridian_control(&self.control.addr, &args);
        assert_eq!(code, 0, "{err}");
        let (cx, cy) = (self.x.client().await, self.y.client().await);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while cx.describe_topic(topic).await.is_err() || cy.describe_topic(topic).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{topic} never reached both regions"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Mirrors linking them both ways, started with extra `flags`.
    pub fn link(&self, dir: &Path, flags: &[&str]) -> (MirrorProcess, MirrorProcess) {
        link_pair_with(dir, &self.control.addr, ("x", "y"), &self.certs, flags)
    }
}
