//! Shared by the control-plane tests: a real etcd on free loopback ports.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

/// A single-member etcd on free loopback ports, stopped (by pid) when dropped.
pub(crate) struct Etcd {
    child: Child,
    /// Its client URL.
    pub(crate) endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

pub(crate) fn start_etcd() -> Etcd {
    let dir = tempfile::tempdir().unwrap();
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
    Etcd {
        child,
        endpoint,
        _dir: dir,
    }
}
