//! The embedded store: one `redb` file (transactions, crash safety, fsync on commit), with
//! etcd's semantics on top — store-wide revisions, leases that expire on the wall clock and
//! take their keys with them, and prefix watches fed from every commit.

use std::path::Path;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{broadcast, mpsc};

use super::{KeyValue, LeaseId, Store, StoreError, WatchEvent, WatchStream};

/// key → (version, lease, value): 8 + 8 bytes of header, then the value.
const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// "revision", "next_lease".
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// lease → (expires at, ms since the epoch; ttl, ms).
const LEASES: TableDefinition<i64, (u64, u64)> = TableDefinition::new("leases");

/// How often expired leases are collected.
const EXPIRY_INTERVAL: Duration = Duration::from_millis(100);

/// The embedded single-file store. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    events: broadcast::Sender<WatchEvent>,
    /// Serializes write transactions with the events they publish, so watchers see
    /// revisions in order.
    writing: Mutex<()>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Fails with [`StoreError::LeaseNotFound`] unless the lease exists and has not expired.
fn require_alive(tx: &redb::WriteTransaction, id: LeaseId) -> Result<(), StoreError> {
    let leases = tx.open_table(LEASES).map_err(backend)?;
    let alive = leases
        .get(id)
        .map_err(backend)?
        .is_some_and(|v| v.value().0 > now_ms());
    if alive {
        Ok(())
    } else {
        Err(StoreError::LeaseNotFound(id))
    }
}

fn encode(version: u64, lease: LeaseId, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&lease.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn decode(key: &str, bytes: &[u8]) -> Result<(KeyValue, LeaseId), StoreError> {
    if bytes.len() < 16 {
        return Err(backend(format!("stored value of {key:?} is damaged")));
    }
    let version = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let lease = i64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    Ok((
        KeyValue {
            key: key.to_owned(),
            value: bytes[16..].to_vec(),
            version,
        },
        lease,
    ))
}

impl EmbeddedStore {
    /// Opens (creating) the store file at `path`. Leases whose time ran out while no process
    /// had the file open are collected at once.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(backend)?;
        }
        let db = Database::create(path).map_err(|e| {
            backend(format!(
                "opening the control store {}: {e} (is another control plane using it?)",
                path.display()
            ))
        })?;
        let tx = db.begin_write().map_err(backend)?;
        {
            tx.open_table(KV).map_err(backend)?;
            tx.open_table(META).map_err(backend)?;
            tx.open_table(LEASES).map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        let (events, _) = broadcast::channel(4096);
        let store = EmbeddedStore {
            inner: Arc::new(Inner {
                db,
                events,
                writing: Mutex::new(()),
            }),
        };
        store.collect_expired()?;
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&store.inner);
            handle.spawn(expire_leases(weak));
        }
        Ok(store)
    }

    /// Runs `f` in one write transaction with the next revision, then publishes its events.
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction, u64) -> Result<(T, Vec<WatchEvent>, bool), StoreError>,
    ) -> Result<T, StoreError> {
        let _serial = self.inner.writing.lock().expect("store lock poisoned");
        let tx = self.inner.db.begin_write().map_err(backend)?;
        let revision = {
            let meta = tx.open_table(META).map_err(backend)?;
            meta.get("revision")
                .map_err(backend)?
                .map_or(0, |v| v.value())
                + 1
        };
        let (out, events, changed) = f(&tx, revision)?;
        if changed {
            tx.open_table(META)
                .map_err(backend)?
                .insert("revision", revision)
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            for e in events {
                let _ = self.inner.events.send(e);
            }
        } else {
            tx.abort().map_err(backend)?;
        }
        Ok(out)
    }

    fn get_sync(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let tx = self.inner.db.begin_read().map_err(backend)?;
        let kv = tx.open_table(KV).map_err(backend)?;
        match kv.get(key).map_err(backend)? {
            Some(v) => Ok(Some(decode(key, v.value())?.0)),
            None => Ok(None),
        }
    }

    fn put_sync(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> Result<u64, StoreError> {
        self.write(|tx, revision| {
            if let Some(id) = lease {
                require_alive(tx, id)?;
            }
            tx.open_table(KV)
                .map_err(backend)?
                .insert(key, encode(revision, lease.unwrap_or(0), value).as_slice())
                .map_err(backend)?;
            let event = WatchEvent::Put(KeyValue {
                key: key.to_owned(),
                value: value.to_vec(),
                version: revision,
            });
            Ok((revision, vec![event], true))
        })
    }

    fn cas_sync(
        &self,
        key: &str,
        expected: Option<u64>,
        value: &[u8],
        new_lease: Option<LeaseId>,
    ) -> Result<Result<u64, Option<KeyValue>>, StoreError> {
        self.write(|tx, revision| {
            if let Some(id) = new_lease {
                require_alive(tx, id)?;
            }
            let mut kv = tx.open_table(KV).map_err(backend)?;
            let current = match kv.get(key).map_err(backend)? {
                Some(v) => Some(decode(key, v.value())?),
                None => None,
            };
            let matches = match (&current, expected) {
                (None, None) => true,
                (Some((c, _)), Some(v)) => c.version == v,
                _ => false,
            };
            if !matches {
                return Ok((Err(current.map(|(c, _)| c)), Vec::new(), false));
            }
            // Without a new lease, a swap keeps the key's lease.
            let lease = new_lease.unwrap_or_else(|| current.map_or(0, |(_, l)| l));
            kv.insert(key, encode(revision, lease, value).as_slice())
                .map_err(backend)?;
            let event = WatchEvent::Put(KeyValue {
                key: key.to_owned(),
                value: value.to_vec(),
                version: revision,
            });
            Ok((Ok(revision), vec![event], true))
        })
    }

    fn delete_sync(&self, key: &str) -> Result<bool, StoreError> {
        self.write(|tx, revision| {
            let existed = tx
                .open_table(KV)
                .map_err(backend)?
                .remove(key)
                .map_err(backend)?
                .is_some();
            let events = if existed {
                vec![WatchEvent::Delete {
                    key: key.to_owned(),
                    version: revision,
                }]
            } else {
                Vec::new()
            };
            Ok((existed, events, existed))
        })
    }

    fn list_sync(&self, prefix: &str) -> Result<Vec<KeyValue>, StoreError> {
        let tx = self.inner.db.begin_read().map_err(backend)?;
        let kv = tx.open_table(KV).map_err(backend)?;
        let mut out = Vec::new();
        for item in kv.range(prefix..).map_err(backend)? {
            let (k, v) = item.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix) {
                break;
            }
            out.push(decode(key, v.value())?.0);
        }
        Ok(out)
    }

    fn grant_sync(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.write(|tx, _| {
            let mut meta = tx.open_table(META).map_err(backend)?;
            let id = meta
                .get("next_lease")
                .map_err(backend)?
                .map_or(1, |v| v.value());
            meta.insert("next_lease", id + 1).map_err(backend)?;
            drop(meta);
            tx.open_table(LEASES)
                .map_err(backend)?
                .insert(id as i64, (now_ms() + ttl_ms, ttl_ms))
                .map_err(backend)?;
            Ok((id as i64, Vec::new(), true))
        })
    }

    fn keep_alive_sync(&self, id: LeaseId) -> Result<(), StoreError> {
        self.write(|tx, _| {
            let mut leases = tx.open_table(LEASES).map_err(backend)?;
            let lease = leases.get(id).map_err(backend)?.map(|v| v.value());
            match lease {
                Some((expires, ttl)) if expires > now_ms() => {
                    leases.insert(id, (now_ms() + ttl, ttl)).map_err(backend)?;
                    Ok(((), Vec::new(), true))
                }
                _ => Err(StoreError::LeaseNotFound(id)),
            }
        })
    }

    /// Removes leases (all of `only`, or every expired one) and their keys.
    fn end_leases(&self, only: Option<LeaseId>) -> Result<usize, StoreError> {
        self.write(|tx, revision| {
            let now = now_ms();
            let mut leases = tx.open_table(LEASES).map_err(backend)?;
            let mut ended = Vec::new();
            for item in leases.iter().map_err(backend)? {
                let (id, v) = item.map_err(backend)?;
                let (id, (expires, _)) = (id.value(), v.value());
                if only.map_or(expires <= now, |o| o == id) {
                    ended.push(id);
                }
            }
            for id in &ended {
                leases.remove(*id).map_err(backend)?;
            }
            let mut kv = tx.open_table(KV).map_err(backend)?;
            let mut doomed = Vec::new();
            for item in kv.iter().map_err(backend)? {
                let (k, v) = item.map_err(backend)?;
                let (entry, lease) = decode(k.value(), v.value())?;
                if lease != 0 && ended.contains(&lease) {
                    doomed.push(entry.key);
                }
            }
            let mut events = Vec::new();
            for key in doomed {
                kv.remove(key.as_str()).map_err(backend)?;
                events.push(WatchEvent::Delete {
                    key,
                    version: revision,
                });
            }
            let changed = !ended.is_empty();
            Ok((ended.len(), events, changed))
        })
    }

    fn collect_expired(&self) -> Result<usize, StoreError> {
        self.end_leases(None)
    }

    /// Runs blocking store work off the async threads.
    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(EmbeddedStore) -> Result<T, StoreError> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, StoreError>> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(store))
            .map(|r| r.map_err(backend).and_then(|r| r))
            .boxed()
    }
}

