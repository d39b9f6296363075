//! `meridian up`: starts a local platform and keeps it running until Ctrl-C or SIGTERM,
//! starting again any daemon that dies (after 1 s, doubling up to 30 s while it keeps
//! dying within a minute), saying so. Each daemon's log is kept under the data directory;
//! the previous runs' logs are kept beside it (`NAME.log.1` the newest, three in all).
//! Brokers use 16 MiB journal segments (a fresh platform takes little disk).
//!
//! The control plane (embedded single-file store under the data directory, or `--etcd`)
//! and two regions of three managed brokers each, on loopback. Topics are created through
//! the control plane, which places them on log groups in each region. The data directory is
//! kept, so a second `meridian up` resumes where the first stopped. One mirror per region
//! links it with every other region over QUIC, with certificates issued into the data
//! directory (`certs/`) on the first run; the same CA signs each region's broker
//! certificate (mutual TLS on the replication transport) and the console's (HTTPS). The
//! web console starts last; its first admin's
//! password is made on the first run, printed that once, and kept under `console/` in the
//! data directory (mode 0600).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use meridian_proto::v1;

use crate::{control, endpoint};

/// Names of the local regions, in order.
const REGION_NAMES: [&str; 5] = ["us-east", "eu-west", "ap-south", "sa-east", "af-south"];

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Data directory of the platform (kept across runs).
    #[arg(long, default_value = "meridian-data")]
    data: PathBuf,
    /// Regions to start (1 to 5).
    #[arg(long, default_value_t = 2)]
    regions: u32,
    /// Brokers per region (1 to 9).
    #[arg(long, default_value_t = 3)]
    brokers_per_region: u32,
    /// Keep the metadata in this etcd (http://HOST:PORT[,...]) instead of the embedded
    /// store.
    #[arg(long)]
    etcd: Option<String>,
    /// Port of the control plane's API.
    #[arg(long, default_value_t = 7300)]
    control_port: u16,
    /// Port of the control plane's /metrics endpoint.
    #[arg(long, default_value_t = 9300)]
    control_metrics_port: u16,
    /// gRPC port of the first broker; broker N of region R (from 0) listens on this +
    /// 10 R + N - 1.
    #[arg(long, default_value_t = 7070)]
    grpc_port: u16,
    /// Raft transport port of the first broker (numbered the same way).
    #[arg(long, default_value_t = 7170)]
    raft_port: u16,
    /// /metrics port of the first broker (numbered the same way).
    #[arg(long, default_value_t = 9464)]
    metrics_port: u16,
    /// Kafka port of the first broker (numbered as the gRPC ports): Kafka clients and
    /// tools connect here.
    #[arg(long, default_value_t = 9092)]
    kafka_port: u16,
    /// MQTT port of the first broker (numbered as the gRPC ports): MQTT 3.1.1 and 5 devices
    /// connect here.
    #[arg(long, default_value_t = 1883)]
    mqtt_port: u16,
    /// MQTT-over-WebSocket port of the first broker (numbered the same way).
    #[arg(long, default_value_t = 8083)]
    mqtt_ws_port: u16,
    /// UDP (QUIC) port of the first region's mirror; region R's listens on this + R.
    #[arg(long, default_value_t = 7700)]
    mirror_port: u16,
    /// /metrics port of the first region's mirror (numbered the same way).
    #[arg(long, default_value_t = 9700)]
    mirror_metrics_port: u16,
    /// Port of the web console.
    #[arg(long, default_value_t = 7800)]
    console_port: u16,
}

struct Running {
    name: String,
    /// Stopped in decreasing order: mirrors, then brokers, then the control plane.
    stage: Stage,
    log: PathBuf,
    child: tokio::process::Child,
    /// How it was started, to start it again the same way.
    recipe: Recipe,
    /// When it was (re)started, and how many times it was restarted.
    started: tokio::time::Instant,
    restarts: u32,
    /// The wait before its next restart (doubling while it keeps dying young).
    backoff: Duration,
}

/// A daemon's program, arguments and environment.
struct Recipe {
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, Option<std::ffi::OsString>)>,
}

