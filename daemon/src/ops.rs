//! A daemon's operational endpoint, one HTTP listener apart from its APIs: `/metrics`
//! (Prometheus text), `/healthz` (the process serves: always 200 `ok`), `/readyz` (200
//! `ready` when the daemon's [`Readiness`] says so, else 503 with why); any other path is
//! 404. The Prometheus exporter's own listener answered every path with metrics, so a
//! probe could not tell alive from ready.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Whether the daemon serves what it is for now (`Err`: why not).
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Why the endpoint did not start.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The metrics recorder could not be installed (one is already).
    #[error("installing the metrics recorder: {0}")]
    Recorder(String),
    /// The address could not be bound.
    #[error("binding the metrics endpoint to {addr}: {source} (is another daemon running there?)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Bucket bounds of every latency histogram (`*_seconds`), from 1 ms to a minute.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How often histograms are folded (the exporter's listener did it on its own).
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the process's metrics recorder and serves the endpoint on `addr` until the
/// process ends; readiness as `ready` says. Call inside the runtime.
pub async fn start(addr: SocketAddr, ready: Readiness) -> Result<(), OpsError> {
    let metrics = PrometheusBuilder::new()
        // Latencies as histograms (buckets sum across processes and over time; a
        // summary's quantiles do neither); other histograms (sizes, counts) stay summaries.
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
        .map_err(|e| OpsError::Recorder(e.to_string()))?
        .install_recorder()
        .map_err(|e| OpsError::Recorder(e.to_string()))?;
    // Every series with its meaning (`# HELP`), and which build this is.
    for (name, help) in crate::metrics_help::CATALOG {
        metrics::describe_counter!(*name, *help);
    }
    metrics::gauge!(
        "meridian_build_info",
        "daemon" => crate::DAEMON.get().copied().unwrap_or("unknown"),
        "version" => env!("CARGO_PKG_VERSION"),
    )
    .set(1.0);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| OpsError::Bind { addr, source })?;
    let upkeep = metrics.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(UPKEEP).await;
            upkeep.run_upkeep();
        }
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(metrics, ready)).await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    });
    Ok(())
}

/// The endpoint's routes.
fn router(metrics: PrometheusHandle, ready: Readiness) -> axum::Router {
    axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let text = metrics.render();
                async move { text }
            }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let answer = match ready() {
                    Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                    Err(why) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: {why}\n"),
                    ),
                };
                async move { answer }
            }),
        )
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "not found: this endpoint serves /metrics, /healthz and /readyz\n",
            )
        })
}
