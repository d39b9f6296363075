//! `meridian region ...`: regions, through the control plane. Writes go to the leader.

use clap::Subcommand;
use meridian_proto::v1;

use crate::control;

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

pub(crate) async fn run(cmd: Command, control: &str, json: bool) -> anyhow::Result<()> {
    match cmd {
        Command::List => {
            let regions = control::read(control, "listing regions", |mut c| async move {
                c.list_regions(v1::ListRegionsRequest {}).await
            })
            .await?
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
            let r = control::on_leader(control, &format!("creating region {name}"), |mut c| {
                let request = request.clone();
                async move { c.create_region(request).await }
            })
            .await?;
            if json {
                println!("{}", serde_json::json!({"name": r.name, "state": r.state}));
            } else {
                println!("created region {} ({})", r.name, r.state);
            }
        }
    }
    Ok(())
}
