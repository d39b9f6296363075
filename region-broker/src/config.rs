//! The broker's configuration: a TOML file, overridden by command-line flags, validated
//! once at start-up. Cores receive the validated struct; only `main` reads files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use meridian_security::tls::ClientAuth;

use crate::storage::{FlushPolicy, GroupConfig};

mod auth;
mod mqtt;
mod replication;

pub use auth::AuthConfig;
pub use mqtt::{MqttConfig, MqttMapping};
pub use replication::{MasterSlaveGroup, Peer, ReplicationConfig};

/// Everything a `region-broker` needs to run.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// This broker's id within its region.
    pub broker_id: u32,
    /// The region this broker belongs to.
    pub region: String,
    /// Where log groups and the topic catalog live.
    pub data_dir: PathBuf,
    /// Address of the native gRPC API.
    pub grpc_listen: SocketAddr,
    /// `HOST:PORT` others reach the gRPC API at, when not `grpc_listen` (a DNS name its
    /// TLS certificate is valid for, a load balancer): registered with the control plane,
    /// where clients and the region's brokers look it up.
    pub grpc_advertise: Option<String>,
    /// Address of the Kafka wire-protocol listener (none: not served).
    pub kafka_listen: Option<SocketAddr>,
    /// `HOST:PORT` Kafka clients are told to connect to, when not `kafka_listen` (Kafka's
    /// `advertised.listeners`).
    pub kafka_advertise: Option<String>,
    /// The Kafka listener's bounds (`[kafka]`).
    pub kafka: KafkaLimits,
    /// Where users' credentials are kept (`[auth]`).
    pub auth: AuthConfig,
    /// Address of the MQTT listener over TCP (none: not served).
    pub mqtt_listen: Option<SocketAddr>,
    /// Address of the MQTT listener over WebSocket (none: not served).
    pub mqtt_ws_listen: Option<SocketAddr>,
    /// The MQTT listener's bounds and topic mappings (`[mqtt]`).
    pub mqtt: MqttConfig,
    /// The gRPC API's bounds (`[grpc]`).
    pub grpc: GrpcLimits,
    /// The transaction coordinators' bounds and policy (`[transactions]`).
    pub transactions: TransactionsConfig,
    /// Address of the Prometheus `/metrics` endpoint.
    pub metrics_listen: SocketAddr,
    /// Log groups this broker hosts; partitions are spread over them.
    pub log_groups: u32,
    /// Partitions of a topic created without a count.
    pub default_partitions: u32,
    /// Partitions one topic may have at most.
    pub partitions_max: u32,
    /// Largest single message (key, value and headers), in bytes.
    pub message_bytes_max: usize,
    /// Largest produce batch, in bytes.
    pub batch_bytes_max: usize,
    /// Longest a fetch may wait for data.
    pub fetch_wait_max_ms: u64,
    /// Storage settings shared by every log group.
    pub storage: StorageConfig,
    /// The region's brokers, when this broker is one of several.
    pub replication: ReplicationConfig,
    /// Control-plane addresses (`HOST:PORT`). With them the broker is *managed*: it
    /// registers under a lease, and hosts the log groups and topics the control plane
    /// assigns it (no `replication.peers`, `master_slave` or `log_groups` then).
    pub control: Vec<String>,
}

/// The largest Kafka request frame accepted (Kafka's `socket.request.max.bytes` is 100 MiB;
/// ours is the broker's batch limit with room for the request around it).
pub const KAFKA_FRAME_MAX: usize = 64 << 20;

/// The SASL mechanisms the Kafka listener can ask for.
pub const KAFKA_SASL_MECHANISMS: [&str; 3] = ["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"];

