//! Client listeners over TLS with authentication (issue 17). Kafka: kcat and
//! confluent-kafka authenticate with SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN against users
//! set with `meridian user` (only the SCRAM credential travels), a wrong password and an
//! unknown user are refused, nothing but ApiVersions and SASL is served before
//! authenticating, and users set at one broker authenticate at every broker of the region
//! (the credentials topic). MQTT: mosquitto over TLS with a user name and password, the
//! same users; anonymous, wrong-password and plaintext connections refused. The
//! replication transport: mutual TLS among the region's brokers only.

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
        out.contains("Subscribed (mid: 1): 1") && !out.contains("): 135"),
        "alice's subscribe to a topic she may read is granted: {out} {err}"
    );

    // `meridian acl`: the same bindings. What confluent_acls.py left is listed; one added
    // lets alice subscribe where she could not, and deleting it takes that back.
    let (code, out, err) = meridian(broker.addr, &["--json", "acl", "list"], None);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["principal"] == "User:alice"
                && b["operation"] == "read"
                && b["pattern"] == "prefixed"
                && b["name"] == "allow"),
        "{out}"
    );
    let grant = [
        "acl",
        "add",
        "--principal",
        "User:alice",
        "--operation",
        "read",
        "--topic",
        "denied",
    ];
    let (code, _, err) = meridian(broker.addr, &grant, None);
    assert_eq!(code, 0, "{err}");
    let (_, out, err) = sub("denied/#");
    assert!(
        out.contains("Subscribed (mid: 1): 1"),
        "granted by `meridian acl add`: {out} {err}"
    );
    let mut revoke = grant;
    revoke[1] = "delete";
    let (code, _, err) = meridian(broker.addr, &revoke, None);
    assert_eq!(code, 0, "{err}");
    let (_, out, err) = sub("denied/#");
    assert!(
        out.contains(": 135"),
        "taken back by `meridian acl delete`: {out} {err}"
    );
    let (code, _, err) = meridian(
        broker.addr,
        &[
            "acl",
            "add",
            "--principal",
            "alice",
            "--operation",
            "read",
            "--topic",
            "x",
        ],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("is not User:NAME"), "{err}");

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

/// What the replication transport at `addr` does with a TLS client presenting `identity`
/// (certificate and key; none: no client certificate) that trusts `ca`: whether it is
/// served (an HTTP/2 preface answered with the server's SETTINGS frame) or refused.
async fn raft_serves(addr: SocketAddr, ca: &Path, identity: Option<(&Path, &Path)>) -> bool {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("broker.r.meridian").unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    // TLS 1.3: a refused client certificate shows after the client's side of the
    // handshake, as an alert on the first read.
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return false;
    };
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    if tls.write_all(preface).await.is_err() {
        return false;
    }
    let mut header = [0u8; 9];
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tls.read_exact(&mut header),
    )
    .await
    .expect("the replication transport answers within 10 s");
    // A SETTINGS frame (type 4) from the server: served.
    read.is_ok() && header[3] == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replication_transport_takes_only_the_regions_brokers() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    // One CA signs the brokers' certificate of region r and a mirror's; another CA signs
    // a broker certificate for the same name.
    let mut c = Command::new(binary("meridian"));
    c.args(["certs", "--dir"])
        .arg(&certs)
        .args(["--regions", "r", "--brokers", "r"]);
    let (code, _, err) = run(c, None);
    assert_eq!(code, 0, "meridian certs: {err}");
    let other = tmp.path().join("other-ca");
    meridian_security::certs::issue_brokers(&other, &["r".to_owned()]).unwrap();
    let ca = certs.join("ca.pem");
    let (cert, key) = (certs.join("broker-r.pem"), certs.join("broker-r.key"));
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let flags = [
        "--region".to_owned(),
        "r".to_owned(),
        "--raft-tls-ca".to_owned(),
        path(&ca),
        "--raft-tls-cert".to_owned(),
        path(&cert),
        "--raft-tls-key".to_owned(),
        path(&key),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let region = Region::start(&tmp.path().join("region"), 3, &flags)
        .await
        .unwrap();

    // Replication runs over it: 300 records acknowledged by the quorum, all read back.
    let client = region.client().await;
    client.create_topic("t", 3).await.unwrap();
    let producer = client.producer(meridian_client::ProducerConfig::default());
    let mut sent = Vec::new();
    for i in 0..300u32 {
        let record = meridian_client::Record::new("t", format!("m{i}")).partition(i % 3);
        sent.push(producer.send(record).await);
    }
    for s in sent {
        s.await.expect("acknowledged over the TLS transport");
    }
    let stored = meridian_tests::read_all(&client, "t").await;
    assert_eq!(stored.values().map(Vec::len).sum::<usize>(), 300);

    // Anyone else who reaches the port: refused by the handshake.
    let raft = region.raft[0];
    assert!(
        raft_serves(raft, &ca, Some((&cert, &key))).await,
        "a broker is served"
    );
    assert!(!raft_serves(raft, &ca, None).await, "no client certificate");
    let (mirror_cert, mirror_key) = (certs.join("r.pem"), certs.join("r.key"));
    assert!(
        !raft_serves(raft, &ca, Some((&mirror_cert, &mirror_key))).await,
        "the region's mirror certificate (same CA, another name)"
    );
    let (other_cert, other_key) = (other.join("broker-r.pem"), other.join("broker-r.key"));
    assert!(
        !raft_serves(raft, &ca, Some((&other_cert, &other_key))).await,
        "a broker certificate of another CA"
    );
    let failures = region.brokers[0]
        .metric("meridian_grpc_tls_handshake_failures_total")
        .await;
    assert!(failures >= 3.0, "{failures} handshake failures counted");
    let refused_by_name = region.brokers[0]
        .metric("meridian_tls_peer_name_refused_total")
        .await;
    assert_eq!(
        refused_by_name, 1.0,
        "the mirror's certificate, by its name"
    );
}

