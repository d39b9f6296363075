//! API tokens: how a caller of the daemons' gRPC APIs (the CLI, the SDK, a broker calling
//! the control plane, a mirror calling its region's brokers, the console) says who it is.
//!
//! A token is 32 random bytes, written `mrd_` + base64url. Daemons keep only its SHA-256
//! (a token has a key's entropy, so a slow password hash would add nothing) in a tokens
//! file, one `[[token]]` per principal; a caller sends it as `authorization: Bearer
//! TOKEN`. The principal a token names decides what the caller may do:
//!
//! - `User:NAME`: an operator or application; the control plane's `auth.admins` may
//!   change the platform, the brokers' ACLs (when on) decide the rest;
//! - `Broker:REGION`: the region's brokers (register, heartbeat, watch their region);
//! - `Mirror:REGION`: the region's mirror (its links' leases, mirrored appends into its
//!   region);
//! - `ControlPlane`: the control plane (it moves log groups' replicas and masters);
//! - `Console`: the web console (acts for its logged-in users, who are audited there).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// What a token starts with (so a leaked one is recognisable in a scanner).
pub const PREFIX: &str = "mrd_";

/// Who a caller is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Principal {
    User(String),
    Broker(String),
    Mirror(String),
    ControlPlane,
    Console,
}

impl Principal {
    /// Parses `User:NAME`, `Broker:REGION`, `Mirror:REGION`, `ControlPlane` or `Console`.
    pub fn parse(text: &str) -> anyhow::Result<Principal> {
        let named = |kind: &str, name: &str| {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            {
                bail!("{kind}:{name:?}: a name of letters, digits and - _ . @");
            }
            Ok(name.to_owned())
        };
        match text.split_once(':') {
            Some(("User", n)) => Ok(Principal::User(named("User", n)?)),
            Some(("Broker", r)) => Ok(Principal::Broker(named("Broker", r)?)),
            Some(("Mirror", r)) => Ok(Principal::Mirror(named("Mirror", r)?)),
            None if text == "Console" => Ok(Principal::Console),
            None if text == "ControlPlane" => Ok(Principal::ControlPlane),
            _ => bail!(
                "{text:?} is not a principal: User:NAME, Broker:REGION, Mirror:REGION, ControlPlane or Console"
            ),
        }
    }
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::User(n) => write!(f, "User:{n}"),
            Principal::Broker(r) => write!(f, "Broker:{r}"),
            Principal::Mirror(r) => write!(f, "Mirror:{r}"),
            Principal::ControlPlane => f.write_str("ControlPlane"),
            Principal::Console => f.write_str("Console"),
        }
    }
}

