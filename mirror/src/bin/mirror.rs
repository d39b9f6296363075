//! The `mirror` daemon: one per region. Ships this region's local-origin messages of
//! multi-region topics to every peer region and appends theirs, over QUIC with mutual TLS;
//! serves `/metrics`; stops cleanly on SIGTERM (closes its links, which peers redial later).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use meridian_mirror::config::{Config, Congestion};
use meridian_mirror::{receiver, sender, tls, views};

/// Meridian's mirror agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (keys as the flags, with underscores); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This mirror's region.
    #[arg(long)]
    region: Option<String>,
    /// This mirror's id among its region's mirrors (default REGION@LISTEN).
    #[arg(long)]
    id: Option<String>,
    /// How long a claimed link stays this mirror's without renewal, in milliseconds.
    #[arg(long)]
    claim_ttl_ms: Option<u64>,
    /// Control-plane addresses, comma separated.
    #[arg(long)]
    control: Option<String>,
    /// UDP address of the QUIC endpoint other regions' mirrors connect to.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// A region to ship to: REGION=HOST:PORT[,HOST:PORT...] (its mirrors; repeatable).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// CA certificate (PEM).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// This mirror's certificate (PEM).
    #[arg(long)]
    cert: Option<PathBuf>,
    /// This mirror's private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Unacknowledged bytes per stream before the sender waits.
    #[arg(long)]
    window_bytes: Option<u64>,
    /// Bytes read per frame (about).
    #[arg(long)]
    batch_bytes: Option<u32>,
    /// A silent link is dead after this many milliseconds.
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Keep-alive interval in milliseconds.
    #[arg(long)]
    keep_alive_ms: Option<u64>,
    /// Round trip assumed before one is measured, in milliseconds.
    #[arg(long)]
    initial_rtt_ms: Option<u64>,
    /// Congestion control: bbr or cubic.
    #[arg(long)]
    congestion: Option<Congestion>,
    /// Most peer connections held at once.
    #[arg(long)]
    connections_max: Option<usize>,
    /// Most peer connections from one address.
    #[arg(long)]
    connections_per_address_max: Option<usize>,
    /// The CA of the gRPC APIs: calls to the control plane and brokers go over TLS
    /// trusting it.
    #[arg(long, value_name = "PEM")]
    grpc_ca: Option<PathBuf>,
    /// This mirror's API token file (Mirror:REGION's token).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let mut c = Config::load(args.config.as_deref())?;
    macro_rules! set {
        ($($field:ident),*) => {$(
            if let Some(v) = &args.$field {
                c.$field = v.clone().into();
            }
        )*};
    }
    set!(
        region,
        control,
        listen,
        metrics_listen,
        ca,
        cert,
        key,
        window_bytes,
        batch_bytes
    );
    set!(
        idle_timeout_ms,
        keep_alive_ms,
        initial_rtt_ms,
        congestion,
        id,
        claim_ttl_ms,
        connections_max,
        connections_per_address_max
    );
    if !args.peers.is_empty() {
        c.peers = args.peers.clone();
    }
    if args.token_file.is_some() {
        c.token_file = args.token_file.clone();
    }
    if args.grpc_ca.is_some() {
        c.grpc_ca = args.grpc_ca.clone();
    }
    c.validate()?;
    Ok(c)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    meridian_daemon::run("mirror", args.log_json, || {
        let config = config(&args).context("invalid configuration")?;
        meridian_daemon::block_on(run(config)).context("starting the runtime")?
    })
}

async fn run(config: Config) -> anyhow::Result<()> {
    meridian_daemon::calls::identify(
        config.token_file.as_deref(),
        "token_file",
        config.grpc_ca.as_deref(),
        "grpc_ca",
    )?;
    let identity = tls::Identity::load(&config.ca, &config.cert, &config.key)?;
    let transport = tls::transport(&config)?;
    let mut endpoint =
        quinn::Endpoint::server(identity.server_config(transport.clone())?, config.listen)
            .with_context(|| format!("binding the QUIC endpoint to udp {}", config.listen))?;
    endpoint.set_default_client_config(identity.client_config(transport)?);
    let peers = config.peers()?;
    let config = Arc::new(config);
    let views = views::watch_views(
        config.control.clone(),
        config.region.clone(),
        peers.iter().map(|p| p.region.clone()).collect(),
        Duration::from_secs(2),
    );
    // Ready once it knows its region (from the control plane) and reaches its brokers.
    let known = views.clone();
    let region = config.region.clone();
    meridian_daemon::ops::start(
        config.metrics_listen,
        Arc::new(move || {
            let snapshot = known.borrow();
            if !snapshot.views.contains_key(&region) {
                return Err(format!(
                    "region {region} is not known from the control plane yet"
                ));
            }
            if snapshot.client.is_none() {
                return Err(format!("no broker of region {region} answered yet"));
            }
            Ok(())
        }),
    )
    .await?;
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let admission = meridian_daemon::listener::Admission::new(
        "mirror",
        "",
        config.connections_max,
        config.connections_per_address_max,
    );
    tasks.spawn(receiver::serve(
        endpoint.clone(),
        config.region.clone(),
        views.clone(),
        admission,
        stop.clone(),
    ));
    for peer in peers {
        tasks.spawn(sender::run_claimed(
            endpoint.clone(),
            config.clone(),
            peer,
            views.clone(),
            stop.clone(),
        ));
    }
    tracing::info!(
        region = %config.region, id = %config.id(), listen = %config.listen, peers = ?config.peers,
        congestion = ?config.congestion, "mirror started"
    );
    meridian_daemon::stop_requested().await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    endpoint.close(0u32.into(), b"mirror stopping");
    let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
    tracing::info!("mirror stopped");
    Ok(())
}
