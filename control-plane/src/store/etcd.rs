//! The etcd store: the [`Store`] operations as etcd v3 requests through `etcd-client`.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use super::{KeyValue, LeaseId, Store, StoreError, WatchEvent, WatchStream};

/// A connection to an etcd cluster. Cheap to clone.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").finish_non_exhaustive()
    }
}

fn unavailable(e: etcd_client::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: kv
            .key_str()
            .map_err(|e| StoreError::Backend(format!("a key is not UTF-8: {e}")))?
            .to_owned(),
        value: kv.value().to_vec(),
        version: kv.mod_revision() as u64,
    })
}

/// etcd says "requested lease not found" for an expired or revoked lease.
fn lease_error(e: etcd_client::Error, lease: LeaseId) -> StoreError {
    if e.to_string().contains("lease not found") {
        StoreError::LeaseNotFound(lease)
    } else {
        unavailable(e)
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (`http://host:port`, comma separated).
    pub async fn connect(endpoints: &str) -> Result<EtcdStore, StoreError> {
        let endpoints: Vec<&str> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        let client = Client::connect(&endpoints, Some(options))
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!(
                    "cannot connect to etcd at {}: {e}",
                    endpoints.join(",")
                ))
            })?;
        Ok(EtcdStore { client })
    }
}

impl Store for EtcdStore {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let resp = c.get(key, None).await.map_err(unavailable)?;
            resp.kvs().first().map(key_value).transpose()
        }
        .boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a str,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let options = lease.map(|l| PutOptions::new().with_lease(l));
            let resp = c.put(key, value, options).await.map_err(|e| match lease {
                Some(l) => lease_error(e, l),
                None => unavailable(e),
            })?;
            Ok(resp.header().map_or(0, |h| h.revision() as u64))
        }
        .boxed()
    }

    fn compare_and_swap<'a>(
        &'a self,
        key: &'a str,
        expected: Option<u64>,
        value: Vec<u8>,
        lease: Option<LeaseId>,
    ) -> BoxFuture<'a, Result<Result<u64, Option<KeyValue>>, StoreError>> {
        let mut c = self.client.clone();
        async move {
            // Without a new lease a swap keeps the key's lease, as the embedded store does.
            let options = match (lease, expected) {
                (Some(l), _) => Some(PutOptions::new().with_lease(l)),
                (None, None) => None,
                (None, Some(_)) => Some(PutOptions::new().with_ignore_lease()),
            };
            let compare = match expected {
                None => Compare::create_revision(key, CompareOp::Equal, 0),
                Some(v) => Compare::mod_revision(key, CompareOp::Equal, v as i64),
            };
            let put = TxnOp::put(key, value, options);
            let txn = Txn::new()
                .when([compare])
                .and_then([put])
                .or_else([TxnOp::get(key, None)]);
            let resp = c.txn(txn).await.map_err(|e| match lease {
                Some(l) => lease_error(e, l),
                None => unavailable(e),
            })?;
            if resp.succeeded() {
                return Ok(Ok(resp.header().map_or(0, |h| h.revision() as u64)));
            }
            let current = resp
                .op_responses()
                .iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                    _ => None,
                })
                .map(|kv| key_value(&kv))
                .transpose()?;
            Ok(Err(current))
        }
        .boxed()
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let resp = c.delete(key, None).await.map_err(unavailable)?;
            Ok(resp.deleted() > 0)
        }
        .boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<KeyValue>, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let resp = c
                .get(
                    prefix,
                    Some(
                        GetOptions::new().with_prefix().with_sort(
                            etcd_client::SortTarget::Key,
                            etcd_client::SortOrder::Ascend,
                        ),
                    ),
                )
                .await
                .map_err(unavailable)?;
            resp.kvs().iter().map(key_value).collect()
        }
        .boxed()
    }

    fn watch<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<WatchStream, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let mut stream = c
                .watch(prefix, Some(WatchOptions::new().with_prefix()))
                .await
                .map_err(unavailable)?;
            // The watch covers changes from its creation on: wait until the server has
            // created it, so a change made right after this returns is seen.
            match stream.message().await.map_err(unavailable)? {
                Some(r) if r.created() => {}
                _ => {
                    return Err(StoreError::Unavailable(
                        "etcd did not create the watch".into(),
                    ));
                }
            }
            let (tx, rx) = mpsc::channel(1024);
            tokio::spawn(async move {
                // Dropping the stream cancels the watch on the server.
                loop {
                    let resp = match stream.message().await {
                        Ok(Some(r)) => r,
                        Ok(None) => return,
                        Err(e) => {
                            let _ = tx.send(Err(unavailable(e))).await;
                            return;
                        }
                    };
                    if resp.canceled() || resp.compact_revision() > 0 {
                        let _ = tx.send(Err(StoreError::WatchLagged)).await;
                        return;
                    }
                    for event in resp.events() {
                        let Some(kv) = event.kv() else { continue };
                        let event = match event.event_type() {
                            EventType::Put => key_value(kv).map(WatchEvent::Put),
                            EventType::Delete => key_value(kv).map(|kv| WatchEvent::Delete {
                                key: kv.key,
                                version: kv.version,
                            }),
                        };
                        if tx.send(event).await.is_err() {
                            return;
                        }
                    }
                }
            });
            Ok(rx)
        }
        .boxed()
    }

    fn grant_lease(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        let mut c = self.client.clone();
        async move {
            let secs = ttl.as_secs().max(1) as i64;
            let resp = c.lease_grant(secs, None).await.map_err(unavailable)?;
            Ok(resp.id())
        }
        .boxed()
    }

    fn keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut c = self.client.clone();
        async move {
            let (mut keeper, mut stream) = c
                .lease_keep_alive(lease)
                .await
                .map_err(|e| lease_error(e, lease))?;
            keeper
                .keep_alive()
                .await
                .map_err(|e| lease_error(e, lease))?;
            match stream.message().await.map_err(|e| lease_error(e, lease))? {
                Some(resp) if resp.ttl() > 0 => Ok(()),
                _ => Err(StoreError::LeaseNotFound(lease)),
            }
        }
        .boxed()
    }

    fn revoke_lease(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        let mut c = self.client.clone();
        async move {
            c.lease_revoke(lease)
                .await
                .map_err(|e| lease_error(e, lease))?;
            Ok(())
        }
        .boxed()
    }
}
