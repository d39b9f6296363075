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
    /// A header on every message, NAME=VALUE (repeat for more; a name may repeat).
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Each input line is KEY<DELIMITER>VALUE (split at the first one; a line without it
    /// is a value with no key), as kcat -K.
    #[arg(long, conflicts_with = "key", value_parser = parse_delimiter)]
    key_delimiter: Option<String>,
    /// How input lines read: `text` (a value, or with --key-delimiter a key and a value) or
    /// `json` (one object per line: "value" (null for a tombstone), and optionally "key",
    /// "headers" as [[name, value], ...] and "partition" (--partition wins) — what
    /// `consume --json` prints).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    input: String,
    /// Read the input lines from this file instead of standard input.
    #[arg(long, conflicts_with = "messages")]
    file: Option<std::path::PathBuf>,
    /// How long a message may wait for its acknowledgement, resent through failovers,
    /// before the command gives up with the reason (kcat's message.timeout.ms).
    #[arg(long, default_value = "30s")]
    timeout: humantime::Duration,
}

/// A field that must be there, whether null or a string (serde reads a missing `Option`
/// as `None` unless told otherwise; without `default`, this one is required).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    serde::Deserialize::deserialize(d)
}

/// A `--key-delimiter` value: not empty (every line would have an empty key).
fn parse_delimiter(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err(
            "an empty delimiter splits nothing: name the character between key and value, e.g. ':'"
                .into(),
        );
    }
    Ok(s.to_owned())
}

/// A `--header` value.
fn parse_header(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!(
            "{s:?} is not NAME=VALUE (example: trace-id=abc123)"
        )),
    }
}

/// One input line as a message's parts.
#[derive(Debug, Default, PartialEq)]
struct Line {
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, Option<String>)>,
    partition: Option<u32>,
}

