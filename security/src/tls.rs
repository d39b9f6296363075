//! A listener's TLS identity, read from PEM files and read again when they change, so a
//! certificate is rotated by replacing its files: connections made after the change get
//! the new one, connections open keep theirs (no restart).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::watched::Watched;

/// Whether a listener asks its clients for a certificate (Kafka's `ssl.client.auth`,
/// mosquitto's `require_certificate`). A certificate a client presents is checked
/// against the listener's client CA, and its subject's common name names the client
/// ([`certificate_name`]).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// No certificate is asked for.
    #[default]
    None,
    /// A client may present one (then it must be valid) or authenticate otherwise.
    Requested,
    /// A client without a valid certificate is refused in the handshake.
    Required,
}

impl std::str::FromStr for ClientAuth {
    type Err = String;

    fn from_str(s: &str) -> Result<ClientAuth, String> {
        match s {
            "none" => Ok(ClientAuth::None),
            "requested" => Ok(ClientAuth::Requested),
            "required" => Ok(ClientAuth::Required),
            other => Err(format!("{other:?}: one of none, requested, required")),
        }
    }
}

/// A listener's client certificates: how they are asked for, and the CA that signs them.
#[derive(Debug, Clone)]
pub struct ClientCerts {
    pub auth: ClientAuth,
    pub ca: PathBuf,
}

impl ClientCerts {
    /// From a listener's settings (`what` names them in the error): none when `auth` is
    /// `none`; an error when certificates are asked for without a CA to check them by.
    pub fn of(
        auth: ClientAuth,
        ca: Option<&Path>,
        what: &str,
    ) -> anyhow::Result<Option<ClientCerts>> {
        match (auth, ca) {
            (ClientAuth::None, _) => Ok(None),
            (auth, Some(ca)) => Ok(Some(ClientCerts {
                auth,
                ca: ca.to_owned(),
            })),
            (_, None) => bail!(
                "{what}: client certificates are asked for but no CA checks them: set the client CA (a PEM file) too"
            ),
        }
    }
}

/// A listener's TLS from its settings, named in errors with `prefix` (their section, as
/// `kafka.`): none without a certificate and key. An error when client certificates are
/// asked for without TLS or without a CA, or when a file does not load.
pub fn listener_tls(
    prefix: &str,
    cert: Option<&Path>,
    key: Option<&Path>,
    client_auth: ClientAuth,
    client_ca: Option<&Path>,
) -> anyhow::Result<Option<ServerTls>> {
    let (Some(cert), Some(key)) = (cert, key) else {
        if client_auth != ClientAuth::None {
            bail!(
                "{prefix}tls_client_auth asks for client certificates but the listener has no TLS: set {prefix}tls_cert and {prefix}tls_key too"
            );
        }
        return Ok(None);
    };
    let clients = ClientCerts::of(client_auth, client_ca, &format!("{prefix}tls_client_auth"))?;
    let tls = ServerTls::load(cert, key, clients.as_ref()).with_context(|| {
        format!("the listener's TLS ({prefix}tls_cert, {prefix}tls_key, {prefix}tls_client_ca)")
    })?;
    Ok(Some(tls))
}

/// A server's TLS configuration, kept fresh from its certificate and key files (and
/// client CA).
#[derive(Debug)]
pub struct ServerTls(Watched<Arc<rustls::ServerConfig>>);

impl ServerTls {
    /// Reads `cert` (a PEM chain) and `key` (a PEM private key its owner only may read),
    /// and the client CA when clients present certificates; the error names the file and
    /// what is wrong with it.
    pub fn load(
        cert: &Path,
        key: &Path,
        clients: Option<&ClientCerts>,
    ) -> anyhow::Result<ServerTls> {
        let mut files = vec![cert.to_owned(), key.to_owned()];
        let auth = clients.map(|c| {
            files.push(c.ca.clone());
            c.auth
        });
        Ok(ServerTls(Watched::load(
            "TLS certificate",
            files,
            move |f| server_config(&f[0], &f[1], auth.map(|a| (a, f[2].as_path()))),
        )?))
    }

    /// The configuration to accept a connection with: read again first when a file
    /// changed since.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.0.get()
    }
}

/// Mutual TLS among peers of one kind (a region's brokers on the replication transport):
/// every peer's certificate is signed by the CA and valid for the same DNS name, which
/// each side requires of the other — a certificate of the same CA for another name (a
/// mirror's) is refused. Files are read again when they change.
#[derive(Debug)]
pub struct PeerTls {
    configs: Watched<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)>,
    peer_name: rustls::pki_types::ServerName<'static>,
}