impl Recipe {
    fn of(cmd: &tokio::process::Command) -> Recipe {
        let std = cmd.as_std();
        Recipe {
            program: std.get_program().to_owned(),
            args: std.get_args().map(ToOwned::to_owned).collect(),
            envs: std
                .get_envs()
                .map(|(k, v)| (k.to_owned(), v.map(ToOwned::to_owned)))
                .collect(),
        }
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }
}

/// The first wait before restarting a daemon that died, and the longest.
const RESTART_BACKOFF_FIRST: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A daemon that ran this long before dying is restarted after the first wait again.
const RAN_LONG_ENOUGH: Duration = Duration::from_secs(60);
/// Earlier logs of a daemon kept beside its current one (`NAME.log.1` the newest).
const LOGS_KEPT: u32 = 3;
/// Journal segments of the local platform's brokers: small, so a fresh platform takes
/// little disk (the brokers' default, 128 MiB, preallocates that much per log group
/// replica); still room for the largest batch (8 MiB).
const LOCAL_SEGMENT_BYTES: &str = "16777216";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Control,
    Broker,
    Mirror,
    Console,
}

struct BrokerAddrs {
    region: String,
    id: u32,
    grpc: String,
    metrics: String,
    kafka: String,
    mqtt: String,
    mqtt_ws: String,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if !(1..=REGION_NAMES.len() as u32).contains(&args.regions) {
        bail!(
            "--regions must be 1 to {}, not {}",
            REGION_NAMES.len(),
            args.regions
        );
    }
    if !(1..=9).contains(&args.brokers_per_region) {
        bail!(
            "--brokers-per-region must be 1 to 9, not {}",
            args.brokers_per_region
        );
    }
    let exe = std::env::current_exe().context("locating the meridian executable")?;
    let binary = |name: &str| -> anyhow::Result<PathBuf> {
        let path = exe.with_file_name(name);
        if !path.exists() {
            bail!(
                "{} not found: build every binary with `cargo build --release --workspace` and run meridian from the same directory",
                path.display()
            );
        }
        Ok(path)
    };
    let (control_bin, broker_bin, mirror_bin, console_bin) = (
        binary("control-plane")?,
        binary("region-broker")?,
        binary("mirror")?,
        binary("meridian-console")?,
    );
    let regions: Vec<&str> = REGION_NAMES[..args.regions as usize].to_vec();
    std::fs::create_dir_all(&args.data)
        .with_context(|| format!("creating the data directory {}", args.data.display()))?;
    let data = std::fs::canonicalize(&args.data)?;
    let control_addr = format!("127.0.0.1:{}", args.control_port);
    let store = match &args.etcd {
        Some(urls) => format!("etcd:{urls}"),
        None => format!(
            "embedded:{}",
            data.join("control").join("control.redb").display()
        ),
    };
    std::fs::create_dir_all(data.join("control"))?;
    // Every gRPC call is authenticated: each daemon and the admin get a token (made on the
    // first run); this process calls as the admin.
    let auth = platform_tokens(&data, &regions)?;
    let admin_token = meridian_security::tokens::read_token_file(&auth.token("User:admin"))?;
    meridian_proto::auth::set_token(&admin_token).map_err(anyhow::Error::msg)?;
    // Every certificate from one local CA: the mirrors' and the brokers' (mutual TLS), the
    // gRPC APIs' and the console's (for 127.0.0.1); every gRPC call goes over TLS.
    let certs = data.join("certs");
    let owned: Vec<String> = regions.iter().map(|r| r.to_string()).collect();
    meridian_security::certs::issue(&certs, &owned)
        .and_then(|_| meridian_security::certs::issue_brokers(&certs, &owned))
        .with_context(|| format!("issuing certificates into {}", certs.display()))?;
    let local = ["127.0.0.1".to_owned(), "localhost".to_owned()];
    let (grpc_cert, grpc_key) = meridian_security::certs::issue_server(&certs, "grpc", &local)
        .with_context(|| {
            format!(
                "issuing the gRPC APIs' certificate into {}",
                certs.display()
            )
        })?;
    let ca = certs.join("ca.pem");
    meridian_proto::auth::set_ca(&std::fs::read(&ca)?, None).map_err(anyhow::Error::msg)?;
    let mut processes = Vec::new();
    let mut cmd = tokio::process::Command::new(&control_bin);
    cmd.arg("--tokens-file")
        .arg(&auth.file)
        .arg("--token-file")
        .arg(auth.token("ControlPlane"))
        .args(["--admins", "User:admin"])
        .arg("--tls-cert")
        .arg(&grpc_cert)
        .arg("--tls-key")
        .arg(&grpc_key)
        .arg("--grpc-ca")
        .arg(&ca);
    let control_metrics = format!("127.0.0.1:{}", args.control_metrics_port);
    cmd.args(["--id", "control-1", "--listen", &control_addr])
        .args(["--metrics-listen", &control_metrics, "--store", &store]);
    for r in &regions {
        cmd.args(["--region", r]);
    }
    eprintln!("starting the control plane ({store}) ...");
    processes.push(spawn(
        cmd,
        "control-plane",
        Stage::Control,
        &data.join("control").join("control-plane.log"),
    )?);
    wait_control(&mut processes[0], &control_addr).await?;

