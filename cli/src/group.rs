//! `meridian group`: the region's consumer groups (list), a group's members, offsets and
//! lag (describe), and moving a group's offsets (reset, with a dry run).

use anyhow::{Context, bail};
use clap::Subcommand;
use meridian_client::{Client, GroupPartition, ResetTo};

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Consumer groups with members (native and Kafka), their state and coordinator.
    List,
    /// A group's members, and its committed offsets and lag per partition.
    Describe {
        /// The group.
        group: String,
        /// Only this topic (default: every topic the group has committed offsets in).
        #[arg(long)]
        topic: Option<String>,
    },
    /// Move a group's offsets: its consumers read from there again (the group must have
    /// no active members).
    Reset {
        /// The group.
        group: String,
        /// The topic whose partitions move.
        #[arg(long)]
        topic: String,
        /// beginning, end, an offset, or an RFC 3339 time (the first message at or after
        /// it).
        #[arg(long)]
        to: String,
        /// Show where each partition would move; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a group's committed offsets everywhere (the group must have no active
    /// members).
    Delete {
        /// The group.
        group: String,
    },
}

/// `beginning`, `end`, an offset, or an RFC 3339 time.
fn parse_to(s: &str) -> anyhow::Result<ResetTo> {
    use crate::consume::Place;
    Ok(match crate::consume::parse_place("--to", s)? {
        Place::Beginning => ResetTo::Beginning,
        Place::End => ResetTo::End,
        Place::Offset(o) => ResetTo::Offset(o),
        Place::Time(t) => ResetTo::Time(t),
    })
}

