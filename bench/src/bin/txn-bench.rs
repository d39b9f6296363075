//! The transactions benchmark (issue 14): the Python confluent-kafka client against a
//! Meridian region's Kafka listener, in one run:
//!
//! - transactional vs non-transactional produce: the same records (100 B, acks=all, 3
//!   partitions) from an idempotent producer and from a transactional one committing every
//!   `--per-txn` records; records/s and per-record latency (to its delivery report, or to
//!   its transaction's commit), side by side as a ratio;
//! - the cost of a commit: `commit_transaction()` latency (p50, p99) for transactions
//!   writing 1, 10 and 100 partitions (normally the markers are in every partition before
//!   it returns; see ARCHITECTURE.md for when EndTxn answers once the outcome is recorded).
//!
//! Clusters: one broker, and three brokers replicating every log group by raft, on loopback
//! with `flush = fsync`. `bench/scripts/kafka_txn.py` does the measuring.
//!
//! `cargo build --release --workspace && target/release/txn-bench --python .venv/bin/python`

use std::path::PathBuf;
use std::process::Command;

use clap::Parser;
use meridian_tests::{BrokerProcess, Region, free_addr};

#[derive(Debug, Parser)]
#[command(about = "Kafka transactions: throughput, latency and commit cost with confluent-kafka")]
struct Args {
    /// Records per throughput run.
    #[arg(long, default_value_t = 100_000)]
    records: u64,
    /// Records per transaction in the transactional run.
    #[arg(long, default_value_t = 1_000)]
    per_txn: u64,
    /// Transactions per commit-cost width.
    #[arg(long, default_value_t = 50)]
    rounds: u64,
    /// Where the brokers keep their data.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// The Python with confluent-kafka (scripts/test.sh makes `.venv`).
    #[arg(long, default_value = ".venv/bin/python")]
    python: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka_txn.py");
    println!(
        "| cluster | non-transactional records/s | transactional records/s | ratio | p50 / p99 ms, non-transactional | p50 / p99 ms, transactional (to commit) | commit p50 / p99 ms at 1 / 10 / 100 partitions |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for nodes in [1u32, 3] {
        let tmp = tempfile::tempdir_in(&args.dir)?;
        let result: serde_json::Value = rt.block_on(async {
            // One broker alone, or a region of three replicating every group by raft.
            let (bootstrap, client, _one, _region) = if nodes == 1 {
                let kafka = free_addr();
                let listen = kafka.to_string();
                let broker = BrokerProcess::start(
                    &tmp.path().join("broker"),
                    &["--kafka-listen", &listen, "--flush", "fsync"],
                )
                .await?;
                let client = broker.client().await;
                (vec![listen], client, Some(broker), None)
            } else {
                let region =
                    Region::start_with_kafka(tmp.path(), nodes, &["--flush", "fsync"]).await?;
                let client = region.client().await;
                let bootstrap: Vec<String> = region.kafka.iter().map(|a| a.to_string()).collect();
                (bootstrap, client, None, Some(region))
            };
            client.create_topic("txn-bench", 3).await?;
            client.create_topic("txn-wide", 100).await?;
            let out = Command::new(&args.python)
                .arg(&script)
                .args([
                    bootstrap.join(","),
                    "txn-bench".into(),
                    "txn-wide".into(),
                    args.records.to_string(),
                    args.per_txn.to_string(),
                    args.rounds.to_string(),
                ])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "kafka_txn.py failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let line = text
                .lines()
                .find(|l| l.starts_with('{'))
                .ok_or_else(|| anyhow::anyhow!("kafka_txn.py printed no result: {text}"))?;
            Ok::<_, anyhow::Error>(serde_json::from_str(line)?)
        })?;
        let (plain, txn, commit) = (
            &result["plain"],
            &result["transactional"],
            &result["commit"],
        );
        // A rate over records some of which failed would be no rate of this broker.
        anyhow::ensure!(
            plain["acked"].as_u64() == Some(args.records),
            "the non-transactional run acknowledged {} of {} records",
            plain["acked"],
            args.records
        );
        let f = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0);
        let widths: Vec<String> = ["1", "10", "100"]
            .iter()
            .map(|w| {
                format!(
                    "{:.1} / {:.1}",
                    f(&commit[w]["p50_ms"]),
                    f(&commit[w]["p99_ms"])
                )
            })
            .collect();
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.1} / {:.1} | {:.1} / {:.1} | {} |",
            if nodes == 1 {
                "1 broker, RF 1"
            } else {
                "3 brokers, RF 3"
            },
            f(&plain["records_s"]),
            f(&txn["records_s"]),
            f(&txn["records_s"]) / f(&plain["records_s"]).max(1.0),
            f(&plain["p50_ms"]),
            f(&plain["p99_ms"]),
            f(&txn["p50_ms"]),
            f(&txn["p99_ms"]),
            widths.join(" · ")
        );
    }
    Ok(())
}
