//! `meridian user`: the region's users and their SASL credentials (Kafka's SCRAM and
//! PLAIN authenticate against them). The password is read from standard input or the
//! `MERIDIAN_USER_PASSWORD` environment variable, never from an argument (`ps` shows
//! those); only its SCRAM credential (salt, iterations, keys) leaves this process.

use anyhow::{Context, bail};
use meridian_proto::v1;
use meridian_security::scram::{Credential, ITERATIONS_MAX, ITERATIONS_MIN, Mechanism};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Set a user's password (creating the user): one credential per mechanism.
    Set {
        /// The user name.
        name: String,
        /// Mechanisms to set a credential for, comma separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "SCRAM-SHA-512,SCRAM-SHA-256"
        )]
        mechanism: Vec<String>,
        /// PBKDF2 iterations (4096 to 16384).
        #[arg(long, default_value_t = 8192)]
        iterations: u32,
        /// Read the password from the first line of standard input (else from
        /// MERIDIAN_USER_PASSWORD).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users and their mechanisms.
    List,
    /// Delete a user's credentials (every mechanism unless named).
    Delete {
        name: String,
        /// Mechanisms to delete, comma separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "SCRAM-SHA-512,SCRAM-SHA-256"
        )]
        mechanism: Vec<String>,
    },
}

fn mechanisms(names: &[String]) -> anyhow::Result<Vec<Mechanism>> {
    names
        .iter()
        .map(|n| {
            Mechanism::from_name(n).with_context(|| {
                format!("unknown mechanism {n:?}: use SCRAM-SHA-512 or SCRAM-SHA-256")
            })
        })
        .collect()
}

fn password(stdin: bool) -> anyhow::Result<String> {
    let password = if stdin {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the password from standard input")?;
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        std::env::var("MERIDIAN_USER_PASSWORD").map_err(|_| {
            anyhow::anyhow!(
                "no password: pass --password-stdin and write it to standard input, or set MERIDIAN_USER_PASSWORD"
            )
        })?
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    Ok(password)
}

pub(crate) async fn run(
    cmd: Command,
    broker: &str,
    control: Option<&str>,
    region: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let client = crate::control::region_client(broker, control, region).await?;
    match cmd {
        Command::Set {
            name,
            mechanism,
            iterations,
            password_stdin,
        } => {
            if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
                bail!("--iterations {iterations} is outside {ITERATIONS_MIN}..={ITERATIONS_MAX}");
            }
            let mechanisms = mechanisms(&mechanism)?;
            let password = password(password_stdin)?;
            for m in mechanisms {
                let salt = hex_bytes(&meridian_security::password::random_hex(24));
                let c = Credential::new(m, password.as_bytes(), &salt, iterations)?;
                client
                    .alter_user(
                        &name,
                        m.name(),
                        Some(v1::ScramCredential {
                            salt: c.salt.into(),
                            iterations: c.iterations,
                            stored_key: c.stored_key.into(),
                            server_key: c.server_key.into(),
                        }),
                    )
                    .await
                    .with_context(|| format!("setting {name}'s {} credential", m.name()))?;
                eprintln!("set {name}'s {} credential", m.name());
            }
            Ok(())
        }
        Command::Delete { name, mechanism } => {
            for m in mechanisms(&mechanism)? {
                client
                    .alter_user(&name, m.name(), None)
                    .await
                    .with_context(|| format!("deleting {name}'s {} credential", m.name()))?;
                eprintln!("deleted {name}'s {} credential", m.name());
            }
            Ok(())
        }
        Command::List => {
            let users = client.list_users().await.context("listing users")?;
            if json {
                let all: Vec<serde_json::Value> = users
                    .iter()
                    .map(|u| {
                        serde_json::json!({
                            "user": u.user,
                            "mechanisms": u.mechanisms.iter().map(|m| serde_json::json!({
                                "mechanism": m.mechanism, "iterations": m.iterations,
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(all));
                return Ok(());
            }
            println!("{:<32} MECHANISMS", "USER");
            for u in &users {
                let m: Vec<String> = u
                    .mechanisms
                    .iter()
                    .map(|m| format!("{} ({} iterations)", m.mechanism, m.iterations))
                    .collect();
                println!("{:<32} {}", u.user, m.join(", "));
            }
            Ok(())
        }
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("random_hex is hex"))
        .collect()
}