/// Runs against `broker`, or, through the control plane, the brokers of `region`.
pub(crate) async fn run(
    cmd: Command,
    broker: &str,
    control: Option<&str>,
    region: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let client = crate::control::region_client(broker, control, region).await?;
    match cmd {
        Command::List => {
            let groups = client
                .consumer_groups()
                .await
                .context("listing consumer groups")?;
            if json {
                let v: Vec<_> = groups
                    .iter()
                    .map(|g| {
                        serde_json::json!({
                            "group": g.name,
                            "type": g.protocol_type,
                            "state": g.state,
                            "assignor": g.protocol,
                            "coordinator": g.coordinator,
                            "members": g.members.len(),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(());
            }
            println!(
                "{:<32} {:<10} {:<20} {:<20} {:>11} {:>7}",
                "GROUP", "TYPE", "STATE", "ASSIGNOR", "COORDINATOR", "MEMBERS"
            );
            for g in &groups {
                println!(
                    "{:<32} {:<10} {:<20} {:<20} {:>11} {:>7}",
                    g.name,
                    g.protocol_type,
                    g.state,
                    g.protocol,
                    g.coordinator,
                    g.members.len()
                );
            }
            Ok(())
        }
        Command::Describe { group, topic } => {
            let members = client
                .consumer_groups()
                .await
                .context("listing consumer groups")?
                .into_iter()
                .find(|g| g.name == group);
            let topics = match topic {
                Some(t) => vec![t],
                None => client
                    .list_topics()
                    .await
                    .context("listing topics")?
                    .into_iter()
                    .map(|t| t.name)
                    .collect(),
            };
            let mut offsets = Vec::new();
            for t in topics {
                let plan = client
                    .group_partitions(&group, &t, None)
                    .await
                    .with_context(|| format!("the offsets of group {group} on {t}"))?;
                if plan.iter().any(|p| p.committed.is_some()) {
                    offsets.push((t, plan));
                }
            }
            if members.is_none() && offsets.is_empty() {
                bail!(
                    "no consumer group {group:?} in this region: it has no members and no committed offsets"
                );
            }
            if json {
                let v = serde_json::json!({
                    "group": group,
                    "state": members.as_ref().map(|g| g.state.clone()),
                    "idle_instances": members.as_ref().map(|g| g.idle_instances.clone()).unwrap_or_default(),
                    "members": members.as_ref().map(|g| g.members.iter().map(|m| serde_json::json!({
                        "member": m.id, "client": m.client_id, "instance": m.instance,
                        "partitions": m.partitions.iter().map(|(t, p)| format!("{t}/{p}")).collect::<Vec<_>>(),
                    })).collect::<Vec<_>>()).unwrap_or_default(),
                    "offsets": offsets.iter().flat_map(|(t, plan)| plan.iter().map(move |p| partition_json(t, p))).collect::<Vec<_>>(),
                });
                println!("{v}");
                return Ok(());
            }
            match &members {
                Some(g) => {
                    println!(
                        "group {group}: {} ({}), {} member(s), coordinated by broker {}",
                        g.state,
                        g.protocol,
                        g.members.len(),
                        g.coordinator
                    );
                    for m in &g.members {
                        let parts: Vec<String> = m
                            .partitions
                            .iter()
                            .map(|(t, p)| format!("{t}/{p}"))
                            .collect();
                        let instance = if m.instance.is_empty() {
                            String::new()
                        } else {
                            format!(" instance {}", m.instance)
                        };
                        println!(
                            "  {} ({}){instance}: {}",
                            m.id,
                            m.client_id,
                            parts.join(", ")
                        );
                    }
                    if !g.idle_instances.is_empty() {
                        println!(
                            "  idle instances (positions kept): {}",
                            g.idle_instances.join(", ")
                        );
                    }
                }
                None => println!("group {group}: no active members"),
            }
            print_offsets(&offsets);
            Ok(())
        }
        Command::Delete { group } => {
            let deleted = client
                .delete_group(&group)
                .await
                .with_context(|| format!("deleting group {group}"))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"group": group, "partitions": deleted})
                );
            } else {
                println!("deleted group {group}: its offsets in {deleted} partition(s)");
            }
            Ok(())
        }
        Command::Reset {
            group,
            topic,
            to,
            dry_run,
        } => {
            let to = parse_to(&to)?;
            let plan = if dry_run {
                client.group_partitions(&group, &topic, Some(to)).await
            } else {
                reset(&client, &group, &topic, to).await
            }
            .with_context(|| format!("resetting group {group} on {topic}"))?;
            if json {
                let v: Vec<_> = plan.iter().map(|p| partition_json(&topic, p)).collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(());
            }
            println!(
                "{:<24} {:>9} {:>12} {:>12}",
                "TOPIC/PARTITION", "COMMITTED", "RESET-TO", "LAG-AFTER"
            );
            for p in &plan {
                let to = p.reset_to.unwrap_or_default();
                println!(
                    "{:<24} {:>9} {:>12} {:>12}",
                    format!("{topic}/{}", p.partition),
                    p.committed.map_or("-".to_owned(), |c| c.to_string()),
                    to,
                    p.latest.saturating_sub(to)
                );
            }
            println!(
                "{}",
                if dry_run {
                    "dry run: nothing changed"
                } else {
                    "reset: the group's consumers read from there"
                }
            );
            Ok(())
        }
    }
}

async fn reset(
    client: &Client,
    group: &str,
    topic: &str,
    to: ResetTo,
) -> Result<Vec<GroupPartition>, meridian_client::ClientError> {
    client.reset_group(group, topic, to).await
}

fn partition_json(topic: &str, p: &GroupPartition) -> serde_json::Value {
    serde_json::json!({
        "topic": topic,
        "partition": p.partition,
        "committed": p.committed,
        "earliest": p.earliest,
        "latest": p.latest,
        "lag": p.lag,
        "reset_to": p.reset_to,
    })
}

fn print_offsets(offsets: &[(String, Vec<GroupPartition>)]) {
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>9}",
        "TOPIC/PARTITION", "COMMITTED", "EARLIEST", "LATEST", "LAG"
    );
    for (t, plan) in offsets {
        for p in plan {
            println!(
                "{:<24} {:>9} {:>9} {:>9} {:>9}",
                format!("{t}/{}", p.partition),
                p.committed.map_or("-".to_owned(), |c| c.to_string()),
                p.earliest,
                p.latest,
                p.lag
            );
        }
    }
}
