//! Where the CLI finds the broker: the flag, `MERIDIAN_BROKER`, the file `meridian up`
//! writes, or the default local address.

use std::path::PathBuf;

/// The default broker address of a local deployment.
pub(crate) const DEFAULT_BROKER: &str = "127.0.0.1:7070";

/// The file `meridian up` records its endpoints in.
pub(crate) fn file() -> PathBuf {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("meridian").join("endpoints.json")
}

/// The broker address to use.
pub(crate) fn resolve(flag: Option<&str>) -> String {
    if let Some(b) = flag {
        return b.to_owned();
    }
    std::fs::read(file())
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| v.get("broker").and_then(|b| b.as_str()).map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_BROKER.to_owned())
}

/// Records the endpoints of a running local deployment.
pub(crate) fn record(broker: &str) -> std::io::Result<PathBuf> {
    let path = file();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, serde_json::json!({ "broker": broker }).to_string())?;
    Ok(path)
}
