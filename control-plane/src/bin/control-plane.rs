//! The `control-plane` daemon: opens the metadata store (embedded file or etcd), takes part
//! in the leader election, serves the ControlPlane API and `/metrics`, and stops cleanly on
//! SIGTERM (a leader hands over at once by revoking its lease).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use meridian_control_plane::api::ControlService;
use meridian_control_plane::config::Config;
use meridian_control_plane::election::{self, Leader};
use meridian_control_plane::metadata::{SCHEMA_VERSION, keys};
use meridian_control_plane::reconcile;
use meridian_control_plane::store::{EmbeddedStore, EtcdStore, Store};
use meridian_daemon::listener::grpc;
use meridian_security::tls::ClientAuth;

/// Meridian's control plane.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (keys as the flags, with underscores); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This process's id (unique among the control-plane processes).
    #[arg(long)]
    id: Option<String>,
    /// Address of the ControlPlane gRPC API.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// HOST:PORT callers reach this process's API at, when not --listen (a name its TLS
    /// certificate is valid for): named as the leader's address when it leads.
    #[arg(long, value_name = "HOST:PORT")]
    advertise: Option<String>,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// The metadata store: embedded:PATH (one file, one process) or etcd:URL[,URL...].
    #[arg(long)]
    store: Option<String>,
    /// Leader lease: how long a dead leader keeps the office, in milliseconds.
    #[arg(long)]
    leader_lease_ms: Option<u64>,
    /// Broker lease: how long a broker that stops renewing stays registered, in
    /// milliseconds; its log groups are repaired after that.
    #[arg(long)]
    broker_lease_ms: Option<u64>,
    /// API connections open at once, at most (past it a connection's calls are answered
    /// RESOURCE_EXHAUSTED).
    #[arg(long)]
    connections_max: Option<usize>,
    /// API connections from one client address, at most.
    #[arg(long)]
    connections_per_address_max: Option<usize>,
    /// Close an API connection with no call in flight (or fail a call whose body stops
    /// arriving) after this long, in milliseconds.
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Regions to create at start if they do not exist (repeatable).
    #[arg(long = "region")]
    regions: Vec<String>,
    /// The API tokens the API accepts (`meridian token create`; its owner's only): every
    /// call is then authenticated, and each principal may do only its part.
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
    /// The control plane's own token (`ControlPlane`), for its calls to brokers.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The API's certificate chain (PEM): with --tls-key the API speaks TLS only.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The API's private key (PEM, its owner's only).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Whether callers are asked for a client certificate: none, requested or required
    /// (a valid one's common name is the caller's user when the call carries no token).
    #[arg(long, value_name = "WHEN")]
    tls_client_auth: Option<ClientAuth>,
    /// The CA (PEM) callers' certificates must be signed by.
    #[arg(long, value_name = "PEM")]
    tls_client_ca: Option<PathBuf>,
    /// The CA of the gRPC APIs: calls to brokers go over TLS trusting it.
    #[arg(long, value_name = "PEM")]
    grpc_ca: Option<PathBuf>,
    /// Users who may change the platform (User:NAME, comma separated; none: every user).
    #[arg(long, value_delimiter = ',')]
    admins: Vec<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading config file {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("config file {}", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(v) = &args.id {
        c.id = v.clone();
    }
    if let Some(v) = args.listen {
        c.listen = v;
    }
    if let Some(v) = &args.advertise {
        c.advertise = Some(v.clone());
    }
    if let Some(v) = args.metrics_listen {
        c.metrics_listen = v;
    }
    if let Some(v) = &args.store {
        c.store = v.clone();
    }
    if let Some(v) = args.leader_lease_ms {
        c.leader_lease_ms = v;
    }
    if let Some(v) = args.broker_lease_ms {
        c.broker_lease_ms = v;
    }
    if let Some(v) = args.connections_max {
        c.connections_max = v;
    }
    if let Some(v) = args.connections_per_address_max {
        c.connections_per_address_max = v;
    }
    if let Some(v) = args.idle_timeout_ms {
        c.idle_timeout_ms = v;
    }
    if !args.regions.is_empty() {
        c.regions = args.regions.clone();
    }
    if let Some(v) = &args.tokens_file {
        c.tokens_file = Some(v.clone());
    }
    if let Some(v) = &args.token_file {
        c.token_file = Some(v.clone());
    }
    if !args.admins.is_empty() {
        c.admins = args.admins.clone();
    }
    if let Some(v) = args.tls_client_auth {
        c.tls_client_auth = v;
    }
    if let Some(v) = &args.tls_client_ca {
        c.tls_client_ca = Some(v.clone());
    }
    if args.tls_cert.is_some() {
        c.tls_cert = args.tls_cert.clone();
        c.tls_key = args.tls_key.clone();
    }
    if args.grpc_ca.is_some() {
        c.grpc_ca = args.grpc_ca.clone();
    }
    if let Some(a) = &c.advertise
        && meridian_proto::names::host_port(a).is_none()
    {
        bail!("advertise {a:?}: must be HOST:PORT (a DNS name or an address, and a port)");
    }
    if c.tls_cert.is_some() != c.tls_key.is_some() {
        bail!("tls_cert and tls_key go together: set both for TLS, or neither");
    }
    for a in &c.admins {
        match meridian_security::tokens::Principal::parse(a) {
            Ok(meridian_security::tokens::Principal::User(_)) => {}
            _ => bail!("admins: {a:?} is not User:NAME"),
        }
    }
    for r in &c.regions {
        meridian_control_plane::metadata::validate_name("region", r)?;
    }
    if !(1000..=120_000).contains(&c.broker_lease_ms) {
        bail!(
            "invalid broker_lease_ms = {}: must be 1000 to 120000 (etcd grants leases in whole seconds)",
            c.broker_lease_ms
        );
    }
    if c.connections_max == 0 || c.connections_per_address_max == 0 {
        bail!(
            "invalid connections_max = {} / connections_per_address_max = {}: each must be at least 1",
            c.connections_max,
            c.connections_per_address_max
        );
    }
    if c.idle_timeout_ms < 1000 {
        bail!(
            "invalid idle_timeout_ms = {}: must be at least 1000 (brokers and tools keep idle connections between calls)",
            c.idle_timeout_ms
        );
    }
    if c.id.is_empty() {
        bail!("invalid id = \"\": give each control-plane process a name");
    }
    if !(1000..=60_000).contains(&c.leader_lease_ms) {
        bail!(
            "invalid leader_lease_ms = {}: must be 1000 to 60000 (etcd grants leases in whole seconds)",
            c.leader_lease_ms
        );
    }
    Ok(c)
}

async fn open_store(spec: &str) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(path) = spec.strip_prefix("embedded:") {
        return Ok(Arc::new(EmbeddedStore::open(std::path::Path::new(path))?));
    }
    if let Some(urls) = spec.strip_prefix("etcd:") {
        // etcd may start after us (a reboot, a deployment): keep trying for a while.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match EtcdStore::connect(urls).await {
                Ok(store) if store.list(keys::SCHEMA).await.is_ok() => return Ok(Arc::new(store)),
                Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {
                    tracing::warn!(etcd = urls, "etcd does not answer yet; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Ok(store) => return Ok(Arc::new(store)),
                Err(e) => return Err(e.into()),
            }
        }
    }
    bail!("invalid store = {spec:?}: use embedded:PATH or etcd:http://HOST:PORT[,...]")
}

