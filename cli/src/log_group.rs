//! `meridian log-group ...`: the replication state of a region's log groups, their
//! replicas, a raft group's leadership moved to another voter, and the controlled failover
//! of a master-slave group.

use anyhow::Context;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Every log group on every broker of the region: strategy, leader, epoch, journal end,
    /// watermark.
    List,
    /// Make a broker a voting replica of a raft log group (it catches up first).
    AddReplica {
        /// The log group.
        group: u32,
        /// The broker id.
        #[arg(value_name = "BROKER_ID")]
        broker_id: u32,
    },
    /// Stop a broker from replicating a raft log group.
    RemoveReplica {
        /// The log group.
        group: u32,
        /// The broker id.
        #[arg(value_name = "BROKER_ID")]
        broker_id: u32,
    },
    /// Move a raft log group's leadership to one of its voters (Kafka's preferred leader
    /// election): the leader hands over and the voter is elected once it holds the whole
    /// log. Refused when that voter is not in sync.
    Elect {
        /// The log group.
        group: u32,
        /// The broker to lead (default: the group's preferred replica, the first Kafka's
        /// Metadata lists).
        #[arg(long, value_name = "BROKER_ID")]
        to: Option<u32>,
        /// How long to wait for the election.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        wait: std::time::Duration,
    },
    /// Move one replica of a raft log group to another live broker (through the control
    /// plane): the new replica joins and catches up, then the old one leaves. The group
    /// stays where it is put: the control plane's balancing moves other groups.
    Move {
        /// The log group.
        group: u32,
        /// The broker whose replica leaves.
        #[arg(long)]
        from: u32,
        /// The live broker that takes it.
        #[arg(long)]
        to: u32,
    },
    /// Fail a master-slave log group over to its most caught-up slave (new epoch; the old
    /// master, if it returns, truncates what it alone held).
    Failover {
        /// The log group.
        group: u32,
        /// Fail over even when slaves that may hold committed records do not answer
        /// (what only they hold is lost).
        #[arg(long)]
        force: bool,
    },
}

