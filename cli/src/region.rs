//! `meridian region ...`: regions, through the control plane (`--control`, or
//! `MERIDIAN_CONTROL`; default the local `127.0.0.1:7300`). Writes go to the control-plane
//! leader: a follower's answer names it and the CLI retries there.

use anyhow::{Context, bail};
use clap::Subcommand;
use meridian_proto::v1::{self, control_plane_client::ControlPlaneClient};

/// The default control-plane address of a local deployment.
pub(crate) const DEFAULT_CONTROL: &str = "127.0.0.1:7300";

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List regions and whether they take traffic.
    List,
    /// Create a region.
    Create {
        /// Region name: letters, digits, '.', '_' and '-'.
        name: String,
    },
}

async fn connect(addr: &str) -> anyhow::Result<ControlPlaneClient<tonic::transport::Channel>> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    ControlPlaneClient::connect(uri).await.with_context(|| {
        format!("cannot connect to the control plane at {addr} (is it running? pass --control HOST:PORT)")
    })
}

pub(crate) async fn run(cmd: Command, control: &str, json: bool) -> anyhow::Result<()> {
    match cmd {
        Command::List => {
            let regions = connect(control)
                .await?
                .list_regions(v1::ListRegionsRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))
                .context("listing regions")?
                .into_inner()
                .regions;
            if json {
                let v: Vec<serde_json::Value> = regions
                    .iter()
                    .map(|r| serde_json::json!({"name": r.name, "state": r.state}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!("{:<24} STATE", "REGION");
                for r in &regions {
                    println!("{:<24} {}", r.name, r.state);
                }
            }
        }
        Command::Create { name } => {
            let request = v1::CreateRegionRequest { name: name.clone() };
            let mut addr = control.to_owned();
            let mut answer = None;
            // The answering process, then the leader it names.
            for _ in 0..2 {
                match connect(&addr).await?.create_region(request.clone()).await {
                    Ok(r) => {
                        answer = Some(r.into_inner());
                        break;
                    }
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                        match s
                            .metadata()
                            .get("x-meridian-leader")
                            .and_then(|v| v.to_str().ok())
                        {
                            Some(leader) => addr = leader.to_owned(),
                            None => bail!("creating region {name}: {}", s.message()),
                        }
                    }
                    Err(s) => bail!("creating region {name}: {}", s.message()),
                }
            }
            let Some(r) = answer else {
                bail!("creating region {name}: the control-plane leader moved; retry")
            };
            if json {
                println!("{}", serde_json::json!({"name": r.name, "state": r.state}));
            } else {
                println!("created region {} ({})", r.name, r.state);
            }
        }
    }
    Ok(())
}
