//! How a daemon calls the others' gRPC APIs: its own token (a file of its owner's only)
//! on every call, and over TLS trusting the gRPC APIs' CA when one is given. Set once at
//! start, for every channel the process makes after (`meridian_proto::auth`).

use std::path::Path;

use anyhow::Context;

/// Sets this process's token from `token_file` and its gRPC CA from `ca_file`; the
/// settings are named in errors as `token_key` and `ca_key`.
pub fn identify(
    token_file: Option<&Path>,
    token_key: &str,
    ca_file: Option<&Path>,
    ca_key: &str,
) -> anyhow::Result<()> {
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the gRPC CA ({ca_key}) {}", path.display()))?;
        meridian_proto::auth::set_ca(&pem, None)
            .map_err(|e| anyhow::anyhow!("the gRPC CA ({ca_key}) {}: {e}", path.display()))?;
    }
    if let Some(path) = token_file {
        let token = meridian_security::tokens::read_token_file(path)
            .with_context(|| format!("this daemon's token ({token_key})"))?;
        meridian_proto::auth::set_token(&token)
            .map_err(|e| anyhow::anyhow!("{token_key} {}: {e}", path.display()))?;
    }
    Ok(())
}
