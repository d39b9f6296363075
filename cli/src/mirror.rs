//! `meridian mirror status`: each link between the regions' mirrors — up, stalled (with
//! why) or down, what it ships per second, its lag and the batches the other side has not
//! acknowledged — read from the mirrors' own metrics endpoints, as the console reads them
//! (`meridian_proto::mirror_links`). The rate and the lag are over two scrapes `--over`
//! apart (no lag shown: nothing was applied between them).

use std::collections::BTreeMap;
use std::time::Duration;

use clap::Subcommand;
use meridian_proto::mirror_links::{Link, Sample, parse, scrape, shipped_total};

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Each link between the named mirrors: up, stalled (with why), down or not answering;
    /// messages shipped per second, lag p50/p99, batches not yet acknowledged.
    Status {
        /// A region's mirror metrics address, REGION=HOST:PORT (repeat the flag, or list
        /// them comma-separated in MERIDIAN_MIRRORS; `meridian up` prints them).
        #[arg(
            long = "mirror",
            value_name = "REGION=HOST:PORT",
            env = "MERIDIAN_MIRRORS",
            value_delimiter = ',',
            required = true
        )]
        mirrors: Vec<String>,
        /// Time between the two scrapes the rate and lag are measured over.
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        over: Duration,
    },
}

pub(crate) async fn run(cmd: Command, json: bool) -> anyhow::Result<()> {
    let Command::Status { mirrors, over } = cmd;
    let mut sources = Vec::new();
    for spec in &mirrors {
        let (region, addr) = spec.split_once('=').ok_or_else(|| {
            anyhow::anyhow!(
                "--mirror {spec:?}: write REGION=HOST:PORT (the region's mirror metrics address)"
            )
        })?;
        sources.push((region.trim().to_owned(), addr.trim().to_owned()));
    }
    if sources.len() < 2 {
        anyhow::bail!(
            "name the mirrors of at least two regions (--mirror REGION=HOST:PORT for each): a link joins two"
        );
    }
    let first = scrape_all(&sources).await;
    tokio::time::sleep(over).await;
    let second = scrape_all(&sources).await;
    let mut links = Vec::new();
    for (from, _) in &sources {
        for (to, _) in &sources {
            if from == to {
                continue;
            }
            let out = second[from].as_ref().ok().map(Vec::as_slice);
            let inn = second[to].as_ref().ok().map(Vec::as_slice);
            let inn_before = first[to].as_ref().ok().map(Vec::as_slice);
            let mut link = Link::observe(from, to, out, inn, inn_before);
            if let (Ok(before), Some(after)) = (&first[from], out) {
                let shipped = shipped_total(after, to) - shipped_total(before, to);
                link.messages_per_second = (shipped >= 0.0).then(|| shipped / over.as_secs_f64());
            }
            links.push(link);
        }
    }
    if json {
        let value: Vec<serde_json::Value> = links
            .iter()
            .map(|l| {
                serde_json::json!({
                    "from": l.from,
                    "to": l.to,
                    "status": l.status(),
                    "up": l.up,
                    "stalled": l.stalled.as_ref().map(|(reason, secs)| serde_json::json!({"reason": reason, "seconds": secs})),
                    "messages_per_second": l.messages_per_second,
                    "lag_p50_ms": l.lag_p50_ms,
                    "lag_p99_ms": l.lag_p99_ms,
                    "unacked_batches": l.unacked_batches,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(value));
        return Ok(());
    }
    let number = |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.1}{unit}"));
    println!(
        "{:<16} {:>10} {:>12} {:>12} {:>8}  STATUS",
        "LINK", "MSG/S", "LAG P50", "LAG P99", "UNACKED"
    );
    for l in &links {
        let status = match l.up {
            // Which mirror did not answer, and where it was asked.
            None => {
                let (_, addr) = sources.iter().find(|(r, _)| *r == l.from).expect("named");
                let why = second[&l.from].as_ref().err().cloned().unwrap_or_default();
                format!("no answer from {}'s mirror at {addr}: {why}", l.from)
            }
            _ => l.status(),
        };
        println!(
            "{:<16} {:>10} {:>12} {:>12} {:>8}  {status}",
            format!("{} → {}", l.from, l.to),
            number(l.messages_per_second, ""),
            number(l.lag_p50_ms, " ms"),
            number(l.lag_p99_ms, " ms"),
            l.unacked_batches.map_or("-".to_owned(), |n| n.to_string()),
        );
    }
    Ok(())
}

/// Each region's mirror's samples, or why they could not be read.
async fn scrape_all(sources: &[(String, String)]) -> BTreeMap<String, Result<Vec<Sample>, String>> {
    let scrapes = sources.iter().map(|(region, addr)| async move {
        let samples = scrape(addr)
            .await
            .map(|text| parse(&text))
            .map_err(|e| e.to_string());
        (region.clone(), samples)
    });
    futures_util::future::join_all(scrapes)
        .await
        .into_iter()
        .collect()
}
