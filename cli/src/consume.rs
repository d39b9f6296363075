//! `meridian consume TOPIC`

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use meridian_client::{Client, ConsumerConfig, StartFrom};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Topic to read.
    pub(crate) topic: String,
    /// Consumer group: resume from, and commit, its offsets.
    #[arg(long)]
    group: Option<String>,
    /// Where to start: beginning, end, an offset, or an RFC 3339 time. Without it, a group
    /// resumes from its committed offsets and otherwise reading starts at the end.
    #[arg(long)]
    from: Option<String>,
    /// Stop after this many messages.
    #[arg(long)]
    max: Option<u64>,
    /// Read only this partition.
    #[arg(long)]
    partition: Option<u32>,
    /// Stop after this many milliseconds without a new message.
    #[arg(long)]
    idle_exit_ms: Option<u64>,
}

fn parse_from(s: &str) -> anyhow::Result<StartFrom> {
    Ok(match s {
        "beginning" => StartFrom::Beginning,
        "end" => StartFrom::End,
        _ if s.bytes().all(|b| b.is_ascii_digit()) => StartFrom::Offset(s.parse()?),
        _ => {
            let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
                anyhow::anyhow!("--from {s:?} is not beginning, end, an offset or an RFC 3339 time ({e}); example: 2026-11-25T13:00:00Z")
            })?;
            StartFrom::Time(
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64),
            )
        }
    })
}

pub(crate) async fn run(args: Args, broker: &str, json: bool) -> anyhow::Result<()> {
    let from = args.from.as_deref().map(parse_from).transpose()?;
    let client = Client::connect(broker).await?;
    let config = ConsumerConfig {
        group: args.group.clone(),
        start: from.unwrap_or(StartFrom::End),
        ..ConsumerConfig::default()
    };
    let mut consumer = client.consumer(config);
    let context = || format!("consuming {}", args.topic);
    match args.partition {
        Some(p) => consumer
            .assign(&args.topic, &[p])
            .await
            .with_context(context)?,
        None => consumer
            .subscribe(&args.topic)
            .await
            .with_context(context)?,
    }
    if let Some(from) = from {
        consumer.seek_all(from).await.with_context(context)?;
    }
    let mut seen = 0u64;
    let mut stdout = std::io::stdout().lock();
    let idle = args.idle_exit_ms.map(Duration::from_millis);
    'outer: loop {
        let wait = idle.unwrap_or(Duration::from_secs(10));
        let batch = consumer.poll(wait).await.with_context(context)?;
        if batch.is_empty() && idle.is_some() {
            break;
        }
        for (i, m) in batch.iter().enumerate() {
            if json {
                let text = |b: &bytes::Bytes| String::from_utf8_lossy(b).into_owned();
                // A null value or header value is JSON null, never "" (an empty one is "").
                let line = serde_json::json!({
                    "partition": m.partition,
                    "offset": m.offset,
                    "key": m.key.as_ref().map(text),
                    "value": m.value.as_ref().map(text),
                    "headers": m
                        .headers
                        .iter()
                        .map(|(k, v)| serde_json::json!([k, v.as_ref().map(text)]))
                        .collect::<Vec<_>>(),
                    "timestamp_ms": m.timestamp_ms,
                    "append_time_ms": m.append_time_ms,
                });
                writeln!(stdout, "{line}")?;
            } else {
                // One line per value; a null value prints as an empty line (--json tells
                // them apart).
                stdout.write_all(m.value.as_deref().unwrap_or_default())?;
                stdout.write_all(b"\n")?;
            }
            seen += 1;
            if args.max.is_some_and(|max| seen >= max) {
                // Position every partition just past what was printed, so a committing group
                // skips nothing that was fetched but not shown.
                consumer.seek(&m.topic, m.partition, m.offset + 1)?;
                let mut rewound = std::collections::HashSet::new();
                for rest in &batch[i + 1..] {
                    if rest.partition != m.partition && rewound.insert(rest.partition) {
                        consumer.seek(&rest.topic, rest.partition, rest.offset)?;
                    }
                }
                stdout.flush()?;
                if args.group.is_some() {
                    consumer.commit().await.with_context(context)?;
                }
                break 'outer;
            }
        }
        stdout.flush()?;
        if args.group.is_some() {
            consumer.commit().await.with_context(context)?;
        }
    }
    Ok(())
}