    let mut brokers = Vec::new();
    for (r, region) in regions.iter().enumerate() {
        for id in 1..=args.brokers_per_region {
            let port =
                |base: u16| format!("127.0.0.1:{}", u32::from(base) + 10 * r as u32 + id - 1);
            let dir = data.join(region).join(format!("broker-{id}"));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let b = BrokerAddrs {
                region: region.to_string(),
                id,
                grpc: port(args.grpc_port),
                metrics: port(args.metrics_port),
                kafka: port(args.kafka_port),
                mqtt: port(args.mqtt_port),
                mqtt_ws: port(args.mqtt_ws_port),
            };
            let mut cmd = tokio::process::Command::new(&broker_bin);
            cmd.args(["--broker-id", &id.to_string(), "--region", region])
                .arg("--data-dir")
                .arg(&dir)
                .args(["--segment-bytes", LOCAL_SEGMENT_BYTES])
                .args(["--grpc-listen", &b.grpc, "--metrics-listen", &b.metrics])
                .args(["--kafka-listen", &b.kafka])
                .args(["--mqtt-listen", &b.mqtt, "--mqtt-ws-listen", &b.mqtt_ws])
                .args([
                    "--raft-listen",
                    &port(args.raft_port),
                    "--control",
                    &control_addr,
                ])
                .arg("--tokens-file")
                .arg(&auth.file)
                .arg("--token-file")
                .arg(auth.token(&format!("Broker:{region}")))
                .arg("--grpc-tls-cert")
                .arg(&grpc_cert)
                .arg("--grpc-tls-key")
                .arg(&grpc_key)
                .arg("--grpc-ca")
                .arg(&ca)
                .arg("--raft-tls-ca")
                .arg(certs.join("ca.pem"))
                .arg("--raft-tls-cert")
                .arg(certs.join(format!("broker-{region}.pem")))
                .arg("--raft-tls-key")
                .arg(certs.join(format!("broker-{region}.key")));
            let log = data.join(region).join(format!("broker-{id}.log"));
            processes.push(spawn(
                cmd,
                &format!("region-broker {region}/{id}"),
                Stage::Broker,
                &log,
            )?);
            brokers.push(b);
        }
    }
    eprintln!(
        "starting {} region-brokers in {} regions (logs under {}) ...",
        brokers.len(),
        regions.len(),
        data.display()
    );
    let mirror_addr = |r: usize, base: u16| format!("127.0.0.1:{}", u32::from(base) + r as u32);
    let mut mirrors = Vec::new();
    if regions.len() > 1 {
        for (r, region) in regions.iter().enumerate() {
            let (ca, cert, key) = meridian_security::certs::files(&certs, region);
            let mut cmd = tokio::process::Command::new(&mirror_bin);
            let (listen, metrics) = (
                mirror_addr(r, args.mirror_port),
                mirror_addr(r, args.mirror_metrics_port),
            );
            cmd.args(["--region", region, "--control", &control_addr])
                .args(["--listen", &listen, "--metrics-listen", &metrics])
                .arg("--ca")
                .arg(&ca)
                .arg("--cert")
                .arg(&cert)
                .arg("--key")
                .arg(&key)
                .arg("--token-file")
                .arg(auth.token(&format!("Mirror:{region}")))
                .arg("--grpc-ca")
                .arg(&ca);
            for (p, peer) in regions.iter().enumerate() {
                if p != r {
                    cmd.args([
                        "--peer",
                        &format!("{peer}={}", mirror_addr(p, args.mirror_port)),
                    ]);
                }
            }
            let log = data.join(region).join("mirror.log");
            processes.push(spawn(
                cmd,
                &format!("mirror {region}"),
                Stage::Mirror,
                &log,
            )?);
            mirrors.push((region.to_string(), listen, metrics));
        }
    }
    // The console serves HTTPS with a certificate of the local CA for 127.0.0.1.
    let console_url = format!("https://127.0.0.1:{}", args.console_port);
    let (console_cert, console_key) = meridian_security::certs::issue_server(
        &certs,
        "console",
        &["127.0.0.1".to_owned(), "localhost".to_owned()],
    )
    .with_context(|| format!("issuing the console's certificate into {}", certs.display()))?;
    let (console_config, admin_secret, admin_password) = console_config(&data.join("console"))?;
    {
        let mut cmd = tokio::process::Command::new(&console_bin);
        cmd.arg("--config")
            .arg(&console_config)
            .args(["--listen", &format!("127.0.0.1:{}", args.console_port)])
            .args(["--control", &control_addr])
            .arg("--audit-log")
            .arg(data.join("console").join("audit.log"))
            .arg("--tls-cert")
            .arg(&console_cert)
            .arg("--tls-key")
            .arg(&console_key)
            .arg("--token-file")
            .arg(auth.token("Console"))
            .arg("--grpc-ca")
            .arg(&ca);
        for (region, _, metrics) in &mirrors {
            cmd.args(["--mirror", &format!("{region}={metrics}")]);
        }
        processes.push(spawn(
            cmd,
            "console",
            Stage::Console,
            &data.join("console").join("console.log"),
        )?);
    }
    let result = async {
        wait_registered(&mut processes, &control_addr, &brokers).await?;
        let held_down = wait_regions_up(&mut processes, &control_addr, &regions).await?;
        wait_listening(&mut processes, "console", &format!("127.0.0.1:{}", args.console_port))
            .await?;
        let per_region: serde_json::Map<String, serde_json::Value> = regions
            .iter()
            .map(|r| {
                let addrs: Vec<&str> = brokers
                    .iter()
                    .filter(|b| b.region == *r)
                    .map(|b| b.grpc.as_str())
                    .collect();
                (r.to_string(), serde_json::Value::from(addrs.join(",")))
            })
            .collect();
        let endpoints = endpoint::record(&serde_json::json!({
            "control": control_addr,
            "broker": brokers[0].grpc,
            "regions": per_region,
        }))
        .context("recording the endpoints for the CLI")?;
        // The CLI's profile for this platform, current: its control plane and the admin's
        // token.
        let profiles = crate::profile::Profiles::put(
            "local",
            crate::profile::Profile {
                control: Some(control_addr.clone()),
                ca: Some(ca.display().to_string()),
                token: Some(admin_token.clone()),
                ..Default::default()
            },
            true,
        )
        .context("saving the CLI profile `local`")?;
        println!(
            "Meridian is up: {} regions ({}), {} brokers each, control plane on {}",
            regions.len(),
            regions.join(", "),
            args.brokers_per_region,
            match &args.etcd {
                Some(u) => format!("etcd {u}"),
                None => "the embedded store".to_owned(),
            }
        );
        println!("  control plane:  {control_addr}    metrics: http://{control_metrics}/metrics");
        for b in &brokers {
            println!(
                "  {:<9} broker {}:  gRPC {}    Kafka {}    MQTT {} (ws {})    metrics: http://{}/metrics",
                b.region, b.id, b.grpc, b.kafka, b.mqtt, b.mqtt_ws, b.metrics
            );
        }
        for (region, listen, metrics) in &mirrors {
            println!(
                "  {region:<9} mirror:    QUIC udp {listen}    metrics: http://{metrics}/metrics"
            );
        }
        if mirrors.is_empty() {
            println!("  mirrors:        none (one region)");
        }
        for (region, reason) in &held_down {
            println!(
                "  {region:<9} is DOWN: failed by an operator ({reason}); `meridian region restore {region}` brings it back"
            );
        }
        println!(
            "  certificates:   {} (mutual TLS between mirrors and between each region's brokers; TLS on the gRPC APIs; HTTPS for the console)",
            certs.display()
        );
        println!(
            "  trust the CA:   {} (e.g. curl --cacert {} {console_url}/healthz; or import it into your browser)",
            certs.join("ca.pem").display(),
            certs.join("ca.pem").display()
        );
        // The password is printed once, when it is made; after that, where it is kept.
        match &admin_password {
            Some(password) => println!(
                "  console:        {console_url}    (user admin, password {password}) — printed this once; kept in {} (mode 0600)",
                admin_secret.display()
            ),
            None => println!(
                "  console:        {console_url}    (user admin; the password is in {}, readable by you only)",
                admin_secret.display()
            ),
        }
        println!(
            "  CLI profile:    local (current; the admin's token) in {}; daemons' tokens in {}",
            profiles.display(),
            auth.dir.display()
        );
        println!("  data:           {}", data.display());
        println!(
            "  endpoints file: {} (the CLI reads it)",
            endpoints.display()
        );
        println!();
        println!("Try it:");
        println!("  meridian broker list");
        println!("  meridian topic create orders --partitions 3");
        println!("  meridian topic describe orders");
        println!(
            "  meridian produce orders --region {} --key customer-1 'first order'",
            regions[0]
        );
        println!(
            "  meridian consume orders --region {} --from beginning --max 1",
            regions[regions.len() - 1]
        );
        if regions.len() > 1 {
            println!(
                "  (a message produced in {} is mirrored to every region the topic spans)",
                regions[0]
            );
            let named: Vec<String> = mirrors
                .iter()
                .map(|(region, _, metrics)| format!("--mirror {region}={metrics}"))
                .collect();
            println!("  meridian mirror status {}", named.join(" "));
        }
        println!();
        println!("Ctrl-C stops the platform.");
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        stop(&mut processes).await;
        return Err(e);
    }
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut interrupt) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    // A daemon that dies is started again (after a wait that doubles while it keeps dying
    // young), saying so; the others keep serving.
    loop {
        let exited = {
            let waits: Vec<_> = processes
                .iter_mut()
                .map(|p| Box::pin(p.child.wait()))
                .collect();
            // Signals first: a stop asked for is never taken for a crash.
            tokio::select! {
                biased;
                _ = interrupt.recv() => None,
                _ = term.recv() => None,
                (status, i, _) = futures_util::future::select_all(waits) => Some((status, i)),
            }
        };
        let Some((status, i)) = exited else { break };
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        let p = &mut processes[i];
        p.backoff = if p.started.elapsed() >= RAN_LONG_ENOUGH {
            RESTART_BACKOFF_FIRST
        } else {
            (p.backoff * 2).clamp(RESTART_BACKOFF_FIRST, RESTART_BACKOFF_MAX)
        };
        eprintln!(
            "{} exited unexpectedly ({status}; its log: {}); restarting it in {} s",
            p.name,
            p.log.display(),
            p.backoff.as_secs()
        );
        let wait = p.backoff;
        tokio::select! {
            biased;
            _ = interrupt.recv() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(wait) => {}
        }
        let p = &mut processes[i];
        match restart(p, &status) {
            Ok(()) => eprintln!(
                "{} restarted (pid {}, restart {})",
                p.name,
                p.child.id().unwrap_or(0),
                p.restarts
            ),
            // Tried again at its next turn: its wait future ends at once.
            Err(e) => eprintln!("{}: {e:#}", p.name),
        }
    }
    stop(&mut processes).await;
    Ok(())
}

