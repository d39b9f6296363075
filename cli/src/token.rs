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
    /// List the principals a tokens file holds tokens for.
    List {
        #[arg(long, value_name = "FILE")]
        tokens_file: PathBuf,
    },
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
            if let Some(out) = &out {
                meridian_security::certs::write_private(out, &format!("{token}\n"))?;
                eprintln!("token for {principal} written to {}", out.display());
            } else {
                println!("{token}");
                eprintln!(
                    "token for {principal} added to {} (printed this once: keep it)",
                    tokens_file.display()
                );
            }
            Ok(())
        }
        Command::List { tokens_file } => {
            let entries = read(&tokens_file)?;
            if json {
                let names: Vec<&str> = entries.iter().map(|e| e.principal.as_str()).collect();
                println!("{}", serde_json::json!(names));
            } else {
                for e in entries {
                    println!("{}", e.principal);
                }
            }
            Ok(())
        }
    }
}
