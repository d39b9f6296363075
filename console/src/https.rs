//! The console over HTTPS: a listener for `axum::serve` whose connections arrive with
//! their TLS handshake done. Handshakes run in their own tasks (a client that stalls one
//! holds up no other), at most [`HANDSHAKES_MAX`] at once, each within
//! [`HANDSHAKE_TIMEOUT`]; the certificate is the one current at accept (rotated by
//! replacing its files, `meridian_security::tls::ServerTls`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_security::tls::ServerTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

/// Handshakes in progress at once; past it new connections wait to be accepted.
pub const HANDSHAKES_MAX: usize = 128;
/// A handshake not done by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections with their handshake done, for `axum::serve`.
#[derive(Debug)]
pub struct HttpsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl HttpsListener {
    /// Accepts on `tcp` and does each connection's handshake with `tls`.
    pub fn new(tcp: TcpListener, tls: Arc<ServerTls>) -> io::Result<HttpsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(HANDSHAKES_MAX);
        let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = handshakes.clone().acquire_owned().await else {
                    return;
                };
                let (stream, peer) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a console connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("meridian_console_tls_handshake_failures_total")
                                .increment(1);
                            tracing::debug!(%peer, error = %e, "a console TLS handshake failed");
                        }
                        Err(_) => tracing::debug!(%peer, "a console TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(HttpsListener { ready, local })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accepting task ended (the runtime is stopping): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
