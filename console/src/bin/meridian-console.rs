//! The console daemon: `meridian-console --control ADDR --users FILE`, or
//! `meridian-console hash-password` to make a user's password hash.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use meridian_console::auth::Auth;
use meridian_console::config::Config;
use meridian_console::{Console, audit::Audit};

/// Meridian's web console.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (keys as the flags, with underscores, and [[users]]); flags
    /// override it.
    #[arg(long, env = "MERIDIAN_CONSOLE_CONFIG")]
    config: Option<PathBuf>,
    /// Address of the web console.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Address of the Prometheus /metrics endpoint (also served at /metrics on --listen).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Control-plane address(es), comma-separated.
    #[arg(long)]
    control: Option<String>,
    /// The audit log (JSON lines).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    /// A region's mirror, by its metrics address: REGION=HOST:PORT (repeat for each).
    #[arg(long = "mirror")]
    mirrors: Vec<String>,
    /// The console's certificate chain (PEM): with --tls-key it serves HTTPS only, its
    /// session cookies `Secure`.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM, its owner's only).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The CA of the gRPC APIs: calls to the control plane and brokers go over TLS
    /// trusting it.
    #[arg(long, value_name = "PEM")]
    grpc_ca: Option<PathBuf>,
    /// The console's API token file (Console's token), sent with its calls to the
    /// control plane and the brokers.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Reads a password on standard input; prints its hash for a [[users]] entry.
    HashPassword,
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let mut c = match &args.config {
        Some(path) => {
            // It holds the users' password hashes.
            meridian_security::certs::check_private(path, "configuration file")?;
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?
        }
        None => Config::default(),
    };
    if let Some(l) = args.listen {
        c.listen = l;
    }
    if let Some(m) = args.metrics_listen {
        c.metrics_listen = Some(m);
    }
    if let Some(control) = &args.control {
        c.control = control.clone();
    }
    if let Some(a) = &args.audit_log {
        c.audit_log = a.clone();
    }
    if !args.mirrors.is_empty() {
        c.mirrors = args.mirrors.clone();
    }
    if args.token_file.is_some() {
        c.token_file = args.token_file.clone();
    }
    if args.grpc_ca.is_some() {
        c.grpc_ca = args.grpc_ca.clone();
    }
    if args.tls_cert.is_some() {
        c.tls_cert = args.tls_cert.clone();
        c.tls_key = args.tls_key.clone();
    }
    anyhow::ensure!(
        c.tls_cert.is_some() == c.tls_key.is_some(),
        "tls_cert and tls_key go together: set both for HTTPS, or neither"
    );
    anyhow::ensure!(
        !c.control.trim().is_empty(),
        "control is empty: pass --control HOST:PORT (the control plane's address)"
    );
    Ok(c)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(Command::HashPassword) = args.command {
        return match hash_password() {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meridian-console hash-password: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    meridian_daemon::run("meridian-console", args.log_json, || {
        let config = config(&args).context("invalid configuration")?;
        meridian_daemon::block_on(run(config)).context("starting the runtime")?
    })
}

/// `meridian-console hash-password`: reads a password on stdin, prints its hash.
fn hash_password() -> anyhow::Result<()> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .context("reading the password")?;
    let password = password.trim_end_matches(['\n', '\r']);
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    println!("{}", meridian_console::auth::hash_password(password)?);
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    // With --metrics-listen, the daemons' operational endpoint there (the console is
    // ready once it serves); without, /metrics on the console's own address.
    let handle = match config.metrics_listen {
        Some(m) => {
            meridian_daemon::ops::start(m, Arc::new(|| Ok(()))).await?;
            None
        }
        None => Some(
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .install_recorder()
                .context("installing the metrics recorder")?,
        ),
    };
    meridian_daemon::calls::identify(
        config.token_file.as_deref(),
        "token_file",
        config.grpc_ca.as_deref(),
        "grpc_ca",
    )?;
    // Read before anything listens: a certificate that does not load stops the start.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(Arc::new(
            meridian_security::tls::ServerTls::load(cert, key, None)
                .context("the console's TLS (tls_cert, tls_key)")?,
        )),
        _ => None,
    };
    let auth = Auth::new(config.users).context("users")?;
    let audit = Audit::open(config.audit_log.clone())?;
    let mirrors = meridian_console::mirrors::Mirrors::new(&config.mirrors).context("mirrors")?;
    let app = Arc::new(Console {
        control: config.control.clone(),
        auth,
        audit,
        mirrors,
        observer: Default::default(),
        metrics: handle,
        https: tls.is_some(),
    });
    let mirror_sampler = tokio::spawn(meridian_console::mirrors::sample(app.clone()));
    let observer = tokio::spawn(meridian_console::observer::observe(app.clone()));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding the console to {}", config.listen))?;
    tracing::info!(listen = %config.listen, https = tls.is_some(), control = %config.control, audit = %config.audit_log.display(), "console ready");
    // With each connection's address: logins are throttled per client address too.
    let service = meridian_console::router(app).into_make_service_with_connect_info::<SocketAddr>();
    match tls {
        Some(tls) => {
            use axum::serve::ListenerExt;
            let https = meridian_console::https::HttpsListener::new(listener, tls)
                .context("the console's HTTPS listener")?;
            // `tap_io` gives a listener of ours the client address as connect info.
            axum::serve(https.tap_io(|_| {}), service)
                .with_graceful_shutdown(meridian_daemon::stop_requested())
                .await
        }
        None => {
            axum::serve(listener, service)
                .with_graceful_shutdown(meridian_daemon::stop_requested())
                .await
        }
    }
    .context("serving the console")?;
    mirror_sampler.abort();
    observer.abort();
    tracing::info!("console stopped");
    Ok(())
}
