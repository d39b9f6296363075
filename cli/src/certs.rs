//! `meridian certs`: a CA and one certificate per region's mirror (valid for
//! `mirror.REGION.meridian`), for the mutual TLS of the links between regions; per region,
//! one its brokers share (valid for `broker.REGION.meridian`) for the mutual TLS of the
//! replication transport; server certificates for client listeners; and client
//! certificates naming users.

use std::path::PathBuf;

use anyhow::bail;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Directory to write into (ca.pem, ca.key, REGION.pem, REGION.key). An existing CA
    /// there signs the new certificates; existing region certificates are kept.
    #[arg(long)]
    dir: PathBuf,
    /// Regions to issue a mirror certificate for, comma separated.
    #[arg(long, value_delimiter = ',', required_unless_present_any = ["server", "brokers", "users"])]
    regions: Vec<String>,
    /// Regions to issue a broker certificate for (broker-REGION.pem, broker-REGION.key),
    /// comma separated: the region's brokers present it to each other on the replication
    /// transport (--raft-tls-ca, --raft-tls-cert, --raft-tls-key).
    #[arg(long, value_delimiter = ',')]
    brokers: Vec<String>,
    /// Users to issue a client certificate for (client-USER.pem, client-USER.key), comma
    /// separated: its common name is the user, for listeners that ask for client
    /// certificates (tls_client_auth, with this directory's ca.pem as tls_client_ca).
    #[arg(long, value_delimiter = ',')]
    users: Vec<String>,
    /// Also issue a server certificate for brokers' client listeners (Kafka TLS), named
    /// NAME (NAME.pem, NAME.key), for the names given with --names.
    #[arg(long, value_name = "NAME", requires = "names")]
    server: Option<String>,
    /// DNS names and IP addresses the server certificate is valid for, comma separated.
    #[arg(long, value_delimiter = ',')]
    names: Vec<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    for r in args.regions.iter().chain(&args.brokers) {
        if r.is_empty()
            || !r
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            bail!("invalid region {r:?}: use lowercase letters, digits and '-'");
        }
    }
    let mut written = meridian_security::certs::issue(&args.dir, &args.regions)?;
    written.extend(meridian_security::certs::issue_brokers(
        &args.dir,
        &args.brokers,
    )?);
    written.extend(meridian_security::certs::issue_clients(
        &args.dir,
        &args.users,
    )?);
    if let Some(name) = &args.server {
        let (cert, key) = meridian_security::certs::issue_server(&args.dir, name, &args.names)?;
        written.extend([cert, key]);
    }
    if written.is_empty() {
        println!(
            "every certificate asked for already exists in {}",
            args.dir.display()
        );
    }
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}
