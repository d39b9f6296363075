//! The mirrors' certificates: one CA signs every region's mirror certificate, valid for the
//! DNS name [`server_name`] of its region and for both server and client authentication
//! (the links use mutual TLS). [`issue`] writes such a set with rcgen (`meridian certs`,
//! `meridian up`); the mirror loads and checks them (`meridian_mirror::tls`).

use std::path::Path;

use anyhow::Context;

/// The name a region's mirror certificate is valid for.
pub fn server_name(region: &str) -> String {
    format!("mirror.{region}.meridian")
}

/// File names [`issue`] writes in its directory.
pub fn files(
    dir: &Path,
    region: &str,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    (
        dir.join("ca.pem"),
        dir.join(format!("{region}.pem")),
        dir.join(format!("{region}.key")),
    )
}

/// Writes a certificate and key for each region's mirror into `dir`, signed by the CA in
/// `dir` (`ca.pem`, `ca.key`), which is created first when it is not there. Existing
/// region certificates are kept. Returns the files written.
pub fn issue(dir: &Path, regions: &[String]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let mut written = Vec::new();
    let key = if ca_key.exists() {
        let pem = std::fs::read_to_string(&ca_key)
            .with_context(|| format!("reading {}", ca_key.display()))?;
        rcgen::KeyPair::from_pem(&pem)
            .with_context(|| format!("{} is not a key", ca_key.display()))?
    } else {
        let key = rcgen::KeyPair::generate().context("generating the CA key")?;
        let cert = ca_params().self_signed(&key).context("signing the CA")?;
        write_private(&ca_key, &key.serialize_pem())?;
        std::fs::write(&ca_pem, cert.pem())
            .with_context(|| format!("writing {}", ca_pem.display()))?;
        written.extend([ca_pem.clone(), ca_key.clone()]);
        key
    };
    let issuer = rcgen::Issuer::new(ca_params(), key);
    for region in regions {
        let (_, cert_path, key_path) = files(dir, region);
        if cert_path.exists() && key_path.exists() {
            continue;
        }
        let mut p = rcgen::CertificateParams::new(vec![server_name(region)])
            .with_context(|| format!("region {region:?} does not make a DNS name"))?;
        p.distinguished_name
            .push(rcgen::DnType::CommonName, server_name(region));
        p.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2045, 1, 1);
        let key = rcgen::KeyPair::generate().context("generating a key")?;
        let cert = p
            .signed_by(&key, &issuer)
            .context("signing a certificate")?;
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, cert.pem())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        written.extend([cert_path, key_path]);
    }
    Ok(written)
}

/// The CA's parameters: the same each time, so a certificate signed later names the CA
/// that `ca.pem` holds.
fn ca_params() -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Meridian mirror CA");
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    p
}

/// The name a region's broker certificate is valid for: brokers of a region present it to
/// each other on the replication transport, both as server and as client.
pub fn broker_name(region: &str) -> String {
    format!("broker.{region}.meridian")
}

/// Writes `dir/broker-REGION.pem` and `.key` for each region in `regions` (kept when they
/// exist): a certificate valid for [`broker_name`], for server and client authentication,
/// signed by the CA in `dir` (made first when it is not there). Returns the files written.
pub fn issue_brokers(dir: &Path, regions: &[String]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut written = issue(dir, &[])?;
    for region in regions {
        let file = format!("broker-{region}");
        let (cert, key) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        if cert.exists() && key.exists() {
            continue;
        }
        sign(
            dir,
            &file,
            Usage::Server {
                names: &[broker_name(region)],
                client: true,
            },
        )?;
        written.extend([cert, key]);
    }
    Ok(written)
}

/// Writes `dir/NAME.pem` and `dir/NAME.key`: a server certificate for `names` (DNS names
/// or IP addresses) signed by the CA in `dir` (made first when it is not there), for a
/// broker's client listeners. Existing files are kept. Returns the certificate and key
/// paths.
pub fn issue_server(
    dir: &Path,
    name: &str,
    names: &[String],
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    issue(dir, &[])?;
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    sign(
        dir,
        name,
        Usage::Server {
            names,
            client: false,
        },
    )
}

