//! `meridian topic ...`: through the control plane when one is known (`--control`,
//! `MERIDIAN_CONTROL`, or the endpoints file of `meridian up`), else against a broker.

use anyhow::{Context, bail};
use clap::Subcommand;
use meridian_client::{Client, TopicInfo};
use meridian_proto::v1;

use crate::control;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a topic.
    Create {
        /// Topic name: letters, digits, '.', '_' and '-'.
        name: String,
        /// Partitions, 1 or more (default: 3 through the control plane, else the broker's
        /// default).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: Option<u32>,
        /// How its log groups replicate: raft or master-slave.
        #[arg(long, default_value = "raft", value_parser = ["raft", "master-slave"])]
        replication: String,
        /// Replicas of each of its log groups (default: 3, or fewer when a region has fewer
        /// live brokers). Control plane only.
        #[arg(long, default_value_t = 0)]
        replicas: u32,
        /// Regions it spans, comma-separated (default: every region). Control plane only.
        #[arg(long, value_delimiter = ',')]
        regions: Vec<String>,
        /// `strict`: one home region accepts writes (the first of --regions unless --home).
        #[arg(long, value_parser = ["strict"])]
        ordering: Option<String>,
        /// The home region of a strictly ordered topic.
        #[arg(long)]
        home: Option<String>,
        /// How long messages are kept (7d, 12h, 30m) or none; default 7d.
        #[arg(long, value_parser = parse_retention)]
        retention: Option<String>,
        /// What a produce naming no acks waits for: leader, quorum (default) or all.
        #[arg(long, value_parser = ["leader", "quorum", "all"])]
        acks: Option<String>,
        /// How a native transaction on it ends when no producer answers its check-backs:
        /// commit or rollback (default: the brokers' `[transactions] default_outcome`).
        #[arg(long, value_parser = ["commit", "rollback"])]
        txn_default: Option<String>,
        /// Which time its messages carry, and searches by time use: create-time (the
        /// producer's, default) or append-time (the broker's; Kafka's LogAppendTime).
        #[arg(long, value_parser = ["create-time", "append-time"])]
        timestamp_type: Option<String>,
        /// A topic config under Kafka's name, KEY=VALUE (repeat for each):
        /// max.message.bytes.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
        configs: Vec<(String, String)>,
    },
    /// Add partitions or change retention (control plane only).
    Alter {
        /// Topic name.
        name: String,
        /// The new partition count (more than now).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        partitions: Option<u32>,
        /// The new retention (7d, 12h, 30m) or none.
        #[arg(long, value_parser = parse_retention)]
        retention: Option<String>,
        /// The new default acks.
        #[arg(long, value_parser = ["leader", "quorum", "all"])]
        acks: Option<String>,
        /// The new default outcome of unanswered check-backs: commit, rollback, or broker
        /// (the brokers' default again).
        #[arg(long, value_parser = ["commit", "rollback", "broker"])]
        txn_default: Option<String>,
        /// Which time its messages carry: create-time or append-time.
        #[arg(long, value_parser = ["create-time", "append-time"])]
        timestamp_type: Option<String>,
        /// A strictly ordered topic's new home region: the old home stops taking writes
        /// (all its brokers confirm) before the new one starts. Messages the old home wrote
        /// and its mirror has not shipped yet arrive later, after the new home's first ones.
        #[arg(long)]
        home: Option<String>,
        /// Set a topic config, KEY=VALUE (repeat for each): max.message.bytes.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
        configs: Vec<(String, String)>,
        /// Remove a topic config (back to the brokers' default; repeat for each).
        #[arg(long = "delete-config", value_name = "KEY")]
        delete_configs: Vec<String>,
        /// The regions it spans from now on, comma separated. A region added is caught up
        /// by the mirrors from what the others retain (its groups there hold this topic
        /// alone); a region removed stops taking its writes at once, what it took is still
        /// mirrored out, and the topic can never return to it.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        regions: Option<Vec<String>>,
    },
    /// List topics.
    List,
    /// Show a topic's partitions, log groups and offsets.
    Describe {
        /// Topic name.
        name: String,
        /// Show its configuration instead: every topic config under Kafka's name, its
        /// value, and whether the topic sets it or takes the default (control plane only;
        /// a retention of 7 days, the control plane's default, shows as the default).
        #[arg(long)]
        configs: bool,
    },
    /// Delete a topic and its messages.
    Delete {
        /// Topic name.
        name: String,
    },
}

