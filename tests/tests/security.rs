//! Client listeners over TLS with authentication (issue 17). Kafka: kcat and
//! confluent-kafka authenticate with SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN against users
//! set with `meridian user` (only the SCRAM credential travels), a wrong password and an
//! unknown user are refused, nothing but ApiVersions and SASL is served before
//! authenticating, and users set at one broker authenticate at every broker of the region
//! (the credentials topic). MQTT: mosquitto over TLS with a user name and password, the
//! same users; anonymous, wrong-password and plaintext connections refused.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use meridian_tests::{BrokerProcess, Region, binary, free_addr, meridian, python_output, run};

/// Issues a CA and a server certificate `name` for 127.0.0.1 in `dir/certs` with
/// `meridian certs`: the certificates directory.
fn certificates(dir: &Path, name: &str) -> std::path::PathBuf {
    let certs = dir.join("certs");
    let mut c = Command::new(binary("meridian"));
    c.args(["certs", "--dir"]).arg(&certs).args([
        "--server",
        name,
        "--names",
        "127.0.0.1,localhost",
    ]);
    let (code, _, err) = run(c, None);
    assert_eq!(code, 0, "meridian certs: {err}");
    certs
}

/// A three-broker region whose Kafka listeners speak TLS and ask for SASL, with the CA's
/// path.
async fn secure_region(dir: &Path) -> (Region, std::path::PathBuf) {
    let certs = certificates(dir, "kafka");
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\ntls_cert = {:?}\ntls_key = {:?}\nsasl_mechanisms = [\"SCRAM-SHA-512\", \"SCRAM-SHA-256\", \"PLAIN\"]\n",
            certs.join("kafka.pem"),
            certs.join("kafka.key")
        ),
    )
    .unwrap();
    let region = Region::start_with_kafka(dir, 3, &["--config", config.to_str().unwrap()])
        .await
        .unwrap();
    (region, certs.join("ca.pem"))
}

