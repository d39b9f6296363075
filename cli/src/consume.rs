//! `meridian consume TOPIC`

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use meridian_client::{Client, ConsumerConfig, StartFrom};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Topic to read.
    pub(crate) topic: String,
    /// Consumer group: join it (its members split the partitions; with --partition, read
    /// that one outside membership), resume from and commit its offsets.
    #[arg(long)]
    group: Option<String>,
    /// How the group spreads partitions when this member founds it; broadcast gives
    /// every member every message, each from its own position (kept under --instance).
    #[arg(long, default_value = "sticky", value_parser = ["range", "round-robin", "sticky", "broadcast"])]
    assignor: String,
    /// A broadcast group's member's instance: a name this consumer keeps across restarts;
    /// its position is kept under it.
    #[arg(long)]
    instance: Option<String>,
    /// How long a broadcast group this member founds keeps the position of an instance
    /// that stopped (default: a day).
    #[arg(long)]
    instance_idle_ms: Option<u64>,
    /// How long the group keeps this member's partitions without a heartbeat.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
    /// Where to start: beginning, end, an offset, -N (the last N messages of each
    /// partition), or an RFC 3339 time. Without it, a group resumes from its committed
    /// offsets and otherwise reading starts at the end. A group's member starts here only
    /// in partitions the group has no offset for.
    #[arg(long, allow_hyphen_values = true)]
    from: Option<String>,
    /// Print each message as this kcat-style format says instead of its value on a line:
    /// %t topic, %p partition, %o offset, %k key, %v value, %K and %S their lengths (-1:
    /// null), %T timestamp (ms), %h headers (k=v,...), %r the region that first wrote it,
    /// %%; \n \t escapes. Example: '%p:%o %k=%v\n'.
    #[arg(long)]
    format: Option<String>,
    /// Stop once every partition read is at its end (a poll finds nothing new within
    /// --idle-exit-ms, default 1 s), as kcat -e. Not in a group.
    #[arg(long)]
    exit_at_end: bool,
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

/// Where to read from or move to: `beginning`, `end`, an offset, or an RFC 3339 time (ms
/// since the epoch); `flag` names the option in the error.
pub(crate) enum Place {
    Beginning,
    End,
    Offset(u64),
    Time(i64),
}

pub(crate) fn parse_place(flag: &str, s: &str) -> anyhow::Result<Place> {
    Ok(match s {
        "beginning" => Place::Beginning,
        "end" => Place::End,
        _ if s.bytes().all(|b| b.is_ascii_digit()) => Place::Offset(s.parse()?),
        _ => {
            let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
                anyhow::anyhow!("{flag} {s:?} is not beginning, end, an offset or an RFC 3339 time ({e}); example: 2026-11-25T13:00:00Z")
            })?;
            Place::Time(
                t.duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64),
            )
        }
    })
}

fn parse_from(s: &str) -> anyhow::Result<StartFrom> {
    if let Some(n) = s.strip_prefix('-') {
        return match n.parse::<u64>() {
            Ok(n) if n > 0 => Ok(StartFrom::Last(n)),
            _ => anyhow::bail!(
                "--from {s:?}: -N reads the last N messages of each partition, N a whole number above 0 (example: -10)"
            ),
        };
    }
    Ok(match parse_place("--from", s)? {
        Place::Beginning => StartFrom::Beginning,
        Place::End => StartFrom::End,
        Place::Offset(o) => StartFrom::Offset(o),
        Place::Time(t) => StartFrom::Time(t),
    })
}

pub(crate) async fn run(args: Args, client: Client, json: bool) -> anyhow::Result<()> {
    let from = args.from.as_deref().map(parse_from).transpose()?;
    if args.exit_at_end && args.group.is_some() {
        // A member's poll comes back empty while its group settles, which would read as
        // the end before anything was assigned.
        anyhow::bail!(
            "--exit-at-end reads outside a group: drop --group, or stop a member with --idle-exit-ms"
        );
    }
    let format = match &args.format {
        Some(_) if json => anyhow::bail!("--format and --json are two output formats: pick one"),
        Some(f) => {
            Some(crate::format::parse(f).map_err(|e| anyhow::anyhow!("--format {f:?}: {e}"))?)
        }
        None => None,
    };
    let config = ConsumerConfig {
        group: args.group.clone(),
        start: from.unwrap_or(StartFrom::End),
        assignor: args.assignor.clone(),
        session_timeout: Duration::from_millis(args.session_timeout_ms),
        instance: args.instance.clone(),
        instance_idle: Duration::from_millis(args.instance_idle_ms.unwrap_or(0)),
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
    // At the end, a poll finds nothing within a second: every partition has been read.
    let idle = match (args.exit_at_end, args.idle_exit_ms) {
        (true, ms) => Some(Duration::from_millis(ms.unwrap_or(1000))),
        (false, ms) => ms.map(Duration::from_millis),
    };
    let mut line = Vec::new();
    // Since when nothing came (a member's poll returns early while the group settles).
    let mut idle_since: Option<std::time::Instant> = None;
    loop {
        let wait = idle.unwrap_or(Duration::from_secs(10));
        let left = args.max.map_or(usize::MAX, |max| (max - seen) as usize);
        let started = std::time::Instant::now();
        // At most what --max leaves: positions move only past what is printed, so the
        // group's commit covers exactly that (and its origin positions stay exact).
        let batch = consumer
            .poll_up_to(wait, left)
            .await
            .with_context(context)?;
        for m in &batch {
            if json {
                let text = |b: &bytes::Bytes| String::from_utf8_lossy(b).into_owned();
                // A null value or header value is JSON null, never "" (an empty one is "").
                let line = serde_json::json!({
                    "topic": m.topic,
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
                    "origin_region": m.origin_region,
                    "origin_position": m.origin_position,
                });
                writeln!(stdout, "{line}")?;
            } else if let Some(pieces) = &format {
                line.clear();
                crate::format::render(pieces, m, &mut line);
                stdout.write_all(&line)?;
            } else {
                // One line per value; a null value prints as an empty line (--json tells
                // them apart).
                stdout.write_all(m.value.as_deref().unwrap_or_default())?;
                stdout.write_all(b"\n")?;
            }
            seen += 1;
        }
        stdout.flush()?;
        if args.group.is_some() && !batch.is_empty() {
            consumer.commit().await.with_context(context)?;
        }
        if args.max.is_some_and(|max| seen >= max) {
            break;
        }
        if batch.is_empty() {
            let since = *idle_since.get_or_insert(started);
            if idle.is_some_and(|idle| since.elapsed() >= idle) {
                break;
            }
        } else {
            idle_since = None;
        }
    }
    consumer.close().await.with_context(context)?;
    Ok(())
}