/// Starts `p` again as it was started, its log continued (after a line saying why).
fn restart(p: &mut Running, status: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p.log)
        .with_context(|| format!("opening {}", p.log.display()))?;
    writeln!(
        log,
        "--- meridian up: {} exited ({status}); started again ---",
        p.name
    )?;
    // A failed start counts as a start: the next wait doubles.
    p.started = tokio::time::Instant::now();
    p.restarts += 1;
    p.child = start(p.recipe.command(), &p.name, log)?;
    Ok(())
}

/// Moves `log` to `log.1` (and `.1` to `.2`, …, keeping [`LOGS_KEPT`]), so a daemon's
/// earlier runs stay readable instead of being truncated by the next.
fn rotate(log: &Path) {
    let numbered = |n: u32| {
        let mut name = log.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    if !log.exists() {
        return;
    }
    for n in (1..LOGS_KEPT).rev() {
        let _ = std::fs::rename(numbered(n), numbered(n + 1));
    }
    let _ = std::fs::rename(log, numbered(1));
}

fn spawn(
    cmd: tokio::process::Command,
    name: &str,
    stage: Stage,
    log_path: &Path,
) -> anyhow::Result<Running> {
    rotate(log_path);
    let log = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let recipe = Recipe::of(&cmd);
    let child = start(cmd, name, log)?;
    Ok(Running {
        name: name.to_owned(),
        stage,
        log: log_path.to_owned(),
        child,
        recipe,
        started: tokio::time::Instant::now(),
        restarts: 0,
        backoff: Duration::ZERO,
    })
}

/// Starts `cmd` with its output going to `log`.
fn start(
    mut cmd: tokio::process::Command,
    name: &str,
    log: std::fs::File,
) -> anyhow::Result<tokio::process::Child> {
    // An error's causes are what helps here, not the frames that reported it.
    cmd.env("RUST_LIB_BACKTRACE", "0");
    // Its own process group: a Ctrl-C at the terminal reaches `meridian up` alone, which
    // stops the daemons in order (console, mirrors, brokers, control plane).
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))
}

