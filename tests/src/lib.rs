//! Harness for cross-process tests: starts the real `region-broker` and `meridian` binaries
//! on free 127.0.0.1 ports in temporary directories, and breaks them for real (`kill -9`,
//! `SIGSTOP`, `SIGTERM`). Each broker's log is kept in its directory and printed when a
//! test fails while the broker is alive.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meridian_client::Client;

pub mod link_proxy;

/// A daemon the tests start from a workspace binary with its output in a log file, and
/// stop by pid (`kill -9` when dropped; its log is printed when a test fails meanwhile).
#[derive(Debug)]
pub struct Daemon {
    binary: &'static str,
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl Daemon {
    /// Starts `binary` with `args`, logging to `log`; `name` says which one in messages.
    pub fn start(binary: &'static str, name: &str, args: Vec<String>, log: PathBuf) -> Daemon {
        let mut d = Daemon {
            binary,
            name: name.to_owned(),
            args,
            log,
            child: None,
        };
        d.spawn();
        d
    }

    /// Starts the process (again) with the same arguments.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the daemon's log");
        self.child = Some(
            Command::new(binary(self.binary))
                .args(&self.args)
                .env("MERIDIAN_LOG", "info")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", self.name)),
        );
    }

    /// Whether the process runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `signal` (`libc::SIGSTOP`, `SIGCONT`, ...) to the running process.
    pub fn signal(&self, signal: i32) {
        if let Some(c) = &self.child {
            // SAFETY: a plain kill(2) of a child this harness started and has not reaped.
            unsafe { libc::kill(c.id() as i32, signal) };
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait; whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        match self.child.take() {
            Some(mut c) => {
                // SAFETY: signalling our own child by pid.
                unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
                c.wait().is_ok_and(|s| s.success())
            }
            None => true,
        }
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() && std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.log_text());
        }
        self.kill9();
    }
}
pub mod mirror;
pub mod mqtt;
pub mod platform;

/// The directory holding the workspace's built binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().expect("the executable's directory");
    // A program beside the binaries (a benchmark in target/release) uses its own directory;
    // a test in target/debug/deps/ the one above.
    if dir.join("region-broker").exists() {
        return dir.to_owned();
    }
    dir.parent().expect("target directory").to_owned()
}

/// Path of a workspace binary; panics with what to run when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// A free port on 127.0.0.1.
pub fn free_addr() -> SocketAddr {
    free_port_where(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
}

/// A port on 127.0.0.1 that `is_free` accepts, below the kernel's ephemeral range (32768
/// and up): a port the kernel hands out for `:0` can be taken by any outgoing connection
/// between the pick and the process binding it (a broker then fails to start). Ports come
/// in turn from a base that differs per test process, so the tests of one binary never get
/// the same port twice.
pub fn free_port_where(is_free: impl Fn(u16) -> bool) -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let base = std::process::id().wrapping_mul(131) % SPAN;
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (base + n) % SPAN) as u16;
        if is_free(port) {
            return SocketAddr::from(([127, 0, 0, 1], port));
        }
    }
    panic!("no free port between {LOW} and {}", LOW + SPAN)
}

/// One `region-broker` process.
#[derive(Debug)]
pub struct BrokerProcess {
    /// Its data directory.
    pub data_dir: PathBuf,
    /// gRPC address.
    pub addr: SocketAddr,
    /// /metrics address.
    pub metrics: SocketAddr,
    /// Extra flags it was started with (kept for restarts).
    pub flags: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

impl BrokerProcess {
    /// The sum of a metric's samples on its /metrics page.
    pub async fn metric(&self, name: &str) -> f64 {
        metric(self.metrics, name).await
    }

    /// Starts a broker on fresh ports in `data_dir` with extra `flags`, and waits until it
    /// serves requests.
    pub async fn start(data_dir: &Path, flags: &[&str]) -> anyhow::Result<BrokerProcess> {
        BrokerProcess::start_at(data_dir, free_addr(), flags).await
    }

    /// [`BrokerProcess::start`] with a chosen gRPC address.
    pub async fn start_at(
        data_dir: &Path,
        addr: SocketAddr,
        flags: &[&str],
    ) -> anyhow::Result<BrokerProcess> {
        let mut b = BrokerProcess {
            data_dir: data_dir.to_owned(),
            addr,
            metrics: free_addr(),
            flags: flags.iter().map(|s| s.to_string()).collect(),
            log: data_dir.with_extension("log"),
            child: None,
        };
        b.restart().await?;
        Ok(b)
    }