/// Writes the schema version on a new store, and refuses a store of another layout.
async fn check_schema(store: &dyn Store) -> anyhow::Result<()> {
    let version = SCHEMA_VERSION.to_string().into_bytes();
    match store
        .compare_and_swap(keys::SCHEMA, None, version.clone(), None)
        .await?
    {
        Ok(_) => tracing::info!(version = SCHEMA_VERSION, "new metadata store initialized"),
        Err(Some(kv)) if kv.value == version => {}
        Err(current) => bail!(
            "the metadata store holds schema version {:?}; this control plane uses {SCHEMA_VERSION}: upgrade or point it at another store",
            current.map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        ),
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    meridian_daemon::run("control-plane", args.log_json, || {
        let config = config(&args).context("invalid configuration")?;
        meridian_daemon::block_on(run(config)).context("starting the runtime")?
    })
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Who may call the API, and this process's own token for its calls to brokers: read
    // before anything listens, so a bad file stops the start.
    let tls = meridian_security::tls::listener_tls(
        "",
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
        config.tls_client_auth,
        config.tls_client_ca.as_deref(),
    )?
    .map(|tls| {
        let tls = Arc::new(tls);
        Arc::new(move || tls.config()) as grpc::TlsSource
    });
    meridian_daemon::calls::identify(
        config.token_file.as_deref(),
        "token_file",
        config.grpc_ca.as_deref(),
        "grpc_ca",
    )?;
    let authentication = meridian_daemon::listener::authenticate::Authentication::load(
        config.tokens_file.as_deref(),
        config.grpc_allow_anonymous,
    )
    .context("the API's tokens (tokens_file)")?;
    // Ready once a leader of the control plane is known (this process or another).
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(None);
    let led = leader_rx.clone();
    meridian_daemon::ops::start(
        config.metrics_listen,
        Arc::new(move || match &*led.borrow() {
            Some(_) => Ok(()),
            None => Err("no leader of the control plane is known yet".to_owned()),
        }),
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the control-plane API to {}", config.listen))?;
    let store = open_store(&config.store)
        .await
        .with_context(|| format!("opening the metadata store {}", config.store))?;
    check_schema(store.as_ref()).await?;
    for name in &config.regions {
        meridian_control_plane::state::create_region(store.as_ref(), name).await?;
    }
    let me = Leader {
        id: config.id.clone(),
        addr: config.address(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let election = tokio::spawn(election::run(
        store.clone(),
        me.clone(),
        Duration::from_millis(config.leader_lease_ms),
        leader_tx,
        stop_rx,
    ));
    let repair = tokio::spawn(reconcile::run(
        store.clone(),
        me.clone(),
        leader_rx.clone(),
        Duration::from_millis(config.broker_lease_ms),
    ));
    tracing::info!(id = %config.id, api = %config.listen, store = %config.store, "control plane ready");
    // Bounded as the brokers' listeners are: connections admitted in all and per client
    // address, idle ones closed, half-sent calls failed.
    let limits = grpc::Limits {
        connections_max: config.connections_max,
        connections_per_address_max: config.connections_per_address_max,
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
    };
    let routes = tonic::service::Routes::new(ControlService::server(
        store,
        me,
        leader_rx,
        config.store.clone(),
        Duration::from_millis(config.broker_lease_ms),
        config.admins.clone(),
    ))
    .prepare();
    let routes =
        meridian_daemon::listener::authenticate::Authenticated::new(routes, authentication);
    let served = grpc::server()
        .serve_with_incoming_shutdown(
            grpc::Bounded::new(routes, &limits),
            grpc::incoming(listener, "", limits, tls),
            meridian_daemon::stop_requested(),
        )
        .await;
    repair.abort();
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), election).await;
    served.context("serving the control-plane API")?;
    tracing::info!("control plane stopped");
    Ok(())
}
