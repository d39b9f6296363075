//! The control plane's configuration: a TOML file (keys as the flags, with underscores),
//! flags over it; `control-plane` validates the merged result before anything starts.

use std::net::SocketAddr;
use std::path::PathBuf;

use meridian_security::tls::ClientAuth;
use serde::{Deserialize, Serialize};

/// Everything a `control-plane` process needs to run.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This process's id (unique among the control-plane processes).
    pub id: String,
    /// Address of the ControlPlane gRPC API.
    pub listen: SocketAddr,
    /// `HOST:PORT` callers reach this process's API at, when not `listen` (a name its TLS
    /// certificate is valid for): what it names as the leader's address when it leads.
    pub advertise: Option<String>,
    /// Address of the operational endpoint (`/metrics`, `/healthz`, `/readyz`).
    pub metrics_listen: SocketAddr,
    /// The metadata store: `embedded:PATH` (one file, one process) or
    /// `etcd:URL[,URL...]`.
    pub store: String,
    /// Leader lease: how long a dead leader keeps the office, in milliseconds.
    pub leader_lease_ms: u64,
    /// Broker lease: how long a broker that stops renewing stays registered, in
    /// milliseconds (1,000 to 120,000); its log groups are repaired after that.
    pub broker_lease_ms: u64,
    /// Regions to create at start if they do not exist.
    pub regions: Vec<String>,
    /// API connections open at once, at most (past it a connection's calls are answered
    /// `RESOURCE_EXHAUSTED`).
    pub connections_max: usize,
    /// API connections from one client address, at most.
    pub connections_per_address_max: usize,
    /// Close an API connection with no call in flight (or fail a call whose body stops
    /// arriving) after this long, in milliseconds.
    pub idle_timeout_ms: u64,
    /// The API tokens the API accepts (`meridian token create`; its owner's only): every
    /// call is then authenticated, and each principal may do only its part.
    pub tokens_file: Option<PathBuf>,
    /// The control plane's own token (`ControlPlane`), for its calls to brokers.
    pub token_file: Option<PathBuf>,
    /// Users who may change the platform (`User:NAME`; none: every authenticated user).
    pub admins: Vec<String>,
    /// With `tokens_file`: whether calls without credentials are served (as anonymous:
    /// reads only).
    pub grpc_allow_anonymous: bool,
    /// The API's certificate chain (PEM): with `tls_key`, the API speaks TLS only
    /// (re-read when the files change).
    pub tls_cert: Option<PathBuf>,
    /// The API's private key (PEM, its owner's only).
    pub tls_key: Option<PathBuf>,
    /// Whether callers are asked for a client certificate (`none`, `requested` or
    /// `required`): a valid one's common name is the caller's user when the call carries
    /// no token.
    pub tls_client_auth: ClientAuth,
    /// The CA (PEM) callers' certificates must be signed by.
    pub tls_client_ca: Option<PathBuf>,
    /// The CA of the gRPC APIs: calls to brokers go over TLS trusting it.
    pub grpc_ca: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: "control-1".into(),
            listen: "127.0.0.1:7300".parse().expect("valid address"),
            advertise: None,
            metrics_listen: "127.0.0.1:9300".parse().expect("valid address"),
            store: "embedded:meridian-data/control.redb".into(),
            leader_lease_ms: 3000,
            broker_lease_ms: 9000,
            regions: Vec::new(),
            connections_max: 4096,
            connections_per_address_max: 1024,
            idle_timeout_ms: 600_000,
            tokens_file: None,
            token_file: None,
            admins: Vec::new(),
            grpc_allow_anonymous: false,
            tls_cert: None,
            tls_key: None,
            tls_client_auth: ClientAuth::None,
            tls_client_ca: None,
            grpc_ca: None,
        }
    }
}

impl Config {
    /// Where callers reach this process's API (`advertise`, else `listen`).
    pub fn address(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}