pub(crate) async fn run(
    cmd: Command,
    broker: &str,
    control: Option<&str>,
    region: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    if let Command::Move { group, from, to } = cmd {
        let (Some(control), Some(region)) = (control, region) else {
            anyhow::bail!(
                "moving a replica is the control plane's: pass --control HOST:PORT and --region NAME"
            );
        };
        let request = meridian_proto::v1::MoveReplicaRequest {
            region: region.to_owned(),
            group,
            from,
            to,
        };
        let placed = crate::control::on_leader(
            control,
            &format!("moving log group {group}'s replica from broker {from} to {to}"),
            |mut c| {
                let r = request.clone();
                async move { c.move_replica(r).await }
            },
        )
        .await?;
        if json {
            println!(
                "{}",
                serde_json::json!({ "region": placed.region, "group": placed.id, "replicas": placed.replicas })
            );
        } else {
            println!(
                "log group {group} of {region}: broker {to} joins and catches up, then broker {from} leaves (replicas now {:?}; watch with meridian log-group list)",
                placed.replicas
            );
        }
        return Ok(());
    }
    let client = crate::control::region_client(broker, control, region).await?;
    match cmd {
        Command::List => {
            let brokers = client
                .region_log_groups()
                .await
                .context("reading the region's log groups")?;
            if json {
                let value: Vec<serde_json::Value> = brokers
                    .iter()
                    .map(|b| {
                        serde_json::json!({
                            "broker_id": b.broker_id,
                            "addr": b.addr,
                            "error": b.groups.as_ref().err().map(|e| e.to_string()),
                            "groups": b.groups.as_ref().map(|g| g.iter().map(|i| serde_json::json!({
                                "group": i.group,
                                "strategy": i.strategy,
                                "epoch": i.epoch,
                                "leader": i.leader,
                                "end_position": i.end_position,
                                "last_index": i.last_index,
                                "last_term": i.last_term,
                                "watermark": i.watermark,
                                "voters": i.voters,
                                "replicas": i.replicas.iter().map(|r| serde_json::json!({"broker_id": r.broker_id, "position": r.position})).collect::<Vec<_>>(),
                            })).collect::<Vec<_>>()).unwrap_or_default(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(value));
                return Ok(());
            }
            println!(
                "{:>6} {:>5} {:<13} {:>6} {:>6} {:>14} {:>14} {:>10} VOTERS",
                "BROKER", "GROUP", "STRATEGY", "EPOCH", "LEADER", "END", "WATERMARK", "LAST"
            );
            for b in &brokers {
                match &b.groups {
                    Err(e) => println!("{:>6} unreachable at {}: {e}", b.broker_id, b.addr),
                    Ok(groups) => {
                        for i in groups {
                            let voters: Vec<String> = i.voters.iter().map(u32::to_string).collect();
                            println!(
                                "{:>6} {:>5} {:<13} {:>6} {:>6} {:>14} {:>14} {:>10} {}",
                                b.broker_id,
                                i.group,
                                i.strategy,
                                i.epoch,
                                i.leader.map_or("-".to_owned(), |l| l.to_string()),
                                i.end_position,
                                i.watermark,
                                format!("{}@{}", i.last_index, i.last_term),
                                voters.join(","),
                            );
                        }
                    }
                }
            }
        }
        Command::AddReplica {
            group,
            broker_id: broker,
        }
        | Command::RemoveReplica {
            group,
            broker_id: broker,
        } => {
            let adding = matches!(cmd, Command::AddReplica { .. });
            let (add, remove) = if adding {
                (vec![broker], vec![])
            } else {
                (vec![], vec![broker])
            };
            let info = client
                .change_replicas(group, &add, &remove)
                .await
                .with_context(|| {
                    format!(
                        "{} broker {broker} {} log group {group}",
                        if adding { "adding" } else { "removing" },
                        if adding { "to" } else { "from" }
                    )
                })?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"group": group, "voters": info.voters})
                );
            } else {
                println!("log group {group}: replicas are brokers {:?}", info.voters);
            }
        }
        Command::Elect { group, to, wait } => {
            let r = client
                .transfer_leadership(group, to, wait)
                .await
                .with_context(|| match to {
                    Some(to) => format!("moving log group {group}'s leadership to broker {to}"),
                    None => {
                        format!("moving log group {group}'s leadership to its preferred replica")
                    }
                })?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"group": group, "leader": r.leader, "moved": r.moved})
                );
            } else if r.moved {
                println!("log group {group}: broker {} leads now", r.leader);
            } else {
                println!(
                    "log group {group}: broker {} leads already; nothing changed",
                    r.leader
                );
            }
        }
        Command::Move { .. } => unreachable!("answered above: it needs no broker client"),
        Command::Failover { group, force } => {
            let r = client
                .failover_log_group(group, force)
                .await
                .with_context(|| format!("failing over log group {group}"))?;
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "group": r.group,
                        "epoch": r.epoch,
                        "old_master": r.old_master,
                        "new_master": r.new_master,
                        "committed": r.committed,
                        "replicas": r.replicas.iter().map(|(id, end)| serde_json::json!({"broker_id": id, "end_position": end})).collect::<Vec<_>>(),
                    })
                );
            } else {
                println!(
                    "log group {}: broker {} is master at epoch {} (was {}); committed up to journal position {}",
                    r.group,
                    r.new_master,
                    r.epoch,
                    r.old_master
                        .map_or("none".to_owned(), |m| format!("broker {m}")),
                    r.committed
                );
                for (id, end) in &r.replicas {
                    match end {
                        Some(end) => println!("  broker {id}: journal ends at {end}"),
                        None => println!(
                            "  broker {id}: did not answer (learns the new epoch when it returns)"
                        ),
                    }
                }
            }
        }
    }
    Ok(())
}