/// The `[kafka]` section: what the Kafka listener holds at most, and how its clients
/// connect (TLS, SASL).
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaLimits {
    /// Open connections at once; past it a new connection is closed at once (Kafka's
    /// `max.connections`).
    pub connections_max: usize,
    /// Open connections from one client address (Kafka's `max.connections.per.ip`).
    pub connections_per_address_max: usize,
    /// A connection with no request in flight and nothing received for this long is
    /// closed (Kafka's `connections.max.idle.ms`); a request whose bytes stop arriving
    /// half-way is given the same time to finish.
    pub idle_timeout_ms: u64,
    /// Bytes of request frames all connections together hold at once (Kafka's
    /// `queued.max.request.bytes`); a connection past it waits before reading on. At least
    /// the largest frame (64 MiB).
    #[schemars(extend("x-unit" = "bytes"))]
    pub request_memory_max: usize,
    /// A consumer group with no members this long is forgotten by its coordinator (its
    /// committed offsets stay in the journal; Kafka drops an empty group's metadata too).
    pub empty_group_expiry_ms: u64,
    /// Consumer groups a broker coordinates at once; a JoinGroup for a new group past it is
    /// answered COORDINATOR_NOT_AVAILABLE (retried by clients) until empty ones expire.
    pub groups_max: usize,
    /// The listener's certificate chain (PEM): with `tls_key`, the listener speaks TLS
    /// only (Kafka's SSL and SASL_SSL). Read again when the file changes.
    pub tls_cert: Option<PathBuf>,
    /// The listener's private key (PEM; readable by its owner only).
    pub tls_key: Option<PathBuf>,
    /// Whether clients are asked for a certificate (Kafka's `ssl.client.auth`: `none`,
    /// `requested` or `required`). A valid one's common name is the client's user
    /// (`User:NAME`) when the listener asks for no SASL.
    pub tls_client_auth: ClientAuth,
    /// The CA (PEM) client certificates must be signed by (Kafka's `ssl.truststore`).
    pub tls_client_ca: Option<PathBuf>,
    /// SASL mechanisms a client must authenticate with before any other request
    /// (`SCRAM-SHA-512`, `SCRAM-SHA-256`, `PLAIN`; checked against the region's
    /// credentials, `meridian user set`). Empty: no authentication.
    pub sasl_mechanisms: Vec<String>,
    /// The regions a topic created over Kafka (CreateTopics) is placed in, through the
    /// control plane. Empty: every region, so a Kafka client of any region finds it.
    pub topic_regions: Vec<String>,
    /// Whether a producer's record batch is stored as sent (compressed as it came, CRC
    /// intact) when no conversion is needed, and served to Kafka consumers from the
    /// journal unchanged. Off: every batch is stored as Meridian messages and encoded
    /// again for each Kafka fetch (what the benchmark compares).
    pub store_batches: bool,
}

impl Default for KafkaLimits {
    fn default() -> Self {
        KafkaLimits {
            connections_max: 4096,
            connections_per_address_max: 1024,
            idle_timeout_ms: 600_000,
            request_memory_max: 256 << 20,
            empty_group_expiry_ms: 600_000,
            groups_max: 10_000,
            tls_cert: None,
            tls_key: None,
            tls_client_auth: ClientAuth::None,
            tls_client_ca: None,
            sasl_mechanisms: Vec::new(),
            topic_regions: Vec::new(),
            store_batches: true,
        }
    }
}

/// The `[transactions]` section: what a log group's transaction coordinator holds at most,
/// and how it settles a native transaction left in doubt.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TransactionsConfig {
    /// Transactional ids one coordinator knows at once (open and recently ended).
    pub transactions_max: usize,
    /// Partitions one transaction may write (and consumer offsets it may commit).
    pub participants_max: usize,
    /// The longest timeout a producer may ask for (Kafka's `transaction.max.timeout.ms`).
    pub timeout_max_ms: i64,
    /// Check-backs of an in-doubt native transaction before the default outcome applies.
    pub check_back_attempts: u32,
    /// Wait before the second check-back, doubling up to `check_back_backoff_max_ms`.
    pub check_back_backoff_ms: i64,
    /// The longest wait between check-backs.
    pub check_back_backoff_max_ms: i64,
    /// What a native transaction nobody answers for becomes: `rollback` or `commit`.
    pub default_outcome: String,
    /// How long an ended transactional id is remembered without a new transaction (Kafka's
    /// `transactional.id.expiration.ms`).
    pub ended_kept_ms: i64,
}

