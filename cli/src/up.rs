//! `meridian up`: starts a local deployment and keeps it running until Ctrl-C or SIGTERM.
//!
//! Today a deployment is one region of three brokers: log groups 0 and 1 replicated by
//! raft, 2 and 3 master-slave (topics choose with `--replication`); `--brokers-per-region 1`
//! starts a single unreplicated broker. The control plane,
//! mirrors between regions and the console arrive with their issues, and `up` grows with
//! them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::endpoint;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Data directory of the deployment.
    #[arg(long, default_value = "meridian-data")]
    data: PathBuf,
    /// Regions to start (only 1 until mirroring lands).
    #[arg(long, default_value_t = 1)]
    regions: u32,
    /// Brokers per region; with more than one, log groups 0-1 replicate by raft and 2-3
    /// master-slave.
    #[arg(long, default_value_t = 3)]
    brokers_per_region: u32,
    /// gRPC port of the first broker; broker N listens on this + N - 1.
    #[arg(long, default_value_t = 7070)]
    grpc_port: u16,
    /// Raft transport port of the first broker.
    #[arg(long, default_value_t = 7170)]
    raft_port: u16,
    /// /metrics port of the first broker.
    #[arg(long, default_value_t = 9464)]
    metrics_port: u16,
}

struct Running {
    id: u32,
    grpc: String,
    metrics: String,
    log: PathBuf,
    child: tokio::process::Child,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.regions != 1 {
        bail!(
            "this build starts one region (asked for {}): mirroring between regions is not built yet",
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
    let broker_bin = exe.with_file_name("region-broker");
    if !broker_bin.exists() {
        bail!(
            "{} not found: build every binary with `cargo build --release --workspace` and run meridian from the same directory",
            broker_bin.display()
        );
    }
    let n = args.brokers_per_region;
    let addr = |base: u16, id: u32| format!("127.0.0.1:{}", u32::from(base) + id - 1);
    let peers: Vec<String> = (1..=n)
        .map(|id| {
            format!(
                "{id}={},{}",
                addr(args.raft_port, id),
                addr(args.grpc_port, id)
            )
        })
        .collect();
    let mut brokers = Vec::new();
    for id in 1..=n {
        let b = spawn(
            &broker_bin,
            &args,
            id,
            &addr,
            if n > 1 { &peers } else { &[] },
        )
        .await?;
        brokers.push(b);
    }
    eprintln!(
        "starting {n} region-broker(s) (logs in {}) ...",
        args.data.join("local").display()
    );
    for b in &mut brokers {
        wait_ready(b).await?;
    }
    let bootstrap = brokers
        .iter()
        .map(|b| b.grpc.clone())
        .collect::<Vec<_>>()
        .join(",");
    let endpoints = endpoint::record(&bootstrap).context("recording the endpoints for the CLI")?;
    let replication = if n > 1 {
        let ms: Vec<String> = master_slave_groups(n)
            .iter()
            .map(|(g, m)| format!("{g} (master: broker {m})"))
            .collect();
        format!(
            "log groups 0-1 replicated by raft, {} master-slave",
            ms.join(" and ")
        )
    } else {
        "no replication".to_owned()
    };
    println!("Meridian is up: 1 region (local), {n} broker(s), {replication}");
    for b in &brokers {
        println!(
            "  broker {} (gRPC):  {}    metrics: http://{}/metrics",
            b.id, b.grpc, b.metrics
        );
    }
    println!("  console:        not built yet (it arrives with the console issue)");
    println!("  data:           {}", args.data.display());
    println!(
        "  endpoints file: {} (the CLI reads it)",
        endpoints.display()
    );
    println!();
    println!("Try it:");
    println!("  meridian topic create orders --partitions 3");
    if n > 1 {
        println!("  meridian topic create payments --replication master-slave");
        println!("  meridian log-group list");
    }
    println!("  meridian produce orders --key customer-1 'first order'");
    println!("  meridian consume orders --from beginning --max 1");
    println!();
    println!("Ctrl-C stops the platform.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let exited = {
        let waits: Vec<_> = brokers
            .iter_mut()
            .map(|b| Box::pin(b.child.wait()))
            .collect();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => None,
            _ = term.recv() => None,
            (status, _, _) = futures_util::future::select_all(waits) => Some(status),
        }
    };
    if let Some(status) = exited {
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        eprintln!("a region-broker exited unexpectedly ({status}); stopping the others");
    }
    eprintln!("stopping the region-brokers ...");
    for b in &brokers {
        if let Some(pid) = b.child.id() {
            // SAFETY: sending a signal to our own child process by pid.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for b in &mut brokers {
        match tokio::time::timeout(Duration::from_secs(30), b.child.wait()).await {
            Ok(status) => eprintln!("region-broker {} stopped ({})", b.id, status?),
            Err(_) => {
                b.child.kill().await?;
                eprintln!(
                    "region-broker {} did not stop within 30s and was killed",
                    b.id
                );
            }
        }
    }
    Ok(())
}

async fn spawn(
    bin: &Path,
    args: &Args,
    id: u32,
    addr: &dyn Fn(u16, u32) -> String,
    peers: &[String],
) -> anyhow::Result<Running> {
    let dir = args.data.join("local");
    let data = dir.join(format!("broker-{id}"));
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let log_path = dir.join(format!("broker-{id}.log"));
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let (grpc, metrics) = (addr(args.grpc_port, id), addr(args.metrics_port, id));
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("--broker-id")
        .arg(id.to_string())
        .arg("--data-dir")
        .arg(&data);
    cmd.args(["--grpc-listen", &grpc, "--metrics-listen", &metrics]);
    if !peers.is_empty() {
        cmd.args(["--raft-listen", &addr(args.raft_port, id)]);
        for p in peers {
            cmd.args(["--peer", p]);
        }
        // Groups 2 and 3 (of the default 4) are master-slave, their masters spread.
        let n = peers.len() as u32;
        for (group, master) in master_slave_groups(n) {
            cmd.args(["--master-slave", &format!("{group}={master}")]);
        }
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Running {
        id,
        grpc,
        metrics,
        log: log_path,
        child,
    })
}

/// The master-slave log groups of a local region of `n` brokers, with their masters.
fn master_slave_groups(n: u32) -> Vec<(u32, u32)> {
    [2, 3].into_iter().map(|g| (g, g % n + 1)).collect()
}

async fn wait_ready(b: &mut Running) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = b.child.try_wait()? {
            let tail = std::fs::read_to_string(&b.log).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!(
                "region-broker {} exited during start-up ({status}):\n{last}",
                b.id
            );
        }
        if let Ok(client) = meridian_client::Client::connect(&b.grpc).await
            && client.list_topics().await.is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "region-broker {} did not answer on {} within 60s; see {}",
                b.id,
                b.grpc,
                b.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
