//! `meridian produce TOPIC [MESSAGE ...]`

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use meridian_client::{Client, ProducerConfig, Record};
use meridian_proto::settings::{self, UnknownAcks};
use meridian_proto::v1::Acks;
use tokio::io::AsyncBufReadExt;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Topic to send to.
    pub(crate) topic: String,
    /// Messages to send; without any, each line of standard input is one message.
    messages: Vec<String>,
    /// Key of every message (messages with one key go to one partition, in order: the one
    /// Kafka's Java client, or librdkafka with partitioner=murmur2_random, picks for it).
    #[arg(long)]
    key: Option<String>,
    /// Partition to send to (default: by key, or spread without one).
    #[arg(long)]
    partition: Option<u32>,
    /// What the broker waits for before acknowledging: leader, quorum or all (default: the
    /// topic's).
    #[arg(long, value_parser = parse_acks)]
    acks: Option<Acks>,
    /// Deliver the messages this long from now (humantime: `30s`, `2h`, `7d`; up to 365
    /// days, within the brokers' retention): held by the broker until then.
    #[arg(long, conflicts_with = "deliver_at")]
    delay: Option<humantime::Duration>,
    /// Deliver the messages at this time (RFC 3339, e.g. 2026-12-24T18:00:00Z).
    #[arg(long)]
    deliver_at: Option<String>,
}

/// When `--delay` or `--deliver-at` says to deliver (ms since the epoch), if either does.
fn deliver_at(args: &Args) -> anyhow::Result<Option<i64>> {
    let now = std::time::SystemTime::now();
    let at = match (&args.delay, &args.deliver_at) {
        (Some(d), _) => now + **d,
        (None, Some(t)) => humantime::parse_rfc3339_weak(t).map_err(|e| {
            anyhow::anyhow!(
                "--deliver-at {t:?} is not an RFC 3339 time ({e}); example: 2026-12-24T18:00:00Z"
            )
        })?,
        (None, None) => return Ok(None),
    };
    Ok(Some(
        at.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    ))
}

/// An `--acks` value: leader, quorum or all (the topic's default when not given).
fn parse_acks(s: &str) -> Result<Acks, UnknownAcks> {
    if s.is_empty() {
        // Empty would be the topic's default: say none instead of `--acks ""`.
        return Err(UnknownAcks(s.to_owned()));
    }
    Ok(settings::Acks::parse(s)?.into())
}

/// Acknowledgments awaited at once, at most; keeps memory flat on endless input.
const OUTSTANDING_MAX: usize = 20_000;

pub(crate) async fn run(args: Args, client: Client, json: bool) -> anyhow::Result<()> {
    // Fail before reading any input if the topic is missing.
    client
        .describe_topic(&args.topic)
        .await
        .with_context(|| format!("producing to {}", args.topic))?;
    if let Some(at) = deliver_at(&args)? {
        return run_delayed(&client, &args, at, json).await;
    }
    let producer = client.producer(ProducerConfig {
        acks: args.acks.unwrap_or(Acks::Unspecified),
        ..ProducerConfig::default()
    });
    let started = Instant::now();
    let mut progress = Progress {
        sent: 0,
        acked: 0,
        last_report: Instant::now(),
    };
    let mut outstanding = VecDeque::new();
    let record = |value: String| {
        let mut r = Record::new(args.topic.clone(), value);
        if let Some(k) = &args.key {
            r = r.key(k.clone());
        }
        if let Some(p) = args.partition {
            r = r.partition(p);
        }
        r
    };
    if args.messages.is_empty() {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await.context("reading standard input")? {
            outstanding.push_back(producer.send(record(line)).await);
            progress.sent += 1;
            while outstanding.len() > OUTSTANDING_MAX {
                outstanding
                    .pop_front()
                    .expect("non-empty")
                    .await
                    .map_err(|e| progress.failed(e))?;
                progress.acked += 1;
            }
            progress.report();
        }
    } else {
        for m in &args.messages {
            outstanding.push_back(producer.send(record(m.clone())).await);
            progress.sent += 1;
        }
    }
    let mut last = None;
    for f in outstanding {
        last = Some(f.await.map_err(|e| progress.failed(e))?);
        progress.acked += 1;
        progress.report();
    }
    let elapsed = started.elapsed().as_secs_f64();
    if json {
        println!(
            "{}",
            serde_json::json!({ "topic": args.topic, "acknowledged": progress.acked, "seconds": elapsed })
        );
    } else {
        let at = last
            .map(|m| format!(" (last at partition {} offset {})", m.partition, m.offset))
            .unwrap_or_default();
        eprintln!(
            "produced {} messages to {}{at} in {elapsed:.2}s",
            progress.acked, args.topic
        );
    }
    Ok(())
}

/// Sends each message as a delayed record (one request each: a timer each).
async fn run_delayed(client: &Client, args: &Args, at: i64, json: bool) -> anyhow::Result<()> {
    let mut values = args.messages.clone();
    if values.is_empty() {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await.context("reading standard input")? {
            values.push(line);
        }
    }
    let mut scheduled = 0u64;
    for v in values {
        let mut r = Record::new(args.topic.clone(), v);
        if let Some(k) = &args.key {
            r = r.key(k.clone());
        }
        if let Some(p) = args.partition {
            r = r.partition(p);
        }
        client.send_delayed(r, at).await.with_context(|| {
            format!(
                "scheduling a message to {} ({scheduled} scheduled before this failure)",
                args.topic
            )
        })?;
        scheduled += 1;
    }
    let when = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis(at.max(0) as u64),
    );
    if json {
        println!(
            "{}",
            serde_json::json!({ "topic": args.topic, "scheduled": scheduled, "deliver_at_ms": at })
        );
    } else {
        eprintln!(
            "scheduled {scheduled} messages to {}, delivered at {when}",
            args.topic
        );
    }
    Ok(())
}

struct Progress {
    sent: u64,
    acked: u64,
    last_report: Instant,
}

impl Progress {
    fn report(&mut self) {
        if self.last_report.elapsed() >= Duration::from_secs(2) {
            eprintln!("... {} sent, {} acknowledged", self.sent, self.acked);
            self.last_report = Instant::now();
        }
    }

    fn failed(&self, e: meridian_client::ClientError) -> anyhow::Error {
        anyhow::anyhow!(
            "{e} ({} messages were acknowledged before this failure)",
            self.acked
        )
    }
}