impl Default for TransactionsConfig {
    fn default() -> Self {
        TransactionsConfig {
            transactions_max: 100_000,
            participants_max: 1_000,
            timeout_max_ms: 15 * 60 * 1000,
            check_back_attempts: 5,
            check_back_backoff_ms: 1_000,
            check_back_backoff_max_ms: 60_000,
            default_outcome: "rollback".into(),
            ended_kept_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

/// The `[grpc]` section: what the gRPC API's listener holds at most (tonic limits neither
/// connections nor idle time; `meridian_daemon::listener::grpc` does).
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GrpcLimits {
    /// Open connections at once; past it a new connection's requests are answered
    /// `RESOURCE_EXHAUSTED` naming this key, and it is closed.
    pub connections_max: usize,
    /// Open connections from one client address.
    pub connections_per_address_max: usize,
    /// A connection with no request in flight this long is closed (gRPC's
    /// `MAX_CONNECTION_IDLE`); a request whose body stops arriving this long fails with
    /// `DEADLINE_EXCEEDED`. Long polls (fetch waits at most `fetch_wait_max_ms`) are
    /// requests in flight, never idle.
    pub idle_timeout_ms: u64,
    /// The API's certificate chain (PEM): with `tls_key`, the gRPC API speaks TLS only
    /// (re-read when the files change).
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM, its owner's only).
    pub tls_key: Option<PathBuf>,
    /// Whether callers are asked for a certificate (`none`, `requested` or `required`).
    /// A valid one's common name is its caller's user (`User:NAME`) when the call carries
    /// no token.
    pub tls_client_auth: ClientAuth,
    /// The CA (PEM) callers' certificates must be signed by.
    pub tls_client_ca: Option<PathBuf>,
    /// The CA (PEM) that signs the gRPC APIs' certificates: this broker's calls to the
    /// control plane and other brokers go over TLS, trusting it.
    pub ca: Option<PathBuf>,
}

impl Default for GrpcLimits {
    fn default() -> Self {
        GrpcLimits {
            connections_max: 4096,
            connections_per_address_max: 1024,
            idle_timeout_ms: 600_000,
            tls_cert: None,
            tls_key: None,
            tls_client_auth: ClientAuth::None,
            tls_client_ca: None,
            ca: None,
        }
    }
}

impl GrpcLimits {
    /// The listener's limits as `meridian_daemon::listener::grpc` takes them.
    pub fn limits(&self) -> meridian_daemon::listener::grpc::Limits {
        meridian_daemon::listener::grpc::Limits {
            connections_max: self.connections_max,
            connections_per_address_max: self.connections_per_address_max,
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
        }
    }
}

/// The `[storage]` section.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Size of each preallocated journal segment.
    pub segment_bytes: u64,
    /// `fsync` (group commit before the ack) or `async` (periodic fsync).
    pub flush: FlushPolicy,
    /// How often indexes are flushed (and, with `async`, the journal synced).
    pub flush_interval_ms: u64,
    /// How long messages of a topic without a retention of its own are kept (a static
    /// region's topics), and the least a journal keeps its segments whatever its topics'
    /// (humantime: `7d`, `12h`; `none` keeps them).
    pub retention: String,
    /// Delete the oldest segments while a group's journal exceeds this; 0 means no limit.
    pub retention_bytes: u64,
    /// How often retention runs.
    pub retention_check_interval_ms: u64,
    /// Entries per queue-index file.
    pub index_entries_per_file: u64,
    /// With `fsync`: make the group commits of all log groups durable together (one
    /// `syncfs` of the data filesystem for every group waiting) instead of one `fdatasync`
    /// per group. Off by default: on ext4 the kernel already merges concurrent
    /// `fdatasync`s into one journal commit, and `syncfs` measured 0.7x of per-group syncs
    /// with 16 groups (bench/README.md, rows e); it may pay where a cache flush is costly.
    pub batch_fsyncs: bool,
    /// Keys a compacted partition's map holds at most (about 80 bytes plus the key each):
    /// past it compaction gives up on the partition, which is then read and kept whole.
    pub compaction_keys_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            broker_id: 1,
            region: "local".into(),
            data_dir: PathBuf::from("meridian-data/broker-1"),
            grpc_listen: "127.0.0.1:7070".parse().expect("valid address"),
            grpc_advertise: None,
            kafka_listen: None,
            kafka_advertise: None,
            kafka: KafkaLimits::default(),
            auth: AuthConfig::default(),
            mqtt_listen: None,
            mqtt_ws_listen: None,
            mqtt: MqttConfig::default(),
            grpc: GrpcLimits::default(),
            transactions: TransactionsConfig::default(),
            metrics_listen: "127.0.0.1:9464".parse().expect("valid address"),
            log_groups: 4,
            control: Vec::new(),
            default_partitions: 3,
            partitions_max: 1024,
            message_bytes_max: 1 << 20,
            batch_bytes_max: 8 << 20,
            fetch_wait_max_ms: 30_000,
            storage: StorageConfig::default(),
            replication: ReplicationConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        let group = GroupConfig::default();
        StorageConfig {
            segment_bytes: group.segment_bytes,
            flush: group.flush,
            flush_interval_ms: group.flush_interval.as_millis() as u64,
            retention: "7d".into(),
            retention_bytes: 0,
            retention_check_interval_ms: group.retention_check_interval.as_millis() as u64,
            index_entries_per_file: group.index_entries_per_file,
            batch_fsyncs: false,
            compaction_keys_max: group.compaction_keys_max,
        }
    }
}

/// A value (a command-line flag's or a setting's) that does not parse, with what would.
#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    /// Not `GROUP=MASTER_ID`.
    #[error("{0:?} is not GROUP=MASTER_BROKER_ID (example: 2=1)")]
    MasterSlave(String),
    /// Not `ID=RAFT_ADDR,GRPC_ADDR[,KAFKA_ADDR]`.
    #[error("{0:?} is not ID=RAFT_ADDR,GRPC_ADDR (example: 2=127.0.0.1:7172,127.0.0.1:7072)")]
    Peer(String),
    /// An address of a peer is not `IP:PORT`.
    #[error("{address:?} in {peer:?}: {source}")]
    PeerAddress {
        /// The address.
        address: String,
        /// The whole peer value.
        peer: String,
        /// Why it does not parse.
        source: std::net::AddrParseError,
    },
    /// A retention that is not a duration.
    #[error("{0}: use a duration like 7d, 12h or 30m, or none")]
    Retention(humantime::DurationError),
    /// A flush policy other than `fsync` and `async`.
    #[error("unknown flush policy {0:?}: use fsync or async")]
    Flush(String),
}