async fn expire_leases(store: Weak<Inner>) {
    loop {
        tokio::time::sleep(EXPIRY_INTERVAL).await;
        let Some(inner) = store.upgrade() else {
            return;
        };
        let store = EmbeddedStore { inner };
        let result = tokio::task::spawn_blocking(move || store.collect_expired()).await;
        match result {
            Ok(Ok(n)) if n > 0 => tracing::debug!(leases = n, "leases expired"),
            Ok(Err(e)) => tracing::warn!(error = %e, "collecting expired leases"),
            _ => {}
        }
    }
}

impl Store for EmbeddedStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        let key = key.to_owned();
        self.blocking(move |s| s.get_sync(&key))
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let key = key.to_owned();
        self.blocking(move |s| s.put_sync(&key, &value, lease))
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<u64>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, StoreError>> {
        let key = key.to_owned();
        self.blocking(move |s| s.cas_sync(&key, expected, &value, lease))
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let key = key.to_owned();
        self.blocking(move |s| s.delete_sync(&key))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, StoreError>> {
        let prefix = prefix.to_owned();
        self.blocking(move |s| s.list_sync(&prefix))
    }

    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        let mut events = self.inner.events.subscribe();
        let prefix = prefix.to_owned();
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let event = match events.recv().await {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Err(StoreError::WatchLagged)).await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let key = match &event {
                    WatchEvent::Put(kv) => &kv.key,
                    WatchEvent::Delete { key, .. } => key,
                };
                if key.starts_with(&prefix) && tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        });
        async move { Ok(rx) }.boxed()
    }

    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        self.blocking(move |s| s.grant_sync(ttl))
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(move |s| s.keep_alive_sync(lease))
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(move |s| match s.end_leases(Some(lease))? {
            0 => Err(StoreError::LeaseNotFound(lease)),
            _ => Ok(()),
        })
    }
}
