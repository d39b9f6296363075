//! What every Meridian daemon (`region-broker`, `control-plane`, `mirror`,
//! `meridian-console`) does the same way, so operators meet one behaviour: logs through
//! `tracing`, filtered by `MERIDIAN_LOG` (default `info`, raft internals from `warn`), as
//! text or as JSON lines; every
//! exit with its reason in the log ([`run`]: a panic's message and location, a fatal
//! error's causes); a clean stop on SIGTERM or Ctrl-C; and their listeners' bounds
//! ([`listener`]: connections admitted in all and per client address, idle connections
//! closed); one operational endpoint ([`ops`]: `/metrics`, `/healthz`, `/readyz`); and how
//! it calls the others ([`calls`]: its token, and TLS trusting the gRPC APIs' CA).

pub mod calls;
pub mod listener;
pub mod metrics_help;
pub mod ops;

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// The daemon's name, as [`run`] was given it (for `meridian_build_info`).
static DAEMON: OnceLock<&'static str> = OnceLock::new();

/// What is logged when `MERIDIAN_LOG` says nothing: the daemons' own INFO lines (what an
/// operator needs), openraft's from WARN (its INFO lines are raft's internals, many per
/// election and some thousands of characters long; `MERIDIAN_LOG=info,openraft=debug`
/// shows them).
pub const DEFAULT_LOG_FILTER: &str = "info,openraft=warn";

/// Installs the process's log output: JSON lines with `json`, else plain text.
pub fn init_logs(json: bool) {
    let filter = EnvFilter::try_from_env("MERIDIAN_LOG")
        .unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER));
    if json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .init();
    }
}

/// Runs a daemon: installs its logs ([`init_logs`]) and a panic hook that logs every panic
/// (any thread or task: message, location, thread) before the default report, then runs
/// `body`. An error `body` returns is logged as the reason the daemon exits, with its
/// causes, and the exit code is 1. So no exit
/// leaves the log without its reason (a kill -9 or the kernel's OOM killer aside, which no
/// process can log).
pub fn run<E: std::fmt::Display>(
    name: &'static str,
    json: bool,
    body: impl FnOnce() -> Result<(), E>,
) -> std::process::ExitCode {
    let _ = DAEMON.set(name);
    init_logs(json);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(not a string)".to_owned());
        let location = info
            .location()
            .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()))
            .unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(
            daemon = name,
            panic = %message,
            %location,
            thread = thread.name().unwrap_or("unnamed"),
            "panicked (a bug: please report it with this line)"
        );
        default_hook(info);
    }));
    match body() {
        // The daemon logs its own clean stop.
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` shows an anyhow error's causes on one line.
            tracing::error!(daemon = name, error = %format!("{e:#}"), "exiting on a fatal error");
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a daemon's main future on a multi-threaded runtime (every daemon runs the same
/// kind); an error only when the runtime cannot be built.
pub fn block_on<T>(main: impl Future<Output = T>) -> std::io::Result<T> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(main))
}

/// Returns when the process is asked to stop: SIGTERM or Ctrl-C (SIGINT). Without a SIGTERM
/// handler (it could not be installed) only Ctrl-C stops it, and the log says so.
pub async fn stop_requested() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received: stopping"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received: stopping"),
    }
}
