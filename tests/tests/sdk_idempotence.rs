//! The native data path exactly once: the SDK's idempotent producer (the default) across
//! a leader killed with -9 and a leader stalled with SIGSTOP, and the gRPC API's producer
//! field on its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_client::{ProducerConfig, Record};
use meridian_proto::v1;
use meridian_tests::{BrokerProcess, Region};

/// A 3-message batch of topic "t" partition 0 from producer `id`, `epoch`, starting at
/// sequence `first`; values "e{epoch}-s{sequence}".
fn idempotent_request(id: i64, epoch: i32, first: i32) -> v1::ProduceRequest {
    v1::ProduceRequest {
        topic: "t".into(),
        partition: 0,
        messages: (first..first + 3)
            .map(|s| v1::Message {
                value: format!("e{epoch}-s{s}").into(),
                ..v1::Message::default()
            })
            .collect(),
        acks: 0,
        epoch: 0,
        producer: Some(v1::ProducerSequence {
            id,
            epoch,
            first_sequence: first,
        }),
        transactional: false,
        transactional_id: String::new(),
        deliver_at_ms: 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_produce_sent_twice_with_its_producer_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(tmp.path(), &[]).await.unwrap();
    let client = broker.client().await;
    client.create_topic("t", 1).await.unwrap();
    let mut raw = v1::broker_client::BrokerClient::connect(format!("http://{}", broker.addr))
        .await
        .unwrap();
    let id = (1 << 62) + 12_345;

    let first = raw
        .produce(idempotent_request(id, 0, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.base_offset, first.duplicate), (0, false));
    let again = raw
        .produce(idempotent_request(id, 0, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.base_offset, again.duplicate),
        (0, true),
        "the same request again is answered with its first offset"
    );
    let next = raw
        .produce(idempotent_request(id, 0, 3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((next.base_offset, next.duplicate), (3, false));

    // A gap is refused, as OutOfRange with its reason (never FailedPrecondition, which
    // clients take for "not leader").
    let gap = raw
        .produce(idempotent_request(id, 0, 10))
        .await
        .unwrap_err();
    assert_eq!(gap.code(), tonic::Code::OutOfRange, "{gap:?}");
    assert_eq!(
        gap.metadata().get("x-meridian-sequence").unwrap(),
        "out-of-order"
    );
    // A new epoch starts at 0 and fences the older one.
    let bumped = raw
        .produce(idempotent_request(id, 1, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((bumped.base_offset, bumped.duplicate), (6, false));
    let fenced = raw.produce(idempotent_request(id, 0, 6)).await.unwrap_err();
    assert_eq!(fenced.code(), tonic::Code::OutOfRange, "{fenced:?}");
    assert_eq!(
        fenced.metadata().get("x-meridian-sequence").unwrap(),
        "fenced"
    );
    // Values a producer cannot have.
    let bad = raw
        .produce(idempotent_request(id, 70_000, 0))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

    let stored: Vec<String> = meridian_tests::read_all(&client, "t").await[&0]
        .iter()
        .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        .collect();
    let expected: Vec<String> = ["e0-s0", "e0-s1", "e0-s2", "e0-s3", "e0-s4", "e0-s5"]
        .into_iter()
        .chain(["e1-s0", "e1-s1", "e1-s2"])
        .map(str::to_owned)
        .collect();
    assert_eq!(stored, expected, "each batch stored once, in order");
}

const TOPIC: &str = "exact";
const PARTITIONS: u32 = 3;

/// What the producer task saw: acknowledged (partition, offset, value) and failures.
#[derive(Default)]
struct Outcome {
    acked: Vec<(u32, u64, String)>,
    failed: Vec<String>,
}

impl Outcome {
    fn acked_on(&self, partition: u32) -> usize {
        self.acked.iter().filter(|(p, ..)| *p == partition).count()
    }
}

/// Waits until `done` holds, failing with `what` after `limit`.
async fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_producer_stores_every_record_once_across_a_killed_and_a_stalled_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let mut region = Region::start(tmp.path(), 3, &["--log-groups", "3"])
        .await
        .unwrap();
    let client = region.client().await;
    // Sent to at once: a partition leader that has not applied the catalog yet answers
    // "unknown topic", which the SDK resends for a few seconds (nothing fails for it).
    client.create_topic(TOPIC, PARTITIONS).await.unwrap();

    // One idempotent producer (the default), acks=all, at a steady pace; each record's value
    // is its partition and its sequence there, and every acknowledgment is kept.
    let outcome: Arc<Mutex<Outcome>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender =
        {
            let producer = client.producer(ProducerConfig {
                acks: v1::Acks::All,
                linger: Duration::from_millis(2),
                ..ProducerConfig::default()
            });
            let outcome = outcome.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut next = [0u32; PARTITIONS as usize];
                let mut waits = Vec::new();
                let mut n = 0u32;
                while n < 5_000 || !stop.load(Ordering::SeqCst) {
                    let p = n % PARTITIONS;
                    let value = format!("p{p}-s{}", next[p as usize]);
                    next[p as usize] += 1;
                    let ack = producer
                        .send(Record::new(TOPIC, value.clone()).partition(p))
                        .await;
                    let outcome = outcome.clone();
                    waits.push(tokio::spawn(async move {
                        match ack.await {
                            Ok(meta) => outcome.lock().unwrap().acked.push((
                                meta.partition,
                                meta.offset,
                                value,
                            )),
                            Err(e) => outcome.lock().unwrap().failed.push(format!("{value}: {e}")),
                        }
                    }));
                    n += 1;
                    if n.is_multiple_of(10) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                producer.flush().await;
                for w in waits {
                    w.await.unwrap();
                }
                n
            })
        };
    let acked = |outcome: &Arc<Mutex<Outcome>>| outcome.lock().unwrap().acked.len();

    // (a) The leader of partition 0 is killed with -9 while batches are in flight, then
    // restarted.
    wait_for("1,000 acknowledgments", Duration::from_secs(120), || {
        acked(&outcome) >= 1_000
    })
    .await;
    let victim = region.leader_of(TOPIC, 0).await.expect("a leader");
    region.brokers[victim].kill9();
    let killed = Instant::now();
    let before = outcome.lock().unwrap().acked_on(0);
    wait_for(
        "partition 0 acknowledged again after its leader was killed",
        Duration::from_secs(120),
        || outcome.lock().unwrap().acked_on(0) >= before + 200,
    )
    .await;
    let after_kill = killed.elapsed();
    region.brokers[victim].restart().await.unwrap();

    // (b) The leader of partition 1 is stalled with SIGSTOP: the batches it holds are sent
    // again to the new leader, then it resumes.
    let before = acked(&outcome);
    wait_for("500 more acknowledgments", Duration::from_secs(120), || {
        acked(&outcome) >= before + 500
    })
    .await;
    let stalled = region.leader_of(TOPIC, 1).await.expect("a leader");
    region.brokers[stalled].stop();
    let stopped = Instant::now();
    let before = outcome.lock().unwrap().acked_on(1);
    wait_for(
        "partition 1 acknowledged again while its leader is stopped",
        Duration::from_secs(120),
        || outcome.lock().unwrap().acked_on(1) >= before + 200,
    )
    .await;
    let after_stop = stopped.elapsed();
    region.brokers[stalled].signal(libc::SIGCONT);

    let before = acked(&outcome);
    wait_for("500 more acknowledgments", Duration::from_secs(120), || {
        acked(&outcome) >= before + 500
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let sent = sender.await.unwrap();
    let outcome = std::mem::take(&mut *outcome.lock().unwrap());
    assert!(
        outcome.failed.is_empty(),
        "{} of {sent} sends failed, first: {:?}",
        outcome.failed.len(),
        outcome.failed.first()
    );
    assert_eq!(outcome.acked.len(), sent as usize);

    // Every record is stored exactly once, each partition in the order it was sent, each
    // at the offset its acknowledgment named.
    let stored: BTreeMap<u32, Vec<(u64, String)>> = meridian_tests::read_all(&client, TOPIC)
        .await
        .into_iter()
        .map(|(p, m)| {
            let m = m
                .into_iter()
                .map(|(o, v)| (o, String::from_utf8(v).unwrap()))
                .collect();
            (p, m)
        })
        .collect();
    let mut total = 0;
    for p in 0..PARTITIONS {
        let messages = stored.get(&p).map(Vec::as_slice).unwrap_or_default();
        let sent_here = (0..sent).filter(|n| n % PARTITIONS == p).count();
        let expected: Vec<String> = (0..sent_here).map(|s| format!("p{p}-s{s}")).collect();
        let values: Vec<String> = messages.iter().map(|(_, v)| v.clone()).collect();
        if values != expected {
            let duplicates = values.len() as i64 - expected.len() as i64;
            let first_off = values
                .iter()
                .zip(&expected)
                .position(|(a, b)| a != b)
                .unwrap_or(values.len().min(expected.len()));
            panic!(
                "partition {p}: {} stored for {} sent ({duplicates:+}); first difference at {first_off}: {:?} vs {:?}",
                values.len(),
                expected.len(),
                values.get(first_off),
                expected.get(first_off)
            );
        }
        total += values.len();
    }
    for (p, offset, value) in &outcome.acked {
        let at = stored
            .get(p)
            .and_then(|m| m.iter().find(|(o, _)| o == offset))
            .map(|(_, v)| v);
        assert_eq!(at, Some(value), "{value} was acknowledged at {p}/{offset}");
    }
    assert_eq!(total, sent as usize);
    // Resends the brokers recognized (since their last start), for the record.
    let mut duplicates = 0.0;
    for b in &region.brokers {
        let metrics = meridian_tests::http_get(b.metrics, "/metrics")
            .await
            .unwrap_or_default();
        duplicates += metrics
            .lines()
            .filter(|l| l.starts_with("meridian_produce_duplicate_batches_total"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    eprintln!(
        "SDK idempotent producer: {sent} sent, {} acknowledged, {total} stored once, in order ({duplicates} resent batches answered as duplicates); partition 0 acknowledged again {:.1} s after its leader's kill -9, partition 1 {:.1} s after its leader's SIGSTOP",
        outcome.acked.len(),
        after_kill.as_secs_f64(),
        after_stop.as_secs_f64()
    );
}
