//! Leader election among control-plane processes through the store: the leader is whoever
//! created `/meridian/leader` (compare-and-swap on absence) under a lease it keeps alive.
//! When the leader dies its lease expires and the key goes; the others, watching it, race to
//! create it again. A leader that cannot renew its lease steps down at once (it may no longer
//! be the leader). On shutdown the leader revokes its lease, so a successor takes over
//! without waiting out the lease.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metadata::keys;
use crate::store::{Store, StoreError, WatchEvent};

/// A control-plane process as the leader key names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// The process's id.
    pub id: String,
    /// Its API address.
    pub addr: String,
}

/// Runs the election for `me` until `stop` turns true; publishes the current leader (as
/// known here) on `leader`. `ttl` is the lease: how long a dead leader keeps the office.
pub async fn run(
    store: Arc<dyn Store>,
    me: Leader,
    ttl: Duration,
    leader: watch::Sender<Option<Leader>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(100);
    while !*stop.borrow() {
        match round(store.as_ref(), &me, ttl, &leader, &mut stop).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, "leader election: the store failed; retrying");
                leader.send_replace(None);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// One round: follow the current leader until it goes, or become leader and hold the office
/// until the lease is lost or `stop`.
async fn round(
    store: &dyn Store,
    me: &Leader,
    ttl: Duration,
    leader: &watch::Sender<Option<Leader>>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), StoreError> {
    // Watch first, so a deletion between the read and the wait is not missed.
    let mut changes = store.watch(keys::LEADER).await?;
    if let Some(kv) = store.get(keys::LEADER).await? {
        let current: Option<Leader> = serde_json::from_slice(&kv.value).ok();
        if current.as_ref().is_some_and(|l| l.id == me.id) {
            // A key of ours from before a restart: our lease is gone with that process,
            // so the key goes soon; wait for it like anyone else.
            tracing::info!("an earlier leader key of this process is still there");
        }
        leader.send_replace(current);
        // Follow until the key is deleted (re-check now and then in case a watch event is
        // missed).
        loop {
            tokio::select! {
                event = changes.recv() => match event {
                    Some(Ok(WatchEvent::Delete { .. })) => return Ok(()),
                    Some(Ok(WatchEvent::Put(kv))) => {
                        leader.send_replace(serde_json::from_slice(&kv.value).ok());
                    }
                    Some(Err(e)) => return Err(e),
                    None => return Err(StoreError::Unavailable("the leader watch ended".into())),
                },
                _ = tokio::time::sleep(ttl) => {
                    if store.get(keys::LEADER).await?.is_none() {
                        return Ok(());
                    }
                }
                _ = stop.changed() => return Ok(()),
            }
        }
    }
    drop(changes);
    let lease = store.grant_lease(ttl).await?;
    let value = serde_json::to_vec(me).map_err(|e| StoreError::Backend(e.to_string()))?;
    let won = store
        .compare_and_swap(keys::LEADER, None, value, Some(lease))
        .await?;
    if won.is_err() {
        // Someone else won the race.
        let _ = store.revoke_lease(lease).await;
        return Ok(());
    }
    tracing::info!(id = %me.id, "elected leader of the control plane");
    metrics::counter!("meridian_control_elections_won_total").increment(1);
    leader.send_replace(Some(me.clone()));
    let renew = ttl / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(renew) => {
                if let Err(e) = store.keep_alive(lease).await {
                    tracing::warn!(error = %e, "lost the leader lease: stepping down");
                    leader.send_replace(None);
                    return Ok(());
                }
            }
            _ = stop.changed() => {
                if *stop.borrow() {
                    let _ = store.revoke_lease(lease).await;
                    leader.send_replace(None);
                    tracing::info!("stepped down on shutdown");
                    return Ok(());
                }
            }
        }
    }
}