/// Mirrors first, then brokers, then the control plane (SIGTERM, 30 s each at most).
async fn stop(processes: &mut [Running]) {
    eprintln!("stopping the platform ...");
    for stage in [Stage::Console, Stage::Mirror, Stage::Broker, Stage::Control] {
        let mut group: Vec<&mut Running> =
            processes.iter_mut().filter(|p| p.stage == stage).collect();
        for p in group.iter() {
            if let Some(pid) = p.child.id() {
                // SAFETY: sending a signal to our own child process by pid.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
            }
        }
        for p in group.iter_mut() {
            match tokio::time::timeout(Duration::from_secs(30), p.child.wait()).await {
                Ok(Ok(status)) => eprintln!("{} stopped ({status})", p.name),
                Ok(Err(e)) => eprintln!("{}: {e}", p.name),
                Err(_) => {
                    let _ = p.child.kill().await;
                    eprintln!("{} did not stop within 30s and was killed", p.name);
                }
            }
        }
    }
}

fn exited_early(p: &mut Running) -> anyhow::Result<()> {
    if let Some(status) = p.child.try_wait()? {
        let tail = std::fs::read_to_string(&p.log).unwrap_or_default();
        // The error and its causes, without a backtrace's frames.
        let lines: Vec<&str> = tail
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take_while(|l| !l.starts_with("Stack backtrace") && !l.starts_with("stack backtrace"))
            .collect();
        let last = lines[lines.len().saturating_sub(6)..].join("\n");
        bail!("{} exited during start-up ({status}):\n{last}", p.name);
    }
    Ok(())
}

