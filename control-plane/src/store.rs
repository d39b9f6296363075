//! The control plane's metadata store: a small key-value interface (get, put,
//! compare-and-swap, prefix list, watch, lease) with two implementations — etcd through
//! `etcd-client` for production ([`EtcdStore`]), and an embedded single-file store on
//! `redb` for one machine ([`EmbeddedStore`], the default). [`conformance`] is one test
//! suite both must pass.
//!
//! Versions are store-wide revisions, as in etcd: every change gets the next one, and a key's
//! `version` is the revision of its last change, which compare-and-swap compares.

use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

pub mod conformance;
mod embedded;
mod etcd;

pub use embedded::EmbeddedStore;
pub use etcd::EtcdStore;

/// A lease: keys put under it are deleted when it expires or is revoked.
pub type LeaseId = i64;

/// A key, its value and the revision of its last change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The store revision of the key's last change.
    pub version: u64,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put(KeyValue),
    /// The key was deleted (directly, or with its expired lease).
    Delete {
        /// The key.
        key: String,
        /// The revision of the deletion.
        version: u64,
    },
}

/// The changes under a prefix, in revision order. It ends (`None`) when the store goes away;
/// an `Err` says changes were missed and the watcher must list again.
pub type WatchStream = mpsc::Receiver<Result<WatchEvent, StoreError>>;

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store cannot be reached or refused the request.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The lease expired or was revoked (or never existed).
    #[error("lease {0:x} is not alive: it expired or was revoked; grant a new one")]
    LeaseNotFound(LeaseId),
    /// A watcher fell behind and missed changes.
    #[error("the watch fell behind and missed changes: list the prefix again and re-watch")]
    WatchLagged,
    /// The store's own storage failed.
    #[error("metadata store failed: {0}")]
    Backend(String),
}

/// The metadata store.
pub trait Store: Send + Sync {
    /// The key's value, if it exists.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>>;

    /// Sets the key (under a lease, if given); returns the new revision.
    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// Sets the key only if its version is `expected` (`None`: only if it does not exist),
    /// under `lease` if given (else keeping the key's lease). `Ok(Ok(revision))` when set;
    /// `Ok(Err(current))` when the key has moved on (`current` is what it holds now, `None`
    /// if absent).
    fn compare_and_swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<u64>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, StoreError>>;

    /// Deletes the key; whether it existed.
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Every key starting with `prefix`, in key order.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, StoreError>>;

    /// Changes to keys starting with `prefix` from now on.
    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<WatchStream, StoreError>>;

    /// Grants a lease that lives `ttl` unless kept alive.
    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>>;

    /// Extends a lease by its ttl; [`StoreError::LeaseNotFound`] once it has expired.
    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>>;

    /// Ends a lease now, deleting its keys.
    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>>;
}
