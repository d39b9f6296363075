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

/// The broker address given by the flag (or `MERIDIAN_BROKER`), else the recorded one.
pub(crate) fn flag_or_recorded(flag: Option<&str>) -> Option<String> {
    flag.map(str::to_owned).or_else(|| recorded("broker"))
}

/// The broker address to use.
pub(crate) fn resolve(flag: Option<&str>) -> String {
    flag_or_recorded(flag).unwrap_or_else(|| DEFAULT_BROKER.to_owned())
}

/// A string field of the endpoints file.
pub(crate) fn recorded(field: &str) -> Option<String> {
    std::fs::read(file())
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|v| v.get(field).and_then(|b| b.as_str()).map(str::to_owned))
}

/// Records the endpoints of a running local deployment.
pub(crate) fn record(endpoints: &serde_json::Value) -> std::io::Result<PathBuf> {
    let path = file();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, endpoints.to_string())?;
    Ok(path)
}
