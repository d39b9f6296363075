//! `meridian topic ...`

use anyhow::Context;
use clap::Subcommand;
use meridian_client::{Client, TopicInfo};

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a topic.
    Create {
        /// Topic name: letters, digits, '.', '_' and '-'.
        name: String,
        /// Partitions (default: the broker's default).
        #[arg(long, default_value_t = 0)]
        partitions: u32,
        /// How its log groups replicate: raft or master-slave.
        #[arg(long, default_value = "raft", value_parser = ["raft", "master-slave"])]
        replication: String,
    },
    /// List topics.
    List,
    /// Show a topic's partitions, log groups and offsets.
    Describe {
        /// Topic name.
        name: String,
    },
    /// Delete a topic and its messages.
    Delete {
        /// Topic name.
        name: String,
    },
}

pub(crate) async fn run(cmd: Command, broker: &str, json: bool) -> anyhow::Result<()> {
    let client = Client::connect(broker).await?;
    match cmd {
        Command::Create {
            name,
            partitions,
            replication,
        } => {
            let t = client
                .create_topic_with(&name, partitions, &replication)
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
                    let messages: u64 = t
                        .partitions
                        .iter()
                        .map(|p| p.latest_offset - p.earliest_offset)
                        .sum();
                    println!("{:<40} {:>10} {:>14}", t.name, t.partitions.len(), messages);
                }
            }
        }
        Command::Describe { name } => {
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
                    println!(
                        "{:>9} {:>9} {:>14} {:>14}",
                        p.partition, p.log_group, p.earliest_offset, p.latest_offset
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
            "earliest_offset": p.earliest_offset,
            "latest_offset": p.latest_offset,
        })).collect::<Vec<_>>(),
    })
}
