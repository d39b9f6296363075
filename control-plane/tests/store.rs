//! The store conformance suite against both implementations: the embedded file store, and
//! a real etcd server started for the test on free loopback ports.

use std::time::{Duration, Instant};

use meridian_tests::platform::{free_port, start_etcd};

use meridian_control_plane::store::{EmbeddedStore, EtcdStore, Store, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_conforms() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("control.redb");
    let store = EmbeddedStore::open(&path).unwrap();
    conformance::run(&store, "/meridian-test/").await;

    // Everything is in the file: a reopened store holds it.
    let key = "/meridian-test/durable";
    let version = store.put(key, b"kept".to_vec(), None).await.unwrap();
    drop(store);
    let store = EmbeddedStore::open(&path).unwrap();
    let kv = store
        .get(key)
        .await
        .unwrap()
        .expect("the key survives a reopen");
    assert_eq!((kv.value.as_slice(), kv.version), (&b"kept"[..], version));
    let next = store.put(key, b"again".to_vec(), None).await.unwrap();
    assert!(next > version, "revisions go on after a reopen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_etcd_conforms() {
    let etcd = start_etcd();
    let deadline = Instant::now() + Duration::from_secs(30);
    let store = loop {
        match EtcdStore::connect(&etcd.endpoint).await {
            Ok(s) if s.list("/").await.is_ok() => break s,
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(200)).await,
            Ok(_) | Err(_) => panic!("etcd at {} did not answer within 30 s", etcd.endpoint),
        }
    };
    conformance::run(&store, "/meridian-test/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_is_reported_by_address() {
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let e = match EtcdStore::connect(&endpoint).await {
        Ok(store) => store.list("/").await.unwrap_err(),
        Err(e) => e,
    };
    let text = e.to_string();
    assert!(text.contains("unavailable"), "{text}");
}