impl PeerTls {
    /// Reads the CA (`ca`, PEM), this peer's certificate chain and key, and checks the
    /// certificate is valid for `peer_name`.
    pub fn load(ca: &Path, cert: &Path, key: &Path, peer_name: &str) -> anyhow::Result<PeerTls> {
        let name = rustls::pki_types::ServerName::try_from(peer_name.to_owned())
            .with_context(|| format!("{peer_name:?} is not a DNS name"))?;
        let files = vec![ca.to_owned(), cert.to_owned(), key.to_owned()];
        let owned = peer_name.to_owned();
        let configs = Watched::load("TLS certificate", files, move |f| {
            peer_configs(&f[0], &f[1], &f[2], &owned)
        })?;
        Ok(PeerTls {
            configs,
            peer_name: name,
        })
    }

    /// The configuration to accept a peer's connection with.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        self.configs.get().0
    }

    /// The configuration to connect to a peer with.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        self.configs.get().1
    }

    /// The name every peer's certificate is valid for.
    pub fn peer_name(&self) -> &rustls::pki_types::ServerName<'static> {
        &self.peer_name
    }
}

fn peer_configs(
    ca: &Path,
    cert: &Path,
    key: &Path,
    peer_name: &str,
) -> anyhow::Result<(Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>)> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certificates(ca, "CA certificate")? {
        roots
            .add(c)
            .with_context(|| format!("the CA certificate {} does not load", ca.display()))?;
    }
    let roots = Arc::new(roots);
    let chain = certificates(cert, "certificate")?;
    let name = rustls::pki_types::ServerName::try_from(peer_name.to_owned())
        .with_context(|| format!("{peer_name:?} is not a DNS name"))?;
    {
        let own = webpki::EndEntityCert::try_from(&chain[0])
            .with_context(|| format!("the certificate {} does not parse", cert.display()))?;
        own.verify_is_valid_for_subject_name(&name).map_err(|_| {
            anyhow::anyhow!(
                "the certificate {} is not valid for {peer_name}, the name every peer's must be: issue one with `meridian certs --brokers REGION`",
                cert.display()
            )
        })?;
    }
    crate::certs::check_private(key, "private key")?;
    let read_key = || {
        PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading the private key {}", key.display()))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        provider.clone(),
    )
    .build()
    .context("the CA's client verifier")?;
    let verifier = Arc::new(NamedClients {
        inner: clients,
        name: name.clone(),
    });
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), read_key()?)
        .with_context(|| format!("the key does not fit the certificate {}", cert.display()))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, read_key()?)
        .with_context(|| format!("the key does not fit the certificate {}", cert.display()))?;
    Ok((Arc::new(server), Arc::new(client)))
}

/// A client verifier that also requires the client's certificate to be valid for one
/// name: the CA signs more kinds of certificate than the peers'.
#[derive(Debug)]
struct NamedClients {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    name: rustls::pki_types::ServerName<'static>,
}

