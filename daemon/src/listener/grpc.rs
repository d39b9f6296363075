//! A daemon's gRPC listener, bounded as the Kafka listener is. tonic limits neither
//! connections nor how long one may sit idle, so the daemon serves it with
//! `serve_with_incoming` over [`incoming`], an accept loop that:
//!
//! - admits at most `connections_max` connections in all and `connections_per_address_max`
//!   from one client address ([`Admission`]). A refused connection is answered, not just
//!   closed: each request on it gets `RESOURCE_EXHAUSTED` saying which limit and which key
//!   to raise, and it is closed within [`REFUSED_LINGER`] (at most [`REFUSED_ANSWERED_MAX`]
//!   refused connections are answered at once; past that they are closed at once);
//! - closes a connection with no request in flight for `idle_timeout` (gRPC's
//!   `MAX_CONNECTION_IDLE`; HTTP/2 pings do not keep a connection busy, so a client that
//!   pings while idle is closed too — its channel reconnects on its next call).
//!
//! [`Bounded`] wraps the service: it counts each connection's requests in flight (until its
//! response body is done) and fails a request whose body stops arriving for `idle_timeout`
//! (`DEADLINE_EXCEEDED`). A request whose headers stop half-way is not in flight yet: its
//! connection is idle and closed. [`server`] adds HTTP/2 keepalive pings, so a dead peer's
//! connection is closed even while a long poll is in flight on it. Message sizes are the
//! services' own (`max_decoding_message_size`).
//!
//! With a TLS configuration ([`TlsSource`]) each admitted connection does its handshake on
//! its first read or write, in the connection's own task (a slow handshake holds up no
//! other connection and is closed as idle), with the configuration current at accept
//! (certificates rotate without a restart).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::codegen::{Bytes, Service, http};
use tonic::transport::server::Connected;

use super::{Admission, Refusals, Refused, Ticket};

/// A gRPC listener's bounds (the broker's `[grpc]` section).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub connections_max: usize,
    /// Connections open from one client address.
    pub connections_per_address_max: usize,
    /// A connection with no request in flight this long is closed; a request whose body
    /// stops arriving this long fails.
    pub idle_timeout: Duration,
}

/// Refused connections answered at once; past it a refused connection is closed unanswered.
pub const REFUSED_ANSWERED_MAX: usize = 64;
/// How long a refused connection is kept to answer its requests with the refusal.
pub const REFUSED_LINGER: Duration = Duration::from_secs(2);
/// HTTP/2 pings sent this often find a dead peer under a request in flight...
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// ...when it does not answer one within this.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A tonic server with the keepalive every bounded listener uses.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}

/// Where a TLS listener takes its configuration from, once per connection.
pub type TlsSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

/// The connections accepted on `listener`, admitted within `limits` (refusals and timeouts
/// name the configuration keys, which start with `prefix`: `grpc.` in the broker), over
/// TLS when `tls` is given, for tonic's `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    prefix: &'static str,
    limits: Limits,
    tls: Option<TlsSource>,
) -> impl Stream<Item = Result<Connection, Infallible>> + Send + 'static {
    struct State {
        listener: TcpListener,
        admission: Arc<Admission>,
        refusals: Refusals,
        answering: Arc<Semaphore>,
        tls: Option<TlsSource>,
    }
    let state = State {
        listener,
        admission: Admission::new(
            "gRPC",
            prefix,
            limits.connections_max,
            limits.connections_per_address_max,
        ),
        refusals: Refusals::new("gRPC"),
        answering: Arc::new(Semaphore::new(REFUSED_ANSWERED_MAX)),
        tls,
    };
    futures_util::stream::unfold(state, move |mut s| async move {
        loop {
            let (stream, peer) = match s.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a gRPC connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let stream = match &s.tls {
                Some(config) => Io::Handshaking(Box::new(
                    tokio_rustls::TlsAcceptor::from(config()).accept(stream),
                )),
                None => Io::Plain(stream),
            };
            let connection = match s.admission.admit(peer.ip()) {
                Ok(ticket) => Connection::new(
                    stream,
                    peer,
                    prefix,
                    limits.idle_timeout,
                    Place::Admitted(ticket),
                ),
                Err(why) => {
                    metrics::counter!("meridian_grpc_connections_refused_total").increment(1);
                    s.refusals.note(&peer, &why);
                    // Dropped (closed) unanswered when too many are being answered.
                    let Ok(permit) = s.answering.clone().try_acquire_owned() else {
                        continue;
                    };
                    Connection::new(
                        stream,
                        peer,
                        prefix,
                        REFUSED_LINGER,
                        Place::Refused(permit, Arc::new(why)),
                    )
                }
            };
            return Some((Ok(connection), s));
        }
    })
}

