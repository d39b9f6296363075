//! A listener's TLS identity, read from PEM files and read again when they change, so a
//! certificate is rotated by replacing its files: connections made after the change get
//! the new one, connections open keep theirs (no restart).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// How often the files are looked at (a `stat` of each, on an accept at most this often).
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A server's TLS configuration, kept fresh from its certificate and key files.
#[derive(Debug)]
pub struct ServerTls {
    cert: PathBuf,
    key: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    config: Arc<rustls::ServerConfig>,
    modified: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ServerTls {
    /// Reads `cert` (a PEM chain) and `key` (a PEM private key its owner only may read);
    /// the error names the file and what is wrong with it.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<ServerTls> {
        let config = server_config(cert, key)?;
        Ok(ServerTls {
            state: Mutex::new(State {
                config,
                modified: (modified(cert), modified(key)),
                checked: Instant::now(),
            }),
            cert: cert.to_owned(),
            key: key.to_owned(),
        })
    }

    /// The configuration to accept a connection with: read again first when a file
    /// changed since (a change that does not load is logged and the old one kept).
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        let mut state = self.state.lock().expect("TLS state poisoned");
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            let now = (modified(&self.cert), modified(&self.key));
            if now != state.modified {
                state.modified = now;
                match server_config(&self.cert, &self.key) {
                    Ok(c) => {
                        tracing::info!(cert = %self.cert.display(), "TLS certificate read again");
                        metrics::counter!("meridian_tls_reloads_total").increment(1);
                        state.config = c;
                    }
                    Err(e) => tracing::warn!(
                        cert = %self.cert.display(),
                        error = format!("{e:#}"),
                        "a changed TLS certificate or key does not load; the previous one stays in use"
                    ),
                }
            }
        }
        state.config.clone()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
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

fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = certificates(cert, "certificate")?;
    crate::certs::check_private(key, "private key")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
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
        let tls = ServerTls::load(&cert, &key).unwrap();
        let first = tls.config();
        // Unchanged: the same configuration.
        assert!(Arc::ptr_eq(&first, &tls.config()));
        std::thread::sleep(Duration::from_millis(20));
        write("b.test");
        tls.state.lock().unwrap().checked -= CHECK_EVERY;
        let second = tls.config();
        assert!(!Arc::ptr_eq(&first, &second), "a new certificate is read");
        // A broken file: the last good configuration stays.
        std::fs::write(&cert, "not pem").unwrap();
        tls.state.lock().unwrap().modified.0 = None;
        tls.state.lock().unwrap().checked -= CHECK_EVERY;
        assert!(Arc::ptr_eq(&second, &tls.config()));
        // A key others may read is refused at load, naming the fix.
        use std::os::unix::fs::PermissionsExt;
        write("c.test");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = format!("{:#}", ServerTls::load(&cert, &key).unwrap_err());
        assert!(e.contains("chmod 600"), "{e}");
    }
}
