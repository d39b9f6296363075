//! Client certificates as credentials (issue 17): a certificate signed by the listener's
//! client CA names its user by its common name, as Kafka's SSL listeners and mosquitto's
//! `use_identity_as_username` do, on every protocol a broker speaks — kcat over SSL with a
//! certificate and no SASL, mosquitto with a certificate and no password, the CLI with a
//! certificate in its profile instead of a token — and the region's ACLs decide what that
//! user may do. A client without a certificate is refused where one is required.
//!
//! A test binary of its own: it sets this process's gRPC identity (the CA and the admin's
//! certificate), which every call the harness makes then carries.

use std::path::Path;
use std::process::Command;

use meridian_tests::{BrokerProcess, binary, free_addr, run};

/// Runs the CLI with only the settings given here (its profiles under `config`).
fn cli(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(binary("meridian"));
    c.args(args).env("XDG_CONFIG_HOME", config);
    for var in [
        "MERIDIAN_TOKEN",
        "MERIDIAN_CA",
        "MERIDIAN_CERT",
        "MERIDIAN_KEY",
        "MERIDIAN_CONTROL",
        "MERIDIAN_BROKER",
    ] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied());
    run(c, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_name_their_users_on_kafka_mqtt_and_grpc() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    let mut c = Command::new(binary("meridian"));
    c.args(["certs", "--dir"]).arg(&certs).args([
        "--server",
        "broker",
        "--names",
        "127.0.0.1,localhost",
        "--users",
        "admin,alice,bob",
    ]);
    let (code, out, err) = run(c, None);
    assert_eq!(code, 0, "meridian certs: {err}");
    assert!(out.contains("client-alice.pem"), "{out}");
    let file = |name: &str| certs.join(name).display().to_string();
    let ca = file("ca.pem");
    // This process calls as the admin, by certificate.
    meridian_proto::auth::set_ca(
        &std::fs::read(&ca).unwrap(),
        Some((
            &std::fs::read(file("client-admin.pem")).unwrap(),
            &std::fs::read(file("client-admin.key")).unwrap(),
        )),
    )
    .unwrap();
    // A tokens file makes the gRPC API authenticate; only the broker has a token, for
    // its calls to itself (as `meridian up` gives it).
    let tokens = tmp.path().join("tokens.toml");
    let own = tmp.path().join("broker.token");
    let mut c = Command::new(binary("meridian"));
    c.args(["token", "create", "Broker:local", "--tokens-file"])
        .arg(&tokens)
        .arg("--out")
        .arg(&own);
    let (code, _, err) = run(c, None);
    assert_eq!(code, 0, "{err}");
    let listener = |section: &str, auth: &str| {
        format!(
            "[{section}]\ntls_cert = {:?}\ntls_key = {:?}\ntls_client_auth = \"{auth}\"\ntls_client_ca = {ca:?}\n",
            file("broker.pem"),
            file("broker.key"),
        )
    };
    let config = tmp.path().join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "{}{}allow_anonymous = false\n{}[auth]\nacls_enabled = true\nsuper_users = [\"User:admin\"]\n",
            listener("kafka", "required"),
            listener("mqtt", "requested"),
            listener("grpc", "requested"),
        ),
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
            "--tokens-file",
            tokens.to_str().unwrap(),
            "--token-file",
            own.to_str().unwrap(),
            "--grpc-ca",
            &ca,
        ],
    )
    .await
    .expect("the harness reaches the broker with the admin's certificate");
    let addr = broker.addr.to_string();

    // The CLI: with the CA alone, no credentials; with a certificate in its profile, the
    // certificate's user.
    let home = tmp.path().join("config");
    let (code, _, err) = cli(
        &home,
        &["--broker", &addr, "topic", "list"],
        &[("MERIDIAN_CA", &ca)],
    );
    assert_ne!(code, 0);
    assert!(err.contains("credentials required"), "{err}");
    for user in ["admin", "bob"] {
        let (code, _, err) = cli(
            &home,
            &[
                "profile",
                "create",
                user,
                "--set-broker",
                &addr,
                "--set-ca",
                &ca,
                "--set-cert",
                &file(&format!("client-{user}.pem")),
                "--set-key",
                &file(&format!("client-{user}.key")),
            ],
            &[],
        );
        assert_eq!(code, 0, "profile {user}: {err}");
    }
    let (code, _, err) = cli(&home, &["profile", "use", "bob"], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(
        &home,
        &["topic", "create", "bobs", "--partitions", "1"],
        &[],
    );
    assert_ne!(code, 0, "bob may not create topics");
    assert!(err.contains("User:bob"), "the certificate named bob: {err}");
    let (code, _, err) = cli(&home, &["profile", "use", "admin"], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(
        &home,
        &["topic", "create", "certified", "--partitions", "2"],
        &[],
    );
    assert_eq!(code, 0, "the admin by certificate creates a topic: {err}");
    for operation in ["read", "write"] {
        let (code, _, err) = cli(
            &home,
            &[
                "acl",
                "add",
                "--principal",
                "User:alice",
                "--operation",
                operation,
                "--topic",
                "certified",
            ],
            &[],
        );
        assert_eq!(code, 0, "acl add {operation}: {err}");
    }
    let (code, _, err) = cli(
        &home,
        &["topic", "create", "bobs", "--partitions", "1"],
        &[
            ("MERIDIAN_CERT", &file("client-bob.pem")),
            ("MERIDIAN_KEY", &file("client-bob.key")),
        ],
    );
    assert_ne!(
        code, 0,
        "MERIDIAN_CERT and MERIDIAN_KEY win over the profile's"
    );
    assert!(err.contains("User:bob"), "{err}");

    // Kafka over SSL, no SASL: the certificate is the user.
    let kcat = |user: Option<&str>, args: &[&str], stdin: Option<&[u8]>| {
        let mut cmd = Command::new("kcat");
        cmd.args(["-b", &kafka_flag, "-X", "security.protocol=SSL", "-X"])
            .arg(format!("ssl.ca.location={ca}"));
        if let Some(user) = user {
            cmd.arg("-X")
                .arg(format!(
                    "ssl.certificate.location={}",
                    file(&format!("client-{user}.pem"))
                ))
                .arg("-X")
                .arg(format!(
                    "ssl.key.location={}",
                    file(&format!("client-{user}.key"))
                ));
        }
        cmd.args(args);
        run(cmd, stdin)
    };
    let lines: String = (0..500).map(|i| format!("k{i}\n")).collect();
    let (code, _, err) = kcat(
        Some("alice"),
        &["-P", "-t", "certified", "-X", "acks=all"],
        Some(lines.as_bytes()),
    );
    assert_eq!(code, 0, "alice produces by certificate: {err}");
    let (code, _, err) = kcat(
        Some("bob"),
        &[
            "-P",
            "-t",
            "certified",
            "-X",
            "acks=all",
            "-X",
            "message.timeout.ms=5000",
        ],
        Some(b"from-bob\n"),
    );
    assert!(
        code != 0 || err.to_lowercase().contains("authoriz"),
        "bob may not write: {code} {err}"
    );
    assert!(err.to_lowercase().contains("authoriz"), "{err}");
    let (code, out, _) = kcat(None, &["-L", "-m", "5"], None);
    assert!(
        code != 0 || !out.contains("certified"),
        "no certificate, no metadata where one is required: {out}"
    );

    // MQTT: a certificate and no password.
    use meridian_tests::mqtt::publish;
    let port = mqtt.port().to_string();
    let alice = [
        "--cafile",
        ca.as_str(),
        "--cert",
        &file("client-alice.pem"),
        "--key",
        &file("client-alice.key"),
    ];
    publish(&port, "mqttv5", 1, "certified/a", "from-mqtt\n", &alice);
    let subscribe = |user: &str| {
        let mut cmd = Command::new("mosquitto_sub");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "--cafile",
            &ca,
        ])
        .arg("--cert")
        .arg(file(&format!("client-{user}.pem")))
        .arg("--key")
        .arg(file(&format!("client-{user}.key")))
        .args(["-q", "1", "-t", "certified/#", "-d", "-C", "1", "-W", "3"]);
        run(cmd, None)
    };
    let (_, out, err) = subscribe("alice");
    assert!(
        out.contains("Subscribed (mid: 1): 1") && !out.contains("): 135"),
        "alice, by certificate, may read: {out} {err}"
    );
    let (_, out, err) = subscribe("bob");
    assert!(
        out.contains(": 135"),
        "bob may not (SUBACK 135): {out} {err}"
    );
    let mut anonymous = Command::new("mosquitto_pub");
    anonymous
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-V",
            "mqttv5",
            "--cafile",
            &ca,
        ])
        .args(["-q", "1", "-t", "certified/a", "-m", "x"]);
    let (code, out, err) = run(anonymous, None);
    assert_ne!(
        code, 0,
        "no certificate and no password: refused {out} {err}"
    );

    // Everything alice sent, by either protocol, is there once: read back by certificate.
    let (code, out, err) = kcat(
        Some("alice"),
        &["-C", "-t", "certified", "-o", "beginning", "-e", "-q"],
        None,
    );
    assert_eq!(code, 0, "alice reads: {err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort_unstable();
    let mut want: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    want.push("from-mqtt".into());
    want.sort_unstable();
    assert_eq!(got, want, "500 records by Kafka and one by MQTT, each once");
}
