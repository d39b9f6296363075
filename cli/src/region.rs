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
    /// A region's health, brokers, log groups and topics.
    Describe {
        /// Region name.
        name: String,
    },
    /// Delete a region that holds no topic and has no registered broker.
    Delete {
        /// Region name.
        name: String,
    },
    /// Fail a region over: clients move to the next-nearest healthy region; it stays down
    /// until restored.
    Fail {
        /// Region name.
        name: String,
    },
    /// Route clients to a failed region again (its mirrors have caught it up meanwhile).
    Restore {
        /// Region name.
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
                let v: Vec<serde_json::Value> = regions.iter().map(region_json).collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                println!("{:<24} {:<6} REASON", "REGION", "STATE");
                for r in &regions {
                    println!("{:<24} {:<6} {}", r.name, r.state, r.reason);
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
        Command::Describe { name } => describe(control, &name, json).await?,
        Command::Fail { name } => {
            let request = v1::RegionNameRequest { name: name.clone() };
            let r = control::on_leader(control, &format!("failing region {name} over"), |mut c| {
                let request = request.clone();
                async move { c.fail_region(request).await }
            })
            .await?;
            if json {
                println!("{}", region_json(&r));
            } else {
                println!(
                    "region {} is {}: clients are routed to other regions",
                    r.name, r.state
                );
            }
        }
        Command::Restore { name } => {
            let request = v1::RegionNameRequest { name: name.clone() };
            let r = control::on_leader(control, &format!("restoring region {name}"), |mut c| {
                let request = request.clone();
                async move { c.restore_region(request).await }
            })
            .await?;
            if json {
                println!("{}", region_json(&r));
            } else {
                println!(
                    "region {} is {}: clients are routed to it again",
                    r.name, r.state
                );
            }
        }
        Command::Delete { name } => {
            let request = v1::DeleteRegionRequest { name: name.clone() };
            control::on_leader(control, &format!("deleting region {name}"), |mut c| {
                let request = request.clone();
                async move { c.delete_region(request).await }
            })
            .await?;
            if json {
                println!("{}", serde_json::json!({ "deleted": name }));
            } else {
                println!("deleted region {name}");
            }
        }
    }
    Ok(())
}

fn region_json(r: &v1::RegionInfo) -> serde_json::Value {
    serde_json::json!({
        "name": r.name, "state": r.state, "reason": r.reason, "by_operator": r.by_operator,
    })
}

async fn describe(control: &str, name: &str, json: bool) -> anyhow::Result<()> {
    let regions = control::read(control, "listing regions", |mut c| async move {
        c.list_regions(v1::ListRegionsRequest {}).await
    })
    .await?
    .regions;
    let Some(region) = regions.into_iter().find(|r| r.name == name) else {
        anyhow::bail!("unknown region {name:?}: list regions with meridian region list");
    };
    let request = v1::ListBrokersRequest {
        region: name.to_owned(),
    };
    let brokers = control::read(control, "listing brokers", |mut c| async move {
        c.list_brokers(request).await
    })
    .await?
    .brokers;
    let request = v1::ListLogGroupsRequest {
        region: name.to_owned(),
    };
    let groups = control::read(control, "listing log groups", |mut c| async move {
        c.list_log_groups(request).await
    })
    .await?
    .groups;
    let topics: Vec<String> = control::read(control, "listing topics", |mut c| async move {
        c.list_topics(v1::ControlListTopicsRequest {}).await
    })
    .await?
    .topics
    .into_iter()
    .filter_map(|t| t.spec)
    .filter(|s| s.regions.iter().any(|r| r == name))
    .map(|s| s.name)
    .collect();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "name": region.name,
                "state": region.state,
                "brokers": brokers.iter().map(|b| serde_json::json!({"id": b.id, "grpc": b.grpc})).collect::<Vec<_>>(),
                "log_groups": groups.iter().map(|g| serde_json::json!({
                    "id": g.id, "strategy": g.strategy, "replicas": g.replicas,
                    "leader": g.leader, "epoch": g.epoch, "partitions": g.partitions,
                })).collect::<Vec<_>>(),
                "topics": topics,
            })
        );
        return Ok(());
    }
    println!(
        "region {} ({}): {} live broker(s), {} log group(s), {} topic(s)",
        region.name,
        region.state,
        brokers.len(),
        groups.len(),
        topics.len()
    );
    for b in &brokers {
        println!("  broker {:>3}  {}", b.id, b.grpc);
    }
    for g in &groups {
        println!(
            "  log group {:>3}  {:<12} replicas {:<12} leader {:<4} epoch {:<5} partitions {}",
            g.id,
            g.strategy,
            g.replicas
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            g.leader.map_or("-".to_owned(), |l| l.to_string()),
            g.epoch,
            g.partitions
        );
    }
    if !topics.is_empty() {
        println!("  topics: {}", topics.join(", "));
    }
    Ok(())
}
