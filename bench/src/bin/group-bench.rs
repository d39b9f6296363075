//! The consumer-group benchmark (issue 15), in one run against a region of three brokers
//! replicating every log group by raft, on loopback:
//!
//! - **rebalance time**: `--members` (3, then 30) SDK consumers of one group subscribe to a
//!   topic of 60 partitions at once; the time until the coordinator lists the group Stable
//!   with every member holding its share (the first assignment), then the time until it is
//!   Stable again after one more member joins (a cooperative rebalance: partitions move
//!   only once their old member gave them up).
//! - **consume throughput with membership vs without**: one SDK consumer reading
//!   `--records` 100 B messages of a 4-partition topic from the beginning to the end,
//!   assigned every partition (no group), then as the group's only member (heartbeats,
//!   following the assignment); the ratio is the anchor (the same consumer without
//!   membership, in the same run).
//!
//! `cargo build --release --workspace && target/release/group-bench`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use meridian_client::{Client, ConsumerConfig, ProducerConfig, Record, StartFrom};
use meridian_tests::Region;

#[derive(Debug, Parser)]
#[command(about = "Consumer groups: rebalance time and consume throughput with membership")]
struct Args {
    /// Messages of the throughput runs.
    #[arg(long, default_value_t = 200_000)]
    records: u64,
    /// Where the brokers keep their data.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
}

/// Waits until `group` is Stable with `members` members each holding partitions; how long.
async fn until_stable(client: &Client, group: &str, members: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let groups = client.consumer_groups().await?;
        if let Some(g) = groups.iter().find(|g| g.name == group)
            && g.state == "Stable"
            && g.members.len() == members
            && g.members.iter().all(|m| !m.partitions.is_empty())
        {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(120),
            "group {group} not stable with {members} members"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A member of `group` polling `topic` until dropped.
fn spawn_member(client: &Client, group: &str, topic: &str) -> tokio::task::JoinHandle<()> {
    let (client, group, topic) = (client.clone(), group.to_owned(), topic.to_owned());
    tokio::spawn(async move {
        let mut c = client.consumer(ConsumerConfig {
            group: Some(group),
            start: StartFrom::Beginning,
            ..ConsumerConfig::default()
        });
        if c.subscribe(&topic).await.is_err() {
            return;
        }
        loop {
            if c.poll(Duration::from_millis(100)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    })
}

/// Reads `topic` to its end with one consumer: messages per second.
async fn consume_rate(
    client: &Client,
    topic: &str,
    group: Option<&str>,
    total: u64,
) -> anyhow::Result<f64> {
    let mut c = client.consumer(ConsumerConfig {
        group: group.map(str::to_owned),
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    });
    match group {
        Some(_) => c.subscribe(topic).await?,
        None => {
            let n = client.describe_topic(topic).await?.partitions.len() as u32;
            c.assign(topic, &(0..n).collect::<Vec<_>>()).await?;
        }
    }
    let start = Instant::now();
    let mut read = 0u64;
    while read < total {
        read += c.poll(Duration::from_millis(500)).await?.len() as u64;
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "read only {read} of {total}"
        );
    }
    let rate = read as f64 / start.elapsed().as_secs_f64();
    c.close().await?;
    Ok(rate)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tmp = tempfile::tempdir_in(&args.dir)?;
        let region = Region::start(tmp.path(), 3, &[]).await?;
        let client = region.client().await;

        println!("| members | first assignment, ms | one more joins: rebalance, ms |");
        println!("| ---: | ---: | ---: |");
        client.create_topic("spread", 60).await?;
        for members in [3usize, 30] {
            let group = format!("g{members}");
            let mut tasks: Vec<_> = (0..members)
                .map(|_| spawn_member(&client, &group, "spread"))
                .collect();
            let first = until_stable(&client, &group, members).await?;
            tasks.push(spawn_member(&client, &group, "spread"));
            let again = until_stable(&client, &group, members + 1).await?;
            println!(
                "| {members} | {:.0} | {:.0} |",
                first.as_secs_f64() * 1e3,
                again.as_secs_f64() * 1e3
            );
            for t in tasks {
                t.abort();
            }
        }

        client.create_topic("flow", 4).await?;
        let producer = client.producer(ProducerConfig::default());
        let mut acks = Vec::new();
        for i in 0..args.records {
            acks.push(
                producer
                    .send(Record::new("flow", vec![b'x'; 100]).partition((i % 4) as u32))
                    .await,
            );
            if acks.len() >= 10_000 {
                for a in acks.drain(..) {
                    a.await?;
                }
            }
        }
        for a in acks {
            a.await?;
        }
        let without = consume_rate(&client, "flow", None, args.records).await?;
        let with = consume_rate(&client, "flow", Some("flow-readers"), args.records).await?;
        println!();
        println!(
            "| consume, {} × 100 B, 4 partitions | messages/s | ratio to without |",
            args.records
        );
        println!("| --- | ---: | ---: |");
        println!("| assigned, no membership (anchor) | {without:.0} | 1.00 |");
        println!(
            "| group member (heartbeats, assignment) | {with:.0} | {:.2} |",
            with / without
        );
        anyhow::Ok(())
    })
}