/// Writes `dir/client-NAME.pem` and `.key` for each name in `names` (kept when they
/// exist): a client certificate whose common name is the name, signed by the CA in `dir`
/// (made first when it is not there). A listener that asks for client certificates
/// (`tls_client_auth`, with this CA as `tls_client_ca`) takes the name as the client's
/// user. Returns the files written.
pub fn issue_clients(dir: &Path, names: &[String]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut written = issue(dir, &[])?;
    for name in names {
        if name.is_empty() || name.contains(['/', '\\']) || name.starts_with('.') {
            anyhow::bail!("{name:?} is not a user name a certificate file can be named by");
        }
        let file = format!("client-{name}");
        let (cert, key) = (
            dir.join(format!("{file}.pem")),
            dir.join(format!("{file}.key")),
        );
        if cert.exists() && key.exists() {
            continue;
        }
        sign(dir, &file, Usage::Client(name))?;
        written.extend([cert, key]);
    }
    Ok(written)
}

/// What a certificate is for.
enum Usage<'a> {
    /// A server valid for these names (DNS names or addresses; the first is its common
    /// name), for client authentication too when `client`.
    Server { names: &'a [String], client: bool },
    /// A client named by its common name only.
    Client(&'a str),
}

/// Signs a certificate for `usage` with the CA in `dir`, written to `dir/FILE.pem` and
/// `dir/FILE.key`.
fn sign(
    dir: &Path,
    file: &str,
    usage: Usage<'_>,
) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf)> {
    let (cert_path, key_path) = (
        dir.join(format!("{file}.pem")),
        dir.join(format!("{file}.key")),
    );
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let ca_key = rcgen::KeyPair::from_pem(&read(&dir.join("ca.key"))?).context("the CA key")?;
    let issuer = rcgen::Issuer::new(ca_params(), ca_key);
    let mut p = match usage {
        Usage::Server { names, client } => {
            let mut p = rcgen::CertificateParams::new(names.to_vec())
                .with_context(|| format!("{names:?} are not DNS names or addresses"))?;
            p.distinguished_name
                .push(rcgen::DnType::CommonName, names.first().map_or(file, |n| n));
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
            if client {
                p.extended_key_usages
                    .push(rcgen::ExtendedKeyUsagePurpose::ClientAuth);
            }
            p
        }
        Usage::Client(name) => {
            let mut p = rcgen::CertificateParams::default();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(rcgen::DnType::CommonName, name);
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            p
        }
    };
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let cert = p
        .signed_by(&key, &issuer)
        .context("signing a certificate")?;
    write_private(&key_path, &key.serialize_pem())?;
    std::fs::write(&cert_path, cert.pem())
        .with_context(|| format!("writing {}", cert_path.display()))?;
    Ok((cert_path, key_path))
}

/// Writes a secret (a private key, a password) readable by its owner only.
pub fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // Written beside it and renamed over it: a daemon reading the file again when it
    // changes (a tokens file, a key) never sees it half-written.
    let mut staged = path.as_os_str().to_owned();
    staged.push(format!(".{}.tmp", std::process::id()));
    let staged = std::path::PathBuf::from(staged);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staged)?;
        f.write_all(pem.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&staged, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&staged);
    }
    written.with_context(|| format!("writing {}", path.display()))
}

/// Refuses a secret (a private key, a file of password hashes) that others than its owner
/// may read or write: the error names the file, its mode and the fix.
pub fn check_private(path: &Path, what: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading the {what} {}", path.display()))?
        .permissions()
        .mode();
    anyhow::ensure!(
        mode & 0o077 == 0,
        "the {what} {} may be read by other users (mode {:o}): make it its owner's only (chmod 600 {})",
        path.display(),
        mode & 0o777,
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_others_may_read_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        write_private(&path, "secret").unwrap();
        check_private(&path, "private key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = check_private(&path, "private key").unwrap_err().to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
    }

    #[test]
    fn issue_keeps_what_exists_and_signs_new_regions_with_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let regions = vec!["us-east".to_owned(), "eu-west".to_owned()];
        assert_eq!(issue(dir.path(), &regions).unwrap().len(), 6);
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        assert!(issue(dir.path(), &regions).unwrap().is_empty());
        assert_eq!(issue(dir.path(), &["ap".to_owned()]).unwrap().len(), 2);
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        let (_, _, key) = files(dir.path(), "ap");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
