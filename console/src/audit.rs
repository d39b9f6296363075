//! The audit log: one JSON line per action (who, role, what, on what, outcome), appended to
//! a file and written to the process log.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use crate::auth::Session;

/// Where audit lines go.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl Audit {
    /// Opens (creates) the log for appending.
    pub fn open(path: PathBuf) -> anyhow::Result<Audit> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("opening the audit log {}: {e}", path.display()))?;
        Ok(Audit {
            path,
            file: Mutex::new(Some(file)),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Records an action by a session's user.
    pub fn record(&self, who: &Session, action: &str, target: &str, outcome: &str) {
        self.record_as(&who.user, who.role.as_str(), action, target, outcome);
    }

    /// Records an action by `user` (a login attempt has no session yet).
    pub fn record_as(&self, user: &str, role: &str, action: &str, target: &str, outcome: &str) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let line = serde_json::json!({
            "time_ms": now,
            "user": user,
            "role": role,
            "action": action,
            "target": target,
            "outcome": outcome,
        });
        tracing::info!(user, role, action, target, outcome, "audit");
        metrics::counter!("meridian_console_actions_total", "action" => action.to_owned())
            .increment(1);
        let mut file = self.file.lock().expect("audit lock poisoned");
        if let Some(f) = file.as_mut()
            && let Err(e) = writeln!(f, "{line}")
        {
            tracing::error!(path = %self.path.display(), error = %e, "writing the audit log failed");
        }
    }

    /// The last `n` lines, newest first.
    pub fn tail(&self, n: usize) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.path).unwrap_or_default();
        text.lines()
            .rev()
            .take(n)
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