/// A new random token.
pub fn generate() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a token: {e}"))?;
    Ok(format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// The hex SHA-256 of a token, as a tokens file keeps it.
pub fn hash(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// One entry of a tokens file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `User:NAME`, `Broker:REGION`, `Mirror:REGION`, `ControlPlane` or `Console`.
    pub principal: String,
    /// The token's hex SHA-256 ([`hash`]).
    pub sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

/// The tokens a daemon accepts, by hash.
#[derive(Debug, Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Principal>,
}

/// Most tokens a file may hold.
pub const TOKENS_MAX: usize = 10_000;

impl Tokens {
    /// Reads a tokens file (its owner's only); the error names the file and the entry.
    pub fn load(path: &Path) -> anyhow::Result<Tokens> {
        crate::certs::check_private(path, "tokens file")?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the tokens file {}", path.display()))?;
        Tokens::parse(&text).with_context(|| format!("the tokens file {}", path.display()))
    }

    /// Parses a tokens file's text.
    pub fn parse(text: &str) -> anyhow::Result<Tokens> {
        let file: File = toml::from_str(text).context("not a tokens file")?;
        if file.token.len() > TOKENS_MAX {
            bail!("{} tokens: at most {TOKENS_MAX}", file.token.len());
        }
        let mut by_hash = HashMap::new();
        for (i, e) in file.token.iter().enumerate() {
            let principal = Principal::parse(&e.principal)
                .with_context(|| format!("token {}: principal", i + 1))?;
            let hash =
                decode_hash(&e.sha256).with_context(|| format!("token {} ({principal})", i + 1))?;
            by_hash.insert(hash, principal);
        }
        Ok(Tokens { by_hash })
    }

    /// The principal `token` names, if it is one of these. The lookup is by the token's
    /// hash (which reveals nothing of the token); the match is checked in constant time.
    pub fn verify(&self, token: &str) -> Option<&Principal> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let (stored, principal) = self.by_hash.get_key_value(digest.as_ref())?;
        bool::from(stored.ct_eq(digest.as_ref())).then_some(principal)
    }

    /// How many tokens.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

/// A daemon's tokens file, read again when it changes: a token added with `meridian token
/// create` is accepted, and one removed from the file refused, within a second, without a
/// restart. A change that does not load (a half-written file, a mode others may read) is
/// logged and the tokens before it kept.
#[derive(Debug)]
pub struct TokensFile(crate::watched::Watched<std::sync::Arc<Tokens>>);

impl TokensFile {
    /// Reads `path` (its owner's only); the error names the file and the entry.
    pub fn load(path: &Path) -> anyhow::Result<TokensFile> {
        let watched = crate::watched::Watched::load("tokens file", vec![path.to_owned()], |f| {
            Tokens::load(&f[0]).map(std::sync::Arc::new)
        })?;
        Ok(TokensFile(watched))
    }

    /// The tokens as the file holds them now.
    pub fn tokens(&self) -> std::sync::Arc<Tokens> {
        self.0.get()
    }
}

fn decode_hash(hex: &str) -> anyhow::Result<[u8; 32]> {
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("sha256 must be 64 hex digits (`meridian token create` writes it)");
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

/// The entries of a tokens file's text (checked as [`Tokens::parse`] checks them).
pub fn entries(text: &str) -> anyhow::Result<Vec<Entry>> {
    Tokens::parse(text)?;
    let file: File = toml::from_str(text).context("not a tokens file")?;
    Ok(file.token)
}

/// Reads a daemon's own token from `path` (a file of its owner's only, the token on its
/// first line).
pub fn read_token_file(path: &Path) -> anyhow::Result<String> {
    crate::certs::check_private(path, "token file")?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

/// A tokens file's text holding `entries`.
pub fn render(entries: &[Entry]) -> String {
    toml::to_string(&File {
        token: entries.to_vec(),
    })
    .expect("entries serialize")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_tokens_file_is_read_again_when_it_changes_and_a_broken_one_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let write = |tokens: &[(&str, &str)]| {
            let entries: Vec<Entry> = tokens
                .iter()
                .map(|(p, t)| Entry {
                    principal: (*p).into(),
                    sha256: hash(t),
                })
                .collect();
            crate::certs::write_private(&path, &render(&entries)).unwrap();
        };
        let (a, b) = (generate().unwrap(), generate().unwrap());
        write(&[("User:a", &a)]);
        let file = TokensFile::load(&path).unwrap();
        assert!(file.tokens().verify(&a).is_some());
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&[("User:b", &b)]);
        file.0.look_again();
        assert!(file.tokens().verify(&b).is_some(), "a token added is taken");
        assert!(
            file.tokens().verify(&a).is_none(),
            "a token removed is refused"
        );
        // Broken: the tokens before it stay; mended, the mended file is taken.
        std::thread::sleep(std::time::Duration::from_millis(20));
        crate::certs::write_private(&path, "not a tokens file").unwrap();
        file.0.look_again();
        assert!(file.tokens().verify(&b).is_some());
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(&[("User:a", &a)]);
        file.0.look_again();
        assert!(file.tokens().verify(&a).is_some());
    }

    use super::*;

    #[test]
    fn a_token_names_its_principal_and_nothing_else_does() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert!(a.starts_with(PREFIX) && a.len() == PREFIX.len() + 43, "{a}");
        assert_ne!(a, b);
        let text = render(&[
            Entry {
                principal: "User:admin".into(),
                sha256: hash(&a),
            },
            Entry {
                principal: "Mirror:eu".into(),
                sha256: hash(&b),
            },
        ]);
        let tokens = Tokens::parse(&text).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.verify(&a), Some(&Principal::User("admin".into())));
        assert_eq!(tokens.verify(&b), Some(&Principal::Mirror("eu".into())));
        assert_eq!(tokens.verify("mrd_nope"), None);
        assert_eq!(tokens.verify(""), None);
    }

    #[test]
    fn bad_files_are_refused_naming_the_entry() {
        let e = Tokens::parse("[[token]]\nprincipal = \"Root\"\nsha256 = \"00\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("token 1: principal"), "{e:#}");
        let e = Tokens::parse("[[token]]\nprincipal = \"User:a\"\nsha256 = \"00\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("64 hex digits"), "{e:#}");
        assert!(Principal::parse("User:").is_err());
        assert!(Principal::parse("Broker:a b").is_err());
        assert_eq!(Principal::parse("Console").unwrap().to_string(), "Console");
    }
}
