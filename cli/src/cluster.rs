//! `meridian cluster health`: one screen of what is wrong across the platform, each with
//! what to do — regions failed over, brokers a log group names that are not live, log
//! groups without a leader or short of replicas, disks nearly full, consumer groups behind
//! (above `--lag`), and, given the mirrors' metrics addresses, links down or stalled. Exits
//! non-zero when anything is wrong, so scripts and cron can use it.

use std::collections::{BTreeMap, BTreeSet};

use clap::Args as ClapArgs;
use meridian_proto::mirror_links::{Link, parse, scrape};
use meridian_proto::v1;

use crate::control;

/// A disk this full (used / total) is a problem.
const DISK_FULL: f64 = 0.9;

#[derive(Debug, ClapArgs)]
pub(crate) struct Args {
    /// A region's mirror metrics address, REGION=HOST:PORT, to check the links too (repeat,
    /// or list them comma-separated in MERIDIAN_MIRRORS).
    #[arg(
        long = "mirror",
        value_name = "REGION=HOST:PORT",
        env = "MERIDIAN_MIRRORS",
        value_delimiter = ','
    )]
    mirrors: Vec<String>,
    /// A consumer group this many messages behind in a region is a problem.
    #[arg(long, default_value_t = 10_000)]
    lag: u64,
}

/// One thing wrong and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) what: String,
    pub(crate) fix: String,
}

/// What the platform reported, for [`problems`].
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub(crate) regions: Vec<v1::RegionInfo>,
    pub(crate) live: BTreeSet<(String, u32)>,
    pub(crate) groups: Vec<v1::LogGroupPlacement>,
    /// (region, broker, report) of every live broker that answered.
    pub(crate) reports: Vec<(String, u32, v1::BrokerReportResponse)>,
    /// Regions whose brokers could not be asked, and why.
    pub(crate) unreachable: Vec<(String, String)>,
    pub(crate) links: Vec<Link>,
}

/// What is wrong in `seen`, worst first. Pure: tested as decisions.
pub(crate) fn problems(seen: &Seen, lag_limit: u64) -> Vec<Problem> {
    let mut out = Vec::new();
    for r in seen.regions.iter().filter(|r| r.state != "up") {
        out.push(Problem {
            what: format!("region {} is failed over: {}", r.name, r.reason),
            fix: format!(
                "when its brokers are back: meridian region restore {}",
                r.name
            ),
        });
    }
    let mut gone: BTreeMap<(String, u32), Vec<u32>> = BTreeMap::new();
    for g in &seen.groups {
        for b in &g.replicas {
            if !seen.live.contains(&(g.region.clone(), *b)) {
                gone.entry((g.region.clone(), *b)).or_default().push(g.id);
            }
        }
    }
    for ((region, b), groups) in &gone {
        out.push(Problem {
            what: format!(
                "broker {b} of region {region} is not live (its lease lapsed); it is a replica of log group{} {}",
                if groups.len() == 1 { "" } else { "s" },
                join(groups)
            ),
            fix: format!(
                "start it again; or replace it: meridian log-group add-replica GROUP NEW --region {region}, then remove-replica GROUP {b}"
            ),
        });
    }
    for g in &seen.groups {
        if g.leader.is_none() {
            let fix = if g.strategy == "master-slave" {
                format!("meridian log-group failover {} --region {}", g.id, g.region)
            } else {
                format!(
                    "a raft group elects a leader once a majority of its replicas ({}) answer: start the brokers that are not live",
                    join(&g.replicas)
                )
            };
            out.push(Problem {
                what: format!("log group {} of region {} has no leader", g.id, g.region),
                fix,
            });
        }
    }
    for (region, why) in &seen.unreachable {
        out.push(Problem {
            what: format!("no broker of region {region} answers: {why}"),
            fix: format!("check the brokers of {region}: meridian broker list --region {region}"),
        });
    }
    let mut lag: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (region, b, report) in &seen.reports {
        if report.disk_total_bytes > 0 {
            let used = 1.0 - report.disk_free_bytes as f64 / report.disk_total_bytes as f64;
            if used >= DISK_FULL {
                out.push(Problem {
                    what: format!(
                        "broker {b} of region {region} has its disk {:.0}% full ({} bytes free)",
                        used * 100.0,
                        report.disk_free_bytes
                    ),
                    fix: "free space or add disk; shorter topic retention frees it too (meridian topic alter TOPIC --retention D)".into(),
                });
            }
        }
        for p in &report.partitions {
            for c in &p.committed {
                *lag.entry((region.clone(), c.group.clone())).or_default() +=
                    p.latest_offset.saturating_sub(c.offset);
            }
        }
    }
    for ((region, group), behind) in &lag {
        if *behind >= lag_limit {
            out.push(Problem {
                what: format!("consumer group {group} is {behind} messages behind in region {region}"),
                fix: format!("meridian group describe {group} --region {region}: add consumers, or reset it (meridian group reset)"),
            });
        }
    }
    for l in &seen.links {
        if l.up != Some(true) || l.stalled.is_some() {
            out.push(Problem {
                what: format!("mirror link {} → {}: {}", l.from, l.to, l.status()),
                fix: format!(
                    "meridian mirror status; the logs of {}'s and {}'s mirrors",
                    l.from, l.to
                ),
            });
        }
    }
    out
}