pub(crate) async fn run(
    cmd: Command,
    broker: &str,
    control: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(control) = control {
        return run_managed(cmd, control, json).await;
    }
    let client = Client::connect(broker).await?;
    match cmd {
        Command::Alter { .. } => {
            bail!("altering a topic needs the control plane: pass --control HOST:PORT")
        }
        Command::Create {
            replicas,
            regions,
            ordering,
            home,
            retention,
            acks,
            txn_default,
            timestamp_type,
            configs,
            ..
        } if replicas != 0
            || !regions.is_empty()
            || ordering.is_some()
            || home.is_some()
            || retention.is_some()
            || acks.is_some()
            || txn_default.is_some()
            || timestamp_type.is_some()
            || !configs.is_empty() =>
        {
            bail!(
                "--replicas, --regions, --ordering, --home, --retention, --acks, --txn-default, --timestamp-type and --config need the control plane: pass --control HOST:PORT"
            )
        }
        Command::Create {
            name,
            partitions,
            replication,
            ..
        } => {
            let t = client
                .create_topic_with(&name, partitions.unwrap_or(0), &replication)
                .await
                .with_context(|| format!("creating topic {name}"))?;
            if json {
                println!("{}", to_json(&t));
            } else {
                println!(
                    "created topic {} with {} partitions ({} replication)",
                    t.name,
                    t.partitions.len(),
                    t.replication
                );
            }
        }
        Command::List => {
            let topics = client.list_topics().await?;
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(topics.iter().map(to_json).collect())
                );
            } else {
                println!("{:<40} {:>10} {:>14}", "TOPIC", "PARTITIONS", "MESSAGES");
                for t in &topics {
                    // A partition whose leader did not answer has no count: nor has its topic.
                    let messages = if t.partitions.iter().any(|p| p.offsets_unknown) {
                        "unknown".to_owned()
                    } else {
                        let n: u64 = t
                            .partitions
                            .iter()
                            .map(|p| p.latest_offset - p.earliest_offset)
                            .sum();
                        n.to_string()
                    };
                    println!("{:<40} {:>10} {:>14}", t.name, t.partitions.len(), messages);
                }
            }
        }
        Command::Describe { configs: true, .. } => {
            bail!("a topic's configs are the control plane's: pass --control HOST:PORT")
        }
        Command::Describe { name, .. } => {
            let t = client
                .describe_topic(&name)
                .await
                .with_context(|| format!("describing topic {name}"))?;
            if json {
                println!("{}", to_json(&t));
            } else {
                println!(
                    "topic {} (id {}, {} replication)",
                    t.name, t.topic_id, t.replication
                );
                println!(
                    "{:>9} {:>9} {:>14} {:>14}",
                    "PARTITION", "LOG GROUP", "EARLIEST", "LATEST"
                );
                for p in &t.partitions {
                    let (earliest, latest) = if p.offsets_unknown {
                        ("unknown".to_owned(), "unknown".to_owned())
                    } else {
                        (p.earliest_offset.to_string(), p.latest_offset.to_string())
                    };
                    println!(
                        "{:>9} {:>9} {:>14} {:>14}",
                        p.partition, p.log_group, earliest, latest
                    );
                }
                if t.partitions.iter().any(|p| p.offsets_unknown) {
                    println!(
                        "unknown: the partition's leader did not answer; see meridian cluster health"
                    );
                }
            }
        }
        Command::Delete { name } => {
            client
                .delete_topic(&name)
                .await
                .with_context(|| format!("deleting topic {name}"))?;
            if json {
                println!("{}", serde_json::json!({ "deleted": name }));
            } else {
                println!("deleted topic {name}");
            }
        }
    }
    Ok(())
}

fn to_json(t: &TopicInfo) -> serde_json::Value {
    serde_json::json!({
        "name": t.name,
        "topic_id": t.topic_id,
        "created_ms": t.created_ms,
        "replication": t.replication,
        "partitions": t.partitions.iter().map(|p| serde_json::json!({
            "partition": p.partition,
            "log_group": p.log_group,
            "earliest_offset": (!p.offsets_unknown).then_some(p.earliest_offset),
            "latest_offset": (!p.offsets_unknown).then_some(p.latest_offset),
        })).collect::<Vec<_>>(),
    })
}

