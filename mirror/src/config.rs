//! The mirror's configuration: a TOML file (keys as the flags, with underscores) and flags
//! over it, validated with the value and the fix named.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// Congestion control on the links.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Congestion {
    /// BBR: paces by measured bandwidth and round trip; random loss does not halve the rate
    /// (the default: inter-region links lose packets that say nothing about congestion).
    Bbr,
    /// CUBIC: loss-based, quinn's default.
    Cubic,
}

impl std::str::FromStr for Congestion {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "bbr" => Ok(Congestion::Bbr),
            "cubic" => Ok(Congestion::Cubic),
            _ => bail!("invalid congestion = {s:?}: use bbr or cubic"),
        }
    }
}

/// Another region's mirrors this one ships to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Its region.
    pub region: String,
    /// Its mirrors' QUIC addresses (`HOST:PORT`, resolved at each connect), tried in turn.
    pub addrs: Vec<String>,
}

impl std::str::FromStr for Peer {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let usage = || {
            anyhow::anyhow!(
                "invalid peer {s:?}: write REGION=HOST:PORT[,HOST:PORT...], e.g. eu-west=10.0.2.7:7700"
            )
        };
        let (region, addrs) = s.split_once('=').ok_or_else(usage)?;
        let addrs: Vec<String> = addrs.split(',').map(|a| a.trim().to_owned()).collect();
        if region.is_empty() || addrs.iter().any(|a| !a.contains(':')) {
            return Err(usage());
        }
        Ok(Peer {
            region: region.to_owned(),
            addrs,
        })
    }
}

/// Everything a mirror runs with.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This mirror's region.
    pub region: String,
    /// This mirror's id among its region's mirrors (default `REGION@LISTEN`): the holder
    /// name of the links it claims.
    pub id: String,
    /// How long a claimed link stays this mirror's without renewal, in milliseconds: when
    /// it dies, another mirror of the region takes the link after this.
    pub claim_ttl_ms: u64,
    /// Control-plane addresses, comma separated.
    pub control: String,
    /// UDP address the QUIC endpoint binds: other regions' mirrors connect here.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` address.
    pub metrics_listen: SocketAddr,
    /// Regions shipped to: `REGION=HOST:PORT`.
    pub peers: Vec<String>,
    /// The CA certificate (PEM) every mirror's certificate is signed by.
    pub ca: PathBuf,
    /// This mirror's certificate (PEM), valid for `mirror.REGION.meridian`.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Bytes shipped on one stream and not yet acknowledged before the sender waits.
    pub window_bytes: u64,
    /// Bytes read from the region per Records frame (about).
    pub batch_bytes: u32,
    /// A link silent this long is dead (reconnect), in milliseconds.
    pub idle_timeout_ms: u64,
    /// Keep-alive interval on idle links, in milliseconds.
    pub keep_alive_ms: u64,
    /// Round trip assumed before one is measured, in milliseconds.
    pub initial_rtt_ms: u64,
    /// Congestion control: bbr or cubic.
    pub congestion: Congestion,
    /// Most peer connections the QUIC listener holds at once (past it, refused).
    pub connections_max: usize,
    /// Most peer connections from one address.
    pub connections_per_address_max: usize,
    /// This mirror's API token (`Mirror:REGION`; a file of its owner's only), sent with its
    /// calls to the control plane and its region's brokers.
    pub token_file: Option<PathBuf>,
    /// The CA (PEM) of the gRPC APIs: calls to the control plane and brokers go over TLS
    /// trusting it.
    pub grpc_ca: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            region: String::new(),
            id: String::new(),
            claim_ttl_ms: 6000,
            control: "127.0.0.1:7300".into(),
            listen: "127.0.0.1:7700".parse().expect("valid address"),
            metrics_listen: "127.0.0.1:9700".parse().expect("valid address"),
            peers: Vec::new(),
            ca: PathBuf::new(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
            window_bytes: 16 << 20,
            batch_bytes: 1 << 20,
            idle_timeout_ms: 10_000,
            keep_alive_ms: 2_000,
            initial_rtt_ms: 100,
            congestion: Congestion::Bbr,
            connections_max: 256,
            connections_per_address_max: 64,
            token_file: None,
            grpc_ca: None,
        }
    }
}

