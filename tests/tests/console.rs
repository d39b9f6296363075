//! The web console in a real browser: Debian's chromium, headless, driven over WebDriver
//! (chromedriver) by fantoccini, against a platform the test starts (control plane, two
//! regions, the console). An admin logs in, sees pages update without a reload, creates a
//! topic and sees it, sees messages produced with the CLI in the message browser (all
//! partitions, newest first, filtered, paged) and produces one from its form, previews and
//! applies a consumer-group reset, sees every group with its lag, moves a log group's
//! leadership, moves a replica and fails a master-slave group over from the brokers page,
//! sees the health summary turn red when a broker is
//! SIGSTOPped (the broker gone, the link to its region stalled) and green again, fails a
//! region over and restores it; a viewer sees no forms, and the server refuses the
//! viewer's POST even when sent by hand; the pages follow a dark color scheme. Screenshots
//! of every page are kept under the target directory (`console-screenshots/`; the test
//! script copies them to `ci-artifacts/`).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use meridian_tests::mirror::{MirrorProcess, free_udp_addr, issue_certs};
use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion, meridian_control};
use meridian_tests::{Daemon, free_addr, http_get, http_request, http_status};

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(profile: &std::path::Path, extra: &[&str]) -> (KillOnDrop, Client) {
    let port = free_addr().port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver: scripts/test.sh installs chromium-driver");
    let driver = KillOnDrop(driver);
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
    ]
    .iter()
    .chain(extra)
    .map(|a| a.to_string())
    .collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let caps: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": args,
            }
        }))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
        {
            Ok(c) => return (driver, c),
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
        }
    }
}

/// Writes the console's configuration readable by its owner only (it holds password hashes:
/// the console refuses it otherwise).
fn write_private(path: &std::path::Path, text: String) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

fn hash(password: &str) -> String {
    let mut cmd = Command::new(meridian_tests::binary("meridian-console"));
    cmd.arg("hash-password");
    let (code, out, err) = meridian_tests::run(cmd, Some(format!("{password}\n").as_bytes()));
    assert_eq!(code, 0, "{err}");
    out.trim().to_owned()
}

