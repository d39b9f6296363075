//! `meridian profile`: named sets of endpoints and credentials, like rpk profiles or nats
//! contexts, kept in `profiles.toml` beside `meridian up`'s endpoints file, readable by its
//! owner only (it holds tokens). The current profile fills in what flags and the
//! environment leave unset: the control plane, a broker, a region, the CA its calls trust
//! (`MERIDIAN_CA` wins over it; calls go over TLS with one), and the token every call
//! carries (`MERIDIAN_TOKEN` wins over it), or a client certificate presented instead
//! (`MERIDIAN_CERT` and `MERIDIAN_KEY` win over it). A token is read from standard input or
//! the environment, never from an argument (`ps` shows those).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Create (or replace) a profile; the first one made becomes current.
    Create {
        /// Its name.
        name: String,
        /// The control plane's address(es).
        #[arg(long = "set-control", value_name = "HOST:PORT")]
        control: Option<String>,
        /// A broker's address.
        #[arg(long = "set-broker", value_name = "HOST:PORT")]
        broker: Option<String>,
        /// The region to use.
        #[arg(long = "set-region", value_name = "REGION")]
        region: Option<String>,
        /// The CA (a PEM file) the gRPC APIs' certificates are signed by: calls go over
        /// TLS trusting it.
        #[arg(long = "set-ca", value_name = "PEM")]
        ca: Option<String>,
        /// A client certificate (PEM) to present to daemons that ask for one: its common
        /// name is the caller's user when no token is given. With --set-key.
        #[arg(long = "set-cert", value_name = "PEM", requires = "key")]
        cert: Option<String>,
        /// The client certificate's private key (PEM, its owner's only).
        #[arg(long = "set-key", value_name = "PEM", requires = "cert")]
        key: Option<String>,
        /// Read the token from the first line of standard input (else from
        /// MERIDIAN_TOKEN; none: a profile without credentials).
        #[arg(long)]
        token_stdin: bool,
    },
    /// Make a profile the current one.
    Use { name: String },
    /// List profiles (tokens are not shown).
    List,
    /// Delete a profile.
    Delete { name: String },
}

/// One profile.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) control: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) broker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) cert: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
}

/// The profiles file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Profiles {
    #[serde(skip_serializing_if = "Option::is_none")]
    current: Option<String>,
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

/// Where profiles are kept.
pub(crate) fn file() -> PathBuf {
    crate::endpoint::file().with_file_name("profiles.toml")
}

impl Profiles {
    /// The profiles file's content (none yet: empty); refused when others may read it.
    pub(crate) fn load() -> anyhow::Result<Profiles> {
        let path = file();
        if !path.exists() {
            return Ok(Profiles::default());
        }
        meridian_security::certs::check_private(&path, "profiles file")?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("{} is not a profiles file", path.display()))
    }

    fn save(&self) -> anyhow::Result<PathBuf> {
        let path = file();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = toml::to_string(self).context("writing profiles")?;
        meridian_security::certs::write_private(&path, &text)?;
        Ok(path)
    }

    /// The current profile, if any.
    pub(crate) fn current(&self) -> Option<&Profile> {
        self.profiles.get(self.current.as_deref()?)
    }

    /// Sets profile `name` (made current when none is, or when `make_current`).
    pub(crate) fn put(name: &str, profile: Profile, make_current: bool) -> anyhow::Result<PathBuf> {
        let mut all = Profiles::load()?;
        all.profiles.insert(name.to_owned(), profile);
        if make_current || all.current.is_none() {
            all.current = Some(name.to_owned());
        }
        all.save()
    }
}

pub(crate) fn run(cmd: Command, json: bool) -> anyhow::Result<()> {
    match cmd {
        Command::Create {
            name,
            control,
            broker,
            region,
            ca,
            cert,
            key,
            token_stdin,
        } => {
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                bail!("a profile name is one word");
            }
            let token = if token_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the token from standard input")?;
                Some(line.trim().to_owned()).filter(|t| !t.is_empty())
            } else {
                std::env::var("MERIDIAN_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty())
            };
            if token_stdin && token.is_none() {
                bail!("--token-stdin: standard input held no token");
            }
            if let Some(key) = &key {
                meridian_security::certs::check_private(std::path::Path::new(key), "client key")?;
            }
            let profile = Profile {
                control,
                broker,
                region,
                ca,
                token,
                cert,
                key,
            };
            let path = Profiles::put(&name, profile, false)?;
            println!("profile {name} saved in {}", path.display());
            Ok(())
        }
        Command::Use { name } => {
            let mut all = Profiles::load()?;
            if !all.profiles.contains_key(&name) {
                bail!(
                    "no profile {name:?} (profiles: {}): `meridian profile create {name}` makes it",
                    all.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
            all.current = Some(name.clone());
            all.save()?;
            println!("using profile {name}");
            Ok(())
        }
        Command::List => {
            let all = Profiles::load()?;
            if json {
                let list: Vec<serde_json::Value> = all
                    .profiles
                    .iter()
                    .map(|(n, p)| {
                        serde_json::json!({
                            "name": n,
                            "current": all.current.as_deref() == Some(n.as_str()),
                            "control": p.control,
                            "broker": p.broker,
                            "region": p.region,
                            "token": p.token.is_some(),
                            "certificate": p.cert,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::from(list));
                return Ok(());
            }
            println!(
                "{:<2}{:<16} {:<24} {:<24} {:<10} TOKEN",
                "", "NAME", "CONTROL", "BROKER", "REGION"
            );
            for (n, p) in &all.profiles {
                println!(
                    "{:<2}{:<16} {:<24} {:<24} {:<10} {}",
                    if all.current.as_deref() == Some(n.as_str()) {
                        "*"
                    } else {
                        ""
                    },
                    n,
                    p.control.as_deref().unwrap_or("-"),
                    p.broker.as_deref().unwrap_or("-"),
                    p.region.as_deref().unwrap_or("-"),
                    if p.token.is_some() { "set" } else { "-" }
                );
            }
            Ok(())
        }
        Command::Delete { name } => {
            let mut all = Profiles::load()?;
            if all.profiles.remove(&name).is_none() {
                bail!("no profile {name:?}");
            }
            if all.current.as_deref() == Some(name.as_str()) {
                all.current = None;
            }
            all.save()?;
            println!("profile {name} deleted");
            Ok(())
        }
    }
}