impl Config {
    /// Reads `path` (or the defaults without one).
    pub fn load(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
            }
            None => Ok(Config::default()),
        }
    }

    /// The peers, parsed.
    pub fn peers(&self) -> anyhow::Result<Vec<Peer>> {
        self.peers.iter().map(|p| p.parse()).collect()
    }

    /// Refuses values the mirror cannot run with, naming the key and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.region.is_empty() {
            bail!("invalid region = \"\": name this mirror's region (--region us-east)");
        }
        let peers = self.peers()?;
        for p in &peers {
            if p.region == self.region {
                bail!(
                    "invalid peer {}={}: a mirror does not ship to its own region",
                    p.region,
                    p.addrs.join(",")
                );
            }
        }
        if !(1000..=60_000).contains(&self.claim_ttl_ms) {
            bail!(
                "invalid claim_ttl_ms = {}: must be 1000 to 60000",
                self.claim_ttl_ms
            );
        }
        for (name, path) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            if path.as_os_str().is_empty() {
                bail!(
                    "missing {name}: mirrors authenticate each other with TLS certificates; issue them with `meridian certs --dir DIR --regions {}` and pass --ca, --cert and --key",
                    self.region
                );
            }
        }
        if !(64 << 10..=1 << 30).contains(&self.window_bytes) {
            bail!(
                "invalid window_bytes = {}: must be 64 KiB to 1 GiB",
                self.window_bytes
            );
        }
        if !(4 << 10..=8 << 20).contains(&self.batch_bytes) {
            bail!(
                "invalid batch_bytes = {}: must be 4 KiB to 8 MiB (a frame is at most 16 MiB)",
                self.batch_bytes
            );
        }
        if !(1000..=600_000).contains(&self.idle_timeout_ms) {
            bail!(
                "invalid idle_timeout_ms = {}: must be 1000 to 600000",
                self.idle_timeout_ms
            );
        }
        if self.keep_alive_ms == 0 || self.keep_alive_ms >= self.idle_timeout_ms {
            bail!(
                "invalid keep_alive_ms = {}: must be above 0 and below idle_timeout_ms ({})",
                self.keep_alive_ms,
                self.idle_timeout_ms
            );
        }
        if !(1..=65_536).contains(&self.connections_max) {
            bail!(
                "invalid connections_max = {}: must be 1 to 65536",
                self.connections_max
            );
        }
        if !(1..=self.connections_max).contains(&self.connections_per_address_max) {
            bail!(
                "invalid connections_per_address_max = {}: must be 1 to connections_max ({})",
                self.connections_per_address_max,
                self.connections_max
            );
        }
        if !(1..=10_000).contains(&self.initial_rtt_ms) {
            bail!(
                "invalid initial_rtt_ms = {}: must be 1 to 10000",
                self.initial_rtt_ms
            );
        }
        Ok(())
    }

    /// This mirror's id.
    pub fn id(&self) -> String {
        if self.id.is_empty() {
            format!("{}@{}", self.region, self.listen)
        } else {
            self.id.clone()
        }
    }

    /// The idle timeout.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            region: "us".into(),
            peers: vec!["eu=127.0.0.1:7701".into()],
            ca: "ca.pem".into(),
            cert: "us.pem".into(),
            key: "us.key".into(),
            ..Config::default()
        }
    }

    #[test]
    fn bad_values_are_named() {
        valid().validate().unwrap();
        let cases: Vec<(Config, &str)> = vec![
            (
                Config {
                    region: String::new(),
                    ..valid()
                },
                "region",
            ),
            (
                Config {
                    peers: vec!["eu".into()],
                    ..valid()
                },
                "REGION=HOST:PORT",
            ),
            (
                Config {
                    peers: vec!["us=127.0.0.1:1".into()],
                    ..valid()
                },
                "own region",
            ),
            (
                Config {
                    cert: PathBuf::new(),
                    ..valid()
                },
                "meridian certs",
            ),
            (
                Config {
                    window_bytes: 10,
                    ..valid()
                },
                "window_bytes",
            ),
            (
                Config {
                    keep_alive_ms: 20_000,
                    ..valid()
                },
                "keep_alive_ms",
            ),
        ];
        for (c, want) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should name {want:?}");
        }
        assert!(toml::from_str::<Config>("windw_bytes = 3").is_err());
        let c: Config = toml::from_str("congestion = \"cubic\"\nregion = \"x\"").unwrap();
        assert_eq!(c.congestion, Congestion::Cubic);
    }
}
