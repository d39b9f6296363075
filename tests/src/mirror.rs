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