/// Reads input line `n` (1-based, for errors) as `input` and `key_delimiter` say.
fn parse_line(
    line: &str,
    n: u64,
    input: &str,
    key_delimiter: Option<&str>,
) -> anyhow::Result<Line> {
    if input == "json" {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Json {
            #[serde(default)]
            key: Option<String>,
            // Required, null allowed: a line that forgot it must not become a tombstone.
            #[serde(deserialize_with = "present")]
            value: Option<String>,
            #[serde(default)]
            headers: Vec<(String, Option<String>)>,
            #[serde(default)]
            partition: Option<u32>,
            // What `consume --json` prints beside them, ignored here.
            #[serde(default, rename = "topic")]
            _topic: serde::de::IgnoredAny,
            #[serde(default, rename = "offset")]
            _offset: serde::de::IgnoredAny,
            #[serde(default, rename = "timestamp_ms")]
            _timestamp_ms: serde::de::IgnoredAny,
            #[serde(default, rename = "append_time_ms")]
            _append_time_ms: serde::de::IgnoredAny,
            #[serde(default, rename = "origin_region")]
            _origin_region: serde::de::IgnoredAny,
            #[serde(default, rename = "origin_position")]
            _origin_position: serde::de::IgnoredAny,
        }
        let j: Json = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!(
                "input line {n} is not a message object ({e}); example: {{\"key\": \"k\", \"value\": \"v\", \"headers\": [[\"h\", \"x\"]]}}"
            )
        })?;
        return Ok(Line {
            key: j.key,
            value: j.value,
            headers: j.headers,
            partition: j.partition,
        });
    }
    Ok(match key_delimiter.and_then(|d| line.split_once(d)) {
        Some((key, value)) => Line {
            key: Some(key.to_owned()),
            value: Some(value.to_owned()),
            ..Line::default()
        },
        None => Line {
            value: Some(line.to_owned()),
            ..Line::default()
        },
    })
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
        delivery_timeout: args.timeout.into(),
        ..ProducerConfig::default()
    });
    let started = Instant::now();
    let mut progress = Progress {
        sent: 0,
        acked: 0,
        last_report: Instant::now(),
    };
    let mut outstanding = VecDeque::new();
    if args.messages.is_empty() {
        let (mut lines, source) = input_lines(&args).await?;
        let mut n = 0u64;
        while let Some(line) = lines
            .next_line()
            .await
            .with_context(|| format!("reading {source}"))?
        {
            n += 1;
            let line = parse_line(&line, n, &args.input, args.key_delimiter.as_deref())
                .with_context(|| format!("reading {source}"))?;
            outstanding.push_back(producer.send(record(&args, line)).await);
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
        for (n, m) in args.messages.iter().enumerate() {
            let line = parse_line(m, n as u64 + 1, &args.input, args.key_delimiter.as_deref())?;
            outstanding.push_back(producer.send(record(&args, line)).await);
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

/// The record a line makes: its own key, partition and headers, else the flags'.
fn record(args: &Args, line: Line) -> Record {
    let mut r = match line.value {
        Some(value) => Record::new(args.topic.clone(), value),
        None => Record::tombstone(args.topic.clone()),
    };
    if let Some(k) = line.key.as_ref().or(args.key.as_ref()) {
        r = r.key(k.clone());
    }
    // The flag wins: copying into a topic with fewer partitions names where they go.
    if let Some(p) = args.partition.or(line.partition) {
        r = r.partition(p);
    }
    for (name, value) in &args.headers {
        r = r.header(name.clone(), value.clone());
    }
    for (name, value) in line.headers {
        r = match value {
            Some(value) => r.header(name, value),
            None => r.null_header(name),
        };
    }
    r
}

/// The input lines: `--file`'s, else standard input's; and what they are, for errors.
async fn input_lines(
    args: &Args,
) -> anyhow::Result<(
    tokio::io::Lines<Box<dyn tokio::io::AsyncBufRead + Unpin + Send>>,
    String,
)> {
    Ok(match &args.file {
        Some(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {}", path.display()))?;
            let reader: Box<dyn tokio::io::AsyncBufRead + Unpin + Send> =
                Box::new(tokio::io::BufReader::new(file));
            (reader.lines(), path.display().to_string())
        }
        None => {
            let reader: Box<dyn tokio::io::AsyncBufRead + Unpin + Send> =
                Box::new(tokio::io::BufReader::new(tokio::io::stdin()));
            (reader.lines(), "standard input".to_owned())
        }
    })
}

/// Sends each message as a delayed record (one request each: a timer each).
async fn run_delayed(client: &Client, args: &Args, at: i64, json: bool) -> anyhow::Result<()> {
    let mut lines = Vec::new();
    if args.messages.is_empty() {
        let (mut input, source) = input_lines(args).await?;
        while let Some(line) = input
            .next_line()
            .await
            .with_context(|| format!("reading {source}"))?
        {
            let n = lines.len() as u64 + 1;
            lines.push(
                parse_line(&line, n, &args.input, args.key_delimiter.as_deref())
                    .with_context(|| format!("reading {source}"))?,
            );
        }
    } else {
        for (n, m) in args.messages.iter().enumerate() {
            lines.push(parse_line(
                m,
                n as u64 + 1,
                &args.input,
                args.key_delimiter.as_deref(),
            )?);
        }
    }
    let mut scheduled = 0u64;
    for line in lines {
        let r = record(args, line);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_as_text_with_keys_or_as_json() {
        assert_eq!(
            parse_line("k1:v:1", 1, "text", Some(":")).unwrap(),
            Line {
                key: Some("k1".into()),
                value: Some("v:1".into()),
                ..Line::default()
            }
        );
        assert_eq!(
            parse_line("no key", 1, "text", Some(":")).unwrap().key,
            None
        );
        let j = parse_line(
            r#"{"topic":"t","partition":1,"offset":3,"key":"k","value":null,"headers":[["h","x"],["h",null]],"timestamp_ms":1,"append_time_ms":2,"origin_region":"us","origin_position":4}"#,
            7,
            "json",
            None,
        )
        .unwrap();
        assert_eq!(
            j,
            Line {
                key: Some("k".into()),
                value: None,
                headers: vec![("h".into(), Some("x".into())), ("h".into(), None)],
                partition: Some(1),
            }
        );
        let e = parse_line("{\"key\": \"k\"}", 7, "json", None).unwrap_err();
        assert!(e.to_string().contains("missing field `value`"), "{e}");
        let e = parse_line("{\"valu\": 1}", 7, "json", None).unwrap_err();
        assert!(
            e.to_string()
                .contains("input line 7 is not a message object"),
            "{e}"
        );
        assert!(parse_header("a=b=c").unwrap() == ("a".into(), "b=c".into()));
        assert!(parse_header("=b").is_err());
    }
}
