//! A whole region killed under load, with real processes in three regions linked by real
//! mirrors: the producer and the consumer group (both routed to the killed region) move to
//! another region through the client; nothing acknowledged and mirrored is lost; the
//! consumer sees no message twice; the control plane marks the region down and, when its
//! brokers return, up again; the region catches up through the mirrors, the clients move
//! back, and in the end every acknowledged message was consumed exactly once. A consumer of
//! the same group started later in a third region resumes from the positions its group
//! committed elsewhere: nothing again, nothing missed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_client::{Client, ConsumerConfig, ProducerConfig, Record, StartFrom};
use meridian_proto::v1;
use meridian_tests::mirror::{MirrorProcess, free_udp_addr};
use meridian_tests::platform::{managed_regions, meridian_control};
use meridian_tests::read_all;

const REGIONS: [&str; 3] = ["ap", "eu", "us"];
const TOPIC: &str = "orders";
const GROUP: &str = "billing";

async fn region_state(control: &str, name: &str) -> String {
    let mut c = meridian_client::connect_control(control).await.unwrap();
    c.list_regions(v1::ListRegionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .regions
        .into_iter()
        .find(|r| r.name == name)
        .map(|r| r.state)
        .unwrap_or_default()
}

async fn wait_region(control: &str, name: &str, state: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while region_state(control, name).await != state {
        assert!(
            Instant::now() < deadline,
            "region {name} is not {state} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Values held by a region's topic.
async fn held(client: &Client) -> Vec<String> {
    read_all(client, TOPIC)
        .await
        .into_values()
        .flatten()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_region_fails_over_and_rejoins_with_nothing_lost_or_doubled() {
    let tmp = tempfile::tempdir().unwrap();
    let (cp, mut regions, certs) = managed_regions(tmp.path(), &REGIONS, 1, &[]).await;
    let control = cp.addr.clone();
    let (code, _, err) = meridian_control(
        &control,
        &[
            "topic",
            "create",
            TOPIC,
            "--partitions",
            "2",
            "--replicas",
            "1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let listen: Vec<SocketAddr> = REGIONS.iter().map(|_| free_udp_addr()).collect();
    let mut mirrors: Vec<MirrorProcess> = (0..3)
        .map(|a| {
            let peers: Vec<(String, SocketAddr)> = (0..3)
                .filter(|b| *b != a)
                .map(|b| (REGIONS[b].to_owned(), listen[b]))
                .collect();
            MirrorProcess::start(
                tmp.path(),
                REGIONS[a],
                &control,
                listen[a],
                &peers,
                &certs,
                &["--idle-timeout-ms", "3000", "--keep-alive-ms", "500"],
            )
        })
        .collect();

    // A producer and a consumer group, both routed to us.
    let (producer_client, route) = Client::connect_routed(&control, TOPIC, Some("us"))
        .await
        .unwrap();
    assert_eq!(route.region, "us");
    let acked: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producing = {
        let (acked, stop, client) = (acked.clone(), stop.clone(), producer_client.clone());
        tokio::spawn(async move {
            let producer = client.producer(ProducerConfig::default());
            let mut i = 0u64;
            let mut failures = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let value = format!("m-{i}");
                i += 1;
                // A failed send is not acknowledged; the next one carries a new value, so a
                // message the dead region stored without answering is never sent twice.
                match producer
                    .send(Record::new(TOPIC, value.clone()).key(format!("k{}", i % 5)))
                    .await
                    .await
                {
                    Ok(_) => {
                        let region = client.region().unwrap_or_default();
                        acked.lock().unwrap().insert(value, region);
                    }
                    Err(_) => failures += 1,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            failures
        })
    };
    let (consumer_client, _) = Client::connect_routed(&control, TOPIC, Some("us"))
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let consuming = {
        let (seen, stop, client) = (seen.clone(), stop.clone(), consumer_client.clone());
        tokio::spawn(async move {
            let mut consumer = client.consumer(ConsumerConfig {
                group: Some(GROUP.into()),
                start: StartFrom::Beginning,
                ..ConsumerConfig::default()
            });
            consumer.subscribe(TOPIC).await.unwrap();
            let mut errors = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match consumer.poll(Duration::from_millis(300)).await {
                    Ok(batch) => {
                        seen.lock().unwrap().extend(
                            batch
                                .into_iter()
                                .map(|m| String::from_utf8(m.value.unwrap().to_vec()).unwrap()),
                        );
                        if consumer.commit().await.is_err() {
                            errors += 1;
                        }
                    }
                    Err(_) => {
                        errors += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            errors
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = acked.lock().unwrap().len();
    assert!(
        before_kill > 20,
        "only {before_kill} messages acknowledged in us"
    );

    // Kill the whole us region: its broker and its mirror.
    let killed_at = Instant::now();
    regions[2].brokers[0].kill9();
    mirrors[2].kill9();
    // The clients move on: messages are acknowledged in another region.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let elsewhere = acked
            .lock()
            .unwrap()
            .values()
            .filter(|r| *r != "us")
            .count();
        if elsewhere >= 20 && producer_client.region().as_deref() != Some("us") {
            break;
        }
        assert!(Instant::now() < deadline, "the producer did not fail over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rto = killed_at.elapsed();
    eprintln!("producer acknowledged again elsewhere {rto:?} after the kill");
    wait_region(&control, "us", "down", Duration::from_secs(20)).await;
    assert_ne!(consumer_client.region().as_deref(), Some("us"));
    // Everything the surviving regions hold reaches the consumer, once.
    let survivor = regions[1].client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let in_eu: HashSet<String> = held(&survivor).await.into_iter().collect();
        let got: HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
        if in_eu.is_subset(&got) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer misses {} messages eu holds",
            in_eu.difference(&got).count()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    {
        let seen = seen.lock().unwrap();
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "the consumer saw a message twice");
    }

    // us returns: brokers and mirror restart, the region rejoins by itself, catches up,
    // and the clients move back.
    regions[2].brokers[0].restart().await.unwrap();
    mirrors[2].spawn();
    wait_region(&control, "us", "up", Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while producer_client.region().as_deref() != Some("us")
        || consumer_client.region().as_deref() != Some("us")
    {
        assert!(
            Instant::now() < deadline,
            "the clients did not move back to us"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let failures = producing.await.unwrap();
    consuming.await.unwrap();
    let acked: HashMap<String, String> = acked.lock().unwrap().clone();
    eprintln!(
        "{} acknowledged ({failures} sends failed during the failover)",
        acked.len()
    );

    // Quiescence: every region holds every acknowledged message (us's unmirrored tail
    // crossed when it returned), and the consumer saw each exactly once.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (r, region) in regions.iter().enumerate() {
        let client = region.client().await;
        loop {
            let values = held(&client).await;
            let set: HashSet<&String> = values.iter().collect();
            assert_eq!(set.len(), values.len(), "{} holds duplicates", REGIONS[r]);
            if acked.keys().all(|v| set.contains(v)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} lacks {} acknowledged messages",
                REGIONS[r],
                acked.keys().filter(|v| !set.contains(v)).count()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    // The consumer stopped before the last messages crossed; a consumer of the same group
    // started in ap resumes from the positions committed in us and eu, shipped to ap: it
    // gets what the first one had not seen, and nothing it had.
    let first: Vec<String> = seen.lock().unwrap().clone();
    let first_set: HashSet<&String> = first.iter().collect();
    assert_eq!(
        first_set.len(),
        first.len(),
        "the consumer saw a message twice"
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // the last commits cross
    let (ap_client, _) = Client::connect_routed(&control, TOPIC, Some("ap"))
        .await
        .unwrap();
    let mut resumed = ap_client.consumer(ConsumerConfig {
        group: Some(GROUP.into()),
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    });
    resumed.subscribe(TOPIC).await.unwrap();
    let mut rest = Vec::new();
    // It is a member of the group in ap: it gets the partitions once any member the
    // first consumer left there (while its client was in ap) lapses, within a session.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let batch = resumed.poll(Duration::from_secs(2)).await.unwrap();
        if batch.is_empty() && resumed.positions().next().is_some() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer in ap got no partitions"
        );
        rest.extend(
            batch
                .into_iter()
                .map(|m| String::from_utf8(m.value.unwrap().to_vec()).unwrap()),
        );
    }
    for v in &rest {
        assert!(!first_set.contains(v), "{v} was consumed again in ap");
    }
    let all: HashSet<&String> = first.iter().chain(rest.iter()).collect();
    assert_eq!(all.len(), first.len() + rest.len());
    let missing: Vec<&String> = acked.keys().filter(|v| !all.contains(v)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages never consumed, e.g. {:?}",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    for m in &mut mirrors {
        assert!(m.terminate(), "mirror {} stops cleanly", m.region);
    }
}