/// Why a connection is served: its place in the counts, or a refusal to answer with.
#[derive(Debug)]
enum Place {
    Admitted(#[allow(dead_code)] Ticket),
    Refused(#[allow(dead_code)] OwnedSemaphorePermit, Arc<Refused>),
}

/// An accepted connection: the socket, closed by its reads once idle (or, refused, once
/// [`REFUSED_LINGER`] has passed).
#[derive(Debug)]
pub struct Connection {
    stream: Io,
    info: ConnectionInfo,
    idle_timeout: Duration,
    /// A refused connection is closed by then whatever it does.
    close_by: Option<Instant>,
    timer: Pin<Box<Sleep>>,
    _place: Place,
}

/// A connection's bytes: plain, or TLS (its handshake done on first use).
enum Io {
    Plain(TcpStream),
    Handshaking(Box<tokio_rustls::Accept<TcpStream>>),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The handshake failed (the error was returned once).
    Failed,
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Io::Plain(_) => "Plain",
            Io::Handshaking(_) => "Handshaking",
            Io::Tls(_) => "Tls",
            Io::Failed => "Failed",
        })
    }
}

impl Io {
    /// Drives the handshake; ready once the stream carries bytes (or failed).
    fn poll_ready(&mut self, cx: &mut Context<'_>, info: &ConnectionInfo) -> Poll<io::Result<()>> {
        let peer = &info.remote;
        let Io::Handshaking(accept) = self else {
            return Poll::Ready(match self {
                Io::Failed => Err(io::Error::other("the TLS handshake failed")),
                _ => Ok(()),
            });
        };
        match Pin::new(accept.as_mut()).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(tls)) => {
                if let Some(name) = meridian_security::tls::certificate_name(tls.get_ref().1) {
                    let _ = info.certified.set(name);
                }
                *self = Io::Tls(Box::new(tls));
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                metrics::counter!("meridian_grpc_tls_handshake_failures_total").increment(1);
                tracing::debug!(%peer, error = %e, "a gRPC TLS handshake failed");
                *self = Io::Failed;
                Poll::Ready(Err(e))
            }
        }
    }

    fn io(&mut self) -> Pin<&mut (dyn AsyncReadWrite + Send)> {
        match self {
            Io::Plain(s) => Pin::new(s),
            Io::Tls(s) => Pin::new(s.as_mut()),
            Io::Handshaking(_) | Io::Failed => unreachable!("poll_ready first"),
        }
    }
}

trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> AsyncReadWrite for T {}

/// What a request learns of its connection (tonic puts it in the request's extensions).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The client's address.
    pub remote: SocketAddr,
    /// The configuration keys' prefix.
    prefix: &'static str,
    refused: Option<Arc<Refused>>,
    activity: Arc<Activity>,
    /// The common name of the client's certificate, once a TLS handshake in which it
    /// presented one the listener checked is done (requests come after it).
    certified: Arc<std::sync::OnceLock<String>>,
}

impl ConnectionInfo {
    /// The common name of the certificate the client presented, if any.
    pub fn certified(&self) -> Option<&str> {
        self.certified.get().map(String::as_str)
    }
}

/// A connection's requests in flight and when that count last changed.
#[derive(Debug)]
struct Activity(Mutex<(usize, Instant)>);

/// One request in flight: counted until dropped (its response body done or dropped).
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl Activity {
    fn begin(self: &Arc<Self>) -> InFlight {
        let mut a = self.0.lock().expect("activity lock poisoned");
        *a = (a.0 + 1, Instant::now());
        InFlight(self.clone())
    }

    fn now(&self) -> (usize, Instant) {
        *self.0.lock().expect("activity lock poisoned")
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut a = self.0.0.lock().expect("activity lock poisoned");
        *a = (a.0 - 1, Instant::now());
    }
}