    /// Starts the process again on the same directory and ports.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "broker is still running");
        std::fs::create_dir_all(&self.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(binary("region-broker"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args([
                "--grpc-listen",
                &self.addr.to_string(),
                "--metrics-listen",
                &self.metrics.to_string(),
            ])
            .args(&self.flags)
            .env("MERIDIAN_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting region-broker")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().expect("just set").try_wait()? {
                self.child = None;
                bail!(
                    "region-broker exited during start-up ({status}); log:\n{}",
                    self.log_text()
                );
            }
            if let Ok(c) = Client::connect(&self.addr.to_string()).await
                && c.list_topics().await.is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "region-broker not ready after 30s; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client of this broker.
    pub async fn client(&self) -> Client {
        Client::connect(&self.addr.to_string())
            .await
            .expect("connect to test broker")
    }

    /// Whether the process runs (it was not killed or stopped by the test).
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("broker running").id() as i32
    }

    /// Sends a signal.
    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling a child process this harness started.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.pid());
    }

    /// SIGSTOP, then waits until every thread of the process is really stopped (the signal
    /// is delivered asynchronously; a thread running on another core can still work a little).
    pub fn stop(&self) {
        self.signal(libc::SIGSTOP);
        let tasks = format!("/proc/{}/task", self.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all_stopped = std::fs::read_dir(&tasks).map(|d| {
                d.filter_map(Result::ok).all(|t| {
                    std::fs::read_to_string(t.path().join("stat"))
                        .ok()
                        .and_then(|stat| {
                            stat.rsplit_once(')')
                                .map(|(_, rest)| rest.trim_start().starts_with('T'))
                        })
                        .unwrap_or(true)
                })
            });
            if all_stopped.unwrap_or(false) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "broker {} did not stop within 10 s of SIGSTOP",
                self.pid()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `kill -9` and reap.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        self.kill9_reap();
    }

    /// Reaps a process already sent SIGKILL (to kill several at the same instant).
    pub fn kill9_reap(&mut self) {
        let _ = self.child.take().expect("broker running").wait();
    }

    /// SIGTERM, then waits for the exit; returns its status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("broker running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for broker") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "region-broker ignored SIGTERM for 30s; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the broker logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own child; it may be stopped, so continue it too.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGCONT);
            }
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!(
                    "--- region-broker log ({}) ---\n{}",
                    self.log.display(),
                    self.log_text()
                );
            }
        }
    }
}

/// A region of brokers replicating every log group by raft (`--peer` flags).
#[derive(Debug)]
pub struct Region {
    /// The brokers, by id - 1.
    pub brokers: Vec<BrokerProcess>,
    /// Their Kafka listeners, by id - 1 (empty unless started with them).
    pub kafka: Vec<SocketAddr>,
    /// Their MQTT listeners over TCP and WebSocket, by id - 1 (empty unless started with
    /// them).
    pub mqtt: Vec<(SocketAddr, SocketAddr)>,
    /// Their replication transports, by id - 1.
    pub raft: Vec<SocketAddr>,
}

impl Region {
    /// Starts `n` brokers with data under `dir` and extra `flags`.
    pub async fn start(dir: &Path, n: u32, flags: &[&str]) -> anyhow::Result<Region> {
        Region::start_with(dir, n, false, false, flags).await
    }

    /// [`Region::start`] with a Kafka listener on every broker (each knows the others'
    /// Kafka addresses, so Metadata lists the whole region).
    pub async fn start_with_kafka(dir: &Path, n: u32, flags: &[&str]) -> anyhow::Result<Region> {
        Region::start_with(dir, n, true, false, flags).await
    }

    /// [`Region::start_with_kafka`] with MQTT listeners too (TCP and WebSocket).
    pub async fn start_with_mqtt(dir: &Path, n: u32, flags: &[&str]) -> anyhow::Result<Region> {
        Region::start_with(dir, n, true, true, flags).await
    }

