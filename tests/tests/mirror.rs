//! The brokers' side of mirroring, as real processes in two regions: the committed
//! local-origin batches of a log group are read in record order; appended into the other
//! region they keep their origin and are idempotent on it — sent twice, or again after the
//! target group's leader was killed, they are held once; a region's own mirrored batches
//! are never read back as local (so nothing loops).

use std::collections::BTreeMap;
use std::time::Duration;

use meridian_client::{ProducerConfig, Record};
use meridian_proto::mirror::ShippedBatch;
use meridian_proto::origin::Origin;
use meridian_region_client::RegionClient;
use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion, meridian_control};
use meridian_tests::read_all;

/// The platform's internal client of a region's running brokers (the one mirror agents
/// use: the SDK does not offer the mirror's RPCs).
async fn internal(region: &ManagedRegion) -> RegionClient {
    RegionClient::connect(&region.bootstrap())
        .await
        .expect("connect to the region's brokers")
}

/// Ships every committed local batch of `from`'s log groups into `to`, as a mirror does
/// (one group at a time, in record order); returns how many batches were duplicates.
async fn ship(from: &ManagedRegion, to: &ManagedRegion) -> (usize, usize) {
    let (from_client, to) = (internal(from).await, internal(to).await);
    let (mut written, mut duplicates) = (0, 0);
    for g in from.groups().await {
        let mut next = 1;
        loop {
            let (batches, after) = from_client
                .read_local(g.id, next, 1 << 20, Duration::ZERO)
                .await
                .expect("read local batches");
            if batches.is_empty() {
                break;
            }
            // Shipped as the mirror does: all of a read in one call, the rest again when
            // the broker's run ends at another log group.
            let batches: Vec<(Origin, ShippedBatch)> = batches
                .into_iter()
                .map(|b| {
                    let origin = Origin {
                        region: from.name.clone(),
                        group: g.id,
                        seq: b.seq,
                        through: b.seq,
                    };
                    (origin, b)
                })
                .collect();
            let mut rest = &batches[..];
            while !rest.is_empty() {
                let answered = to.append_mirrored(rest).await.expect("append mirrored");
                assert!(!answered.is_empty() && answered.len() <= rest.len());
                for duplicate in &answered {
                    if *duplicate {
                        duplicates += 1;
                    } else {
                        written += 1;
                    }
                }
                rest = &rest[answered.len()..];
            }
            next = after;
        }
    }
    (written, duplicates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirrored_batches_keep_their_origin_are_idempotent_and_never_loop() {
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlaneProcess::embedded(tmp.path(), &["--region", "eu", "--region", "us"]).await;
    let control = cp.addr.clone();
    let eu = ManagedRegion::start(tmp.path(), "eu", 3, &control, &[])
        .await
        .unwrap();
    let mut us = ManagedRegion::start(tmp.path(), "us", 3, &control, &[])
        .await
        .unwrap();
    let (code, _, err) = meridian_control(
        &control,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--regions",
            "eu,us",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (eu_client, us_client) = (eu.client().await, us.client().await);
    let producer = eu_client.producer(ProducerConfig::default());
    for i in 0..60 {
        producer
            .send(Record::new("orders", format!("eu-{i}")).key(format!("k{}", i % 5)))
            .await
            .await
            .unwrap();
    }
    let (written, duplicates) = ship(&eu, &us).await;
    assert!(
        written > 0 && duplicates == 0,
        "{written} written, {duplicates} duplicates"
    );
    let in_eu = read_all(&eu_client, "orders").await;
    let in_us = read_all(&us_client, "orders").await;
    let values = |m: &BTreeMap<u32, Vec<(u64, Vec<u8>)>>| -> BTreeMap<u32, Vec<Vec<u8>>> {
        m.iter()
            .map(|(p, v)| (*p, v.iter().map(|(_, m)| m.clone()).collect()))
            .collect()
    };
    assert_eq!(
        values(&in_us),
        values(&in_eu),
        "same messages, same order per partition"
    );

    // Everything again: all duplicates, nothing written twice.
    assert_eq!(ship(&eu, &us).await, (0, written));
    assert_eq!(
        values(&read_all(&us_client, "orders").await),
        values(&in_eu)
    );

    // us never reads the batches it mirrored in as its own: shipping back writes nothing.
    assert_eq!(ship(&us, &eu).await, (0, 0));

    // The marks survive the target leader's death: kill -9 every us group's leader once
    // more, resend, still all duplicates.
    let leaders: Vec<u32> = us.groups().await.iter().filter_map(|g| g.leader).collect();
    let victim = leaders[0];
    us.brokers[victim as usize - 1].kill9();
    assert_eq!(ship(&eu, &us).await, (0, written));
    let us_internal = internal(&us).await;
    let mark = us_internal
        .mirror_mark("eu", eu.groups().await[0].id)
        .await
        .unwrap();
    assert!(mark.is_some(), "the target region holds eu's batches");

    // A batch claiming to come from the region it is sent to is refused, as are batches
    // out of seq order and a first batch that does not decode.
    let bad = |region: &str, seq: u64, payload: &'static [u8]| {
        (
            Origin {
                region: region.into(),
                group: 0,
                seq,
                through: seq,
            },
            ShippedBatch {
                topic_id: 1,
                partition: 0,
                seq,
                count: 1,
                payload: bytes::Bytes::from_static(payload),
                ..ShippedBatch::default()
            },
        )
    };
    let bad_marker = {
        let mut marker = Vec::new();
        meridian_proto::record::TxnMarker {
            commit: true,
            coordinator_epoch: 0,
        }
        .encode(&mut marker);
        let (origin, mut batch) = bad("eu", 1 << 40, b"");
        batch.payload = marker.into();
        batch.txn = Some(meridian_proto::mirror::ShippedTxn {
            marker: true,
            producer: meridian_proto::producer::ProducerBatch {
                id: -5,
                epoch: 0,
                first_sequence: 0,
                last_sequence: 0,
            },
        });
        (origin, batch)
    };
    for (batches, says) in [
        (vec![bad("us", 1, b"")], "own region"),
        (
            vec![bad("eu", 1 << 40, b""), bad("eu", 1 << 39, b"")],
            "increasing seq",
        ),
        (vec![bad("eu", 1 << 40, b"\xff\xff")], "does not decode"),
        // A well-formed commit marker whose producer is negative: refused, not written.
        (vec![bad_marker], "negative id"),
    ] {
        let e = us_internal.append_mirrored(&batches).await.unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
}
