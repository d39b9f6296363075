//! `meridian txn`: the region's transactions (list, describe), ending one by id (commit,
//! rollback), sending a transaction's half messages (produce), and answering a producer
//! group's check-backs (answer).

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Subcommand;
use meridian_client::{Client, Record, TransactionConfig};
use meridian_proto::v1::TransactionInfo;
use tokio::io::AsyncBufReadExt;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Transactions open, in doubt and recently ended, with their age, participants and
    /// check-backs.
    List,
    /// One transaction in full.
    Describe {
        /// The transaction's id.
        id: String,
    },
    /// Commit a transaction by its id (whoever began it).
    Commit {
        /// The transaction's id.
        id: String,
    },
    /// Roll a transaction back by its id.
    Rollback {
        /// The transaction's id.
        id: String,
    },
    /// Send half messages in a new transaction (from arguments, or one per line of standard
    /// input), then end it.
    Produce {
        /// The transaction's id.
        #[arg(long)]
        id: String,
        /// The producer group the broker asks on check-back.
        #[arg(long)]
        producer_group: Option<String>,
        /// How long the transaction may stay open before it is checked back (or aborted).
        #[arg(long, default_value_t = 60_000)]
        timeout_ms: u64,
        /// How to end it: commit, rollback, or open (leave it open and wait until stopped:
        /// the broker checks it back once its timeout passes).
        #[arg(long, default_value = "commit", value_parser = ["commit", "rollback", "open"])]
        end: String,
        /// Topic to send to.
        topic: String,
        /// Messages; without any, each line of standard input is one.
        messages: Vec<String>,
    },
    /// Answer the check-backs of a producer group's in-doubt transactions, until stopped.
    Answer {
        /// The producer group.
        #[arg(long)]
        producer_group: String,
        /// The answer to every query: commit, rollback or unknown.
        #[arg(long, value_parser = ["commit", "rollback", "unknown"])]
        outcome: String,
    },
}