async fn run_managed(cmd: Command, control: &str, json: bool) -> anyhow::Result<()> {
    match cmd {
        Command::Create {
            name,
            partitions,
            replication,
            replicas,
            regions,
            ordering,
            home,
            retention,
            acks,
            txn_default,
            timestamp_type,
            configs,
        } => {
            if home.is_some() && ordering.is_none() {
                bail!(
                    "--home names the home region of a strictly ordered topic: add --ordering strict"
                );
            }
            let home = match (&ordering, home) {
                (Some(_), Some(h)) => Some(h),
                (Some(_), None) => match regions.first() {
                    Some(r) => Some(r.clone()),
                    None => bail!(
                        "--ordering strict needs a home region: pass --home REGION or --regions"
                    ),
                },
                (None, _) => None,
            };
            let request = v1::ControlCreateTopicRequest {
                spec: Some(v1::TopicSpec {
                    name: name.clone(),
                    partitions: partitions.unwrap_or(0),
                    replication,
                    replication_factor: replicas,
                    regions,
                    home,
                    retention: retention.unwrap_or_default(),
                    acks: acks.unwrap_or_default(),
                    txn_default: txn_default.unwrap_or_default(),
                    timestamp_type: timestamp_type.unwrap_or_default(),
                    configs: configs.into_iter().collect(),
                }),
            };
            let t = control::on_leader(control, &format!("creating topic {name}"), |mut c| {
                let request = request.clone();
                async move { c.create_topic(request).await }
            })
            .await?;
            if json {
                println!("{}", description_json(&t));
            } else {
                let spec = t.spec.clone().unwrap_or_default();
                println!(
                    "created topic {} (id {}) with {} partitions, {} replication x{}, in {}",
                    spec.name,
                    t.id,
                    spec.partitions,
                    spec.replication,
                    spec.replication_factor,
                    spec.regions.join(", ")
                );
            }
        }
        Command::Alter {
            name,
            partitions,
            retention,
            acks,
            home,
            txn_default,
            timestamp_type,
            configs,
            delete_configs,
            regions,
        } => {
            if partitions.is_none()
                && retention.is_none()
                && acks.is_none()
                && home.is_none()
                && txn_default.is_none()
                && timestamp_type.is_none()
                && configs.is_empty()
                && delete_configs.is_empty()
                && regions.is_none()
            {
                bail!(
                    "nothing to alter: pass --partitions N, --retention D, --acks A, --home REGION, --txn-default D, --timestamp-type T, --config KEY=VALUE, --delete-config KEY or --regions R1,R2"
                );
            }
            let request = v1::AlterTopicRequest {
                name: name.clone(),
                partitions,
                retention,
                acks,
                home,
                txn_default,
                timestamp_type,
                set_configs: configs.into_iter().collect(),
                delete_configs,
                regions: regions.map(|names| v1::RegionList { names }),
            };
            let t = control::on_leader(control, &format!("altering topic {name}"), |mut c| {
                let request = request.clone();
                async move { c.alter_topic(request).await }
            })
            .await?;
            if json {
                println!("{}", description_json(&t));
            } else {
                let spec = t.spec.clone().unwrap_or_default();
                println!(
                    "altered topic {}: {} partitions, retention {}, acks {}, in {}{}",
                    spec.name,
                    spec.partitions,
                    spec.retention,
                    spec.acks,
                    spec.regions.join(", "),
                    spec.home.map(|h| format!(", home {h}")).unwrap_or_default()
                );
            }
        }
        Command::List => {
            let topics = control::read(control, "listing topics", |mut c| async move {
                c.list_topics(v1::ControlListTopicsRequest {}).await
            })
            .await?
            .topics;
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(topics.iter().map(description_json).collect())
                );
            } else {
                println!(
                    "{:<32} {:>10} {:<12} {:>8} {:<24} RETENTION",
                    "TOPIC", "PARTITIONS", "REPLICATION", "REPLICAS", "REGIONS"
                );
                for t in &topics {
                    let s = t.spec.clone().unwrap_or_default();
                    println!(
                        "{:<32} {:>10} {:<12} {:>8} {:<24} {}",
                        s.name,
                        s.partitions,
                        s.replication,
                        s.replication_factor,
                        s.regions.join(","),
                        s.retention
                    );
                }
            }
        }
        Command::Describe { name, configs } => {
            let request = v1::TopicNameRequest { name: name.clone() };
            let t = control::read(
                control,
                &format!("describing topic {name}"),
                |mut c| async move { c.describe_topic(request).await },
            )
            .await?;
            // Each region's offsets and sizes, from its brokers (a region that does not
            // answer says why instead).
            let mut offsets = std::collections::BTreeMap::new();
            if !configs {
                for p in &t.placements {
                    offsets.insert(
                        p.region.clone(),
                        region_offsets(control, &name, &p.region).await,
                    );
                }
            }
            if configs {
                print_configs(&t, json);
            } else if json {
                let mut v = description_json(&t);
                for p in v["placements"].as_array_mut().into_iter().flatten() {
                    let region = p["region"].as_str().unwrap_or_default().to_owned();
                    p["partitions"] = match &offsets[&region] {
                        Ok(rows) => serde_json::json!(
                            rows.iter()
                                .map(|r| serde_json::json!({
                                    "partition": r.partition,
                                    "earliest_offset": r.known.then_some(r.earliest),
                                    "latest_offset": r.known.then_some(r.latest),
                                    "bytes": r.bytes,
                                }))
                                .collect::<Vec<_>>()
                        ),
                        Err(e) => serde_json::json!({ "error": e.to_string() }),
                    };
                }
                println!("{v}");
            } else {
                let s = t.spec.clone().unwrap_or_default();
                println!(
                    "topic {} (id {}): {} partitions, {} replication x{}, acks {}, retention {}, timestamps {}, unanswered transactions {}{}",
                    s.name,
                    t.id,
                    s.partitions,
                    s.replication,
                    s.replication_factor,
                    s.acks,
                    s.retention,
                    s.timestamp_type,
                    if s.txn_default.is_empty() {
                        "as the brokers' default"
                    } else {
                        s.txn_default.as_str()
                    },
                    s.home
                        .map(|h| format!(", strictly ordered, home {h}"))
                        .unwrap_or_default()
                );
                let configs: std::collections::BTreeMap<_, _> = s.configs.iter().collect();
                for (key, value) in configs {
                    println!("config {key} = {value}");
                }
                for p in &t.placements {
                    println!("region {}:", p.region);
                    let rows = offsets[&p.region].as_ref();
                    if let Err(e) = rows {
                        println!("  offsets unavailable: {e:#}");
                    }
                    println!(
                        "  {:>9} {:>9} {:>14} {:>14} {:>12} {:>10}",
                        "PARTITION", "LOG GROUP", "EARLIEST", "LATEST", "MESSAGES", "SIZE"
                    );
                    for (i, g) in p.partition_groups.iter().enumerate() {
                        // A partition whose leader did not answer shows as "-".
                        let row = rows
                            .ok()
                            .and_then(|r| r.iter().find(|r| r.partition == i as u32 && r.known));
                        let (earliest, latest, messages, size) = match row {
                            Some(r) => (
                                r.earliest.to_string(),
                                r.latest.to_string(),
                                (r.latest - r.earliest).to_string(),
                                r.bytes.map_or("-".to_owned(), meridian_proto::human::bytes),
                            ),
                            None => ("-".into(), "-".into(), "-".into(), "-".into()),
                        };
                        println!(
                            "  {i:>9} {g:>9} {earliest:>14} {latest:>14} {messages:>12} {size:>10}"
                        );
                    }
                    println!(
                        "  {:>9} {:<12} {:<16} {:>6} {:>6}",
                        "LOG GROUP", "STRATEGY", "REPLICAS", "LEADER", "EPOCH"
                    );
                    for g in &p.groups {
                        println!(
                            "  {:>9} {:<12} {:<16} {:>6} {:>6}",
                            g.id,
                            g.strategy,
                            g.replicas
                                .iter()
                                .map(u32::to_string)
                                .collect::<Vec<_>>()
                                .join(","),
                            g.leader.map_or("-".to_owned(), |l| l.to_string()),
                            g.epoch
                        );
                    }
                }
            }
        }
        Command::Delete { name } => {
            let request = v1::TopicNameRequest { name: name.clone() };
            control::on_leader(control, &format!("deleting topic {name}"), |mut c| {
                let request = request.clone();
                async move { c.delete_topic(request).await }
            })
            .await?;
            if json {
                println!("{}", serde_json::json!({ "deleted": name }));
            } else {
                println!("deleted topic {name}");
            }
        }
    }
    Ok(())
}

