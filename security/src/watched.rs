//! A value loaded from files and loaded again when one of them changes: a listener's TLS
//! configuration (its certificate, key and CA), a daemon's tokens file. Each read looks at
//! the files' modification times at most once a second; a change that does not load is
//! logged and the last good value kept, so a half-written file never takes a daemon's
//! credentials away.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How often the files are looked at (a `stat` of each, on a read at most this often).
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Reads a value from its files.
type Loader<T> = Box<dyn Fn(&[PathBuf]) -> anyhow::Result<T> + Send + Sync>;

pub(crate) struct Watched<T> {
    /// What the value is, for the log (`TLS certificate`, `tokens file`).
    what: &'static str,
    files: Vec<PathBuf>,
    load: Loader<T>,
    state: Mutex<State<T>>,
}

impl<T> std::fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("what", &self.what)
            .field("files", &self.files)
            .finish()
    }
}

struct State<T> {
    value: T,
    /// The files' modification times when `value` was loaded.
    modified: Vec<Option<SystemTime>>,
    /// Their times when they last did not load (logged once; tried again each look).
    failed: Option<Vec<Option<SystemTime>>>,
    checked: Instant,
}

impl<T: Clone> Watched<T> {
    /// Loads the value (an error when it does not load: the daemon does not start).
    pub(crate) fn load(
        what: &'static str,
        files: Vec<PathBuf>,
        load: impl Fn(&[PathBuf]) -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        let value = load(&files)?;
        Ok(Watched {
            what,
            state: Mutex::new(State {
                value,
                modified: files.iter().map(|f| modified(f)).collect(),
                failed: None,
                checked: Instant::now(),
            }),
            files,
            load: Box::new(load),
        })
    }

    /// The value, loaded again first when a file changed since.
    pub(crate) fn get(&self) -> T {
        let mut state = self.state.lock().expect("watched state poisoned");
        if state.checked.elapsed() >= CHECK_EVERY {
            state.checked = Instant::now();
            let now: Vec<_> = self.files.iter().map(|f| modified(f)).collect();
            if now != state.modified {
                match (self.load)(&self.files) {
                    Ok(v) => {
                        tracing::info!(files = ?self.files, "{} read again", self.what);
                        metrics::counter!("meridian_reloads_total", "what" => self.what)
                            .increment(1);
                        state.value = v;
                        state.modified = now;
                        state.failed = None;
                    }
                    // Tried again at the next look (a file may still be being written),
                    // logged once per version.
                    Err(e) if state.failed.as_ref() != Some(&now) => {
                        tracing::warn!(
                            files = ?self.files,
                            error = format!("{e:#}"),
                            "a changed {} does not load; the previous one stays in use",
                            self.what
                        );
                        state.failed = Some(now);
                    }
                    Err(_) => {}
                }
            }
        }
        state.value.clone()
    }

    /// Tests: the next read looks at the files again.
    #[cfg(test)]
    pub(crate) fn look_again(&self) {
        self.state.lock().unwrap().checked -= CHECK_EVERY;
    }

    /// Tests: the next look sees the first file as changed.
    #[cfg(test)]
    pub(crate) fn forget_modified(&self) {
        self.state.lock().unwrap().modified[0] = None;
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
