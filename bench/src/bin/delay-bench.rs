//! The delayed-delivery benchmark (issue 15), against one broker process on loopback:
//!
//! - **anchor**: the same consumer's end-to-end latency for plain (undelayed) messages, sent
//!   one at a time: receive time minus send time, p50/p99.
//! - **firing error** with `--timers` (1,000,000) pending at once: every timer is sent
//!   first (due `--hold` seconds after the run starts, spread over `--window` seconds),
//!   so all are pending together; then one consumer reads them as they fire: receive time
//!   minus deliver-at time (what an application sees), and the fire's append time minus
//!   deliver-at (the broker's own error), p50/p99/max; the ratio to the anchor.
//! - **memory**: the broker's anonymous resident memory (RssAnon, heap: not the journal's
//!   file pages) before the sends and with every timer pending, per timer.
//!
//! `cargo build --release --workspace && target/release/delay-bench`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use meridian_bench::rss_anon;
use meridian_client::{ConsumerConfig, Record, StartFrom};
use meridian_tests::BrokerProcess;

#[derive(Debug, Parser)]
#[command(about = "Delayed delivery: firing error and memory with many pending timers")]
struct Args {
    /// Timers pending at once.
    #[arg(long, default_value_t = 1_000_000)]
    timers: u64,
    /// Seconds from the start until the first timer is due (the sends must finish first).
    #[arg(long, default_value_t = 150)]
    hold: u64,
    /// Seconds over which the timers are due.
    #[arg(long, default_value_t = 60)]
    window: u64,
    /// Where the broker keeps its data.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_millis() as i64
}

fn summary(h: &Histogram<u64>) -> String {
    format!(
        "p50 {} ms, p99 {} ms, max {} ms",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99),
        h.max()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let start = now_ms();
    let tmp = tempfile::Builder::new()
        .prefix("delay-bench")
        .tempdir_in(&args.dir)?;
    let broker = BrokerProcess::start(&tmp.path().join("b"), &[]).await?;
    let client = broker.client().await;
    client.create_topic("plain", 1).await?;
    client.create_topic("later", 4).await?;

    // The anchor: plain messages, one at a time, read by a waiting consumer.
    let mut consumer = client.consumer(ConsumerConfig {
        start: StartFrom::End,
        ..ConsumerConfig::default()
    });
    consumer.subscribe("plain").await?;
    let producer = client.producer(meridian_client::ProducerConfig::default());
    let mut anchor = Histogram::<u64>::new(3)?;
    for _ in 0..2_000 {
        let sent = now_ms();
        producer
            .send(Record::new("plain", sent.to_string()))
            .await
            .await?;
        let mut got = false;
        while !got {
            for m in consumer.poll(Duration::from_secs(5)).await? {
                let sent: i64 =
                    std::str::from_utf8(m.value.as_deref().unwrap_or_default())?.parse()?;
                anchor.record((now_ms() - sent).max(0) as u64)?;
                got = true;
            }
        }
    }
    println!("anchor: plain end-to-end latency {}", summary(&anchor));

    // Every timer sent first, 256 at a time.
    let before = rss_anon(broker.pid() as u32);
    let first_due = start + args.hold as i64 * 1_000;
    let window = args.window as i64 * 1_000;
    let sending = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut seed = 11u64;
    for i in 0..args.timers {
        while set.len() >= 256 {
            set.join_next().await.expect("a send")??;
        }
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let at = first_due + ((seed >> 33) % window as u64) as i64;
        let client = client.clone();
        set.spawn(async move {
            let record = Record::new("later", at.to_string()).partition((i % 4) as u32);
            client.send_delayed(record, at).await.map(|_| ())
        });
        if i > 0 && i % 100_000 == 0 {
            eprintln!("... {i} timers sent in {:.0?}", sending.elapsed());
        }
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let sent_in = sending.elapsed();
    let pending = broker.metric("meridian_delayed_pending").await;
    let with = rss_anon(broker.pid() as u32);
    println!(
        "{} timers sent in {:.1} s ({:.0}/s); pending at the broker: {pending}",
        args.timers,
        sent_in.as_secs_f64(),
        args.timers as f64 / sent_in.as_secs_f64()
    );
    println!(
        "broker RssAnon: {} MiB before, {} MiB with every timer pending: {:.0} bytes per timer",
        before >> 20,
        with >> 20,
        with.saturating_sub(before) as f64 / args.timers as f64
    );
    anyhow::ensure!(
        now_ms() < first_due,
        "the sends outlasted --hold: raise it so every timer is pending at once"
    );

    // Read them as they fire.
    let mut consumer = client.consumer(ConsumerConfig {
        start: StartFrom::Beginning,
        ..ConsumerConfig::default()
    });
    consumer.subscribe("later").await?;
    let (mut seen_late, mut fired_late) = (Histogram::<u64>::new(3)?, Histogram::<u64>::new(3)?);
    let mut early = 0u64;
    let mut got = 0u64;
    while got < args.timers {
        for m in consumer.poll(Duration::from_secs(5)).await? {
            let at: i64 = std::str::from_utf8(m.value.as_deref().unwrap_or_default())?.parse()?;
            let now = now_ms();
            if m.append_time_ms < at {
                early += 1;
            }
            seen_late.record((now - at).max(0) as u64)?;
            fired_late.record((m.append_time_ms - at).max(0) as u64)?;
            got += 1;
        }
        anyhow::ensure!(
            now_ms() < first_due + window + 120_000,
            "only {got} of {} fired two minutes after the last was due",
            args.timers
        );
    }
    println!("fired early: {early}");
    println!(
        "seen by the consumer after deliver-at: {}",
        summary(&seen_late)
    );
    println!(
        "appended (fired) after deliver-at:     {}",
        summary(&fired_late)
    );
    println!(
        "ratio to the anchor (p50, p99): {:.2}, {:.2}",
        seen_late.value_at_quantile(0.5) as f64 / anchor.value_at_quantile(0.5).max(1) as f64,
        seen_late.value_at_quantile(0.99) as f64 / anchor.value_at_quantile(0.99).max(1) as f64
    );
    Ok(())
}