async fn shot(b: &Client, name: &str) {
    let dir = meridian_tests::bin_dir().join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = b.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The text of the first element matching `css`, empty when there is none (yet).
async fn read(b: &Client, css: &str) -> String {
    match b.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The text of the first element matching `css` once it contains `expect`. After a click
/// the browser may still show the page before: this reads again (a stale element is read
/// again too) for up to 30 s.
async fn see(b: &Client, css: &str, expect: &str) -> String {
    see_at(b, None, css, expect).await
}

/// [`see`], loading `page` again before each read when given (a page that shows what a
/// broker holds now, not what a click changes).
async fn see_at(b: &Client, page: Option<&str>, css: &str, expect: &str) -> String {
    see_within(b, page, css, expect, Duration::from_secs(30)).await
}

/// [`see_at`] for up to `limit`.
async fn see_within(
    b: &Client,
    page: Option<&str>,
    css: &str,
    expect: &str,
    limit: Duration,
) -> String {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(url) = page {
            b.goto(url).await.unwrap();
        }
        let text = read(b, css).await;
        if text.contains(expect) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never said {expect:?}; it says {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn log_in(b: &Client, console: SocketAddr, name: &str, password: &str) {
    b.goto(&format!("http://{console}/")).await.unwrap();
    // Not logged in: the console sends the browser to its login page.
    let login = b
        .wait()
        .for_element(Locator::Css("#name"))
        .await
        .expect("the login page");
    login.send_keys(name).await.unwrap();
    b.find(Locator::Css("#password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    b.find(Locator::Css("#login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    see(b, "h1", "Overview").await;
}

async fn fill(b: &Client, css: &str, value: &str) {
    let e = b.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

async fn click(b: &Client, css: &str) {
    b.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// A form POST by hand (as a script or another site would send it); the status code.
async fn post(console: SocketAddr, path: &str, cookie: &str, body: &str) -> u16 {
    let (path, cookie, body) = (
        path.to_owned(),
        format!("meridian_session={cookie}"),
        body.to_owned(),
    );
    tokio::task::spawn_blocking(move || {
        http_status(&http_request(console, "POST", &path, &cookie, &body))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sre_operates_the_platform_from_a_browser() {
    let tmp = tempfile::tempdir().unwrap();
    let cp =
        ControlPlaneProcess::embedded(tmp.path(), &["--region", "east", "--region", "west"]).await;
    let mut east = ManagedRegion::start(
        tmp.path(),
        "east",
        1,
        &cp.addr,
        &["--kafka-listen", "auto", "--mqtt-listen", "auto"],
    )
    .await
    .unwrap();
    let west = ManagedRegion::start(tmp.path(), "west", 1, &cp.addr, &[])
        .await
        .unwrap();
    // A mirror per region, linking them; the console reads their metrics.
    let certs = tmp.path().join("certs");
    issue_certs(&certs, &["east", "west"]);
    let (east_udp, west_udp) = (free_udp_addr(), free_udp_addr());
    let mirrors = [
        MirrorProcess::start(
            tmp.path(),
            "east",
            &cp.addr,
            east_udp,
            &[("west".into(), west_udp)],
            &certs,
            &[],
        ),
        MirrorProcess::start(
            tmp.path(),
            "west",
            &cp.addr,
            west_udp,
            &[("east".into(), east_udp)],
            &certs,
            &[],
        ),
    ];

    let config = tmp.path().join("console.toml");
    write_private(
        &config,
        format!(
            "[[users]]\nname = \"ada\"\nrole = \"admin\"\npassword_hash = \"{}\"\n\n[[users]]\nname = \"vic\"\nrole = \"viewer\"\npassword_hash = \"{}\"\n",
            hash("ada-pass"),
            hash("vic-pass")
        ),
    )
    .unwrap();
    let console = free_addr();
    let audit_log = tmp.path().join("audit.log");
    let mut daemon = Daemon::start(
        "meridian-console",
        "console",
        vec![
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            console.to_string(),
            "--control".into(),
            cp.addr.clone(),
            "--audit-log".into(),
            audit_log.display().to_string(),
            "--mirror".into(),
            format!("east={}", mirrors[0].metrics),
            "--mirror".into(),
            format!("west={}", mirrors[1].metrics),
        ],
        tmp.path().join("console.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http_get(console, "/login")
        .await
        .is_ok_and(|r| r.starts_with("HTTP/1.0 200") || r.starts_with("HTTP/1.1 200"))
    {
        assert!(
            Instant::now() < deadline,
            "the console never answered:\n{}",
            daemon.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let profile = tmp.path().join("chromium-profile");
    let (_driver, b) = browser(&profile, &[]).await;

    // The login page.
    b.goto(&format!("http://{console}/login")).await.unwrap();
    b.wait().for_element(Locator::Css("#name")).await.unwrap();
    shot(&b, "login").await;
    // An admin logs in and sees both regions up, and all healthy once the links are.
    log_in(&b, console, "ada", "ada-pass").await;
    assert!(see(&b, "#region-east h2", "up").await.contains("up"));
    assert!(see(&b, "#region-west h2", "up").await.contains("up"));
    see_at(
        &b,
        Some(&format!("http://{console}/")),
        "#health",
        "All healthy",
    )
    .await;
    shot(&b, "overview").await;

    // The page updates without a reload: a topic created elsewhere shows in the count
    // while a marker set in the page survives (a reload would clear it).
    let count: usize = read(&b, "#topic-count")
        .await
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    b.execute("window.meridianMarker = 'kept'; return 1;", vec![])
        .await
        .unwrap();
    let (code, _, err) = meridian_control(
        &cp.addr,
        &["topic", "create", "web-live", "--partitions", "1"],
    );
    assert_eq!(code, 0, "{err}");
    see(&b, "#topic-count", &format!("{} topics", count + 1)).await;
    let marker = b
        .execute("return window.meridianMarker;", vec![])
        .await
        .unwrap();
    assert_eq!(
        marker,
        serde_json::json!("kept"),
        "the page was not reloaded"
    );

    // Creates a topic; a bad name first, refused with the field named.
    b.goto(&format!("http://{console}/topics")).await.unwrap();
    fill(&b, "#new-name", "bad name").await;
    click(&b, "#create-topic").await;
    let error = see(&b, "#error", "name").await;
    assert!(error.contains("name"), "{error}");
    fill(&b, "#new-name", "web-orders").await;
    fill(&b, "#new-partitions", "2").await;
    click(&b, "#create-topic").await;
    let notice = see(&b, "#notice", "Created topic").await;
    assert!(
        notice.contains("Created topic web-orders with 2 partitions"),
        "{notice}"
    );
    assert!(
        see(&b, "#topics", "web-orders")
            .await
            .contains("web-orders")
    );
    shot(&b, "topics").await;

    // Messages produced with the CLI show in the message browser.
    for i in 0..3 {
        let (code, _, err) = meridian_control(
            &cp.addr,
            &[
                "produce",
                "web-orders",
                "--region",
                "east",
                "--key",
                "same",
                &format!("order {i}"),
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let mut seen = Vec::new();
    let mut seen_partition = 0;
    for p in 0..2 {
        b.goto(&format!(
            "http://{console}/messages?topic=web-orders&region=east&partition={p}&from=beginning"
        ))
        .await
        .unwrap();
        b.wait()
            .for_element(Locator::Css("#messages"))
            .await
            .unwrap();
        for cell in b.find_all(Locator::Css("td.value")).await.unwrap() {
            seen.push(cell.text().await.unwrap());
            seen_partition = p;
        }
        if !seen.is_empty() {
            shot(&b, "messages").await;
        }
    }
    assert_eq!(seen, ["order 0", "order 1", "order 2"]);
    b.goto(&format!("http://{console}/topics/web-orders"))
        .await
        .unwrap();
    assert!(see(&b, "h1", "web-orders").await.contains("web-orders"));
    // The topic's configuration: set from the page (the control plane checks the value),
    // shown, removed.
    fill(&b, "#config-set", "max.message.bytes=nonsense").await;
    click(&b, "#set-config").await;
    see(&b, "main", "max.message.bytes").await;
    // Refused, saying so, and nothing set.
    see(&b, "h1", "The platform refused").await;
    b.goto(&format!("http://{console}/topics/web-orders"))
        .await
        .unwrap();
    assert!(
        !read(&b, "#configs").await.contains("max.message.bytes"),
        "a refused value is not set"
    );
    fill(&b, "#config-set", "max.message.bytes=2000000").await;
    click(&b, "#set-config").await;
    see(
        &b,
        "#notice",
        "Configuration changed: max.message.bytes=2000000",
    )
    .await;
    let configs = see(&b, "#configs", "2000000").await;
    assert!(configs.contains("max.message.bytes"), "{configs}");
    let (_, described, _) =
        meridian_control(&cp.addr, &["topic", "describe", "web-orders", "--configs"]);
    assert!(described.contains("2000000"), "{described}");
    shot(&b, "topic").await;
    click(&b, "button.remove-config[data-key='max.message.bytes']").await;
    see(&b, "#notice", "max.message.bytes removed").await;
    assert!(!read(&b, "#configs").await.contains("2000000"));
    // The topics list: sizes, sortable by them.
    b.goto(&format!("http://{console}/topics?sort=size"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let size = read(&b, "#topic-row-web-orders .size").await;
        if size.ends_with('B') && size != "0 B" {
            break;
        }
        assert!(Instant::now() < deadline, "web-orders' size: {size:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shot(&b, "topics-by-size").await;
    b.goto(&format!("http://{console}/brokers")).await.unwrap();
    see(&b, "table.groups", "raft").await;
    shot(&b, "brokers").await;

    // The mirror links: both up, and east → west carried the three messages with a lag.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        b.goto(&format!("http://{console}/mirrors")).await.unwrap();
        let links = read(&b, "#links").await;
        let east_west = links
            .lines()
            .find(|l| l.contains("east → west"))
            .unwrap_or_default()
            .to_owned();
        if east_west.contains("up") && east_west.contains(" ms") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no live east → west link with a lag:\n{links}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shot(&b, "mirrors").await;

    // An open native transaction (its half message sent, its producer waiting) shows with
    // its phase, producer group and partition.
    let (code, _, err) = meridian_control(
        &cp.addr,
        &["topic", "create", "web-payments", "--partitions", "1"],
    );
    assert_eq!(code, 0, "{err}");
    let mut half = Command::new(meridian_tests::binary("meridian"))
        .args([
            "--control",
            &cp.addr,
            "--region",
            "east",
            "txn",
            "produce",
            "--id",
            "web-txn",
            "--producer-group",
            "web-shop",
            "--end",
            "open",
            "web-payments",
            "half payment",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(half.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("\"prepared\":1"), "{line}");
    }
    b.goto(&format!("http://{console}/transactions"))
        .await
        .unwrap();
    let txns = see(&b, "#transactions", "web-txn").await;
    let row = txns
        .lines()
        .find(|l| l.contains("web-txn"))
        .unwrap_or_default();
    assert!(
        row.contains("ongoing") && row.contains("web-shop") && row.contains("web-payments/0"),
        "{txns}"
    );
    shot(&b, "transactions").await;
    let _ = half.kill();
    let _ = half.wait();

    // An MQTT device with a persistent session shows at its broker, connected, with its
    // subscription; gone, its session is kept (disconnected) and recorded in its region.
    let (code, _, err) = meridian_control(
        &cp.addr,
        &["topic", "create", "web-sensors", "--partitions", "1"],
    );
    assert_eq!(code, 0, "{err}");
    let (host, port) = east.mqtt[0].rsplit_once(':').unwrap();
    let mut device = Command::new("mosquitto_sub")
        .args(["-h", host, "-p", port, "-V", "mqttv5", "-i", "web-device"])
        .args(["-c", "-x", "600", "-q", "1", "-t", "web-sensors/+/temp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub runs (scripts/test.sh installs mosquitto-clients)");
    let mqtt_url = format!("http://{console}/mqtt");
    let mqtt_page = Some(mqtt_url.as_str());
    let sessions = see_at(&b, mqtt_page, "#mqtt-sessions", "web-sensors/+/temp@1").await;
    let row = sessions
        .lines()
        .find(|l| l.contains("web-device"))
        .unwrap_or_default();
    assert!(
        row.contains("connected")
            && !row.contains("disconnected")
            && row.contains("600 s")
            && row.contains("127.0.0.1:"),
        "{sessions}"
    );
    let stored = see_at(&b, mqtt_page, "#mqtt-stored", "web-device").await;
    assert!(stored.contains("web-sensors/+/temp@1"), "{stored}");
    shot(&b, "mqtt").await;

    // An ACL added with `meridian acl` at a broker of east shows on the ACL page.
    let (code, _, err) = meridian_control(
        &cp.addr,
        &[
            "--region",
            "east",
            "acl",
            "add",
            "--principal",
            "User:web-reader",
            "--operation",
            "read",
            "--topic",
            "web-sensors",
            "--prefixed",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let acls_url = format!("http://{console}/acls");
    let acls = see_at(&b, Some(&acls_url), "#acls", "User:web-reader").await;
    let row = acls
        .lines()
        .find(|l| l.contains("User:web-reader"))
        .unwrap_or_default();
    assert!(
        row.contains("east") && row.contains("read") && row.contains("prefixed"),
        "{acls}"
    );
    // The admin adds a binding from the page, the brokers hold it, and deletes it again.
    let east_acls = || {
        let (code, out, err) =
            meridian_control(&cp.addr, &["--region", "east", "--json", "acl", "list"]);
        assert_eq!(code, 0, "{err}");
        out
    };
    let choose = |css: &'static str, value: &'static str| {
        let b = b.clone();
        async move {
            b.find(Locator::Css(css))
                .await
                .unwrap()
                .select_by_value(value)
                .await
                .unwrap();
        }
    };
    choose("#acl-region", "east").await;
    fill(&b, "#acl-principal", "User:web-writer").await;
    choose("#acl-operation", "write").await;
    fill(&b, "#acl-name", "web-sensors").await;
    click(&b, "#add-acl").await;
    let notice = see(&b, "#notice", "Added").await;
    assert!(notice.contains("User:web-writer write"), "{notice}");
    let listed = east_acls();
    assert!(
        listed.contains("\"principal\":\"User:web-writer\"")
            && listed.contains("\"operation\":\"write\""),
        "{listed}"
    );
    // A binding the brokers refuse: the page says why, nothing is added.
    choose("#acl-region", "east").await;
    fill(&b, "#acl-principal", "User:web-writer").await;
    choose("#acl-resource", "cluster").await;
    fill(&b, "#acl-name", "not-the-cluster").await;
    click(&b, "#add-acl").await;
    let error = see(&b, "#error", "cluster").await;
    assert!(!error.is_empty(), "{error}");
    assert!(!east_acls().contains("not-the-cluster"));
    click(
        &b,
        "button.delete-acl[data-principal='User:web-writer'][data-operation='write']",
    )
    .await;
    let notice = see(&b, "#notice", "Deleted").await;
    assert!(notice.contains("User:web-writer"), "{notice}");
    assert!(!east_acls().contains("User:web-writer"));
    shot(&b, "acls").await;
    let _ = device.kill();
    let _ = device.wait();
    let sessions = see_at(&b, mqtt_page, "#mqtt-sessions", "disconnected").await;
    assert!(sessions.contains("web-device"), "{sessions}");

    // A strictly ordered topic's home moves, after a confirmation that says what it costs.
    let (code, _, err) = meridian_control(
        &cp.addr,
        &[
            "topic",
            "create",
            "ledger",
            "--partitions",
            "1",
            "--ordering",
            "strict",
            "--home",
            "east",
        ],
    );
    assert_eq!(code, 0, "{err}");
    b.goto(&format!("http://{console}/topics/ledger"))
        .await
        .unwrap();
    fill(&b, "#home-to", "west").await;
    click(&b, "#move-home").await;
    let cost = see(&b, "#cost", "stops taking writes").await;
    assert!(
        cost.contains("east stops taking writes for ledger first"),
        "{cost}"
    );
    assert!(cost.contains("link east → west is up"), "{cost}");
    click(&b, "#confirm").await;
    click(&b, "#do-it").await;
    assert!(
        see(&b, "#notice", "ledger's home is now west")
            .await
            .contains("ledger's home is now west")
    );
    let (_, ledger, _) = meridian_control(&cp.addr, &["--json", "topic", "describe", "ledger"]);
    assert!(ledger.contains("\"home\":\"west\""), "{ledger}");

    // A consumer group reset to the end: previewed first (nothing changes), then applied.
    b.goto(&format!(
        "http://{console}/groups?group=web-group&topic=web-orders&region=east"
    ))
    .await
    .unwrap();
    b.wait().for_element(Locator::Css("#group")).await.unwrap();
    fill(&b, "#reset-to", "end").await;
    click(&b, "#reset").await;
    assert!(see(&b, "#notice", "Preview").await.contains("Preview"));
    let after: Vec<String> = {
        let mut v = Vec::new();
        for c in b.find_all(Locator::Css("td.reset-to")).await.unwrap() {
            v.push(c.text().await.unwrap());
        }
        v
    };
    let mut sorted = after.clone();
    sorted.sort();
    assert_eq!(sorted, ["0", "3"], "the preview shows each partition's end");
    let (code, out, err) =
        meridian_control(&cp.addr, &["--json", "topic", "describe", "web-orders"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("web-orders"));
    click(&b, "#dry-run").await;
    click(&b, "#reset").await;
    assert!(
        see(&b, "#notice", "Reset web-group to end")
            .await
            .contains("Reset web-group to end")
    );
    shot(&b, "groups").await;
    let client = meridian_client::Client::connect_routed(&cp.addr, "web-orders", Some("east"))
        .await
        .unwrap()
        .0;
    let mut committed = Vec::new();
    for p in 0..2 {
        committed.push(
            client
                .committed_offset("web-group", "web-orders", p)
                .await
                .unwrap(),
        );
    }
    committed.sort();
    assert_eq!(committed, [Some(0), Some(3)], "the reset was committed");

    // A Kafka consumer group with a live member (kcat): the groups page shows its state,
    // member and assignment, as its coordinator knows them.
    let mut member = KillOnDrop(
        Command::new("kcat")
            .args(["-b", &east.kafka[0], "-G", "web-kafka", "web-orders"])
            .args(["-X", "client.id=web-kcat"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kcat: the test script installs it"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        b.goto(&format!("http://{console}/groups")).await.unwrap();
        let groups = read(&b, "#groups-list").await;
        if groups.contains("web-kafka") && groups.contains("Stable in east: 1 member") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stable web-kafka group with its member:\n{groups}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    shot(&b, "kafka-groups").await;
    b.goto(&format!("http://{console}/groups/web-kafka"))
        .await
        .unwrap();
    let members = see(&b, "#group-members", "web-kcat").await;
    assert!(members.contains("web-orders: 0, 1"), "{members}");
    let _ = member.0.kill();

    // Every group with its lag per region: web-group, reset to the end, falls two behind
    // when two more messages arrive — shown without a reload.
    b.goto(&format!("http://{console}/groups")).await.unwrap();
    see(&b, "#groups-list", "web-group").await;
    for i in 0..2 {
        let (code, _, err) = meridian_control(
            &cp.addr,
            &[
                "produce",
                "web-orders",
                "--region",
                "east",
                "--key",
                "same",
                &format!("later {i}"),
            ],
        );
        assert_eq!(code, 0, "{err}");
    }
    let row = see(&b, "#group-row-web-group", "east: 2").await;
    assert!(row.contains("web-orders"), "{row}");
    assert_eq!(read(&b, "#group-row-web-group .total-lag").await, "2");
    shot(&b, "groups-list").await;
    b.goto(&format!("http://{console}/groups/web-group"))
        .await
        .unwrap();
    let partitions = see(&b, "#partitions-east", "web-orders").await;
    assert!(partitions.contains("replay"), "{partitions}");
    shot(&b, "group").await;

    // The message browser: every partition at once, newest first; a filter; paging; and
    // a message produced from its form, key and header kept.
    b.goto(&format!(
        "http://{console}/messages?topic=web-orders&region=east&order=newest"
    ))
    .await
    .unwrap();
    let newest = see(&b, "#messages", "later 1").await;
    let first = newest.lines().nth(1).unwrap_or_default();
    assert!(first.contains("later 1"), "newest first: {newest}");
    b.goto(&format!(
        "http://{console}/messages?topic=web-orders&region=east&on=value&filter=order+1"
    ))
    .await
    .unwrap();
    see(&b, "#messages", "order 1").await;
    let cells = b.find_all(Locator::Css("td.value")).await.unwrap();
    assert_eq!(cells.len(), 1, "the filter keeps one message");
    let same = seen_partition;
    b.goto(&format!(
        "http://{console}/messages?topic=web-orders&region=east&partition={same}&from=beginning&max=1"
    ))
    .await
    .unwrap();
    see(&b, "td.value", "order 0").await;
    click(&b, "#newer").await;
    see(&b, "td.value", "order 1").await;
    fill(&b, "#p-key", "form-key").await;
    fill(&b, "#p-value", "{\"from\":\"the form\"}").await;
    fill(&b, "#p-headers", "source=console").await;
    click(&b, "#produce-it").await;
    let notice = see(&b, "#notice", "Produced to partition").await;
    assert!(notice.contains("at offset"), "{notice}");
    let shown = see(&b, "#messages", "the form").await;
    assert!(
        shown.contains("source=console") && shown.contains("form-key"),
        "{shown}"
    );
    b.find(Locator::Css("#m-view"))
        .await
        .unwrap()
        .select_by_value("json")
        .await
        .unwrap();
    click(&b, "#read").await;
    see(&b, "pre.json", "\"from\": \"the form\"").await;
    shot(&b, "messages-browser").await;

    // A log group's leadership moved from the brokers page, its cost confirmed first: a
    // second broker in east, a topic replicated on both.
    let second = east.add_broker().await.unwrap();
    let (code, _, err) = meridian_control(
        &cp.addr,
        &[
            "topic",
            "create",
            "web-replicated",
            "--partitions",
            "1",
            "--replicas",
            "2",
            "--regions",
            "east",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let brokers_url = format!("http://{console}/brokers");
    see_at(&b, Some(&brokers_url), "a.move-leader", "to ").await;
    let link = b.find(Locator::Css("a.move-leader")).await.unwrap();
    let to = link
        .text()
        .await
        .unwrap()
        .trim_start_matches("to ")
        .trim_end_matches('…')
        .to_owned();
    link.click().await.unwrap();
    let cost = see(&b, "#cost", "Leadership moves").await;
    assert!(cost.contains(&format!("to broker {to}")), "{cost}");
    assert!(cost.contains("web-replicated"), "{cost}");
    shot(&b, "log-group-move").await;
    click(&b, "#confirm").await;
    click(&b, "#do-it").await;
    let notice = see(&b, "#notice", "now led by").await;
    assert!(
        notice.contains(&format!("now led by broker {to}")),
        "{notice}"
    );
    assert!(second > 1);

    // A raft replica moved to a third broker from the brokers page, its cost confirmed
    // first; the control plane carries it out (its own balancing may be moving other
    // groups to the new broker meanwhile: a refusal for a move under way is tried again).
    let third = east.add_broker().await.unwrap();
    let (_, described, _) =
        meridian_control(&cp.addr, &["--json", "topic", "describe", "web-replicated"]);
    let v: serde_json::Value = serde_json::from_str(&described).unwrap();
    let replicated = v["placements"][0]["log_groups"][0]["id"].as_u64().unwrap();
    let links = format!("a.move-replica[id^='move-replica-east-{replicated}-']");
    let deadline = Instant::now() + Duration::from_secs(60);
    let (from, to) = loop {
        // Broker 3 is where the group's replica goes, unless the balancing put one there
        // first: then the link names the broker left without one.
        see_at(&b, Some(&brokers_url), &links, "→").await;
        let link = b.find(Locator::Css(&links)).await.unwrap();
        let id = link.attr("id").await.unwrap().unwrap_or_default();
        let ends: Vec<u64> = id
            .rsplit('-')
            .take(2)
            .filter_map(|n| n.parse().ok())
            .collect();
        let (from, to) = (ends[1], ends[0]);
        link.click().await.unwrap();
        let cost = see(&b, "#cost", "copies the group's whole log").await;
        assert!(cost.contains("web-replicated"), "{cost}");
        shot(&b, "log-group-replica-move").await;
        click(&b, "#confirm").await;
        click(&b, "#do-it").await;
        let answer = see(&b, "main", "Log group").await;
        if answer.contains("is moving its replica") {
            break (from, to);
        }
        assert!(
            answer.contains("already moving a replica") && Instant::now() < deadline,
            "{answer}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    // Done: the broker it went to holds the replica, the one it left none.
    assert!(third > 2);
    let row = format!("#group-east-{replicated}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        b.goto(&brokers_url).await.unwrap();
        let replicas = read(&b, &format!("{row} td:nth-child(3)")).await;
        let held: Vec<u64> = replicas
            .split(',')
            .filter_map(|r| r.trim().parse().ok())
            .collect();
        if held.contains(&to) && !held.contains(&from) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "log group {replicated}'s replicas: {replicas:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A master-slave group failed over from the brokers page, its cost confirmed first —
    // in a region with more brokers than the group's replicas (the brokers holding no
    // replica used to count as silent slaves, and the failover was always refused).
    let (code, out, err) = meridian_control(
        &cp.addr,
        &[
            "--json",
            "topic",
            "create",
            "web-ms",
            "--partitions",
            "1",
            "--replication",
            "master-slave",
            "--replicas",
            "2",
            "--regions",
            "east",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, described, _) = meridian_control(&cp.addr, &["--json", "topic", "describe", "web-ms"]);
    let v: serde_json::Value =
        serde_json::from_str(&described).unwrap_or_else(|e| panic!("{e}: {described} {out}"));
    let group = v["placements"][0]["log_groups"][0]["id"].as_u64().unwrap();
    let failover = format!("#failover-east-{group}");
    // A slave on the broker just added may still be opening the new group: the failover
    // is refused, saying so, until it answers; the operator tries again.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        see_at(&b, Some(&brokers_url), &failover, "Fail over").await;
        click(&b, &failover).await;
        let cost = see(&b, "#cost", "most caught-up slave").await;
        assert!(cost.contains("web-ms"), "{cost}");
        shot(&b, "log-group-failover").await;
        click(&b, "#confirm").await;
        click(&b, "#do-it").await;
        let answer = see(&b, "main", "over").await;
        if answer.contains("failed over") {
            break;
        }
        assert!(
            answer.contains("do not answer") && Instant::now() < deadline,
            "{answer}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let notice = read(&b, "#notice").await;
    assert!(
        notice.contains(&format!("Log group {group} of east failed over"))
            && notice.contains("epoch 2"),
        "{notice}"
    );

    // The health summary: west's broker SIGSTOPped is kept and shown gone with when it
    // was last seen, and the link east → west stalls as east writes on; both clear after
    // SIGCONT. The overview is not reloaded meanwhile.
    b.goto(&format!("http://{console}/")).await.unwrap();
    see(&b, "#health", "All healthy").await;
    west.brokers[0].signal(libc::SIGSTOP);
    let writing = {
        let cp = cp.addr.clone();
        std::thread::spawn(move || {
            for i in 0..30 {
                meridian_control(
                    &cp,
                    &[
                        "produce",
                        "web-orders",
                        "--region",
                        "east",
                        &format!("stalled {i}"),
                    ],
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    let minute = Duration::from_secs(60);
    let health = see_within(&b, None, "#health", "is not answering", minute).await;
    assert!(
        health.contains("Broker 1 of region west") && health.contains("last seen"),
        "{health}"
    );
    let health = see_within(
        &b,
        None,
        "#health",
        "Mirror link east → west",
        Duration::from_secs(90),
    )
    .await;
    assert!(
        health.contains("stalled") || health.contains("down"),
        "{health}"
    );
    shot(&b, "health-problems").await;
    b.goto(&format!("http://{console}/brokers")).await.unwrap();
    let gone = see(&b, "#broker-west-1", "gone").await;
    assert!(gone.contains("last seen"), "{gone}");
    shot(&b, "brokers-gone").await;
    west.brokers[0].signal(libc::SIGCONT);
    writing.join().unwrap();
    b.goto(&format!("http://{console}/")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !read(&b, "#health").await.contains("All healthy") {
        assert!(
            Instant::now() < deadline,
            "still unhealthy 90 s after SIGCONT: {}",
            read(&b, "#health").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Fails region west over, with the cost stated first, then restores it.
    b.goto(&format!("http://{console}/regions/west/fail"))
        .await
        .unwrap();
    assert!(
        see(&b, "#cost", "Clients routed to west move")
            .await
            .contains("Clients routed to west move")
    );
    shot(&b, "failover").await;
    click(&b, "#confirm").await;
    click(&b, "#do-it").await;
    assert!(
        see(&b, "#notice", "Region west failed over")
            .await
            .contains("Region west failed over")
    );
    assert!(see(&b, "#region-west h2", "down").await.contains("down"));
    let (_, regions, _) = meridian_control(&cp.addr, &["--json", "region", "list"]);
    assert!(regions.contains("\"down\""), "{regions}");
    b.goto(&format!("http://{console}/regions/west/restore"))
        .await
        .unwrap();
    click(&b, "#confirm").await;
    click(&b, "#do-it").await;
    assert!(
        see(&b, "#notice", "Region west restored")
            .await
            .contains("Region west restored")
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        b.goto(&format!("http://{console}/")).await.unwrap();
        if read(&b, "#region-west h2").await.contains("up") {
            break;
        }
        assert!(Instant::now() < deadline, "west did not come back up");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    click(&b, "#logout").await;

    // A viewer sees no forms, and the server refuses a viewer's POST sent by hand.
    log_in(&b, console, "vic", "vic-pass").await;
    assert!(
        b.find(Locator::Css("#fail-east")).await.is_err(),
        "no failover link"
    );
    b.goto(&format!("http://{console}/topics")).await.unwrap();
    b.wait().for_element(Locator::Css("#topics")).await.unwrap();
    assert!(
        b.find(Locator::Css("#create-topic")).await.is_err(),
        "no create form"
    );
    let cookie = b
        .get_named_cookie("meridian_session")
        .await
        .expect("the session cookie")
        .value()
        .to_owned();
    let csrf = b
        .find(Locator::Css("input[name=csrf]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .expect("the session's CSRF token");
    let status = post(
        console,
        "/topics",
        &cookie,
        &format!("csrf={csrf}&name=viewer-topic&partitions=1"),
    )
    .await;
    assert_eq!(status, 403, "a viewer's create is refused");
    let status = post(
        console,
        "/regions/east/fail",
        &cookie,
        &format!("csrf={csrf}&confirm=yes"),
    )
    .await;
    assert_eq!(status, 403, "a viewer's failover is refused");
    let status = post(
        console,
        "/acls",
        &cookie,
        &format!("csrf={csrf}&region=east&principal=User:vic&permission=allow&operation=all&resource_type=cluster&pattern=literal&name=kafka-cluster"),
    )
    .await;
    assert_eq!(status, 403, "a viewer's ACL is refused");
    // And anyone's POST without the session's token.
    let status = post(console, "/topics", &cookie, "csrf=forged&name=x").await;
    assert_eq!(status, 403, "a forged form is refused");
    let (_, topics, _) = meridian_control(&cp.addr, &["--json", "topic", "list"]);
    assert!(!topics.contains("viewer-topic"), "{topics}");
    b.goto(&format!("http://{console}/audit")).await.unwrap();
    let audit = see(&b, "#audit", "refused: role").await;
    assert!(audit.contains("refused: role"), "{audit}");
    assert!(audit.contains("create topic"), "{audit}");
    shot(&b, "audit").await;
    b.close().await.unwrap();

    // Dark mode: a browser preferring a dark color scheme gets the dark palette.
    let dark_profile = tmp.path().join("chromium-dark");
    let (_dark_driver, d) = browser(
        &dark_profile,
        &[
            "--force-dark-mode",
            "--blink-settings=preferredColorScheme=0",
        ],
    )
    .await;
    log_in(&d, console, "ada", "ada-pass").await;
    let background = d
        .execute(
            "return getComputedStyle(document.body).backgroundColor;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        background,
        serde_json::json!("rgb(20, 23, 28)"),
        "the dark palette"
    );
    shot(&d, "overview-dark").await;
    d.goto(&format!("http://{console}/brokers")).await.unwrap();
    see(&d, "table.groups", "raft").await;
    shot(&d, "brokers-dark").await;
    d.close().await.unwrap();

    // The audit log on disk has every action as a JSON line.
    let lines = std::fs::read_to_string(&audit_log).unwrap();
    assert!(
        lines
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
    );
    assert!(lines.contains("\"fail region\"") && lines.contains("\"reset group\""));
    assert!(lines.contains("\"move home\""));
    assert!(daemon.terminate(), "the console stops cleanly on SIGTERM");
}

/// `POST /login` with `name` and `password` from a fresh connection: the whole answer.
fn post_login(console: SocketAddr, name: &str, password: &str) -> String {
    let body = format!("name={name}&password={password}");
    http_request(console, "POST", "/login", "", &body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_throttled_and_an_unknown_name_costs_what_a_wrong_password_does() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("console.toml");
    write_private(
        &config,
        format!(
            "[[users]]\nname = \"ada\"\nrole = \"admin\"\npassword_hash = \"{}\"\n",
            hash("ada-pass")
        ),
    )
    .unwrap();
    let console = free_addr();
    let audit_log = tmp.path().join("audit.log");
    let _daemon = Daemon::start(
        "meridian-console",
        "console",
        vec![
            "--config".into(),
            config.display().to_string(),
            "--listen".into(),
            console.to_string(),
            "--control".into(),
            free_addr().to_string(),
            "--audit-log".into(),
            audit_log.display().to_string(),
        ],
        tmp.path().join("console.log"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(console).is_err() {
        assert!(Instant::now() < deadline, "the console never listened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every answer carries the security headers.
    let page = http_get(console, "/login").await.unwrap();
    for h in [
        "x-frame-options: DENY",
        "x-content-type-options: nosniff",
        "referrer-policy: same-origin",
        "content-security-policy: default-src 'self'",
    ] {
        assert!(
            page.to_lowercase().contains(&h.to_lowercase()),
            "{h} missing:\n{page}"
        );
    }
    // An unknown name takes as long as a wrong password (both check an argon2 hash): the
    // medians of three, within a factor of five (an unchecked name answered 30 times
    // faster before).
    let median = |name: &str| {
        let mut t: Vec<Duration> = (0..3)
            .map(|_| {
                let started = Instant::now();
                assert_eq!(http_status(&post_login(console, name, "wrong")), 401);
                started.elapsed()
            })
            .collect();
        t.sort();
        t[1]
    };
    let (known, unknown) = (median("ada"), median("nobody"));
    assert!(
        unknown * 5 > known && known * 5 > unknown,
        "a wrong password took {known:?}, an unknown name {unknown:?}"
    );
    // Those were 3 failures for ada and 6 from this address: the 6th failure made the
    // address wait, so the next attempt, even with the right password, is refused unchecked.
    let refused = post_login(console, "ada", "ada-pass");
    assert_eq!(http_status(&refused), 429, "{refused}");
    assert!(
        refused.to_lowercase().contains("retry-after: "),
        "{refused}"
    );
    let audit = std::fs::read_to_string(&audit_log).unwrap();
    assert!(audit.contains("too many failed logins"), "{audit}");
    // Once the wait is over, the right password logs in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ok = post_login(console, "ada", "ada-pass");
    assert_eq!(http_status(&ok), 303, "{ok}");
    // A failover submitted without its confirmation is refused, and the refusal audited.
    let cookie = ok
        .lines()
        .find_map(|l| {
            l.to_lowercase()
                .starts_with("set-cookie:")
                .then(|| l[11..].trim())
        })
        .and_then(|c| c.split(';').next())
        .unwrap_or_default()
        .to_owned();
    let page = http_request(console, "GET", "/audit", &cookie, "");
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token on the audit page:\n{page}"))
        .to_owned();
    let unconfirmed = http_request(
        console,
        "POST",
        "/regions/east/fail",
        &cookie,
        &format!("csrf={csrf}"),
    );
    assert_eq!(http_status(&unconfirmed), 422, "{unconfirmed}");
    let audit = std::fs::read_to_string(&audit_log).unwrap();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("fail region") && l.contains("refused: not confirmed")),
        "{audit}"
    );
}
