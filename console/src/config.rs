//! The console's configuration: a TOML file (keys as the flags, with underscores, and
//! `[[users]]`), flags over it. The file holds password hashes: it must be its owner's
//! only.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::auth::User;

/// Everything `meridian-console` needs to run.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the web console.
    pub listen: SocketAddr,
    /// Address of the operational endpoint (`/metrics`, `/healthz`, `/readyz`; metrics
    /// are also served at `/metrics` on `listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Control-plane address(es), comma separated.
    pub control: String,
    /// The audit log (JSON lines).
    pub audit_log: PathBuf,
    /// The regions' mirrors, by their metrics address: `REGION=HOST:PORT`.
    pub mirrors: Vec<String>,
    /// Who may log in (`[[users]]`).
    pub users: Vec<User>,
    /// The console's certificate chain (PEM): with `tls_key` it serves HTTPS only, its
    /// session cookies `Secure`.
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, its owner's only).
    pub tls_key: Option<PathBuf>,
    /// The console's API token file (`Console`'s token), sent with its calls to the
    /// control plane and the brokers.
    pub token_file: Option<PathBuf>,
    /// The CA of the gRPC APIs: calls to the control plane and brokers go over TLS
    /// trusting it.
    pub grpc_ca: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7800".parse().expect("valid address"),
            metrics_listen: None,
            control: "127.0.0.1:7300".into(),
            audit_log: PathBuf::from("meridian-console-audit.log"),
            mirrors: Vec::new(),
            users: Vec::new(),
            tls_cert: None,
            tls_key: None,
            token_file: None,
            grpc_ca: None,
        }
    }
}