impl rustls::server::danger::ClientCertVerifier for NamedClients {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        cert.verify_is_valid_for_subject_name(&self.name)
            .map_err(|_| {
                metrics::counter!("meridian_tls_peer_name_refused_total").increment(1);
                rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
            })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Reads a PEM certificate chain.
pub fn certificates(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading the {what} {}", path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("the {what} {} is not PEM", path.display()))?;
    if certs.is_empty() {
        bail!("the {what} {} holds no certificate", path.display());
    }
    Ok(certs)
}

/// The common name of the certificate a client presented on `connection`, once its
/// handshake is done (none: no certificate, or one without a common name). The listener
/// checked it against its client CA: the name is who the client is (`User:NAME` on the
/// Kafka and MQTT listeners, as Kafka's `RULE:^CN=(.*?),.*$/$1/` and mosquitto's
/// `use_identity_as_username`).
pub fn certificate_name(connection: &rustls::ServerConnection) -> Option<String> {
    let cert = connection.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?;
    (!name.is_empty()).then(|| name.to_owned())
}

fn server_config(
    cert: &Path,
    key: &Path,
    clients: Option<(ClientAuth, &Path)>,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = certificates(cert, "certificate")?;
    crate::certs::check_private(key, "private key")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match clients {
        None | Some((ClientAuth::None, _)) => builder.with_no_client_auth(),
        Some((auth, ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(ca, "client CA certificate")? {
                roots.add(c).with_context(|| {
                    format!("the client CA certificate {} does not load", ca.display())
                })?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().context("the client CA's verifier")?)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .with_context(|| format!("the key does not fit the certificate {}", cert.display()))?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_certificate_is_read_again_and_a_broken_one_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let write = |name: &str| {
            let k = rcgen::KeyPair::generate().unwrap();
            let c = rcgen::CertificateParams::new(vec![name.to_owned()])
                .unwrap()
                .self_signed(&k)
                .unwrap();
            std::fs::write(&cert, c.pem()).unwrap();
            crate::certs::write_private(&key, &k.serialize_pem()).unwrap();
        };
        write("a.test");
        let tls = ServerTls::load(&cert, &key, None).unwrap();
        let first = tls.config();
        // Unchanged: the same configuration.
        assert!(Arc::ptr_eq(&first, &tls.config()));
        std::thread::sleep(std::time::Duration::from_millis(20));
        write("b.test");
        tls.0.look_again();
        let second = tls.config();
        assert!(!Arc::ptr_eq(&first, &second), "a new certificate is read");
        // A broken file: the last good configuration stays.
        std::fs::write(&cert, "not pem").unwrap();
        tls.0.forget_modified();
        tls.0.look_again();
        assert!(Arc::ptr_eq(&second, &tls.config()));
        // A key others may read is refused at load, naming the fix.
        use std::os::unix::fs::PermissionsExt;
        write("c.test");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", ServerTls::load(&cert, &key, None).unwrap_err());
        assert!(e.contains("chmod 600"), "{e}");
    }

    /// Runs a TLS handshake in memory; the server's connection, or the first error.
    fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: rustls::ClientConfig,
    ) -> Result<rustls::ServerConnection, rustls::Error> {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut c = rustls::ClientConnection::new(Arc::new(client), name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            s.process_new_packets()?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
            if !s.is_handshaking() && !c.is_handshaking() {
                return Ok(s);
            }
        }
        panic!("the handshake did not end");
    }

    #[test]
    fn a_client_certificate_names_its_client_and_is_required_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        crate::certs::issue_clients(d, &["alice".to_owned()]).unwrap();
        let (cert, key) =
            crate::certs::issue_server(d, "server", &["localhost".to_owned()]).unwrap();
        let ca = d.join("ca.pem");
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(certificates(&ca, "CA").unwrap().remove(0))
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = |with_cert: bool| {
            let b = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots.clone());
            if with_cert {
                let chain = certificates(&d.join("client-alice.pem"), "c").unwrap();
                let key = PrivateKeyDer::from_pem_file(d.join("client-alice.key")).unwrap();
                b.with_client_auth_cert(chain, key).unwrap()
            } else {
                b.with_no_client_auth()
            }
        };
        let listener = |auth| {
            let clients = ClientCerts::of(auth, Some(&ca), "test").unwrap();
            ServerTls::load(&cert, &key, clients.as_ref())
                .unwrap()
                .config()
        };
        // Required: the certificate's common name is the client's; none is refused.
        let s = handshake(listener(ClientAuth::Required), client(true)).unwrap();
        assert_eq!(certificate_name(&s).as_deref(), Some("alice"));
        assert!(handshake(listener(ClientAuth::Required), client(false)).is_err());
        // Requested: with or without one.
        let s = handshake(listener(ClientAuth::Requested), client(false)).unwrap();
        assert_eq!(certificate_name(&s), None);
        let s = handshake(listener(ClientAuth::Requested), client(true)).unwrap();
        assert_eq!(certificate_name(&s).as_deref(), Some("alice"));
        // Not asked for: a certificate sent anyway names no one.
        let s = handshake(listener(ClientAuth::None), client(true)).unwrap();
        assert_eq!(certificate_name(&s), None);
        // A certificate of another CA is refused.
        let other = tempfile::tempdir().unwrap();
        crate::certs::issue_clients(other.path(), &["mallory".to_owned()]).unwrap();
        let chain = certificates(&other.path().join("client-mallory.pem"), "c").unwrap();
        let k = PrivateKeyDer::from_pem_file(other.path().join("client-mallory.key")).unwrap();
        let forged = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain, k)
            .unwrap();
        assert!(handshake(listener(ClientAuth::Requested), forged).is_err());
        // Asked for without a CA: a clear error.
        let e = ClientCerts::of(ClientAuth::Required, None, "kafka.tls_client_auth").unwrap_err();
        assert!(e.to_string().contains("kafka.tls_client_auth"), "{e}");
    }

    #[test]
    fn a_peer_certificate_must_be_valid_for_the_peers_name() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        crate::certs::issue(d, &["r".to_owned()]).unwrap();
        crate::certs::issue_brokers(d, &["r".to_owned()]).unwrap();
        let ca = d.join("ca.pem");
        let name = crate::certs::broker_name("r");
        let tls =
            PeerTls::load(&ca, &d.join("broker-r.pem"), &d.join("broker-r.key"), &name).unwrap();
        assert!(tls.server_config().alpn_protocols.is_empty());
        assert_eq!(tls.peer_name().to_str(), "broker.r.meridian");
        // The region's mirror certificate, same CA: refused at load, naming the fix.
        let e = PeerTls::load(&ca, &d.join("r.pem"), &d.join("r.key"), &name).unwrap_err();
        assert!(
            format!("{e:#}").contains("meridian certs --brokers"),
            "{e:#}"
        );
    }
}
