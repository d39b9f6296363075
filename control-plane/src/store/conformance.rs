//! The behaviour every [`Store`] must have, as one suite the tests run against the embedded
//! store and a real etcd. Each check panics with what differed.

use std::time::{Duration, Instant};

use super::{Store, StoreError, WatchEvent, WatchStream};

/// Runs every check against `store`, under keys starting with `root` (which must be empty).
pub async fn run(store: &dyn Store, root: &str) {
    kv(store, root).await;
    compare_and_swap(store, root).await;
    list(store, root).await;
    watch(store, root).await;
    leases(store, root).await;
}

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), stream.recv())
        .await
        .expect("no watch event within 10 s")
        .expect("the watch ended")
        .expect("the watch failed")
}

async fn kv(store: &dyn Store, root: &str) {
    let key = format!("{root}kv/a");
    assert_eq!(store.get(&key).await.unwrap(), None, "a missing key");
    let v1 = store.put(&key, b"one".to_vec(), None).await.unwrap();
    let got = store.get(&key).await.unwrap().expect("the key just put");
    assert_eq!(
        (got.key.as_str(), got.value.as_slice(), got.version),
        (key.as_str(), &b"one"[..], v1)
    );
    let v2 = store.put(&key, b"two".to_vec(), None).await.unwrap();
    assert!(v2 > v1, "versions grow: {v1} then {v2}");
    assert_eq!(store.get(&key).await.unwrap().unwrap().value, b"two");
    assert!(
        store.delete(&key).await.unwrap(),
        "deleting an existing key"
    );
    assert!(!store.delete(&key).await.unwrap(), "deleting it again");
    assert_eq!(store.get(&key).await.unwrap(), None, "a deleted key");
}

async fn compare_and_swap(store: &dyn Store, root: &str) {
    let key = format!("{root}cas/leader");
    let v1 = store
        .compare_and_swap(&key, None, b"broker-1".to_vec(), None)
        .await
        .unwrap()
        .expect("creating an absent key");
    let lost = store
        .compare_and_swap(&key, None, b"broker-2".to_vec(), None)
        .await
        .unwrap()
        .expect_err("creating an existing key must fail");
    let current = lost.expect("the current value comes back");
    assert_eq!(
        (current.value.as_slice(), current.version),
        (&b"broker-1"[..], v1)
    );
    let v2 = store
        .compare_and_swap(&key, Some(v1), b"broker-3".to_vec(), None)
        .await
        .unwrap()
        .expect("swapping at the current version");
    assert!(v2 > v1);
    let stale = store
        .compare_and_swap(&key, Some(v1), b"broker-4".to_vec(), None)
        .await
        .unwrap()
        .expect_err("a stale version must fail");
    assert_eq!(stale.map(|c| c.value), Some(b"broker-3".to_vec()));
    store.delete(&key).await.unwrap();
    let gone = store
        .compare_and_swap(&key, Some(v2), b"x".to_vec(), None)
        .await
        .unwrap()
        .expect_err("swapping a deleted key must fail");
    assert_eq!(gone, None, "nothing is current");
}

async fn list(store: &dyn Store, root: &str) {
    for k in ["b", "a", "c/x", "c/y"] {
        store
            .put(&format!("{root}list/{k}"), k.as_bytes().to_vec(), None)
            .await
            .unwrap();
    }
    store
        .put(&format!("{root}listing"), b"not under list/".to_vec(), None)
        .await
        .unwrap();
    let keys: Vec<String> = store
        .list(&format!("{root}list/"))
        .await
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    let want: Vec<String> = ["a", "b", "c/x", "c/y"]
        .iter()
        .map(|k| format!("{root}list/{k}"))
        .collect();
    assert_eq!(keys, want, "a prefix list, in key order");
    assert_eq!(
        store.list(&format!("{root}list/c/")).await.unwrap().len(),
        2
    );
    assert!(
        store
            .list(&format!("{root}nothing/"))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn watch(store: &dyn Store, root: &str) {
    let prefix = format!("{root}watch/");
    let mut stream = store.watch(&prefix).await.unwrap();
    let other = format!("{root}elsewhere");
    store.put(&other, b"ignored".to_vec(), None).await.unwrap();
    let key = format!("{prefix}k");
    let v1 = store.put(&key, b"1".to_vec(), None).await.unwrap();
    let v2 = store.put(&key, b"2".to_vec(), None).await.unwrap();
    store.delete(&key).await.unwrap();
    match next_event(&mut stream).await {
        WatchEvent::Put(kv) => assert_eq!(
            (kv.key.as_str(), kv.value.as_slice(), kv.version),
            (key.as_str(), &b"1"[..], v1)
        ),
        e => panic!("expected the first put, got {e:?}"),
    }
    match next_event(&mut stream).await {
        WatchEvent::Put(kv) => assert_eq!((kv.value.as_slice(), kv.version), (&b"2"[..], v2)),
        e => panic!("expected the second put, got {e:?}"),
    }
    match next_event(&mut stream).await {
        WatchEvent::Delete { key: k, version } => {
            assert_eq!(k, key);
            assert!(version > v2);
        }
        e => panic!("expected the delete, got {e:?}"),
    }
}

async fn leases(store: &dyn Store, root: &str) {
    // Revoking takes the lease's keys with it, and a watch sees them go.
    let prefix = format!("{root}lease/");
    let mut stream = store.watch(&prefix).await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let key = format!("{prefix}broker-1");
    store
        .put(&key, b"alive".to_vec(), Some(lease))
        .await
        .unwrap();
    store
        .keep_alive(lease)
        .await
        .expect("keeping a live lease alive");
    // A swap keeps the lease.
    let v = store.get(&key).await.unwrap().unwrap().version;
    store
        .compare_and_swap(&key, Some(v), b"still alive".to_vec(), None)
        .await
        .unwrap()
        .unwrap();
    store.revoke_lease(lease).await.unwrap();
    assert_eq!(
        store.get(&key).await.unwrap(),
        None,
        "a revoked lease's key"
    );
    assert!(matches!(next_event(&mut stream).await, WatchEvent::Put(_)));
    assert!(matches!(next_event(&mut stream).await, WatchEvent::Put(_)));
    match next_event(&mut stream).await {
        WatchEvent::Delete { key: k, .. } => assert_eq!(k, key),
        e => panic!("expected the revoked key's delete, got {e:?}"),
    }
    assert_eq!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(lease)),
        "a revoked lease"
    );
    assert_eq!(
        store.put(&key, b"late".to_vec(), Some(lease)).await,
        Err(StoreError::LeaseNotFound(lease)),
        "putting under a revoked lease"
    );

    // A lease that is not kept alive expires, and its key goes.
    let lease = store.grant_lease(Duration::from_secs(2)).await.unwrap();
    let key = format!("{prefix}broker-2");
    store
        .put(&key, b"alive".to_vec(), Some(lease))
        .await
        .unwrap();
    let started = Instant::now();
    while store.get(&key).await.unwrap().is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "a 2 s lease still holds its key after 15 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "expired too early"
    );
    assert_eq!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseNotFound(lease)),
        "an expired lease"
    );
}
