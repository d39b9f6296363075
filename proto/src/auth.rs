//! How a gRPC call reaches a daemon: over TLS when the process trusts a CA for the gRPC
//! APIs ([`set_ca`]), carrying its caller's credentials (`authorization: Bearer TOKEN` on
//! every request; the daemons check it: `meridian_daemon::listener::authenticate`).
//!
//! A process has one identity: [`set_token`] and [`set_ca`] once at start (a daemon from
//! its token and CA files, the CLI from its profile or `MERIDIAN_TOKEN` and
//! `MERIDIAN_CA`), and every channel made after through [`connect`] (or [`Authed::new`]
//! over a channel of its own) carries them. The server's certificate must be valid for
//! the host the address names (a DNS name or an IP address).

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::{Service, http};
use tonic::transport::{Channel, Endpoint};

static TOKEN: OnceLock<http::HeaderValue> = OnceLock::new();
static TLS: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();

/// Calls go over TLS from now on, trusting the CA certificates in `pem`, presenting the
/// client certificate `certificate` (its PEM chain and key) when given: the daemons that
/// ask for one take its common name as the caller's user when a call carries no token.
/// The first call wins; an error when they do not load.
pub fn set_ca(pem: &[u8], certificate: Option<(&[u8], &[u8])>) -> Result<(), String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not a PEM certificate: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("a CA certificate that does not load: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no certificate in it".to_owned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match certificate {
        None => builder.with_no_client_auth(),
        Some((chain, key)) => {
            use rustls::pki_types::PrivateKeyDer;
            let chain = CertificateDer::pem_slice_iter(chain)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("the client certificate is not PEM: {e}"))?;
            if chain.is_empty() {
                return Err("the client certificate file holds no certificate".to_owned());
            }
            let key = PrivateKeyDer::from_pem_slice(key)
                .map_err(|e| format!("the client key is not a PEM private key: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("the client key does not fit its certificate: {e}"))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let _ = TLS.set(Arc::new(config));
    Ok(())
}

/// Whether calls go over TLS.
pub fn has_ca() -> bool {
    TLS.get().is_some()
}

/// A channel to `endpoint` as this process calls: over TLS when a CA is set, carrying the
/// token.
pub async fn connect(endpoint: Endpoint) -> Result<Authed, tonic::transport::Error> {
    let channel = match TLS.get() {
        None => endpoint.connect().await?,
        Some(config) => {
            let config = config.clone();
            endpoint
                .connect_with_connector(tls_connector(Arc::new(move || config.clone()), None))
                .await?
        }
    };
    Ok(Authed::new(channel))
}

/// Where a connector takes its TLS configuration, at each connect (so a rotated
/// certificate is used from the next connection on).
pub type ClientTlsSource = Arc<dyn Fn() -> Arc<rustls::ClientConfig> + Send + Sync>;

/// A connector for tonic (`Endpoint::connect_with_connector`): TCP, then TLS with the
/// configuration `config` gives, checking the server's certificate against `name` —
/// none: the host the address names.
pub fn tls_connector(
    config: ClientTlsSource,
    name: Option<rustls::pki_types::ServerName<'static>>,
) -> impl Service<
    http::Uri,
    Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Future + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |uri: http::Uri| {
        let (config, name) = (config(), name.clone());
        async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = match name {
                Some(n) => n,
                None => rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| std::io::Error::other(format!("{host}: {e}")))?,
            };
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        }
    })
}

/// Sets this process's token (the first call wins); an error when it cannot be a header.
pub fn set_token(token: &str) -> Result<(), String> {
    let mut value = http::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .map_err(|_| "the token holds characters a header cannot carry".to_owned())?;
    value.set_sensitive(true);
    let _ = TOKEN.set(value);
    Ok(())
}

/// Whether this process calls with a token.
pub fn has_token() -> bool {
    TOKEN.get().is_some()
}

/// A channel whose requests carry this process's token (none set, or the request names
/// its own: as they are).
#[derive(Debug, Clone)]
pub struct Authed {
    inner: Channel,
    token: Option<Arc<http::HeaderValue>>,
}

impl Authed {
    /// `channel` with the token set so far.
    pub fn new(channel: Channel) -> Authed {
        Authed {
            inner: channel,
            token: TOKEN.get().cloned().map(Arc::new),
        }
    }
}

impl Service<http::Request<Body>> for Authed {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = <Channel as Service<http::Request<Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // A call that names its own credentials keeps them.
        if let Some(token) = &self.token
            && !request.headers().contains_key(http::header::AUTHORIZATION)
        {
            request
                .headers_mut()
                .insert(http::header::AUTHORIZATION, (**token).clone());
        }
        Service::call(&mut self.inner, request)
    }
}
