//! `meridian up`: starts a local deployment and keeps it running until Ctrl-C or SIGTERM.
//!
//! Today a deployment is one region with one broker: replication, the control plane, mirrors
//! and the console arrive with their issues, and `up` grows with them.

use std::path::PathBuf;
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
    /// Brokers per region (only 1 until replication lands).
    #[arg(long, default_value_t = 1)]
    brokers_per_region: u32,
    /// Address of the broker's gRPC API.
    #[arg(long, default_value = endpoint::DEFAULT_BROKER)]
    listen: String,
    /// Address of the broker's /metrics endpoint.
    #[arg(long, default_value = "127.0.0.1:9464")]
    metrics_listen: String,
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    if args.regions != 1 || args.brokers_per_region != 1 {
        bail!(
            "this build starts one region with one broker (asked for {} regions x {} brokers): \
             multi-broker regions and mirroring are not built yet",
            args.regions,
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
    let data = args.data.join("local").join("broker-1");
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    let log_path = args.data.join("local").join("broker-1.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut child = tokio::process::Command::new(&broker_bin)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--grpc-listen",
            &args.listen,
            "--metrics-listen",
            &args.metrics_listen,
        ])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", broker_bin.display()))?;
    eprintln!("starting region-broker (logs: {}) ...", log_path.display());
    let client = wait_ready(&args.listen, &mut child, &log_path).await?;
    drop(client);
    let endpoints =
        endpoint::record(&args.listen).context("recording the endpoints for the CLI")?;
    println!("Meridian is up: 1 region (local), 1 broker");
    println!("  broker (gRPC):  {}", args.listen);
    println!("  metrics:        http://{}/metrics", args.metrics_listen);
    println!("  console:        not built yet (it arrives with the console issue)");
    println!("  data:           {}", args.data.display());
    println!(
        "  endpoints file: {} (the CLI reads it)",
        endpoints.display()
    );
    println!();
    println!("Try it:");
    println!("  meridian topic create orders --partitions 3");
    println!("  meridian produce orders --key customer-1 'first order'");
    println!("  meridian consume orders --from beginning --max 1");
    println!();
    println!("Ctrl-C stops the platform.");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        status = child.wait() => {
            bail!("region-broker exited unexpectedly ({}); see {}", status?, log_path.display());
        }
    }
    eprintln!("stopping region-broker ...");
    if let Some(pid) = child.id() {
        // SAFETY: sending a signal to our own child process by pid.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
        Ok(status) => eprintln!("region-broker stopped ({})", status?),
        Err(_) => {
            child.kill().await?;
            eprintln!("region-broker did not stop within 30s and was killed");
        }
    }
    Ok(())
}

async fn wait_ready(
    addr: &str,
    child: &mut tokio::process::Child,
    log: &std::path::Path,
) -> anyhow::Result<meridian_client::Client> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = std::fs::read_to_string(log).unwrap_or_default();
            let last = tail
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n");
            bail!("region-broker exited during start-up ({status}):\n{last}");
        }
        if let Ok(client) = meridian_client::Client::connect(addr).await
            && client.list_topics().await.is_ok()
        {
            return Ok(client);
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "region-broker did not answer on {addr} within 60s; see {}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