/// The console's configuration under `dir`, made on the first run with one admin whose
/// password is random (kept beside it, readable by this user only); the configuration
/// file, the password's file, and the password when it was made now (printed once).
/// The platform's API tokens: the tokens file every daemon checks calls against, and one
/// token file per principal (its owner's only).
struct PlatformTokens {
    file: PathBuf,
    dir: PathBuf,
}

impl PlatformTokens {
    /// The token file of `principal`.
    fn token(&self, principal: &str) -> PathBuf {
        self.dir.join(format!(
            "{}.token",
            principal.replace(':', "-").to_lowercase()
        ))
    }
}

/// Makes (on the first run, and for regions added since) a token for the admin, the
/// control plane, the console, and each region's brokers and mirror, under `data/auth/`.
fn platform_tokens(data: &Path, regions: &[&str]) -> anyhow::Result<PlatformTokens> {
    let dir = data.join("auth");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let tokens = PlatformTokens {
        file: dir.join("tokens.toml"),
        dir,
    };
    let mut principals = vec![
        "User:admin".to_owned(),
        "ControlPlane".to_owned(),
        "Console".to_owned(),
    ];
    for r in regions {
        principals.extend([format!("Broker:{r}"), format!("Mirror:{r}")]);
    }
    for p in principals {
        let out = tokens.token(&p);
        if out.exists() {
            continue;
        }
        let principal = meridian_security::tokens::Principal::parse(&p)?;
        let token = crate::token::create(&principal, &tokens.file)?;
        meridian_security::certs::write_private(&out, &format!("{token}\n"))?;
    }
    Ok(tokens)
}

