//! `meridian token`: API tokens in a tokens file the daemons read (`--tokens-file`). A
//! token is printed once, when it is made; the file keeps only its SHA-256, so it may be
//! copied to every daemon. Give the printed token to its user (`meridian profile create
//! NAME --token-stdin`) or to a daemon (`--token-file`, a file of its owner's only).

use std::path::PathBuf;

use anyhow::Context;
use meridian_security::tokens::{self, Entry, Principal};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Make a token for a principal and add its hash to the tokens file (created, mode
    /// 0600, when missing); print the token.
    Create {
        /// User:NAME, Broker:REGION, Mirror:REGION, ControlPlane or Console.
        principal: String,
        /// The tokens file.
        #[arg(long, value_name = "FILE")]
        tokens_file: PathBuf,
        /// Also write the token to this file (mode 0600), for a daemon's --token-file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List the tokens a tokens file holds: each one's principal and id (the start of its
    /// hash; the token itself is never kept).
    List {
        #[arg(long, value_name = "FILE")]
        tokens_file: PathBuf,
    },
    /// Remove tokens from a tokens file: one by its id (as `list` shows it), or every
    /// token of a principal. Daemons reading the file refuse them within a second.
    Revoke {
        /// A token's id, or a principal (User:NAME, Broker:REGION, ...).
        which: String,
        #[arg(long, value_name = "FILE")]
        tokens_file: PathBuf,
    },
}

/// How many hex digits of a token's hash name it.
const ID_DIGITS: usize = 12;

/// A token's id: the start of its hash.
fn id(entry: &Entry) -> &str {
    &entry.sha256[..ID_DIGITS.min(entry.sha256.len())]
}

/// Adds a new token for `principal` to `file`; the token.
pub(crate) fn create(principal: &Principal, file: &std::path::Path) -> anyhow::Result<String> {
    let mut entries = read(file)?;
    let token = tokens::generate()?;
    entries.push(Entry {
        principal: principal.to_string(),
        sha256: tokens::hash(&token),
    });
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    meridian_security::certs::write_private(file, &tokens::render(&entries))?;
    Ok(token)
}

fn read(file: &std::path::Path) -> anyhow::Result<Vec<Entry>> {
    if !file.exists() {
        return Ok(Vec::new());
    }
    meridian_security::certs::check_private(file, "tokens file")?;
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    tokens::entries(&text).with_context(|| format!("the tokens file {}", file.display()))
}

pub(crate) fn run(cmd: Command, json: bool) -> anyhow::Result<()> {
    match cmd {
        Command::Create {
            principal,
            tokens_file,
            out,
        } => {
            let principal = Principal::parse(&principal)?;
            let token = create(&principal, &tokens_file)?;
            let token_id = &tokens::hash(&token)[..ID_DIGITS];
            if let Some(out) = &out {
                meridian_security::certs::write_private(out, &format!("{token}\n"))?;
                eprintln!(
                    "token {token_id} for {principal} written to {}",
                    out.display()
                );
            } else {
                println!("{token}");
                eprintln!(
                    "token {token_id} for {principal} added to {} (printed this once: keep it)",
                    tokens_file.display()
                );
            }
            Ok(())
        }
        Command::Revoke { which, tokens_file } => {
            let entries = read(&tokens_file)?;
            let by_principal = Principal::parse(&which).ok().map(|p| p.to_string());
            let revoked = |e: &Entry| match &by_principal {
                Some(p) => e.principal == *p,
                None => which.len() >= 8 && e.sha256.starts_with(&which.to_ascii_lowercase()),
            };
            let (gone, kept): (Vec<Entry>, Vec<Entry>) =
                entries.into_iter().partition(|e| revoked(e));
            match (&by_principal, gone.len()) {
                (_, 0) => anyhow::bail!(
                    "no token in {} is {which:?}: give a principal or an id of at least 8 digits as `meridian token list` shows it",
                    tokens_file.display()
                ),
                (None, n) if n > 1 => {
                    anyhow::bail!("{n} tokens start with {which:?}: give more of the id")
                }
                _ => {}
            }
            meridian_security::certs::write_private(&tokens_file, &tokens::render(&kept))?;
            for e in &gone {
                eprintln!("token {} of {} revoked", id(e), e.principal);
            }
            Ok(())
        }
        Command::List { tokens_file } => {
            let entries = read(&tokens_file)?;
            if json {
                let list: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| serde_json::json!({"principal": e.principal, "id": id(e)}))
                    .collect();
                println!("{}", serde_json::Value::from(list));
            } else {
                println!("{:<24} ID", "PRINCIPAL");
                for e in &entries {
                    println!("{:<24} {}", e.principal, id(e));
                }
            }
            Ok(())
        }
    }
}
