//! `meridian up` as a user runs it: the embedded store and then a real etcd, two regions
//! of three brokers linked by mirrors, every endpoint printed, a topic created, produced in
//! one region and consumed in the other through the CLI, a broker killed -9 and started
//! again, a clean stop on Ctrl-C (SIGINT), and the data and logs kept across a restart.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_tests::binary;
use meridian_tests::platform::start_etcd;

/// A base port with `span` free ports above it, below the kernel's ephemeral range (from
/// 32768), where outgoing connections never take one of them between the check and the
/// bind. `salt` keeps tests running at once in different blocks.
fn free_range(span: u16, salt: u16) -> u16 {
    let blocks = 12_000 / span;
    let first = (std::process::id() as u16).wrapping_add(salt.wrapping_mul(97)) % blocks;
    for i in 0..blocks {
        let base = 20_000 + ((first + i) % blocks) * span;
        let free = (0..span).all(|p| std::net::TcpListener::bind(("127.0.0.1", base + p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no range of {span} free ports between 20000 and 32000");
}

struct Up {
    child: Child,
    /// Where its standard output and error go.
    log: std::path::PathBuf,
    printed: String,
    config: std::path::PathBuf,
    /// Kafka address of the first broker.
    kafka: String,
    /// MQTT port of the first broker.
    mqtt: String,
    /// The console's address.
    console: std::net::SocketAddr,
}

impl Up {
    fn start(data: &Path, config: &Path, extra: &[&str], salt: u16) -> Up {
        let ports = free_range(64, salt);
        let port = |offset: u16| (ports + offset).to_string();
        std::fs::create_dir_all(config).unwrap();
        let log = config.join(format!("up-{ports}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(binary("meridian"))
            .arg("up")
            .arg("--data")
            .arg(data)
            .args([
                "--control-port",
                &port(0),
                "--control-metrics-port",
                &port(1),
            ])
            .args([
                "--grpc-port",
                &port(2),
                "--raft-port",
                &port(22),
                "--metrics-port",
                &port(42),
            ])
            .args(["--kafka-port", &port(48)])
            .args(["--mqtt-port", &port(5), "--mqtt-ws-port", &port(25)])
            .args(["--console-port", &port(61)])
            .args([
                "--mirror-port",
                &port(60),
                "--mirror-metrics-port",
                &port(62),
            ])
            .args(extra)
            .env("XDG_CONFIG_HOME", config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start meridian up");
        Up {
            child,
            log,
            printed: String::new(),
            config: config.to_owned(),
            kafka: format!("127.0.0.1:{}", port(48)),
            mqtt: port(5),
            console: format!("127.0.0.1:{}", port(61)).parse().unwrap(),
        }
    }

    /// Waits until the output contains `text`.
    fn wait_for(&mut self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.printed = std::fs::read_to_string(&self.log).unwrap_or_default();
            if self.printed.contains(text) {
                return;
            }
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < deadline,
                "meridian up never printed {text:?} (exit: {exited:?}); it printed:\n{}",
                self.printed
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    /// Runs the CLI with the endpoints this `up` recorded.
    fn cli(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(binary("meridian"))
            .args(args)
            .env("XDG_CONFIG_HOME", &self.config)
            .env_remove("MERIDIAN_CONTROL")
            .env_remove("MERIDIAN_BROKER")
            .stdin(Stdio::null())
            .output()
            .expect("run meridian");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The first `n` messages of `orders` in `region`, waiting up to 60 s for them (they
    /// may still be crossing between regions).
    fn consume(&self, region: &str, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let max = n.to_string();
            let (code, out, err) = self.cli(&[
                "consume",
                "orders",
                "--region",
                region,
                "--from",
                "beginning",
                "--max",
                &max,
                "--idle-exit-ms",
                "1000",
            ]);
            assert_eq!(code, 0, "{err}");
            let got: Vec<String> = out.lines().map(str::to_owned).collect();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Ctrl-C; waits for a clean exit.
    fn interrupt(mut self) -> String {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait().expect("wait for meridian up");
        self.printed = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            status.success(),
            "meridian up exited with {status}:\n{}",
            self.printed
        );
        std::mem::take(&mut self.printed)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: signalling our own child by pid.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
            let _ = self.child.wait();
        }
    }
}

/// A form POST; the whole answer.
/// `POST path` to the console over HTTPS with curl, trusting `ca` as a user told to would:
/// the answer's head and body.
fn https_post(addr: std::net::SocketAddr, ca: &Path, path: &str, body: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "30", "--cacert"])
        .arg(ca)
        .args(["--data", body, &format!("https://{addr}{path}")])
        .output()
        .expect("curl: the test script installs it");
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl: {answer}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    answer
}

fn run_platform(extra: &[&str], store_says: &str, salt: u16, kill_one: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let (data, config) = (tmp.path().join("data"), tmp.path().join("config"));
    let mut up = Up::start(&data, &config, extra, salt);
    up.wait_for("Ctrl-C stops the platform.", Duration::from_secs(120));
    assert!(
        up.printed.contains(&format!("Meridian is up: 2 regions (us-east, eu-west), 3 brokers each, control plane on {store_says}")),
        "{}",
        up.printed
    );
    let brokers_printed = up
        .printed
        .lines()
        .filter(|l| l.contains(" broker ") && l.contains("gRPC 127.0.0.1:"))
        .count();
    assert_eq!(brokers_printed, 6, "{}", up.printed);
    // The console's URL and its first admin's credentials; they let one in.
    let console_line = up
        .printed
        .lines()
        .find(|l| l.contains("console:"))
        .unwrap_or_else(|| panic!("no console line:\n{}", up.printed));
    assert!(
        console_line.contains(&format!("https://{}", up.console)),
        "{console_line}"
    );
    // HTTPS with the local CA, which it names.
    let ca = data.join("certs").join("ca.pem");
    assert!(
        up.printed
            .contains(&format!("trust the CA:   {}", ca.display())),
        "{}",
        up.printed
    );
    let password = console_line
        .split("password ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the admin's password is printed");
    let login = https_post(
        up.console,
        &ca,
        "/login",
        &format!("name=admin&password={password}"),
    );
    assert!(
        login.contains(" 303 ") && login.contains("meridian_session="),
        "{login}"
    );
    assert!(
        login.contains("; Secure;"),
        "a Secure session cookie: {login}"
    );
    assert!(login.contains("strict-transport-security"), "{login}");
    // Wrong passwords: refused, then throttled.
    let mut answers = Vec::new();
    for _ in 0..8 {
        let wrong = https_post(up.console, &ca, "/login", "name=admin&password=wrong");
        answers.push(wrong.lines().next().unwrap_or_default().to_owned());
    }
    assert!(answers[0].contains(" 401 "), "{answers:?}");
    assert!(
        answers.iter().any(|a| a.contains(" 429 ")),
        "wrong passwords throttled: {answers:?}"
    );
    // Plain HTTP is not served there.
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(up.console).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        assert!(!answer.starts_with(b"HTTP/"), "plain HTTP answered");
    }

    // The CLI calls with the profile `up` made current (its token, over TLS trusting its
    // CA); without it, the control plane is not reached.
    let (code, out, err) = up.cli(&["profile", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("* local"), "{out}");
    let control = out
        .lines()
        .find(|l| l.contains("local"))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("the profile's control plane")
        .to_owned();
    let bare = tempfile::tempdir().unwrap();
    let out = Command::new(binary("meridian"))
        .args(["--control", &control, "region", "list"])
        .env("XDG_CONFIG_HOME", bare.path())
        .env_remove("MERIDIAN_TOKEN")
        .env_remove("MERIDIAN_CA")
        .output()
        .unwrap();
    assert!(!out.status.success(), "plaintext and no token: {out:?}");
    let out = Command::new(binary("meridian"))
        .args(["--control", &control, "region", "list"])
        .env("XDG_CONFIG_HOME", bare.path())
        .env("MERIDIAN_CA", &ca)
        .env_remove("MERIDIAN_TOKEN")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("credentials required"),
        "over TLS without a token: {err}"
    );
    let (code, out, err) = up.cli(&["--json", "broker", "list"]);
    assert_eq!(code, 0, "{err}");
    let brokers: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(brokers.as_array().unwrap().len(), 6);
    let (code, _, err) = up.cli(&["topic", "create", "orders", "--partitions", "3"]);
    assert_eq!(code, 0, "{err}");
    // Kafka tools see the region: its three brokers (each registered its Kafka address)
    // and the topic's partitions with their leaders.
    let out = Command::new("kcat")
        .args(["-L", "-b", &up.kafka])
        .output()
        .expect("kcat: the test script installs it");
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{listing}");
    assert!(listing.contains(" 3 brokers:"), "{listing}");
    assert!(
        listing.contains("topic \"orders\" with 3 partitions"),
        "{listing}"
    );

    // MQTT devices publish and subscribe at the brokers it started.
    let (code, _, err) = up.cli(&["topic", "create", "telemetry", "--partitions", "3"]);
    assert_eq!(code, 0, "{err}");
    // `-d` (line-buffered): its SUBACK is seen before anything is published.
    let mut sub = Command::new("stdbuf")
        .args(["-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", &up.mqtt])
        .args([
            "-t",
            "telemetry/#",
            "-q",
            "1",
            "-v",
            "-d",
            "-C",
            "1",
            "-W",
            "30",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub: the test script installs mosquitto-clients");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(sub.stdout.take().unwrap()))
        .map_while(Result::ok);
    assert!(
        lines.by_ref().any(|l| l.contains("received SUBACK")),
        "mosquitto_sub saw no SUBACK"
    );
    let out = Command::new("mosquitto_pub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &up.mqtt,
            "-t",
            "telemetry/device-1",
        ])
        .args(["-q", "1", "-m", "hello from a device"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = lines.collect();
    let _ = sub.wait();
    assert!(
        got.iter()
            .any(|l| l == "telemetry/device-1 hello from a device"),
        "{got:?}"
    );

    // Produced in one region, read in the other: the mirrors carry it; then the other way.
    let produce = |region: &str| {
        let (code, _, err) = up.cli(&[
            "produce",
            "orders",
            "--region",
            region,
            "--key",
            "k",
            &format!("hello {region}"),
        ]);
        assert_eq!(code, 0, "{err}");
    };
    produce("us-east");
    assert_eq!(up.consume("eu-west", 1), ["hello us-east"]);
    produce("eu-west");
    for region in ["us-east", "eu-west"] {
        assert_eq!(
            up.consume(region, 2),
            ["hello us-east", "hello eu-west"],
            "{region} holds both, in the order they reached it"
        );
    }
    if kill_one {
        the_cli_reports_versions_and_refuses_bad_input_quietly(&up);
        a_killed_broker_is_restarted(&mut up, &data);
    }
    let printed = up.interrupt();
    assert!(
        printed.contains("control-plane stopped (exit status: 0)"),
        "{printed}"
    );
    assert_eq!(
        printed.matches("stopped (exit status: 0)").count(),
        10,
        "{printed}"
    );

    // Started again on the same data: the topic and its messages are still there, and the
    // last run's logs are kept beside the new ones.
    let mut up = Up::start(&data, &config, extra, salt + 1);
    up.wait_for("Ctrl-C stops the platform.", Duration::from_secs(120));
    assert_eq!(up.consume("eu-west", 2), ["hello us-east", "hello eu-west"]);
    let earlier = std::fs::read_to_string(data.join("eu-west").join("broker-2.log.1"))
        .expect("the last run's log of eu-west/2 is kept");
    assert!(earlier.contains("region-broker ready"), "{earlier}");
    up.interrupt();
}

/// A broker killed -9 is started again by `meridian up` (which says so), its log kept and
/// continued, and the platform serves on: the region's brokers all live, a message produced
/// there read in the other region.
fn a_killed_broker_is_restarted(up: &mut Up, data: &Path) {
    let dir = data.join("eu-west").join("broker-2");
    let pid =
        pid_of("region-broker", &dir.display().to_string()).expect("eu-west's broker 2 is running");
    // SAFETY: signalling a process of this test's platform by pid.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    up.wait_for(
        "region-broker eu-west/2 exited unexpectedly (signal: 9",
        Duration::from_secs(30),
    );
    up.wait_for("region-broker eu-west/2 restarted", Duration::from_secs(30));
    let log = std::fs::read_to_string(data.join("eu-west").join("broker-2.log")).unwrap();
    let restarted = log
        .find("--- meridian up: region-broker eu-west/2 exited")
        .unwrap_or_else(|| panic!("no restart line in the broker's log:\n{log}"));
    assert!(
        log[..restarted].contains("region-broker ready"),
        "the killed run's log is kept before the restart line"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out, err) = up.cli(&["--json", "broker", "list"]);
        assert_eq!(code, 0, "{err}");
        let live = serde_json::from_str::<serde_json::Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len();
        if live == 6 {
            break;
        }
        assert!(Instant::now() < deadline, "{live} brokers live: {out}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let (code, _, err) = up.cli(&[
        "produce",
        "orders",
        "--region",
        "eu-west",
        "--key",
        "k",
        "after the restart",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        up.consume("us-east", 3),
        ["hello us-east", "hello eu-west", "after the restart"]
    );
}

/// `meridian version` names the control plane's and every broker's version; completions
/// print; `--partitions 0` and a zero retention are refused naming why; a reader that
/// closes the pipe (`| head`) ends `consume` quietly, without a panic.
fn the_cli_reports_versions_and_refuses_bad_input_quietly(up: &Up) {
    let version = env!("CARGO_PKG_VERSION");
    let (code, out, err) = up.cli(&["version"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("meridian (this CLI)  {version}")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("control plane control-1") && l.contains(version)),
        "{out}"
    );
    let brokers: Vec<&str> = out.lines().filter(|l| l.starts_with("broker ")).collect();
    assert_eq!(brokers.len(), 6, "{out}");
    assert!(brokers.iter().all(|l| l.contains(version)), "{out}");

    let (code, out, err) = up.cli(&["completions", "bash"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("_meridian()") && out.contains("log-group"),
        "{out}"
    );

    let (code, _, err) = up.cli(&["topic", "create", "none-at-all", "--partitions", "0"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("'--partitions <PARTITIONS>': 0 is not in 1.."),
        "{err}"
    );
    let (code, _, err) = up.cli(&["topic", "create", "never", "--retention", "0s"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a duration longer than 0"), "{err}");
    let (code, out, _) = up.cli(&["topic", "list"]);
    assert_eq!(code, 0);
    assert!(
        !out.contains("none-at-all") && !out.contains("never"),
        "{out}"
    );

    // The reading end closed before anything is written: the next write ends the CLI
    // by SIGPIPE, as it ends cat, with nothing on stderr.
    let mut consume = Command::new(binary("meridian"))
        .args([
            "consume",
            "orders",
            "--region",
            "us-east",
            "--from",
            "beginning",
        ])
        .args(["--max", "2", "--idle-exit-ms", "1000"])
        .env("XDG_CONFIG_HOME", &up.config)
        .env_remove("MERIDIAN_CONTROL")
        .env_remove("MERIDIAN_BROKER")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(consume.stdout.take());
    let out = consume.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{:?}: {err}",
        out.status
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
}

/// The pid of the running `program` whose command line contains `arg`.
fn pid_of(program: &str, arg: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|&b| b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let runs = args.first()?.ends_with(program) && args.iter().any(|a| a.contains(arg));
            runs.then_some(pid)
        })
}

#[test]
fn meridian_up_runs_two_regions_on_the_embedded_store() {
    run_platform(&[], "the embedded store", 0, true);
}

#[test]
fn meridian_up_runs_two_regions_on_a_real_etcd() {
    let etcd = start_etcd();
    let extra = ["--etcd", etcd.endpoint.as_str()];
    run_platform(&extra, &format!("etcd {}", etcd.endpoint), 10, false);
}