/// Runs against `broker`, or, through the control plane, the brokers of `region` (the
/// only one when it is not named).
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
            let all = client
                .list_transactions()
                .await
                .context("listing transactions")?;
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(all.iter().map(to_json).collect())
                );
                return Ok(());
            }
            println!(
                "{:<32} {:<16} {:>8} {:>6} {:>12} {:<16} {:<10} PARTICIPANTS",
                "ID", "PHASE", "AGE", "EPOCH", "CHECK-BACKS", "PRODUCER-GROUP", "DECIDED-BY"
            );
            for t in &all {
                println!(
                    "{:<32} {:<16} {:>8} {:>6} {:>12} {:<16} {:<10} {}",
                    t.id,
                    t.phase,
                    age(t),
                    t.producer_epoch,
                    t.check_backs,
                    t.producer_group.as_deref().unwrap_or("-"),
                    if t.decided_by.is_empty() {
                        "-"
                    } else {
                        &t.decided_by
                    },
                    participants(t)
                );
            }
            Ok(())
        }
        Command::Describe { id } => {
            let all = client
                .list_transactions()
                .await
                .context("listing transactions")?;
            let Some(t) = all.iter().find(|t| t.id == id) else {
                bail!(
                    "no transaction {id:?} is known in this region (ended ones are forgotten after transactions.ended_kept_ms)"
                );
            };
            if json {
                println!("{}", to_json(t));
            } else {
                println!("id:              {}", t.id);
                println!("phase:           {}", t.phase);
                println!(
                    "producer:        {} epoch {}",
                    t.producer_id, t.producer_epoch
                );
                println!("transaction:     #{}", t.number);
                println!("age:             {}", age(t));
                println!("timeout:         {} ms", t.timeout_ms);
                println!(
                    "producer group:  {}",
                    t.producer_group.as_deref().unwrap_or("-")
                );
                println!("check-backs:     {}", t.check_backs);
                println!(
                    "decided by:      {}",
                    if t.decided_by.is_empty() {
                        "-"
                    } else {
                        &t.decided_by
                    }
                );
                println!("participants:    {}", participants(t));
            }
            Ok(())
        }
        Command::Commit { id } => end(&client, &id, true, json).await,
        Command::Rollback { id } => end(&client, &id, false, json).await,
        Command::Produce {
            id,
            producer_group,
            timeout_ms,
            end,
            topic,
            messages,
        } => {
            client
                .describe_topic(&topic)
                .await
                .with_context(|| format!("producing to {topic}"))?;
            let mut txn = client
                .begin_transaction(TransactionConfig {
                    producer_group,
                    timeout: Duration::from_millis(timeout_ms),
                    ..TransactionConfig::new(id.clone(), "")
                })
                .await
                .with_context(|| format!("beginning transaction {id}"))?;
            let mut sent = 0u64;
            let send = async |value: String, txn: &mut meridian_client::Transaction| {
                txn.send(Record::new(topic.clone(), value))
                    .await
                    .with_context(|| format!("sending a half message of transaction {id}"))
            };
            if messages.is_empty() {
                let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
                while let Some(line) = lines.next_line().await.context("reading standard input")? {
                    send(line, &mut txn).await?;
                    sent += 1;
                }
            } else {
                for m in messages {
                    send(m, &mut txn).await?;
                    sent += 1;
                }
            }
            let (producer_id, epoch) = txn.producer();
            match end.as_str() {
                "commit" => txn
                    .commit()
                    .await
                    .with_context(|| format!("committing {id}"))?,
                "rollback" => txn
                    .rollback()
                    .await
                    .with_context(|| format!("rolling back {id}"))?,
                _ => {
                    // Prepared and left open: say so, then wait to be stopped.
                    println!(
                        "{}",
                        serde_json::json!({ "id": id, "prepared": sent, "producer_id": producer_id, "epoch": epoch })
                    );
                    tokio::signal::ctrl_c().await.ok();
                    return Ok(());
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "id": id, "sent": sent, "ended": end })
                );
            } else {
                eprintln!("transaction {id}: {sent} messages, {end}");
            }
            Ok(())
        }
        Command::Answer {
            producer_group,
            outcome,
        } => {
            let answer = match outcome.as_str() {
                "commit" => Some(true),
                "rollback" => Some(false),
                _ => None,
            };
            let _serving = client.serve_check_backs(&producer_group, move |q| {
                println!(
                    "{}",
                    serde_json::json!({ "check_back": q.id, "producer_id": q.producer_id, "number": q.number, "answer": outcome })
                );
                answer
            });
            eprintln!("answering check-backs of producer group {producer_group} until stopped");
            tokio::signal::ctrl_c().await.ok();
            Ok(())
        }
    }
}

async fn end(client: &Client, id: &str, commit: bool, json: bool) -> anyhow::Result<()> {
    let what = if commit { "committing" } else { "rolling back" };
    client
        .end_transaction(id, commit)
        .await
        .with_context(|| format!("{what} transaction {id}"))?;
    if json {
        println!("{}", serde_json::json!({ "id": id, "committed": commit }));
    } else {
        eprintln!(
            "transaction {id} {}",
            if commit { "committed" } else { "rolled back" }
        );
    }
    Ok(())
}

fn age(t: &TransactionInfo) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let since = t.started_ms.unwrap_or(t.updated_ms);
    format!("{:.1}s", (now - since).max(0) as f64 / 1000.0)
}

fn participants(t: &TransactionInfo) -> String {
    let all: Vec<String> = t
        .participants
        .iter()
        .map(|p| format!("{}/{}", p.topic, p.partition))
        .collect();
    if all.is_empty() {
        "-".into()
    } else {
        all.join(",")
    }
}

fn to_json(t: &TransactionInfo) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "phase": t.phase,
        "producer_id": t.producer_id,
        "producer_epoch": t.producer_epoch,
        "number": t.number,
        "started_ms": t.started_ms,
        "updated_ms": t.updated_ms,
        "timeout_ms": t.timeout_ms,
        "producer_group": t.producer_group,
        "check_backs": t.check_backs,
        "decided_by": t.decided_by,
        "participants": t.participants.iter().map(|p| serde_json::json!({"topic": p.topic, "partition": p.partition})).collect::<Vec<_>>(),
    })
}