fn join(ids: &[u32]) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) async fn run(args: Args, control_addrs: &str, json: bool) -> anyhow::Result<()> {
    let mut seen = Seen {
        regions: control::read(control_addrs, "listing regions", |mut c| async move {
            c.list_regions(v1::ListRegionsRequest {}).await
        })
        .await?
        .regions,
        ..Seen::default()
    };
    let brokers = control::read(control_addrs, "listing brokers", |mut c| async move {
        c.list_brokers(v1::ListBrokersRequest::default()).await
    })
    .await?
    .brokers;
    seen.live = brokers
        .iter()
        .filter(|b| b.live)
        .map(|b| (b.region.clone(), b.id))
        .collect();
    seen.groups = control::read(control_addrs, "listing log groups", |mut c| async move {
        c.list_log_groups(v1::ListLogGroupsRequest::default()).await
    })
    .await?
    .groups;
    for r in &seen.regions {
        let live: Vec<&str> = brokers
            .iter()
            .filter(|b| b.live && b.region == r.name)
            .map(|b| b.grpc.as_str())
            .collect();
        if live.is_empty() {
            continue;
        }
        let reports = async {
            let client = meridian_client::Client::connect(&live.join(",")).await?;
            client.broker_reports().await
        }
        .await;
        match reports {
            Ok(reports) => {
                for (id, _, report) in reports {
                    if let Ok(report) = report {
                        seen.reports.push((r.name.clone(), id, report));
                    }
                }
            }
            Err(e) => seen.unreachable.push((r.name.clone(), e.to_string())),
        }
    }
    let mut scraped = BTreeMap::new();
    for spec in &args.mirrors {
        let (region, addr) = spec.split_once('=').ok_or_else(|| {
            anyhow::anyhow!(
                "--mirror {spec:?}: write REGION=HOST:PORT (the region's mirror metrics address)"
            )
        })?;
        let samples = scrape(addr.trim()).await.ok().map(|text| parse(&text));
        scraped.insert(region.trim().to_owned(), samples);
    }
    for (from, out) in &scraped {
        for (to, inn) in &scraped {
            if from != to {
                seen.links.push(Link::observe(
                    from,
                    to,
                    out.as_deref(),
                    inn.as_deref(),
                    None,
                ));
            }
        }
    }
    let found = problems(&seen, args.lag);
    if json {
        let v: Vec<serde_json::Value> = found
            .iter()
            .map(|p| serde_json::json!({"problem": p.what, "fix": p.fix}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"healthy": found.is_empty(), "problems": v})
        );
    } else {
        let up = seen.regions.iter().filter(|r| r.state == "up").count();
        let led = seen.groups.iter().filter(|g| g.leader.is_some()).count();
        println!(
            "regions up: {up} of {} · brokers live: {} · log groups led: {led} of {} · consumer groups: {}{}",
            seen.regions.len(),
            seen.live.len(),
            seen.groups.len(),
            seen.reports
                .iter()
                .flat_map(|(r, _, rep)| rep.partitions.iter().flat_map(move |p| p
                    .committed
                    .iter()
                    .map(move |c| (r.clone(), c.group.clone()))))
                .collect::<BTreeSet<_>>()
                .len(),
            if seen.links.is_empty() {
                String::new()
            } else {
                format!(
                    " · mirror links delivering: {} of {}",
                    seen.links
                        .iter()
                        .filter(|l| l.up == Some(true) && l.stalled.is_none())
                        .count(),
                    seen.links.len()
                )
            }
        );
        if found.is_empty() {
            println!("healthy: nothing is wrong");
        }
        for p in &found {
            println!("PROBLEM {}\n        fix: {}", p.what, p.fix);
        }
    }
    if !found.is_empty() {
        anyhow::bail!(
            "{} problem{} found",
            found.len(),
            if found.len() == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(
        region: &str,
        id: u32,
        replicas: &[u32],
        leader: Option<u32>,
    ) -> v1::LogGroupPlacement {
        v1::LogGroupPlacement {
            region: region.into(),
            id,
            strategy: "raft".into(),
            replicas: replicas.to_vec(),
            leader,
            ..Default::default()
        }
    }

    #[test]
    fn each_problem_names_the_thing_and_the_fix() {
        let mut seen = Seen {
            regions: vec![v1::RegionInfo {
                name: "x".into(),
                state: "up".into(),
                ..Default::default()
            }],
            live: [("x".to_owned(), 1), ("x".to_owned(), 2)].into(),
            groups: vec![
                group("x", 0, &[1, 2, 3], Some(1)),
                group("x", 1, &[3], None),
            ],
            ..Seen::default()
        };
        seen.reports.push((
            "x".into(),
            1,
            v1::BrokerReportResponse {
                disk_total_bytes: 100,
                disk_free_bytes: 5,
                partitions: vec![v1::PartitionReport {
                    topic: "t".into(),
                    latest_offset: 50_000,
                    committed: vec![v1::GroupCommitted {
                        group: "billing".into(),
                        offset: 10,
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ));
        let found = problems(&seen, 10_000);
        let what: Vec<&str> = found.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(
            what,
            [
                "broker 3 of region x is not live (its lease lapsed); it is a replica of log groups 0, 1",
                "log group 1 of region x has no leader",
                "broker 1 of region x has its disk 95% full (5 bytes free)",
                "consumer group billing is 49990 messages behind in region x",
            ]
        );
        assert!(found[0].fix.contains("add-replica"));
        assert!(problems(&seen, 100_000).len() == 3);
        let healthy = Seen {
            regions: seen.regions.clone(),
            live: seen.live.clone(),
            groups: vec![group("x", 0, &[1, 2], Some(2))],
            ..Seen::default()
        };
        assert!(problems(&healthy, 10_000).is_empty());
    }
}
