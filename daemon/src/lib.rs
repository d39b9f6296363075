//! What every Meridian daemon (`region-broker`, `control-plane`, `mirror`,
//! `meridian-console`) does the same way, so operators meet one behaviour: logs through
//! `tracing`, filtered by `MERIDIAN_LOG` (default `info`), as text or as JSON lines; and a
//! clean stop on SIGTERM or Ctrl-C.

use tracing_subscriber::EnvFilter;

/// Installs the process's log output: JSON lines with `json`, else plain text.
pub fn init_logs(json: bool) {
    let filter = EnvFilter::try_from_env("MERIDIAN_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
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
