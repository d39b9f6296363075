//! MQTT across regions, with real processes: two managed regions (a broker each, MQTT on)
//! linked by real mirrors, Debian's mosquitto clients. What a device publishes in one
//! region reaches subscribers in the other, a retained message too; a persistent session
//! resumes in the other region after its region's broker is killed -9, with every QoS 1
//! and 2 message written for it while it was away, once and in order. Every count is exact.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use meridian_tests::mirror::{MirrorProcess, free_udp_addr};
use meridian_tests::mqtt::{Sub, finish, mosquitto_sub, publish, subscribed, subscriber};
use meridian_tests::platform::{ManagedRegion, managed_regions, meridian_control};
use meridian_tests::{read_all, run, wait_until_held};

const REGIONS: [&str; 2] = ["eu", "us"];

/// The MQTT port of a region's broker.
fn port(region: &ManagedRegion) -> String {
    region.mqtt[0].rsplit_once(':').unwrap().1.to_owned()
}

/// Waits until every broker of `region` reads both MQTT state topics and knows `topics`.
async fn mqtt_ready(region: &ManagedRegion, topics: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for b in &region.brokers {
        let client = b.client().await;
        loop {
            let log = b.log_text();
            let read = ["mqtt-retained", "mqtt-sessions"].iter().all(|t| {
                log.lines()
                    .any(|l| l.contains("reading a state topic") && l.contains(&format!("\"{t}\"")))
            });
            let mut known = true;
            for t in topics {
                known &= client.describe_topic(t).await.is_ok();
            }
            if read && known {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a broker of {} is not ready for MQTT after 60 s; log:\n{log}",
                region.name
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_reach_each_other_across_regions_and_a_session_resumes_in_another_region() {
    let tmp = tempfile::tempdir().unwrap();
    let (cp, mut regions, certs) =
        managed_regions(tmp.path(), &REGIONS, 1, &["--mqtt-listen", "auto"]).await;
    let control = cp.addr.clone();
    // Topics spanning both regions (the default: every region).
    for topic in ["sensors", "devices"] {
        let (code, _, err) = meridian_control(
            &control,
            &[
                "topic",
                "create",
                topic,
                "--partitions",
                "2",
                "--replicas",
                "1",
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let listen = [free_udp_addr(), free_udp_addr()];
    let mut mirrors: Vec<MirrorProcess> = (0..2)
        .map(|a| {
            MirrorProcess::start(
                tmp.path(),
                REGIONS[a],
                &control,
                listen[a],
                &[(REGIONS[1 - a].to_owned(), listen[1 - a])],
                &certs,
                &[],
            )
        })
        .collect();
    for r in &regions {
        mqtt_ready(r, &["sensors", "devices"]).await;
    }
    let (eu, us) = (port(&regions[0]), port(&regions[1]));

    // A device in eu publishes; a subscriber in us receives it all, in order, through the
    // mirror.
    const LIVE: usize = 100;
    let far = subscriber(&us, "mqttv5", 1, "sensors/live/#", LIVE);
    let lines: String = (0..LIVE).map(|i| format!("{i}\n")).collect();
    publish(&eu, "mqttv311", 1, "sensors/live/a", &lines, &[]);
    let got: Vec<String> = finish(far).into_iter().map(|(_, p)| p).collect();
    let want: Vec<String> = (0..LIVE).map(|i| i.to_string()).collect();
    assert_eq!(
        got, want,
        "what eu's device published, at us: all, once, in order"
    );

    // A retained message published in eu is given to a new subscriber in us.
    publish(&eu, "mqttv5", 1, "sensors/state/door", "open\n", &["-r"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args(["-h", "127.0.0.1", "-p", &us, "-V", "mqttv5"])
            .args(["-t", "sensors/state/#", "-v", "-C", "1", "-W", "2"]);
        let (_, out, _) = run(cmd, None);
        if out.lines().any(|l| l == "sensors/state/door open") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retained message never reached us; last: {out:?}"
        );
    }

    // A device with a persistent session subscribes in eu, reads one message and goes.
    let device = |port: &str, count: usize| -> Sub {
        let mut cmd = mosquitto_sub();
        cmd.args(["-h", "127.0.0.1", "-p", port, "-V", "mqttv5"])
            .args(["-i", "device-9", "-c", "-x", "600", "-q", "2"])
            .args(["-t", "devices/#", "-v", "-d"])
            .args(["-C", &count.to_string(), "-W", "120"]);
        subscribed(cmd)
    };
    let first = device(&eu, 1);
    publish(&eu, "mqttv5", 1, "devices/dev/a", "warm-up\n", &[]);
    assert_eq!(
        finish(first),
        vec![("devices/dev/a".to_owned(), "warm-up".to_owned())]
    );
    // Its session record and its acknowledgement of the warm-up reach us: us's copy of
    // `devices` holds the warm-up, and the session's commits there are past it.
    let us_client = regions[1].client().await;
    let group = format!(
        "mqtt-session.{}",
        "device-9"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    wait_until_held(&us_client, "devices", 1, Duration::from_secs(30)).await;
    let held: BTreeMap<u32, usize> = read_all(&us_client, "devices")
        .await
        .into_iter()
        .map(|(p, m)| (p, m.len()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut past = true;
        let mut seen = Vec::new();
        for p in 0..2u32 {
            let want = held.get(&p).copied().unwrap_or(0) as u64;
            let committed = us_client.committed_offset(&group, "devices", p).await;
            past &= matches!(committed, Ok(Some(o)) if o >= want);
            seen.push((want, committed));
        }
        let records = read_all(&us_client, "mqtt-sessions").await;
        let recorded = records
            .values()
            .flatten()
            .any(|(_, v)| String::from_utf8_lossy(v).contains("devices/#"));
        if past && recorded {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session's record ({recorded}) or commits (held, committed: {seen:?}) never reached us"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // While it is away, QoS 1 and QoS 2 messages for it, acknowledged in eu and mirrored.
    const N: usize = 200;
    let lines: String = (0..N).map(|i| format!("{i}\n")).collect();
    publish(&eu, "mqttv5", 1, "devices/dev/a", &lines, &[]);
    publish(&eu, "mqttv5", 2, "devices/dev/b", &lines, &[]);
    wait_until_held(
        &us_client,
        "devices",
        1 + 2 * N as u64,
        Duration::from_secs(30),
    )
    .await;

    // eu's broker and mirror die; the device comes back in us.
    regions[0].brokers[0].kill9();
    mirrors[0].kill9();
    let back = device(&us, 2 * N);
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| finish(back)));
    let got = got.unwrap_or_else(|e| {
        let log = regions[1].brokers[0].log_text();
        let mqtt: Vec<&str> = log.lines().filter(|l| l.contains("mqtt")).collect();
        eprintln!("us's broker on MQTT:\n{}", mqtt.join("\n"));
        std::panic::resume_unwind(e)
    });
    let mut by_topic: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (t, p) in got {
        by_topic
            .entry(t)
            .or_default()
            .push(p.parse().unwrap_or(usize::MAX));
    }
    let want: Vec<usize> = (0..N).collect();
    assert_eq!(
        by_topic.get("devices/dev/a"),
        Some(&want),
        "QoS 1 in us: all, once, in order"
    );
    assert_eq!(
        by_topic.get("devices/dev/b"),
        Some(&want),
        "QoS 2 in us: all, once, in order"
    );
    mirrors[1].terminate();
}