fn console_config(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf, Option<String>)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let (config, secret) = (dir.join("console.toml"), dir.join("admin-password"));
    if config.exists() && secret.exists() {
        return Ok((config, secret, None));
    }
    let password = meridian_security::password::random_hex(8);
    let hash = meridian_security::password::hash_password(&password)?;
    let write = meridian_security::certs::write_private;
    write(&secret, &format!("{password}\n"))?;
    write(
        &config,
        &format!(
            "# Users of the console (roles: viewer, operator, admin). Hash a password with\n# `meridian-console hash-password`.\n[[users]]\nname = \"admin\"\nrole = \"admin\"\npassword_hash = \"{hash}\"\n"
        ),
    )?;
    Ok((config, secret, Some(password)))
}

/// Waits until every region serves: a region the control plane marked down (every broker
/// lost its lease, as when the platform last stopped) rejoins once all its log groups have
/// leaders again. Regions an operator failed stay down until restored; they are returned
/// with the reason so the banner can say so.
async fn wait_regions_up(
    processes: &mut [Running],
    control_addr: &str,
    regions: &[&str],
) -> anyhow::Result<Vec<(String, String)>> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        for p in processes.iter_mut() {
            exited_early(p)?;
        }
        let listed = match control::connect(control_addr).await {
            Ok(mut c) => c
                .list_regions(v1::ListRegionsRequest {})
                .await
                .map(|r| r.into_inner().regions)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut held_down = Vec::new();
        let mut waiting = Vec::new();
        for name in regions {
            match listed.iter().find(|r| r.name == *name) {
                Some(r) if r.state == "up" => {}
                Some(r) if r.by_operator => held_down.push((r.name.clone(), r.reason.clone())),
                _ => waiting.push(*name),
            }
        }
        if waiting.is_empty() {
            return Ok(held_down);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "region(s) {} did not come up within 60s (their log groups have no leaders); see the broker logs under the data directory",
                waiting.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the process named `name` accepts connections on `addr` (the banner then
/// prints an address that answers).
async fn wait_listening(processes: &mut [Running], name: &str, addr: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for p in processes.iter_mut() {
            exited_early(p)?;
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the {name} did not listen on {addr} within 30s; see its log under the data directory"
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_control(p: &mut Running, addr: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        exited_early(p)?;
        if let Ok(mut c) = control::connect(addr).await
            && let Ok(s) = c.status(v1::ControlStatusRequest {}).await
            && s.into_inner().leader_id.is_some()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the control plane did not elect a leader on {addr} within 60s; see {}",
                p.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every broker started here is registered at its address (a broker of an
/// earlier run may still hold a lease under its old address).
async fn wait_registered(
    processes: &mut [Running],
    control_addr: &str,
    brokers: &[BrokerAddrs],
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let count = brokers.len();
    loop {
        for p in processes.iter_mut() {
            exited_early(p)?;
        }
        let registered = match control::connect(control_addr).await {
            Ok(mut c) => c
                .list_brokers(v1::ListBrokersRequest::default())
                .await
                .map(|r| r.into_inner().brokers)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let live = brokers
            .iter()
            .filter(|b| {
                registered
                    .iter()
                    .any(|r| r.region == b.region && r.id == b.id && r.grpc == b.grpc)
            })
            .count();
        if live == count {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "only {live} of {count} brokers registered with the control plane within 60s; see the logs under the data directory"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
