//! The `region-broker` daemon: reads its configuration, recovers its log groups, serves the
//! gRPC API and `/metrics`, and shuts down cleanly on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use meridian_daemon::listener::grpc;
use meridian_region_broker::broker::Broker;
use meridian_region_broker::config::{Config, MasterSlaveGroup, Peer, ValueError};
use meridian_region_broker::grpc::GrpcService;
use meridian_region_broker::kafka::groups::{Coordinator, GroupLimits};
use meridian_region_broker::replication::transport::RaftTransportService;
use meridian_region_broker::storage::{self, FlushPolicy};

/// Meridian's region broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file; flags override its values.
    #[arg(long, env = "MERIDIAN_BROKER_CONFIG")]
    config: Option<PathBuf>,
    /// Data directory (log groups and topic catalog).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address of the gRPC API.
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// HOST:PORT others reach the gRPC API at, when not --grpc-listen (a name its TLS
    /// certificate is valid for): registered with the control plane.
    #[arg(long, value_name = "HOST:PORT")]
    grpc_advertise: Option<String>,
    /// Address of the Kafka protocol listener (Kafka clients and tools connect here).
    #[arg(long)]
    kafka_listen: Option<SocketAddr>,
    /// HOST:PORT Kafka clients are told to connect to, when not --kafka-listen (Kafka's
    /// advertised.listeners).
    #[arg(long, value_name = "HOST:PORT")]
    kafka_advertise: Option<String>,
    /// Address of the MQTT listener over TCP (MQTT 3.1.1 and 5 clients connect here).
    #[arg(long)]
    mqtt_listen: Option<SocketAddr>,
    /// Address of the MQTT listener over WebSocket (subprotocol `mqtt`).
    #[arg(long)]
    mqtt_ws_listen: Option<SocketAddr>,
    /// Kafka connections open at once, at most.
    #[arg(long)]
    kafka_connections_max: Option<usize>,
    /// Kafka connections from one client address, at most.
    #[arg(long)]
    kafka_connections_per_address_max: Option<usize>,
    /// Close a Kafka connection idle (or a request half-sent) this long.
    #[arg(long)]
    kafka_idle_timeout_ms: Option<u64>,
    /// Forget a Kafka consumer group with no members for this long.
    #[arg(long)]
    kafka_empty_group_expiry_ms: Option<u64>,
    /// Kafka consumer groups this broker coordinates at once, at most.
    #[arg(long)]
    kafka_groups_max: Option<usize>,
    /// Check-backs of an in-doubt native transaction before its default outcome applies
    /// (`transactions.check_back_attempts`).
    #[arg(long)]
    txn_check_back_attempts: Option<u32>,
    /// Wait before the second check-back, doubling (`transactions.check_back_backoff_ms`).
    #[arg(long)]
    txn_check_back_backoff_ms: Option<i64>,
    /// What an in-doubt native transaction nobody answers for becomes: rollback or commit
    /// (`transactions.default_outcome`).
    #[arg(long)]
    txn_default_outcome: Option<String>,
    /// gRPC connections open at once, at most.
    #[arg(long)]
    grpc_connections_max: Option<usize>,
    /// gRPC connections from one client address, at most.
    #[arg(long)]
    grpc_connections_per_address_max: Option<usize>,
    /// Close a gRPC connection with no request in flight (or fail a request whose body
    /// stops arriving) after this long.
    #[arg(long)]
    grpc_idle_timeout_ms: Option<u64>,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// This broker's id.
    #[arg(long)]
    broker_id: Option<u32>,
    /// Log groups to host.
    #[arg(long)]
    log_groups: Option<u32>,
    /// Flush policy: fsync (group commit before ack) or async.
    #[arg(long, value_parser = parse_flush)]
    flush: Option<FlushPolicy>,
    /// Journal segment size in bytes.
    #[arg(long)]
    segment_bytes: Option<u64>,
    /// Largest produce batch in bytes.
    #[arg(long)]
    batch_bytes_max: Option<usize>,
    /// Largest message in bytes.
    #[arg(long)]
    message_bytes_max: Option<usize>,
    /// Segment retention (7d, 12h, none).
    #[arg(long)]
    retention: Option<String>,
    /// Address of the inter-broker raft transport (with --peer).
    #[arg(long)]
    raft_listen: Option<SocketAddr>,
    /// The API tokens the gRPC API accepts (auth.tokens_file): every call is then
    /// authenticated.
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    /// This broker's own token for its calls to the control plane and other brokers
    /// (auth.token_file).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The gRPC API's certificate (grpc.tls_cert; with --grpc-tls-key it speaks TLS only).
    #[arg(long, value_name = "PEM", requires = "grpc_tls_key")]
    grpc_tls_cert: Option<PathBuf>,
    /// The gRPC API's private key (grpc.tls_key).
    #[arg(long, value_name = "PEM", requires = "grpc_tls_cert")]
    grpc_tls_key: Option<PathBuf>,
    /// The CA of the gRPC APIs (grpc.ca): this broker's calls go over TLS trusting it.
    #[arg(long, value_name = "PEM")]
    grpc_ca: Option<PathBuf>,
    /// Mutual TLS on the replication transport: the CA that signs the region's broker
    /// certificates (with --raft-tls-cert and --raft-tls-key).
    #[arg(long, value_name = "PEM")]
    raft_tls_ca: Option<PathBuf>,
    /// This broker's certificate for the replication transport (valid for
    /// broker.REGION.meridian: `meridian certs --brokers REGION`).
    #[arg(long, value_name = "PEM")]
    raft_tls_cert: Option<PathBuf>,
    /// Its private key (its owner's only).
    #[arg(long, value_name = "PEM")]
    raft_tls_key: Option<PathBuf>,
    /// A broker of this region, this one included: ID=RAFT_ADDR,GRPC_ADDR (repeat for each).
    /// With peers, every log group is replicated by raft over all of them.
    #[arg(long = "peer", value_parser = Peer::parse)]
    peers: Vec<Peer>,
    /// Control-plane address(es), comma-separated: the broker registers there and hosts
    /// what it is assigned (instead of --peer).
    #[arg(long, value_delimiter = ',')]
    control: Vec<String>,
    /// The region this broker belongs to.
    #[arg(long)]
    region: Option<String>,
    /// Replicate log group GROUP master-slave, with broker MASTER_ID its first master:
    /// GROUP=MASTER_ID (repeat for each such group; the others use raft).
    #[arg(long = "master-slave", value_parser = MasterSlaveGroup::parse)]
    master_slave: Vec<MasterSlaveGroup>,
    /// Slaves that must hold a record before a master-slave group commits it.
    #[arg(long)]
    sync_replicas: Option<u32>,
    /// Replicas that must hold a batch before an acks=all produce is answered, and be in
    /// sync for one to be written (Kafka's min.insync.replicas; default: the commit quorum).
    #[arg(long)]
    min_insync_replicas: Option<u32>,
    /// A raft group snapshots after this many entries (0: never); retention deletes only
    /// what a snapshot covers.
    #[arg(long)]
    snapshot_entries: Option<u64>,
    /// Delete the oldest segments while a group's journal exceeds this many bytes.
    #[arg(long)]
    retention_bytes: Option<u64>,
    /// How often retention runs, in milliseconds.
    #[arg(long)]
    retention_check_interval_ms: Option<u64>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn parse_flush(s: &str) -> Result<FlushPolicy, ValueError> {
    match s {
        "fsync" => Ok(FlushPolicy::Fsync),
        "async" => Ok(FlushPolicy::Async),
        _ => Err(ValueError::Flush(s.to_owned())),
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    meridian_daemon::run("region-broker", args.log_json, || {
        let config = config(&args)?;
        config.validate().context("invalid configuration")?;
        if config.storage.retention_bytes > 0 {
            // Retention by size may delete a transaction coordinator's records while the
            // transaction is live (by age it may not: retention outlives timeout_max_ms).
            tracing::warn!(
                retention_bytes = config.storage.retention_bytes,
                "storage.retention_bytes is set: a log group that fills it may delete live transaction records; use retention by age where transactions are used"
            );
        }
        storage::raise_open_file_limit();
        meridian_daemon::block_on(run(config)).context("starting the runtime")?
    })
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(v) = &args.data_dir {
        c.data_dir = v.clone();
    }
    if let Some(v) = args.kafka_connections_max {
        c.kafka.connections_max = v;
    }
    if let Some(v) = args.kafka_connections_per_address_max {
        c.kafka.connections_per_address_max = v;
    }
    if let Some(v) = args.kafka_idle_timeout_ms {
        c.kafka.idle_timeout_ms = v;
    }
    if let Some(v) = args.kafka_empty_group_expiry_ms {
        c.kafka.empty_group_expiry_ms = v;
    }
    if let Some(v) = args.kafka_groups_max {
        c.kafka.groups_max = v;
    }
    if let Some(v) = args.txn_check_back_attempts {
        c.transactions.check_back_attempts = v;
    }
    if let Some(v) = args.txn_check_back_backoff_ms {
        c.transactions.check_back_backoff_ms = v;
        c.transactions.check_back_backoff_max_ms = c.transactions.check_back_backoff_max_ms.max(v);
    }
    if let Some(v) = &args.txn_default_outcome {
        c.transactions.default_outcome = v.clone();
    }
    if let Some(v) = args.grpc_connections_max {
        c.grpc.connections_max = v;
    }
    if let Some(v) = args.grpc_connections_per_address_max {
        c.grpc.connections_per_address_max = v;
    }
    if let Some(v) = args.grpc_idle_timeout_ms {
        c.grpc.idle_timeout_ms = v;
    }
    if let Some(v) = args.kafka_listen {
        c.kafka_listen = Some(v);
    }
    if let Some(v) = args.mqtt_listen {
        c.mqtt_listen = Some(v);
    }
    if let Some(v) = args.mqtt_ws_listen {
        c.mqtt_ws_listen = Some(v);
    }
    if let Some(v) = args.grpc_listen {
        c.grpc_listen = v;
    }
    if let Some(v) = &args.grpc_advertise {
        c.grpc_advertise = Some(v.clone());
    }
    if let Some(v) = &args.kafka_advertise {
        c.kafka_advertise = Some(v.clone());
    }
    if let Some(v) = args.metrics_listen {
        c.metrics_listen = v;
    }
    if let Some(v) = args.broker_id {
        c.broker_id = v;
    }
    if let Some(v) = args.log_groups {
        c.log_groups = v;
    }
    if let Some(v) = args.flush {
        c.storage.flush = v;
    }
    if let Some(v) = args.segment_bytes {
        c.storage.segment_bytes = v;
    }
    if let Some(v) = args.batch_bytes_max {
        c.batch_bytes_max = v;
    }
    if let Some(v) = args.message_bytes_max {
        c.message_bytes_max = v;
    }
    if let Some(v) = &args.retention {
        c.storage.retention = v.clone();
    }
    if let Some(v) = args.raft_listen {
        c.replication.raft_listen = Some(v);
    }
    if let Some(v) = &args.tokens_file {
        c.auth.tokens_file = Some(v.clone());
    }
    if args.grpc_tls_cert.is_some() {
        c.grpc.tls_cert = args.grpc_tls_cert.clone();
        c.grpc.tls_key = args.grpc_tls_key.clone();
    }
    if let Some(v) = &args.grpc_ca {
        c.grpc.ca = Some(v.clone());
    }
    if let Some(v) = &args.token_file {
        c.auth.token_file = Some(v.clone());
    }
    if let Some(v) = &args.raft_tls_ca {
        c.replication.tls_ca = Some(v.clone());
    }
    if let Some(v) = &args.raft_tls_cert {
        c.replication.tls_cert = Some(v.clone());
    }
    if let Some(v) = &args.raft_tls_key {
        c.replication.tls_key = Some(v.clone());
    }
    if !args.peers.is_empty() {
        c.replication.peers = args.peers.clone();
    }
    if !args.control.is_empty() {
        c.control = args.control.clone();
    }
    if let Some(v) = &args.region {
        c.region = v.clone();
    }
    if !args.master_slave.is_empty() {
        c.replication.master_slave = args.master_slave.clone();
    }
    if let Some(v) = args.sync_replicas {
        c.replication.sync_replicas = v;
    }
    if let Some(v) = args.min_insync_replicas {
        c.replication.min_insync_replicas = v;
    }
    if let Some(v) = args.snapshot_entries {
        c.replication.snapshot_entries = v;
    }
    if let Some(v) = args.retention_bytes {
        c.storage.retention_bytes = v;
    }
    if let Some(v) = args.retention_check_interval_ms {
        c.storage.retention_check_interval_ms = v;
    }
    Ok(c)
}

/// How the gRPC API authenticates its callers, and this broker's token and gRPC CA set for
/// its own calls (`[auth]`, `grpc.ca`).
fn grpc_auth(
    config: &Config,
) -> anyhow::Result<meridian_daemon::listener::authenticate::Authentication> {
    let auth = &config.auth;
    meridian_daemon::calls::identify(
        auth.token_file.as_deref(),
        "auth.token_file",
        config.grpc.ca.as_deref(),
        "grpc.ca",
    )?;
    meridian_daemon::listener::authenticate::Authentication::load(
        auth.tokens_file.as_deref(),
        auth.grpc_allow_anonymous,
    )
    .context("the gRPC API's tokens (auth.tokens_file)")
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Ready once the broker is open (recovered), registered when managed, and its log
    // groups led or followed and caught up (`Broker::readiness`).
    let opened: Arc<std::sync::OnceLock<Arc<Broker>>> = Arc::default();
    let ready = opened.clone();
    meridian_daemon::ops::start(
        config.metrics_listen,
        Arc::new(move || match ready.get() {
            Some(broker) => broker.readiness(),
            None => Err("opening the data directory (recovering the journal)".to_owned()),
        }),
    )
    .await?;
    let grpc_listen = config.grpc_listen;
    let listener = tokio::net::TcpListener::bind(grpc_listen)
        .await
        .with_context(|| {
            format!("binding the gRPC API to {grpc_listen}: is another broker running there?")
        })?;
    // Who may call the gRPC API, and this broker's own token for its calls: read before
    // anything listens, so a bad file stops the start.
    let authentication = grpc_auth(&config)?;
    let grpc_tls = meridian_security::tls::listener_tls(
        "grpc.",
        config.grpc.tls_cert.as_deref(),
        config.grpc.tls_key.as_deref(),
        config.grpc.tls_client_auth,
        config.grpc.tls_client_ca.as_deref(),
    )?
    .map(|tls| {
        let tls = Arc::new(tls);
        Arc::new(move || tls.config()) as grpc::TlsSource
    });
    // Read before anything listens: a certificate that does not load stops the start.
    let mut kafka_tls = meridian_region_broker::kafka::load_tls(&config.kafka)?;
    let kafka = match config.kafka_listen {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("binding the Kafka listener to {addr}: is another broker running there?")
        })?),
        None => None,
    };
    let mut mqtt = Vec::new();
    for (addr, what) in [
        (config.mqtt_listen, "the MQTT listener"),
        (config.mqtt_ws_listen, "the MQTT WebSocket listener"),
    ] {
        mqtt.push(match addr {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("binding {what} to {addr}: is another broker (or mosquitto) running there?")
            })?),
            None => None,
        });
    }
    let data_dir = config.data_dir.clone();
    let broker = tokio::task::spawn_blocking(move || Broker::open(config))
        .await?
        .with_context(|| format!("opening the data directory {}", data_dir.display()))?;
    let broker = Arc::new(broker);
    let _ = opened.set(broker.clone());
    let raft_server = match broker.config().replication.raft_listen.filter(|_| {
        !broker.config().replication.peers.is_empty() || !broker.config().control.is_empty()
    }) {
        Some(raft_listen) => {
            let transport = RaftTransportService::default();
            tokio::spawn(transport.announced().clone().watch_pauses());
            let listener = tokio::net::TcpListener::bind(raft_listen)
                .await
                .with_context(|| format!("binding the raft transport to {raft_listen}"))?;
            broker
                .start_replication(&transport)
                .await
                .context("starting replication")?;
            // Bounded by the same `[grpc]` limits as the API: anyone who reaches the port
            // can connect, not only peers.
            let raft_limits = broker.config().grpc.limits();
            let tls = broker.replication_tls().map(|tls| {
                let source: grpc::TlsSource = Arc::new(move || tls.server_config());
                source
            });
            let incoming = grpc::incoming(listener, "grpc.", raft_limits, tls);
            if !broker.config().control.is_empty() {
                broker
                    .apply_saved_view()
                    .await
                    .context("applying the saved region view")?;
                tokio::spawn(broker.clone().run_managed());
            }
            tracing::info!(raft = %raft_listen, peers = broker.config().replication.peers.len(), master_slave_groups = broker.config().replication.master_slave.len(), "replication running");
            let routes = tonic::service::Routes::new(transport.server()).prepare();
            Some(tokio::spawn(grpc::server().serve_with_incoming(
                grpc::Bounded::new(routes, &raft_limits),
                incoming,
            )))
        }
        None => None,
    };
    // Transaction coordinators: timeouts and unfinished markers of the groups led here.
    tokio::spawn(broker.clone().run_transactions());
    tokio::spawn(broker.clone().run_consumer_groups());
    tokio::spawn(broker.clone().run_delayed());
    tokio::spawn(broker.clone().run_topic_retention());
    tokio::spawn(broker.clone().run_observed());
    // The Kafka listener's consumer groups, created beside it and shared with the gRPC
    // service (which lists them).
    let group_limits = GroupLimits {
        empty_group_expiry: Duration::from_millis(broker.config().kafka.empty_group_expiry_ms),
        groups_max: broker.config().kafka.groups_max,
    };
    let consumer_groups = kafka
        .as_ref()
        .map(|_| Arc::new(Coordinator::new(group_limits)));
    let kafka_server = kafka
        .zip(consumer_groups.clone())
        .map(|(listener, groups)| {
            tracing::info!(kafka = ?broker.config().kafka_listen, "Kafka listener running");
            tokio::spawn(meridian_region_broker::kafka::serve(
                broker.clone(),
                groups,
                listener,
                kafka_tls.take(),
            ))
        });
    let mqtt_ws = mqtt.pop().flatten();
    let mqtt_tcp = mqtt.pop().flatten();
    let mqtt = if mqtt_tcp.is_some() || mqtt_ws.is_some() {
        let mqtt = meridian_region_broker::mqtt::Mqtt::new(broker.clone())
            .context("the MQTT listener's TLS (mqtt.tls_cert, mqtt.tls_key)")?;
        tracing::info!(mqtt = ?broker.config().mqtt_listen, websocket = ?broker.config().mqtt_ws_listen, "MQTT listener running");
        tokio::spawn(meridian_region_broker::mqtt::serve(
            mqtt.clone(),
            mqtt_tcp,
            mqtt_ws,
        ));
        Some(mqtt)
    } else {
        None
    };
    tracing::info!(grpc = %grpc_listen, data = %data_dir.display(), log_groups = broker.log_groups().len(), topics = broker.topics().len(), "region-broker ready");
    // Bounded as the Kafka listener is (`[grpc]`): connections admitted in all and per
    // client address, idle ones closed, half-sent requests failed.
    let limits = broker.config().grpc.limits();
    let incoming = grpc::incoming(listener, "grpc.", limits, grpc_tls);
    let routes =
        tonic::service::Routes::new(GrpcService::server(broker.clone(), consumer_groups, mqtt))
            .prepare();
    let routes =
        meridian_daemon::listener::authenticate::Authenticated::new(routes, authentication);
    let served = grpc::server()
        .serve_with_incoming_shutdown(
            grpc::Bounded::new(routes, &limits),
            incoming,
            meridian_daemon::stop_requested(),
        )
        .await;
    if let Some(k) = kafka_server {
        k.abort();
    }
    broker.deregister().await;
    broker.stop_replication().await;
    if let Some(server) = raft_server {
        server.abort();
    }
    tracing::info!("draining: flushing indexes and writing checkpoints");
    let closing = broker.clone();
    tokio::task::spawn_blocking(move || closing.close()).await?;
    served.context("serving gRPC")?;
    tracing::info!("region-broker stopped");
    Ok(())
}