/// One partition's offsets and size in a region.
struct PartitionOffsets {
    partition: u32,
    earliest: u64,
    latest: u64,
    /// Whether the offsets are known (false: the partition's leader did not answer).
    known: bool,
    /// Bytes of journal it takes, as its leader reports (None: not reported).
    bytes: Option<u64>,
}

/// `topic`'s partitions in `region`, from the region's live brokers.
async fn region_offsets(
    control: &str,
    topic: &str,
    region: &str,
) -> anyhow::Result<Vec<PartitionOffsets>> {
    let client = control::region_client("", Some(control), Some(region)).await?;
    let info = client
        .describe_topic(topic)
        .await
        .with_context(|| format!("describing {topic} at region {region}'s brokers"))?;
    let mut sizes = std::collections::BTreeMap::new();
    if let Ok(reports) = client.broker_reports().await {
        for (_, _, report) in reports {
            for p in report.into_iter().flat_map(|r| r.partitions) {
                if p.topic == topic {
                    sizes.insert(p.partition, p.bytes);
                }
            }
        }
    }
    Ok(info
        .partitions
        .iter()
        .map(|p| PartitionOffsets {
            partition: p.partition,
            earliest: p.earliest_offset,
            latest: p.latest_offset,
            known: !p.offsets_unknown,
            bytes: sizes.get(&p.partition).copied(),
        })
        .collect())
}