/// When a connection is to be closed: `idle_timeout` after the last request ended (or it
/// was accepted) when none is in flight, never while one is — and a refused connection by
/// `close_by` whatever it does. `None`: not now, look again later.
fn close_at(
    in_flight: usize,
    last_change: Instant,
    idle_timeout: Duration,
    close_by: Option<Instant>,
) -> Option<Instant> {
    let idle = (in_flight == 0).then(|| last_change + idle_timeout);
    match (idle, close_by) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Connection {
    fn new(
        stream: Io,
        remote: SocketAddr,
        prefix: &'static str,
        idle_timeout: Duration,
        place: Place,
    ) -> Connection {
        let now = Instant::now();
        let refused = match &place {
            Place::Refused(_, why) => Some(why.clone()),
            Place::Admitted(_) => None,
        };
        let close_by = refused.as_ref().map(|_| now + REFUSED_LINGER);
        if refused.is_none() {
            metrics::gauge!("meridian_grpc_connections").increment(1.0);
        }
        Connection {
            stream,
            info: ConnectionInfo {
                remote,
                prefix,
                refused,
                activity: Arc::new(Activity(Mutex::new((0, now)))),
                certified: Arc::default(),
            },
            idle_timeout,
            close_by,
            timer: Box::pin(tokio::time::sleep_until(now + idle_timeout)),
            _place: place,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.info.refused.is_none() {
            metrics::gauge!("meridian_grpc_connections").decrement(1.0);
        }
    }
}

impl Connected for Connection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let ready = match this.stream.poll_ready(cx, &this.info) {
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) => true,
            Poll::Pending => false,
        };
        if ready && let Poll::Ready(read) = this.stream.io().poll_read(cx, buf) {
            return Poll::Ready(read);
        }
        // Nothing to read: the server waits on this socket for as long as it is open, so
        // this is where an idle connection is found and closed (the error ends it).
        loop {
            let now = Instant::now();
            let (in_flight, last_change) = this.info.activity.now();
            let close = close_at(in_flight, last_change, this.idle_timeout, this.close_by);
            if close.is_some_and(|at| at <= now) {
                if this.info.refused.is_none() {
                    metrics::counter!("meridian_grpc_idle_closed_total").increment(1);
                    tracing::debug!(peer = %this.info.remote, "closing an idle gRPC connection");
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no request for {:?} ({}idle_timeout_ms)",
                        this.idle_timeout, this.info.prefix
                    ),
                )));
            }
            // While a request is in flight, look again a whole timeout later (its end wakes
            // the connection's task anyway, to send the answer).
            this.timer
                .as_mut()
                .reset(close.unwrap_or(now + this.idle_timeout));
            if this.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.stream.poll_ready(cx, &this.info))?;
        this.stream.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.stream.poll_ready(cx, &this.info))?;
        this.stream.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
            Io::Handshaking(_) | Io::Failed => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.stream.poll_ready(cx, &this.info))?;
        this.stream.io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.stream {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Io::Handshaking(_) | Io::Failed => Poll::Ready(Ok(())),
        }
    }
}

/// What a listener's service answers with, later.
pub(crate) type Answer =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

/// A call answered at once with `status`, its handler never reached.
pub(crate) fn refuse(status: tonic::Status) -> Answer {
    let (parts, ()) = status.into_http::<()>().into_parts();
    Box::pin(async move { Ok(http::Response::from_parts(parts, Body::empty())) })
}

/// The service of a bounded listener: answers a refused connection's requests with the
/// refusal, counts every other request in flight on its connection until its answer is
/// sent, and fails a request whose body stops arriving for `idle_timeout`.
#[derive(Debug, Clone)]
pub struct Bounded<S> {
    inner: S,
    idle_timeout: Duration,
}

impl<S> Bounded<S> {
    /// `inner` (tonic's `Routes`) with the bounds of [`incoming`]'s `limits`.
    pub fn new(inner: S, limits: &Limits) -> Bounded<S> {
        Bounded {
            inner,
            idle_timeout: limits.idle_timeout,
        }
    }
}

impl<S> Service<http::Request<Body>> for Bounded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let info = request.extensions().get::<ConnectionInfo>().cloned();
        if let Some(why) = info.as_ref().and_then(|i| i.refused.clone()) {
            return refuse(tonic::Status::resource_exhausted(why.to_string()));
        }
        let in_flight = info.as_ref().map(|i| i.activity.begin());
        let prefix = info.as_ref().map_or("", |i| i.prefix);
        let timeout = self.idle_timeout;
        let request = request.map(|body| {
            Body::new(HalfSent {
                inner: body,
                timeout,
                prefix,
                timer: Box::pin(tokio::time::sleep(timeout)),
            })
        });
        // The clone that was made ready is the one called (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(request).await?;
            Ok(response.map(|body| {
                Body::new(Answering {
                    inner: body,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A request body that fails once its frames stop arriving for `timeout`.
struct HalfSent {
    inner: Body,
    timeout: Duration,
    prefix: &'static str,
    timer: Pin<Box<Sleep>>,
}

impl http_body::Body for HalfSent {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.timer.as_mut().reset(Instant::now() + this.timeout);
                Poll::Ready(frame)
            }
            Poll::Pending if this.timer.as_mut().poll(cx).is_ready() => {
                metrics::counter!("meridian_grpc_half_sent_total").increment(1);
                Poll::Ready(Some(Err(tonic::Status::deadline_exceeded(format!(
                    "the request's bytes stopped arriving for {:?} ({}idle_timeout_ms)",
                    this.timeout, this.prefix
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its request counted in flight until it is done.
struct Answering {
    inner: Body,
    _in_flight: Option<InFlight>,
}

impl http_body::Body for Answering {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(600);

    #[test]
    fn an_idle_connection_closes_a_timeout_after_its_last_request() {
        let last = Instant::now();
        assert_eq!(close_at(0, last, T, None), Some(last + T));
    }

    #[test]
    fn a_connection_with_a_request_in_flight_is_never_idle() {
        let last = Instant::now() - 2 * T;
        assert_eq!(close_at(1, last, T, None), None);
    }

    #[test]
    fn a_refused_connection_closes_by_its_linger_whatever_it_does() {
        let now = Instant::now();
        let by = now + REFUSED_LINGER;
        assert_eq!(close_at(3, now, REFUSED_LINGER, Some(by)), Some(by));
        assert_eq!(
            close_at(0, now - REFUSED_LINGER, REFUSED_LINGER, Some(by)),
            Some(now)
        );
    }
}