/// A configuration value that cannot work, named with what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this config.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key and line).
        message: String,
    },
    /// A value is out of range.
    #[error("invalid {key} = {value}: {why}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// Its value.
        value: String,
        /// What is wrong and what would work.
        why: String,
    },
}

impl Config {
    /// Reads a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Where others reach this broker's gRPC API (`grpc_advertise`, else `grpc_listen`).
    pub fn grpc_address(&self) -> String {
        self.grpc_advertise
            .clone()
            .unwrap_or_else(|| self.grpc_listen.to_string())
    }

    /// Where Kafka clients reach this broker (`kafka_advertise`, else `kafka_listen`);
    /// none when it serves no Kafka.
    pub fn kafka_address(&self) -> Option<String> {
        let listen = self.kafka_listen?;
        Some(
            self.kafka_advertise
                .clone()
                .unwrap_or_else(|| listen.to_string()),
        )
    }

    /// Checks every value; the broker refuses to start on the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(
            key: &'static str,
            value: impl ToString,
            why: impl Into<String>,
        ) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key,
                value: value.to_string(),
                why: why.into(),
            })
        }
        for (key, value) in [
            ("grpc_advertise", &self.grpc_advertise),
            ("kafka_advertise", &self.kafka_advertise),
        ] {
            if let Some(v) = value
                && meridian_proto::names::host_port(v).is_none()
            {
                return invalid(
                    key,
                    v,
                    "must be HOST:PORT (a DNS name or an address, and a port)",
                );
            }
        }
        if self.kafka_advertise.is_some() && self.kafka_listen.is_none() {
            return invalid(
                "kafka_advertise",
                self.kafka_advertise.as_deref().unwrap_or_default(),
                "needs kafka_listen: a broker without a Kafka listener advertises none",
            );
        }
        let (t, k, m, g) = (&self.transactions, &self.kafka, &self.mqtt, &self.grpc);
        // Counts and limits that must be at least 1, each named on its own.
        for (key, value) in [
            ("transactions.transactions_max", t.transactions_max as i64),
            ("transactions.participants_max", t.participants_max as i64),
            ("transactions.timeout_max_ms", t.timeout_max_ms),
            ("kafka.connections_max", k.connections_max as i64),
            (
                "kafka.connections_per_address_max",
                k.connections_per_address_max as i64,
            ),
            ("kafka.groups_max", k.groups_max as i64),
            ("auth.users_max", self.auth.users_max as i64),
            ("auth.acls_max", self.auth.acls_max as i64),
            ("auth.quotas_max", self.auth.quotas_max as i64),
            ("mqtt.connections_max", m.connections_max as i64),
            (
                "mqtt.connections_per_address_max",
                m.connections_per_address_max as i64,
            ),
            ("mqtt.receive_maximum", i64::from(m.receive_maximum)),
            ("mqtt.inflight_max", i64::from(m.inflight_max)),
            ("mqtt.keep_alive_max_s", i64::from(m.keep_alive_max_s)),
            ("mqtt.sessions_max", m.sessions_max as i64),
            ("mqtt.session_queue_max", m.session_queue_max as i64),
            ("mqtt.subscriptions_max", m.subscriptions_max as i64),
            ("grpc.connections_max", g.connections_max as i64),
            (
                "grpc.connections_per_address_max",
                g.connections_per_address_max as i64,
            ),
        ] {
            if value < 1 {
                return invalid(key, value, "must be at least 1");
            }
        }
        // The names `Outcome::parse_default` reads (config sits below the broker layer).
        if !matches!(t.default_outcome.as_str(), "rollback" | "commit") {
            return invalid(
                "transactions.default_outcome",
                &t.default_outcome,
                "must be rollback or commit",
            );
        }
        if t.check_back_backoff_ms < 1 || t.check_back_backoff_max_ms < t.check_back_backoff_ms {
            return invalid(
                "transactions.check_back_backoff_ms",
                t.check_back_backoff_ms,
                "must be at least 1 and at most check_back_backoff_max_ms",
            );
        }
        for m in &k.sasl_mechanisms {
            if !KAFKA_SASL_MECHANISMS
                .iter()
                .any(|k| k.eq_ignore_ascii_case(m))
            {
                return invalid(
                    "kafka.sasl_mechanisms",
                    m,
                    format!("must be among {}", KAFKA_SASL_MECHANISMS.join(", ")),
                );
            }
        }
        for r in &k.topic_regions {
            if let Err(e) = meridian_proto::names::validate("region", r) {
                return invalid("kafka.topic_regions", r, e.to_string());
            }
        }
        for s in &self.auth.super_users {
            if s.strip_prefix("User:").is_none_or(str::is_empty) {
                return invalid("auth.super_users", s, "each is User:NAME");
            }
        }
        if m.tls_cert.is_some() != m.tls_key.is_some() {
            return invalid(
                "mqtt.tls_cert",
                format!("{:?}", m.tls_cert),
                "tls_cert and tls_key go together: set both for TLS, or neither",
            );
        }
        if self.grpc.tls_cert.is_some() != self.grpc.tls_key.is_some() {
            return invalid(
                "grpc.tls_cert",
                format!("{:?}", self.grpc.tls_cert),
                "tls_cert and tls_key go together: set both for TLS, or neither",
            );
        }
        let r = &self.replication;
        if [&r.tls_ca, &r.tls_cert, &r.tls_key]
            .iter()
            .any(|f| f.is_some() != r.tls_ca.is_some())
        {
            return invalid(
                "replication.tls_ca",
                format!("{:?}", r.tls_ca),
                "tls_ca, tls_cert and tls_key go together: set all three for mutual TLS between brokers, or none",
            );
        }
        if k.tls_cert.is_some() != k.tls_key.is_some() {
            return invalid(
                "kafka.tls_cert",
                format!("{:?}", k.tls_cert),
                "tls_cert and tls_key go together: set both for TLS, or neither",
            );
        }
        if k.request_memory_max < KAFKA_FRAME_MAX {
            return invalid(
                "kafka.request_memory_max",
                k.request_memory_max,
                format!("must hold at least one largest frame ({KAFKA_FRAME_MAX} bytes)"),
            );
        }
        if k.idle_timeout_ms < 1000 {
            return invalid(
                "kafka.idle_timeout_ms",
                k.idle_timeout_ms,
                "must be at least 1000 (clients keep idle connections for metadata)",
            );
        }
        if k.empty_group_expiry_ms < 1000 {
            return invalid(
                "kafka.empty_group_expiry_ms",
                k.empty_group_expiry_ms,
                "must be at least 1000 (a group's members rejoin within a rebalance)",
            );
        }
        if m.packet_bytes_max < 1024 || m.packet_bytes_max > 256 << 20 {
            return invalid(
                "mqtt.packet_bytes_max",
                m.packet_bytes_max,
                "must be between 1024 and 268435456 (MQTT's largest packet)",
            );
        }
        for (key, topic) in [
            ("mqtt.retained_topic", &m.retained_topic),
            ("mqtt.sessions_topic", &m.sessions_topic),
        ] {
            if let Err(e) = meridian_proto::names::validate("topic", topic) {
                return invalid(key, topic, e.to_string());
            }
        }
        for mapping in &m.mapping {
            if let Err(e) = mapping.validate() {
                return invalid("mqtt.mapping", &mapping.prefix, e);
            }
        }
        if g.idle_timeout_ms < 1000 {
            return invalid(
                "grpc.idle_timeout_ms",
                g.idle_timeout_ms,
                "must be at least 1000 (clients keep idle connections between calls)",
            );
        }
        let s = &self.storage;
        if !(1..=256).contains(&self.log_groups) {
            return invalid("log_groups", self.log_groups, "must be 1 to 256");
        }
        if self.default_partitions == 0 || self.default_partitions > self.partitions_max {
            return invalid(
                "default_partitions",
                self.default_partitions,
                format!("must be 1 to partitions_max ({})", self.partitions_max),
            );
        }
        if !(4096..=(1 << 40)).contains(&s.segment_bytes) {
            return invalid(
                "storage.segment_bytes",
                s.segment_bytes,
                "must be 4 KiB to 1 TiB",
            );
        }
        if self.message_bytes_max == 0 || self.message_bytes_max > self.batch_bytes_max {
            return invalid(
                "message_bytes_max",
                self.message_bytes_max,
                "must be at least 1 and at most batch_bytes_max",
            );
        }
        if self.batch_bytes_max as u64 + 1024 > s.segment_bytes {
            return invalid(
                "batch_bytes_max",
                self.batch_bytes_max,
                format!(
                    "a batch must fit in a segment: raise storage.segment_bytes ({}) or lower batch_bytes_max",
                    s.segment_bytes
                ),
            );
        }
        if s.flush_interval_ms == 0 {
            return invalid("storage.flush_interval_ms", 0, "must be at least 1");
        }
        if s.index_entries_per_file < 16 {
            return invalid(
                "storage.index_entries_per_file",
                s.index_entries_per_file,
                "must be at least 16",
            );
        }
        match self.retention() {
            Err(why) => return invalid("storage.retention", &s.retention, why.to_string()),
            // A transaction's coordinator records and batches live in the journal: they
            // must outlive the longest transaction (retention deletes by age).
            Ok(Some(keep))
                if keep.as_millis() < u128::try_from(t.timeout_max_ms).unwrap_or(u128::MAX) =>
            {
                return invalid(
                    "storage.retention",
                    &s.retention,
                    format!(
                        "must be at least transactions.timeout_max_ms ({} ms): an open transaction's records must outlive it; lower timeout_max_ms or keep messages longer",
                        t.timeout_max_ms
                    ),
                );
            }
            Ok(_) => {}
        }
        let peers = &self.replication.peers;
        if !peers.is_empty() {
            if !peers.iter().any(|p| p.id == self.broker_id) {
                return invalid(
                    "replication.peers",
                    format!("{} peers", peers.len()),
                    format!("must include this broker (broker_id {})", self.broker_id),
                );
            }
            let mut ids: Vec<u32> = peers.iter().map(|p| p.id).collect();
            ids.sort_unstable();
            if ids.windows(2).any(|w| w[0] == w[1]) {
                return invalid(
                    "replication.peers",
                    format!("{ids:?}"),
                    "broker ids must be unique",
                );
            }
            if self.replication.raft_listen.is_none() {
                return invalid(
                    "replication.raft_listen",
                    "unset",
                    "a broker with peers needs an address for the raft transport",
                );
            }
            let slaves = peers.len() as u32 - 1;
            if self.replication.sync_replicas > slaves {
                return invalid(
                    "replication.sync_replicas",
                    self.replication.sync_replicas,
                    format!(
                        "a master-slave group of {} brokers has {slaves} slaves",
                        peers.len()
                    ),
                );
            }
        }
        // A static region's groups have a replica on every peer (a managed region's
        // placement is the control plane's, unknown here).
        let replicas = peers.len().max(1) as u32;
        if self.control.is_empty() && self.replication.min_insync_replicas > replicas {
            return invalid(
                "replication.min_insync_replicas",
                self.replication.min_insync_replicas,
                format!(
                    "a log group here has at most {replicas} replica(s): no acks=all produce could ever be answered"
                ),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for ms in &self.replication.master_slave {
            let value = format!("{}={}", ms.group, ms.master);
            if peers.is_empty() {
                return invalid(
                    "replication.master_slave",
                    value,
                    "master-slave groups need the region's brokers (replication.peers)",
                );
            }
            if ms.group == 0 {
                return invalid(
                    "replication.master_slave",
                    value,
                    "log group 0 carries the topic catalog and is always raft: name another group",
                );
            }
            if ms.group >= self.log_groups {
                return invalid(
                    "replication.master_slave",
                    value,
                    format!("there are only log groups 0..{}", self.log_groups),
                );
            }
            if !peers.iter().any(|p| p.id == ms.master) {
                return invalid(
                    "replication.master_slave",
                    value,
                    "the master must be one of replication.peers",
                );
            }
            if !seen.insert(ms.group) {
                return invalid(
                    "replication.master_slave",
                    value,
                    "each group is named once",
                );
            }
        }
        if self.region.is_empty() {
            return invalid("region", "\"\"", "must not be empty");
        }
        if !self.control.is_empty() {
            if !peers.is_empty() || !self.replication.master_slave.is_empty() {
                return invalid(
                    "control",
                    self.control.join(","),
                    "a managed broker learns its peers and groups from the control plane: drop replication.peers and replication.master_slave",
                );
            }
            if self.replication.raft_listen.is_none() {
                return invalid(
                    "control",
                    self.control.join(","),
                    "a managed broker replicates: set replication.raft_listen (--raft-listen)",
                );
            }
            if let Some(bad) = self
                .control
                .iter()
                .find(|a| meridian_proto::names::host_port(a).is_none())
            {
                return invalid(
                    "control",
                    bad,
                    "each address must be HOST:PORT (a DNS name or an address, and a port)",
                );
            }
        }
        Ok(())
    }

    /// The initial master of `group` when it is replicated master-slave.
    pub fn master_slave_master(&self, group: u32) -> Option<u32> {
        self.replication
            .master_slave
            .iter()
            .find(|m| m.group == group)
            .map(|m| m.master)
    }

    /// The storage settings of each log group.
    pub fn group_config(&self) -> GroupConfig {
        let s = &self.storage;
        GroupConfig {
            segment_bytes: s.segment_bytes,
            index_entries_per_file: s.index_entries_per_file,
            flush: s.flush,
            flush_interval: Duration::from_millis(s.flush_interval_ms),
            retention: self.retention().unwrap_or_default(),
            retention_bytes: (s.retention_bytes > 0).then_some(s.retention_bytes),
            retention_check_interval: Duration::from_millis(s.retention_check_interval_ms.max(1)),
            compaction_keys_max: s.compaction_keys_max.max(1),
            // Decided per group when it opens (see `Broker::open_log_group`).
            replicated: false,
            ..GroupConfig::default()
        }
    }

    fn retention(&self) -> Result<Option<Duration>, ValueError> {
        match self.storage.retention.as_str() {
            "none" | "" => Ok(None),
            text => humantime::parse_duration(text)
                .map(Some)
                .map_err(ValueError::Retention),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        Config::default().validate().unwrap();
        let mut c = Config::default();
        c.replication.master_slave = vec![MasterSlaveGroup::parse("1=1").unwrap()];
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("replication.master_slave") && e.contains("peers"),
            "{e}"
        );
        c.replication.raft_listen = Some("127.0.0.1:1".parse().unwrap());
        c.replication.peers = vec![
            Peer::parse("1=127.0.0.1:1,127.0.0.1:2").unwrap(),
            Peer::parse("2=127.0.0.1:3,127.0.0.1:4").unwrap(),
        ];
        c.validate().unwrap();
        c.replication.master_slave = vec![MasterSlaveGroup::parse("0=1").unwrap()];
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("always raft"), "{e}");
        c.replication.master_slave = vec![MasterSlaveGroup::parse("1=3").unwrap()];
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("must be one of")
        );
        c.replication.master_slave = vec![];
        c.replication.sync_replicas = 2;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("sync_replicas")
        );
        assert!(MasterSlaveGroup::parse("two=1").is_err());
        let mut c = Config::default();
        c.storage.segment_bytes = 1 << 20;
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("batch_bytes_max") && e.contains("segment_bytes"),
            "{e}"
        );
        let mut c = Config::default();
        c.storage.retention = "seven days".into();
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("storage.retention")
        );
        // Shorter than the longest transaction: its records could go before it ends.
        c.storage.retention = "10m".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("transactions.timeout_max_ms"), "{e}");
        c.transactions.timeout_max_ms = 5 * 60 * 1000;
        c.validate().unwrap();
        c.transactions.default_outcome = "maybe".into();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("transactions.default_outcome"), "{e}");
        let mut c = Config::default();
        c.grpc.idle_timeout_ms = 10;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("grpc.idle_timeout_ms = 10"), "{e}");
        let mut c = Config::default();
        c.grpc.connections_per_address_max = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("grpc.connections_per_address_max"), "{e}");
        let mut c = Config::default();
        c.kafka.groups_max = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.groups_max"), "{e}");
        // A limit of 0 is named itself, not the first of its section.
        let mut c = Config::default();
        c.mqtt.inflight_max = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("mqtt.inflight_max = 0"), "{e}");
        let mut c = Config::default();
        c.transactions.timeout_max_ms = -5;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("transactions.timeout_max_ms = -5"), "{e}");
        let mut c = Config::default();
        c.kafka.empty_group_expiry_ms = 0;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("kafka.empty_group_expiry_ms"), "{e}");
        let c: Config = toml::from_str(
            "[grpc]\nconnections_max = 9\nidle_timeout_ms = 5000\n[kafka]\ngroups_max = 7\n",
        )
        .unwrap();
        assert_eq!((c.grpc.connections_max, c.grpc.idle_timeout_ms), (9, 5000));
        assert_eq!(c.kafka.groups_max, 7);
        let e = toml::from_str::<Config>("log_group = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field `log_group`"), "{e}");
    }
}