    async fn start_with(
        dir: &Path,
        n: u32,
        kafka: bool,
        mqtt: bool,
        flags: &[&str],
    ) -> anyhow::Result<Region> {
        let mqtt_addrs: Vec<(SocketAddr, SocketAddr)> = (0..n)
            .filter(|_| mqtt)
            .map(|_| (free_addr(), free_addr()))
            .collect();
        let addrs: Vec<(SocketAddr, SocketAddr, SocketAddr)> = (0..n)
            .map(|_| (free_addr(), free_addr(), free_addr()))
            .collect();
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, (grpc, raft, k))| {
                if kafka {
                    format!("{}={raft},{grpc},{k}", i + 1)
                } else {
                    format!("{}={raft},{grpc}", i + 1)
                }
            })
            .collect();
        let mut brokers = Vec::new();
        for (i, (grpc, raft, k)) in addrs.iter().enumerate() {
            let mut all: Vec<String> = vec![
                "--broker-id".into(),
                (i + 1).to_string(),
                "--raft-listen".into(),
                raft.to_string(),
            ];
            if kafka {
                all.push("--kafka-listen".into());
                all.push(k.to_string());
            }
            if let Some((tcp, ws)) = mqtt_addrs.get(i) {
                all.extend([
                    "--mqtt-listen".into(),
                    tcp.to_string(),
                    "--mqtt-ws-listen".into(),
                    ws.to_string(),
                ]);
            }
            for p in &peers {
                all.push("--peer".into());
                all.push(p.clone());
            }
            all.extend(flags.iter().map(|f| f.to_string()));
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            brokers.push(
                BrokerProcess::start_at(&dir.join(format!("broker-{}", i + 1)), *grpc, &all)
                    .await?,
            );
        }
        Ok(Region {
            brokers,
            kafka: if kafka {
                addrs.iter().map(|a| a.2).collect()
            } else {
                Vec::new()
            },
            mqtt: mqtt_addrs,
            raft: addrs.iter().map(|a| a.1).collect(),
        })
    }

    /// The running brokers' gRPC addresses, comma separated (a client's bootstrap list).
    pub fn bootstrap(&self) -> String {
        bootstrap(&self.brokers)
    }

    /// A client of the running brokers.
    pub async fn client(&self) -> Client {
        client_of(&self.brokers).await
    }

    /// What broker `i` reports of log group `group` (`None` if it does not answer).
    pub async fn log_group(&self, i: usize, group: u32) -> Option<meridian_client::LogGroupInfo> {
        use meridian_proto::v1;
        let mut c =
            v1::broker_client::BrokerClient::connect(format!("http://{}", self.brokers[i].addr))
                .await
                .ok()?;
        let r = c
            .log_groups(v1::LogGroupsRequest {})
            .await
            .ok()?
            .into_inner();
        r.groups.into_iter().find(|g| g.group == group)
    }

    /// Waits (up to 30 s) until every running broker knows `topic`: the catalog
    /// replicates, and a broker that has not applied it yet answers "unknown topic".
    pub async fn wait_topic_known(&self, topic: &str) {
        for b in self.brokers.iter().filter(|b| b.running()) {
            let c = b.client().await;
            let deadline = Instant::now() + Duration::from_secs(30);
            while c.describe_topic(topic).await.is_err() {
                assert!(
                    Instant::now() < deadline,
                    "broker {} never learned topic {topic}",
                    b.addr
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// The index of the broker that leads the log group of `topic`/`partition`, asking each
    /// broker directly (a follower answers "not leader").
    pub async fn leader_of(&self, topic: &str, partition: u32) -> Option<usize> {
        use meridian_proto::v1;
        for (i, b) in self.brokers.iter().enumerate() {
            let Ok(mut c) =
                v1::broker_client::BrokerClient::connect(format!("http://{}", b.addr)).await
            else {
                continue;
            };
            let r = v1::ListOffsetsRequest {
                topic: topic.into(),
                partition,
                spec: v1::OffsetSpec::Latest as i32,
                timestamp_ms: 0,
            };
            if c.list_offsets(r).await.is_ok() {
                return Some(i);
            }
        }
        None
    }

    /// The broker leading `topic`/`partition`, once one other than `not` does (waits up to
    /// a minute; `usize::MAX` for any).
    pub async fn new_leader(&self, topic: &str, partition: u32, not: usize) -> usize {
        for _ in 0..600 {
            if let Some(i) = self.leader_of(topic, partition).await
                && i != not
            {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no new leader of {topic}/{partition}");
    }

    /// The region's log group ids, sorted, as the first broker hosts them (in a static
    /// region every broker hosts every group).
    pub async fn log_group_ids(&self) -> Vec<u32> {
        use meridian_proto::v1;
        let mut c =
            v1::broker_client::BrokerClient::connect(format!("http://{}", self.brokers[0].addr))
                .await
                .expect("broker 1 answers");
        let r = c
            .log_groups(v1::LogGroupsRequest {})
            .await
            .expect("its log groups")
            .into_inner();
        let mut ids: Vec<u32> = r.groups.iter().map(|g| g.group).collect();
        ids.sort_unstable();
        ids
    }
}

/// The gRPC addresses of the running brokers among `brokers`, comma separated.
pub fn bootstrap(brokers: &[BrokerProcess]) -> String {
    brokers
        .iter()
        .filter(|b| b.running())
        .map(|b| b.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// A client of the running brokers among `brokers`.
pub async fn client_of(brokers: &[BrokerProcess]) -> Client {
    Client::connect(&bootstrap(brokers))
        .await
        .expect("connect to the region")
}

/// Reads every message of `topic` from the beginning through `client`, up to each
/// partition's end when it was called: partition → [(offset, value)]. Retention may run
/// meanwhile: a partition whose next offset it deleted is read on from its new earliest.
pub async fn read_all(
    client: &Client,
    topic: &str,
) -> std::collections::BTreeMap<u32, Vec<(u64, Vec<u8>)>> {
    use meridian_client::{ConsumerConfig, StartFrom};
    let info = client.describe_topic(topic).await.expect("describe");
    let ends: std::collections::BTreeMap<u32, u64> = info
        .partitions
        .iter()
        .map(|p| (p.partition, p.latest_offset))
        .collect();
    let mut consumer = client.consumer(ConsumerConfig {
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    });
    let partitions: Vec<u32> = ends.keys().copied().collect();
    consumer.assign(topic, &partitions).await.expect("assign");
    let mut out: std::collections::BTreeMap<u32, Vec<(u64, Vec<u8>)>> = Default::default();
    loop {
        let at: Vec<(u32, u64)> = consumer.positions().map(|(_, p, o)| (p, o)).collect();
        if at.iter().all(|(p, o)| *o >= ends[p]) {
            return out;
        }
        match consumer.poll(Duration::from_secs(5)).await {
            Ok(batch) => {
                assert!(
                    !batch.is_empty(),
                    "consumer stalled at {at:?}; the partitions ended at {ends:?}"
                );
                for m in batch {
                    out.entry(m.partition)
                        .or_default()
                        .push((m.offset, m.value.unwrap_or_default().to_vec()));
                }
            }
            Err(e) if e.code() == Some(tonic::Code::OutOfRange) => {
                let now = client.describe_topic(topic).await.expect("describe");
                for p in now.partitions {
                    if at
                        .iter()
                        .any(|&(q, o)| q == p.partition && o < p.earliest_offset)
                    {
                        consumer
                            .seek(topic, p.partition, p.earliest_offset)
                            .expect("seek");
                    }
                }
            }
            Err(e) => panic!("poll: {e}"),
        }
    }
}

/// Waits until the broker behind `client` holds `count` messages of `topic` (summed log end
/// offsets, this broker's own view), failing after `limit`.
pub async fn wait_until_held(client: &Client, topic: &str, count: u64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let held: u64 = match client.describe_topic(topic).await {
            Ok(info) => info.partitions.iter().map(|p| p.latest_offset).sum(),
            Err(_) => 0,
        };
        if held == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the broker holds {held} of {count} messages after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the `meridian` CLI against a broker; returns (exit code, stdout, stderr).
pub fn meridian(broker: SocketAddr, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(binary("meridian"));
    cmd.arg("--broker").arg(broker.to_string()).args(args);
    run(cmd, stdin.map(str::as_bytes))
}

/// Runs a command to its end, feeding it `stdin` (none: /dev/null); returns (exit code,
/// stdout, stderr).
pub fn run(mut cmd: Command, stdin: Option<&[u8]>) -> (i32, String, String) {
    use std::io::Write;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input)
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("the command's output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The sum of a metric's samples (all label sets) on the /metrics page at `addr` (0 when
/// the page or the metric is missing).
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let page = http_get(addr, "/metrics").await.unwrap_or_default();
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A plain HTTP GET over a TCP socket (enough for /metrics; avoids an HTTP client crate).
pub async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body)
}

/// An HTTP/1.0 request with a `Cookie` header (when `cookie` is not empty) and, but for a
/// GET, a form body; the whole answer.
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: &str,
    body: &str,
) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("the server listens");
    let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if !cookie.is_empty() {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    write!(s, "{head}\r\n{body}").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// The status code of an HTTP answer (0 when it has none).
pub fn http_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A process's peak resident memory (VmHWM) in bytes.
pub fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/PID/status")
        * 1024
}

/// The venv's Python running `kafka_clients/<script>` with `args`, not started.
pub fn python_command(script: &str, args: &[String]) -> Command {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: scripts/test.sh creates the venv with confluent-kafka",
        python.display()
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("kafka_clients")
        .join(script);
    let mut cmd = Command::new(&python);
    cmd.arg(&path).args(args);
    cmd
}

/// Runs one of the Python client scripts (`tests/kafka_clients/SCRIPT`) with the venv the
/// test script builds; fails the test with its output unless it exits 0 having printed OK.
/// What the script printed.
pub async fn python_output(script: &'static str, args: Vec<String>) -> String {
    let cmd = python_command(script, &args);
    let (code, out, err) = tokio::task::spawn_blocking(move || run(cmd, None))
        .await
        .expect("the script's thread");
    assert_eq!(code, 0, "{script} {args:?} failed:\n{out}\n{err}");
    assert!(out.contains("OK"), "{script} {args:?}: {out}");
    out
}