/// `meridian token create PRINCIPAL` into `tokens` (the token written to `out` too when
/// given): the token.
fn make_token(tokens: &Path, principal: &str, out: Option<&Path>) -> String {
    let mut c = Command::new(binary("meridian"));
    c.args(["token", "create", principal, "--tokens-file"])
        .arg(tokens);
    if let Some(out) = out {
        c.arg("--out").arg(out);
    }
    let (code, token, err) = run(c, None);
    assert_eq!(code, 0, "meridian token create {principal}: {err}");
    match out {
        Some(out) => std::fs::read_to_string(out).unwrap().trim().to_owned(),
        None => token.trim().to_owned(),
    }
}

/// The code of a refused call (none: served).
fn code_as<T>(r: Result<tonic::Response<T>, tonic::Status>) -> Option<tonic::Code> {
    r.err().map(|s| s.code())
}

/// A gRPC request carrying `token` (none: no credentials).
fn with_token<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    if let Some(t) = token {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_callers_need_a_token_and_each_principal_does_only_its_part() {
    use meridian_proto::v1;
    use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion};
    let tmp = tempfile::tempdir().unwrap();
    let tokens = tmp.path().join("auth").join("tokens.toml");
    let admin = make_token(&tokens, "User:admin", None);
    let bob = make_token(&tokens, "User:bob", None);
    let broker_file = tmp.path().join("auth").join("broker.token");
    let broker = make_token(&tokens, "Broker:r", Some(&broker_file));
    let mirror = make_token(&tokens, "Mirror:r", None);
    let other_mirror = make_token(&tokens, "Mirror:x", None);
    // This test's own helpers call as the admin.
    meridian_proto::auth::set_token(&admin).unwrap();
    let tokens_flag = tokens.to_str().unwrap();
    std::fs::create_dir_all(tmp.path().join("cp")).unwrap();
    let cp = ControlPlaneProcess::embedded(
        &tmp.path().join("cp"),
        &[
            "--region",
            "r",
            "--tokens-file",
            tokens_flag,
            "--admins",
            "User:admin",
        ],
    )
    .await;
    let region = ManagedRegion::start(
        tmp.path(),
        "r",
        1,
        &cp.addr,
        &[
            "--tokens-file",
            tokens_flag,
            "--token-file",
            broker_file.to_str().unwrap(),
        ],
    )
    .await
    .expect("the broker registers with its token");
    let broker_addr = region.brokers[0].addr.to_string();

    // The CLI: without credentials, refused by both; with a profile, served.
    let config = tmp.path().join("config");
    let cli = |args: &[&str], token: Option<&str>, stdin: Option<&str>| {
        let mut c = Command::new(binary("meridian"));
        c.args(args)
            .env("XDG_CONFIG_HOME", &config)
            .env_remove("MERIDIAN_TOKEN")
            .env_remove("MERIDIAN_CONTROL")
            .env_remove("MERIDIAN_BROKER");
        if let Some(t) = token {
            c.env("MERIDIAN_TOKEN", t);
        }
        run(c, stdin.map(str::as_bytes))
    };
    let (code, _, err) = cli(&["--control", &cp.addr, "region", "list"], None, None);
    assert_ne!(code, 0);
    assert!(err.contains("credentials required"), "{err}");
    let (code, _, err) = cli(&["--broker", &broker_addr, "topic", "list"], None, None);
    assert_ne!(code, 0);
    assert!(err.contains("credentials required"), "{err}");
    let (code, _, err) = cli(
        &["--control", &cp.addr, "region", "list"],
        Some("mrd_not-a-token"),
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("not known"), "{err}");
    let (code, _, err) = cli(
        &[
            "profile",
            "create",
            "ops",
            "--set-control",
            &cp.addr,
            "--token-stdin",
        ],
        None,
        Some(&format!("{admin}\n")),
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&["region", "list"], None, None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains('r'), "{out}");
    let (code, _, err) = cli(&["--broker", &broker_addr, "topic", "list"], None, None);
    assert_eq!(code, 0, "the profile's token at the broker: {err}");
    // A user who is not an admin reads but may not change the platform.
    let (code, _, err) = cli(&["region", "list"], Some(&bob), None);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(&["region", "fail", "r"], Some(&bob), None);
    assert_ne!(code, 0);
    assert!(err.contains("User:bob may not fail region r over"), "{err}");

    // Tokens change while the daemons run: a token made now is taken by the control plane
    // and the broker within a second or two, and refused there once revoked.
    let carol = make_token(&tokens, "User:carol", None);
    let served = |args: &[&str], token: &str| cli(args, Some(token), None);
    let until = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !ok() {
            assert!(std::time::Instant::now() < deadline, "{what}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    let at_control = ["--control", cp.addr.as_str(), "region", "list"];
    let at_broker = ["--broker", broker_addr.as_str(), "topic", "list"];
    until("a new token taken by the control plane", &|| {
        served(&at_control, &carol).0 == 0
    });
    until("a new token taken by the broker", &|| {
        served(&at_broker, &carol).0 == 0
    });
    let mut revoke = Command::new(binary("meridian"));
    revoke
        .args(["token", "revoke", "User:carol", "--tokens-file"])
        .arg(&tokens);
    let (code, _, err) = run(revoke, None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("of User:carol revoked"), "{err}");
    until("a revoked token refused by the control plane", &|| {
        let (code, _, err) = served(&at_control, &carol);
        code != 0 && err.contains("not known")
    });
    until("a revoked token refused by the broker", &|| {
        let (code, _, err) = served(&at_broker, &carol);
        code != 0 && err.contains("not known")
    });
    assert_eq!(served(&at_control, &bob).0, 0, "the other tokens stay");

    // Mirrored appends: only region r's mirror, at region r's broker.
    let mut b = v1::broker_client::BrokerClient::connect(format!("http://{broker_addr}"))
        .await
        .unwrap();
    let append = || v1::AppendMirroredRequest {
        origin_region: "x".into(),
        origin_group: 1,
        batches: Vec::new(),
    };
    assert_eq!(
        code_as(b.append_mirrored(with_token(append(), None)).await),
        Some(tonic::Code::Unauthenticated)
    );
    for (who, token) in [
        ("admin", &admin),
        ("Mirror:x", &other_mirror),
        ("broker", &broker),
    ] {
        assert_eq!(
            code_as(b.append_mirrored(with_token(append(), Some(token))).await),
            Some(tonic::Code::PermissionDenied),
            "{who}"
        );
    }
    let served = b.append_mirrored(with_token(append(), Some(&mirror))).await;
    assert!(served.is_ok(), "Mirror:r's append: {served:?}");
    // The mirror link's lease: only the mirror of the region it ships from.
    let mut c =
        v1::control_plane_client::ControlPlaneClient::connect(format!("http://{}", cp.addr))
            .await
            .unwrap();
    let claim = || v1::ClaimMirrorLinkRequest {
        from: "r".into(),
        to: "x".into(),
        holder: "forger".into(),
        ttl_ms: 5000,
    };
    for (who, token) in [
        ("Mirror:x", &other_mirror),
        ("broker", &broker),
        ("admin", &admin),
    ] {
        let r = c.claim_mirror_link(with_token(claim(), Some(token))).await;
        assert_eq!(code_as(r), Some(tonic::Code::PermissionDenied), "{who}");
    }
    let granted = c
        .claim_mirror_link(with_token(claim(), Some(&mirror)))
        .await
        .expect("Mirror:r claims its link")
        .into_inner();
    assert!(granted.granted, "{granted:?}");
    // Refusals are audited.
    let log = region.brokers[0].log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("audit") && l.contains("Mirror:x") && l.contains("refused")),
        "{log}"
    );
}
