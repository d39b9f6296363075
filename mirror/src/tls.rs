//! Mutual TLS between mirrors and the QUIC settings of a link.
//!
//! One CA signs every region's mirror certificate; a certificate is valid for the DNS name
//! `mirror.REGION.meridian`. The dialling mirror checks that the peer's certificate is the
//! region it meant to reach; the listening mirror checks that the caller's certificate names
//! the region its `Hello` claims (so one region cannot ship batches as another's origin).
//! `meridian_security::certs::issue` writes such a set (`meridian certs`, `meridian up`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use quinn::VarInt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::config::{Config, Congestion};

/// ALPN of the link protocol (`meridian_proto::mirror`).
pub const ALPN: &[u8] = b"meridian-mirror/1";

/// Connection attempts the QUIC endpoint queues before the receiver admits or refuses them.
pub const INCOMING_MAX: usize = 1024;

// Issuing lives in meridian-security, which the `meridian` command uses without the mirror.
pub use meridian_security::certs::{files, issue, server_name, write_private};

/// A mirror's trust anchor and identity, read from PEM files.
#[derive(Debug)]
pub struct Identity {
    ca: Vec<CertificateDer<'static>>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    /// Reads the CA certificate, this mirror's certificate chain and its key.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> anyhow::Result<Identity> {
        let certs = |path: &Path, what: &str| -> anyhow::Result<Vec<CertificateDer<'static>>> {
            let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                .with_context(|| format!("reading the {what} {}", path.display()))?
                .collect::<Result<_, _>>()
                .with_context(|| format!("the {what} {} is not PEM", path.display()))?;
            if certs.is_empty() {
                bail!("the {what} {} holds no certificate", path.display());
            }
            Ok(certs)
        };
        let (ca, chain) = (certs(ca, "CA certificate")?, certs(cert, "certificate")?);
        meridian_security::certs::check_private(key, "private key")?;
        Ok(Identity {
            ca,
            chain,
            key: PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading the private key {}", key.display()))?,
        })
    }

    fn roots(&self) -> anyhow::Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.ca {
            roots
                .add(c.clone())
                .context("the CA certificate is not usable as a trust anchor")?;
        }
        Ok(roots)
    }

    /// The listening side: requires a client certificate signed by the CA.
    pub fn server_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> anyhow::Result<quinn::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider.clone(),
        )
        .build()
        .context("building the client-certificate verifier")?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .context("the certificate does not match its key")?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .context("a QUIC server configuration")?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport);
        // Connection attempts not yet accepted or refused (quinn's default is 65,536); each
        // buffers at most 10 MiB of early data and all of them 100 MiB (quinn's defaults).
        config.max_incoming(INCOMING_MAX);
        Ok(config)
    }

    /// The dialling side: presents this mirror's certificate, trusts only the CA.
    pub fn client_config(
        &self,
        transport: Arc<quinn::TransportConfig>,
    ) -> anyhow::Result<quinn::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS 1.3")?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .context("the certificate does not match its key")?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .context("a QUIC client configuration")?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport);
        Ok(config)
    }
}

/// Whether the peer certificate (already verified against the CA by rustls) is `region`'s.
pub fn certifies_region(chain: &[CertificateDer<'_>], region: &str) -> bool {
    let Some(leaf) = chain.first() else {
        return false;
    };
    let Ok(name) = ServerName::try_from(server_name(region)) else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// The QUIC transport settings of a link, chosen for long, lossy paths:
/// - idle timeout and keep-alives from the config (a cut link is declared dead after the
///   idle timeout and redialled; a shorter cut heals by itself);
/// - flow-control windows large enough for a fast link at 100+ ms (16 MiB per stream,
///   64 MiB per connection: 320 MB/s at 50 ms before flow control limits);
/// - the initial RTT guess of a WAN, not of a LAN, so early retransmits are not spurious;
/// - BBR by default: random loss on the path does not halve the rate as CUBIC's does;
/// - one bidirectional stream per shipped log group; no datagrams, no uni streams.
pub fn transport(config: &Config) -> anyhow::Result<Arc<quinn::TransportConfig>> {
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        config
            .idle_timeout()
            .try_into()
            .context("idle_timeout_ms out of range")?,
    ))
    .keep_alive_interval(Some(Duration::from_millis(config.keep_alive_ms)))
    .initial_rtt(Duration::from_millis(config.initial_rtt_ms))
    .stream_receive_window(VarInt::from_u32(16 << 20))
    .receive_window(VarInt::from_u32(64 << 20))
    .send_window(64 << 20)
    .max_concurrent_bidi_streams(VarInt::from_u32(4096))
    .max_concurrent_uni_streams(VarInt::from_u32(0))
    .datagram_receive_buffer_size(None);
    match config.congestion {
        Congestion::Bbr => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
        }
        Congestion::Cubic => {
            t.congestion_controller_factory(Arc::new(quinn::congestion::CubicConfig::default()));
        }
    }
    Ok(Arc::new(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_name_their_region_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let regions = vec!["us-east".to_owned(), "eu-west".to_owned()];
        let written = issue(dir.path(), &regions).unwrap();
        assert_eq!(written.len(), 6);
        // A second call keeps what exists; a new region is signed by the same CA.
        assert!(issue(dir.path(), &regions).unwrap().is_empty());
        assert_eq!(issue(dir.path(), &["ap".to_owned()]).unwrap().len(), 2);
        for region in ["us-east", "eu-west", "ap"] {
            let (ca, cert, key) = files(dir.path(), region);
            let id = Identity::load(&ca, &cert, &key).unwrap();
            assert!(certifies_region(&id.chain, region));
            assert!(!certifies_region(&id.chain, "elsewhere"));
            let config = Config::default();
            id.server_config(transport(&config).unwrap()).unwrap();
            id.client_config(transport(&config).unwrap()).unwrap();
        }
        let e = Identity::load(
            &dir.path().join("nope.pem"),
            &dir.path().join("x"),
            &dir.path().join("y"),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("nope.pem"), "{e:#}");
    }
}