fn description_json(t: &v1::TopicDescription) -> serde_json::Value {
    let s = t.spec.clone().unwrap_or_default();
    serde_json::json!({
        "name": s.name,
        "id": t.id,
        "created_ms": t.created_ms,
        "partitions": s.partitions,
        "replication": s.replication,
        "replication_factor": s.replication_factor,
        "regions": s.regions,
        "home": s.home,
        "retention": s.retention,
        "acks": s.acks,
        "txn_default": s.txn_default,
        "timestamp_type": s.timestamp_type,
        "configs": s.configs.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "placements": t.placements.iter().map(|p| serde_json::json!({
            "region": p.region,
            "partition_groups": p.partition_groups,
            "log_groups": p.groups.iter().map(|g| serde_json::json!({
                "id": g.id, "strategy": g.strategy, "replicas": g.replicas,
                "leader": g.leader, "epoch": g.epoch, "partitions": g.partitions,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// A `--config KEY=VALUE`.
/// A retention as the servers spell it: a positive duration normalised (`168h` is `7days`),
/// or `none`; anything else (`0s`, `-1`, `soon`) refused with why.
fn parse_retention(s: &str) -> Result<String, String> {
    let ms = meridian_proto::settings::retention_ms(s.trim())?;
    meridian_proto::settings::retention_text(ms)
        .map_err(|_| format!("retention {s:?}: a duration longer than 0 (such as 7d), or none"))
}

fn parse_config(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!(
            "{s:?} is not KEY=VALUE (example: max.message.bytes=2000)"
        )),
    }
}

/// `topic describe --configs`: each topic config under Kafka's name, its value and where it
/// comes from (`topic`: set on the topic; `default`: the brokers').
fn print_configs(t: &v1::TopicDescription, json: bool) {
    let s = t.spec.clone().unwrap_or_default();
    let retention_ms = meridian_proto::settings::retention_ms(&s.retention)
        .map_or_else(|_| s.retention.clone(), |ms| ms.to_string());
    let timestamp =
        meridian_proto::settings::TimestampType::parse(&s.timestamp_type).unwrap_or_default();
    let mut rows: Vec<(&str, String, &str)> = vec![
        (
            "retention.ms",
            retention_ms,
            if s.retention == "7d" {
                "default"
            } else {
                "topic"
            },
        ),
        (
            "message.timestamp.type",
            timestamp.kafka_name().to_owned(),
            if s.timestamp_type.is_empty() || s.timestamp_type == "create-time" {
                "default"
            } else {
                "topic"
            },
        ),
    ];
    for (key, _) in meridian_proto::topic_config::KEYS {
        match s.configs.get(key) {
            Some(v) => rows.push((key, v.clone(), "topic")),
            None => rows.push((key, "(the brokers')".to_owned(), "default")),
        }
    }
    if json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|(k, v, src)| serde_json::json!({"name": k, "value": v, "source": src}))
            .collect();
        println!("{}", serde_json::Value::from(list));
        return;
    }
    println!("{:<26} {:<20} SOURCE", "CONFIG", "VALUE");
    for (k, v, src) in rows {
        println!("{k:<26} {v:<20} {src}");
    }
}
