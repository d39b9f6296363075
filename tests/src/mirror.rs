//! Mirror agents as real processes, with certificates issued by the real CLI.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::binary;

/// A free UDP port on 127.0.0.1 (QUIC listens on UDP).
pub fn free_udp_addr() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free local UDP port")
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
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
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
        let mut m = MirrorProcess {
            region: region.into(),
            listen,
            metrics,
            args,
            log: dir.join(format!("mirror-{region}.log")),
            child: None,
        };
        m.spawn();
        m
    }

    /// Starts the process (again) with the same arguments.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "mirror {} is running", self.region);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the mirror's log");
        self.child = Some(
            Command::new(binary("mirror"))
                .args(&self.args)
                .env("MERIDIAN_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .expect("start mirror"),
        );
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        match self.child.take() {
            Some(mut c) => {
                // SAFETY: signalling our own child by pid.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                c.wait().is_ok_and(|s| s.success())
            }
            None => true,
        }
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The sum of a metric's samples (all label sets) on its /metrics page.
    pub async fn metric(&self, name: &str) -> f64 {
        let page = crate::http_get(self.metrics, "/metrics")
            .await
            .unwrap_or_default();
        page.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for MirrorProcess {
    fn drop(&mut self) {
        if self.child.is_some() && std::thread::panicking() {
            eprintln!("--- mirror {} log ---\n{}", self.region, self.log_text());
        }
        self.kill9();
    }
}