fn kcat(
    kafka: SocketAddr,
    ca: &Path,
    auth: &[&str],
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (i32, String, String) {
    let mut cmd = Command::new("kcat");
    cmd.args(["-b", &kafka.to_string()])
        .arg("-X")
        .arg(format!("ssl.ca.location={}", ca.display()))
        .args(auth.iter().flat_map(|a| ["-X", a]))
        .args(args);
    run(cmd, stdin)
}

const ALICE: [&str; 4] = [
    "security.protocol=SASL_SSL",
    "sasl.mechanisms=SCRAM-SHA-512",
    "sasl.username=alice",
    "sasl.password=alice-secret",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_clients_authenticate_with_scram_over_tls_and_others_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (region, ca) = secure_region(tmp.path()).await;
    let client = region.client().await;
    client.create_topic("secure", 3).await.unwrap();
    client.create_topic("scram", 2).await.unwrap();

    // The password goes in on standard input, never as an argument.
    let (code, _, err) = meridian(
        region.brokers[0].addr,
        &["user", "set", "alice", "--password-stdin"],
        Some("alice-secret\n"),
    );
    assert_eq!(code, 0, "meridian user set: {err}");
    let (code, out, err) = meridian(region.brokers[1].addr, &["--json", "user", "list"], None);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("\"alice\"") && out.contains("SCRAM-SHA-512"),
        "{out}"
    );
    let (code, _, err) = meridian(region.brokers[0].addr, &["user", "set", "eve"], None);
    assert_ne!(code, 0);
    assert!(
        err.contains("--password-stdin"),
        "a missing password is explained: {err}"
    );

    // kcat at another broker than the one the user was set at: 1,000 records each way.
    let kafka = region.kafka[2];
    let lines: String = (0..1000).map(|i| format!("v{i}\n")).collect();
    let (code, _, err) = kcat(
        kafka,
        &ca,
        &ALICE,
        &["-P", "-t", "secure", "-X", "acks=all"],
        Some(lines.as_bytes()),
    );
    assert_eq!(code, 0, "kcat -P over SASL_SSL: {err}");
    let (code, out, err) = kcat(
        kafka,
        &ca,
        &ALICE,
        &["-C", "-t", "secure", "-o", "beginning", "-e", "-q"],
        None,
    );
    assert_eq!(code, 0, "kcat -C over SASL_SSL: {err}");
    let mut got: Vec<&str> = out.lines().collect();
    assert_eq!(got.len(), 1000, "every record read back once");
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), 1000, "no record twice");

    // A wrong password: refused, and counted.
    let wrong = [
        "security.protocol=SASL_SSL",
        "sasl.mechanisms=SCRAM-SHA-512",
        "sasl.username=alice",
        "sasl.password=nope",
    ];
    let (code, _, err) = kcat(kafka, &ca, &wrong, &["-L", "-m", "5"], None);
    assert_ne!(code, 0, "a wrong password lists nothing");
    assert!(
        err.contains("Authentication failed") || err.contains("uthenticat"),
        "{err}"
    );
    let failures: f64 = {
        let mut n = 0.0;
        for b in &region.brokers {
            n += b
                .metric("meridian_kafka_authentication_failures_total")
                .await;
        }
        n
    };
    assert!(failures >= 1.0, "authentication failures are counted");

    // TLS without SASL: nothing is served before authenticating.
    let (code, out, _) = kcat(
        kafka,
        &ca,
        &["security.protocol=SSL"],
        &["-L", "-m", "5"],
        None,
    );
    assert!(
        code != 0 || !out.contains("secure"),
        "metadata without authenticating: {out}"
    );
    // Plaintext to a TLS listener: no metadata either.
    let mut plain = Command::new("kcat");
    plain.args(["-b", &kafka.to_string(), "-L", "-m", "5"]);
    let (code, out, _) = run(plain, None);
    assert!(
        code != 0 || !out.contains("secure"),
        "metadata over plaintext: {out}"
    );

    // confluent-kafka: describe and alter credentials, produce and consume as a user it
    // made, PLAIN, refusals, a deleted credential.
    let bootstrap: Vec<String> = region.kafka.iter().map(|a| a.to_string()).collect();
    python_output(
        "confluent_scram.py",
        vec![
            bootstrap.join(","),
            ca.display().to_string(),
            "scram".into(),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_clients_connect_over_tls_with_a_password_and_others_are_refused() {
    use meridian_tests::mqtt::{finish, mosquitto_sub, publish, subscribed};
    let tmp = tempfile::tempdir().unwrap();
    let certs = certificates(tmp.path(), "mqtt");
    let ca = certs.join("ca.pem").display().to_string();
    let config = tmp.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[mqtt]\nallow_anonymous = false\ntls_cert = {:?}\ntls_key = {:?}\n",
            certs.join("mqtt.pem"),
            certs.join("mqtt.key")
        ),
    )
    .unwrap();
    let (mqtt, kafka) = (free_addr(), free_addr().to_string());
    let mqtt_flag = mqtt.to_string();
    let broker = BrokerProcess::start(
        &tmp.path().join("broker"),
        &[
            "--mqtt-listen",
            &mqtt_flag,
            "--kafka-listen",
            &kafka,
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    broker
        .client()
        .await
        .create_topic("sensors", 2)
        .await
        .unwrap();
    let (code, _, err) = meridian(
        broker.addr,
        &["user", "set", "device", "--password-stdin"],
        Some("device-pw\n"),
    );
    assert_eq!(code, 0, "meridian user set: {err}");
    let port = mqtt.port().to_string();
    let login = ["--cafile", ca.as_str(), "-u", "device", "-P", "device-pw"];

    let mut sub = mosquitto_sub();
    sub.args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5"])
        .args(login)
        .args([
            "-q",
            "1",
            "-t",
            "sensors/#",
            "-v",
            "-d",
            "-C",
            "200",
            "-W",
            "60",
        ]);
    let sub = subscribed(sub);
    let lines: String = (0..200).map(|i| format!("r{i}\n")).collect();
    publish(&port, "mqttv5", 1, "sensors/t1", &lines, &login);
    let got = finish(sub);
    assert_eq!(got.len(), 200, "every message delivered once over TLS");
    let distinct: std::collections::HashSet<_> = got.iter().map(|(_, p)| p.clone()).collect();
    assert_eq!(distinct.len(), 200);

    // Refused: a wrong password, no user name, a name that does not exist, plaintext.
    let refused = |extra: &[&str]| {
        let mut cmd = Command::new("mosquitto_pub");
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-V", "mqttv5", "-q", "1"])
            .args(["-t", "sensors/t1", "-m", "x"])
            .args(extra);
        run(cmd, None)
    };
    for (what, extra) in [
        (
            "a wrong password",
            vec!["--cafile", ca.as_str(), "-u", "device", "-P", "nope"],
        ),
        ("no user name", vec!["--cafile", ca.as_str()]),
        (
            "an unknown user",
            vec!["--cafile", ca.as_str(), "-u", "nobody", "-P", "device-pw"],
        ),
        ("plaintext", vec!["-u", "device", "-P", "device-pw"]),
    ] {
        let (code, out, err) = refused(&extra);
        assert_ne!(code, 0, "{what} is refused: {out} {err}");
    }
    assert!(
        broker
            .metric("meridian_mqtt_authentication_failures_total")
            .await
            >= 3.0,
        "refusals are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acls_decide_what_each_user_may_do_over_kafka_and_mqtt_and_refusals_are_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("broker.toml");
    std::fs::write(
        &config,
        "[kafka]\nsasl_mechanisms = [\"SCRAM-SHA-512\"]\n[mqtt]\nallow_anonymous = false\n[auth]\nacls_enabled = true\nsuper_users = [\"User:admin\"]\n",
    )
    .unwrap();
    let (mqtt, kafka) = (free_addr(), free_addr());
    let (mqtt_flag, kafka_flag) = (mqtt.to_string(), kafka.to_string());
    let broker = BrokerProcess::start(
        &tmp.path().join("broker"),
        &[
            "--mqtt-listen",
            &mqtt_flag,
            "--kafka-listen",
            &kafka_flag,
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .await
    .unwrap();
    let client = broker.client().await;
    for t in ["allowed", "readonly", "denied"] {
        client.create_topic(t, 2).await.unwrap();
    }
    for (user, password) in [("admin", "admin-pw\n"), ("alice", "alice-pw\n")] {
        let (code, _, err) = meridian(
            broker.addr,
            &["user", "set", user, "--password-stdin"],
            Some(password),
        );
        assert_eq!(code, 0, "meridian user set {user}: {err}");
    }
    python_output("confluent_acls.py", vec![kafka_flag.clone()]).await;

    // MQTT: the same ACLs. alice may read "allow*" topics, not "denied".
    let port = mqtt.port().to_string();
    let sub = |filter: &str| {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "-u",
            "alice",
            "-P",
            "alice-pw",
        ])
        .args(["-q", "1", "-t", filter, "-d", "-C", "1", "-W", "3"]);
        run(cmd, None)
    };
    let (_, out, err) = sub("denied/#");
    assert!(
        out.contains("denied") || err.contains("denied") || out.contains(": 135"),
        "a subscribe alice may not make is refused (SUBACK 135, not authorized): {out} {err}"
    );
    let (_, out, err) = sub("allowed/#");
    assert!(
        out.contains("Subscribed (mid: 1): 1") && !out.contains("135"),
        "alice's subscribe to a topic she may read is granted: {out} {err}"
    );

    // Every refusal is audited, naming who, what and on what.
    let log = broker.log_text();
    assert!(
        log.lines().any(|l| l.contains("audit")
            && l.contains("refused")
            && l.contains("User:alice")
            && l.contains("readonly")),
        "the refused produce is in the audit log"
    );
    assert!(broker.metric("meridian_authorization_denied_total").await >= 4.0);
}
