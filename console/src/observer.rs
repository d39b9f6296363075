//! What the console watches in the background, every few seconds: which brokers it has
//! seen (so a broker that stops answering stays on the pages, red, with when it was last
//! seen, instead of vanishing from the control plane's list of live ones), and each live
//! broker's report (`BrokerReport`: its disk, the partitions it leads with their offsets
//! and every consumer group's committed offset). From the last ten minutes of reports it
//! derives consumer groups and their lag over time, throughput per topic and per broker,
//! and the health summary's findings ([`Observer::findings`]), pure over the samples.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;

use meridian_proto::v1;
use serde::Serialize;

use crate::charts::Point;
use crate::data::{self, Region};

/// Samples kept (ten minutes at one per [`crate::charts::EVERY`]).
const KEPT: usize = 120;
/// Brokers remembered after they were last seen (a day): bounds the map when brokers are
/// replaced over and over.
const SEEN_FOR_MS: i64 = 24 * 3600 * 1000;
/// Most brokers remembered.
const SEEN_MAX: usize = 10_000;
/// A broker gone this long that no log group names any more (removed on purpose, its
/// replicas moved) is forgotten.
const UNNEEDED_FOR_MS: i64 = 5 * 60 * 1000;
/// A disk this full (used / total) is a finding.
const DISK_FULL: f64 = 0.9;

/// A broker seen live at some time.
#[derive(Debug, Clone, Serialize)]
pub struct SeenBroker {
    pub grpc: String,
    pub kafka: String,
    pub last_seen_ms: i64,
}

/// One sample of every region's reports.
#[derive(Debug, Clone, Default)]
struct Sample {
    time_ms: i64,
    /// (region, topic) → the sum of its partitions' latest offsets.
    topics: BTreeMap<(String, String), u64>,
    /// (region, broker) → the sum of the latest offsets of the partitions it leads.
    brokers: BTreeMap<(String, u32), u64>,
    /// (region, topic) → bytes its partitions hold.
    topic_bytes: BTreeMap<(String, String), u64>,
    /// (region, broker) → bytes the partitions it leads hold.
    broker_bytes: BTreeMap<(String, u32), u64>,
    /// (region, consumer group) → its lag summed over the partitions it committed on.
    lag: BTreeMap<(String, String), u64>,
}

/// A consumer group as the reports show it in one region.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupInRegion {
    pub topics: BTreeSet<String>,
    pub lag: u64,
    /// Per partition of each topic.
    pub partitions: Vec<PartitionLag>,
}

/// A group's position on one partition: (topic, partition, committed, latest, lag).
pub type PartitionLag = (String, u32, u64, u64, u64);

/// A broker's disk, as it last reported it.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Disk {
    pub total: u64,
    pub free: u64,
    pub journal: u64,
}

/// One thing wrong, for the health summary: what, and the page that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub text: String,
    pub link: String,
}

#[derive(Debug, Default)]
struct Inner {
    seen: BTreeMap<(String, u32), SeenBroker>,
    reports: BTreeMap<(String, u32), v1::BrokerReportResponse>,
    samples: VecDeque<Sample>,
}

/// The background observations.
#[derive(Debug, Default)]
pub struct Observer {
    inner: Mutex<Inner>,
}

impl Observer {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("observer lock poisoned")
    }

    /// Notes the live brokers of `regions` as seen now, and adds to each region the brokers
    /// seen before and not live now (`live: false`, with when they were last seen), so a
    /// dead broker stays on the page.
    pub fn remember(&self, regions: &mut [Region], now_ms: i64) {
        let mut inner = self.lock();
        for r in regions.iter_mut() {
            for b in r.brokers.iter_mut().filter(|b| b.live) {
                inner.seen.insert(
                    (r.name.clone(), b.id),
                    SeenBroker {
                        grpc: b.grpc.clone(),
                        kafka: b.kafka.clone(),
                        last_seen_ms: now_ms,
                    },
                );
                b.last_seen_ms = Some(now_ms);
            }
            let groups = &r.groups;
            inner.seen.retain(|(region, id), seen| {
                *region != r.name
                    || groups.iter().any(|g| g.replicas.contains(id))
                    || now_ms - seen.last_seen_ms < UNNEEDED_FOR_MS
            });
            for ((region, id), seen) in &inner.seen {
                if *region != r.name || r.brokers.iter().any(|b| b.id == *id) {
                    continue;
                }
                r.brokers.push(data::Broker {
                    id: *id,
                    grpc: seen.grpc.clone(),
                    kafka: seen.kafka.clone(),
                    live: false,
                    replicas: r.groups.iter().filter(|g| g.replicas.contains(id)).count(),
                    leads: 0,
                    journal_bytes: None,
                    last_seen_ms: Some(seen.last_seen_ms),
                    disk: None,
                });
            }
            r.brokers.sort_by_key(|b| b.id);
            for b in r.brokers.iter_mut() {
                if let Some(report) = inner.reports.get(&(r.name.clone(), b.id))
                    && b.live
                {
                    b.disk = Some(Disk {
                        total: report.disk_total_bytes,
                        free: report.disk_free_bytes,
                        journal: report.journal_bytes,
                    });
                }
            }
        }
        inner
            .seen
            .retain(|_, s| now_ms - s.last_seen_ms < SEEN_FOR_MS);
        while inner.seen.len() > SEEN_MAX {
            let oldest = inner
                .seen
                .iter()
                .min_by_key(|(_, s)| s.last_seen_ms)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                inner.seen.remove(&k);
            }
        }
    }

    /// Takes one round of reports: `(region, broker, report)` of every live broker that
    /// answered.
    pub fn add(&self, time_ms: i64, reports: Vec<(String, u32, v1::BrokerReportResponse)>) {
        let mut sample = Sample {
            time_ms,
            ..Sample::default()
        };
        let mut inner = self.lock();
        inner.reports.clear();
        for (region, broker, report) in reports {
            for p in &report.partitions {
                *sample
                    .topics
                    .entry((region.clone(), p.topic.clone()))
                    .or_default() += p.latest_offset;
                *sample.brokers.entry((region.clone(), broker)).or_default() += p.latest_offset;
                *sample
                    .topic_bytes
                    .entry((region.clone(), p.topic.clone()))
                    .or_default() += p.bytes;
                *sample
                    .broker_bytes
                    .entry((region.clone(), broker))
                    .or_default() += p.bytes;
                for c in &p.committed {
                    *sample
                        .lag
                        .entry((region.clone(), c.group.clone()))
                        .or_default() += p.latest_offset.saturating_sub(c.offset);
                }
            }
            sample.brokers.entry((region.clone(), broker)).or_default();
            inner.reports.insert((region, broker), report);
        }
        if inner.samples.len() == KEPT {
            inner.samples.pop_front();
        }
        inner.samples.push_back(sample);
    }

    /// Every consumer group with a committed offset, per region.
    pub fn groups(&self) -> BTreeMap<String, BTreeMap<String, GroupInRegion>> {
        let inner = self.lock();
        let mut out: BTreeMap<String, BTreeMap<String, GroupInRegion>> = BTreeMap::new();
        for ((region, _), report) in &inner.reports {
            for p in &report.partitions {
                for c in &p.committed {
                    let g = out
                        .entry(c.group.clone())
                        .or_default()
                        .entry(region.clone())
                        .or_default();
                    let lag = p.latest_offset.saturating_sub(c.offset);
                    g.topics.insert(p.topic.clone());
                    g.lag += lag;
                    g.partitions.push((
                        p.topic.clone(),
                        p.partition,
                        c.offset,
                        p.latest_offset,
                        lag,
                    ));
                }
            }
        }
        for regions in out.values_mut() {
            for g in regions.values_mut() {
                g.partitions.sort();
            }
        }
        out
    }

    /// A consumer group's total lag in each region over time.
    pub fn lag_history(&self, group: &str) -> BTreeMap<String, Vec<Point>> {
        let inner = self.lock();
        let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        for s in &inner.samples {
            for ((region, g), lag) in &s.lag {
                if g == group {
                    out.entry(region.clone()).or_default().push(Point {
                        time_ms: s.time_ms,
                        value: *lag as f64,
                    });
                }
            }
        }
        out
    }

    /// Messages per second appended in each region (to every topic).
    pub fn region_rates(&self) -> BTreeMap<String, Vec<Point>> {
        let inner = self.lock();
        rates(&inner.samples, |s| {
            let mut held: BTreeMap<String, u64> = BTreeMap::new();
            for ((r, _), n) in &s.topics {
                *held.entry(r.clone()).or_default() += n;
            }
            held
        })
    }

    /// Messages per second appended to `topic` in each region.
    pub fn topic_rates(&self, topic: &str) -> BTreeMap<String, Vec<Point>> {
        let inner = self.lock();
        rates(&inner.samples, |s| {
            s.topics
                .iter()
                .filter(|((_, t), _)| t == topic)
                .map(|((r, _), n)| (r.clone(), *n))
                .collect()
        })
    }

    /// Messages per second appended at each broker (to the partitions it leads).
    pub fn broker_rates(&self) -> BTreeMap<String, Vec<Point>> {
        let inner = self.lock();
        rates(&inner.samples, |s| {
            s.brokers
                .iter()
                .map(|((r, b), n)| (format!("{r} broker {b}"), *n))
                .collect()
        })
    }

    /// Bytes per second appended at each broker (a step where retention freed more than
    /// was appended has no rate).
    pub fn broker_byte_rates(&self) -> BTreeMap<String, Vec<Point>> {
        let inner = self.lock();
        rates(&inner.samples, |s| {
            s.broker_bytes
                .iter()
                .map(|((r, b), n)| (format!("{r} broker {b}"), *n))
                .collect()
        })
    }

    /// Bytes per second appended to `topic` in each region.
    pub fn topic_byte_rates(&self, topic: &str) -> BTreeMap<String, Vec<Point>> {
        let inner = self.lock();
        rates(&inner.samples, |s| {
            s.topic_bytes
                .iter()
                .filter(|((_, t), _)| t == topic)
                .map(|((r, _), n)| (r.clone(), *n))
                .collect()
        })
    }

    /// Each topic now, over every region: (messages per second, bytes per second, bytes
    /// held) — rates from the last two samples.
    pub fn topics_now(&self) -> BTreeMap<String, (f64, f64, u64)> {
        let inner = self.lock();
        let mut out: BTreeMap<String, (f64, f64, u64)> = BTreeMap::new();
        let n = inner.samples.len();
        let Some(b) = inner.samples.back() else {
            return out;
        };
        for ((_, t), bytes) in &b.topic_bytes {
            out.entry(t.clone()).or_default().2 += bytes;
        }
        if n >= 2 {
            let a = &inner.samples[n - 2];
            let secs = ((b.time_ms - a.time_ms) as f64 / 1000.0).max(0.001);
            let step = |now: &u64, before: Option<&u64>| {
                before
                    .filter(|x| **x <= *now)
                    .map_or(0.0, |x| (now - x) as f64 / secs)
            };
            for (k, now) in &b.topics {
                out.entry(k.1.clone()).or_default().0 += step(now, a.topics.get(k));
            }
            for (k, now) in &b.topic_bytes {
                out.entry(k.1.clone()).or_default().1 += step(now, a.topic_bytes.get(k));
            }
        }
        out
    }

    /// What is wrong now, each with the page that fixes it: regions down, brokers gone
    /// (with when they were last seen), log groups without a leader or missing a replica,
    /// links down or stalled (`links`: name, up and delivering, status), disks nearly full,
    /// consumer lag growing over the last four samples.
    pub fn findings(
        &self,
        regions: &[Region],
        links: &[(String, bool, String)],
        now_ms: i64,
    ) -> Vec<Finding> {
        let inner = self.lock();
        findings(regions, links, &inner.samples, now_ms)
    }
}

/// Rates between consecutive samples of the counters `of` picks (a counter that went down —
/// a deleted topic, a leader moved — has no rate for that step).
fn rates(
    samples: &VecDeque<Sample>,
    of: impl Fn(&Sample) -> BTreeMap<String, u64>,
) -> BTreeMap<String, Vec<Point>> {
    let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
    let counters: Vec<(i64, BTreeMap<String, u64>)> =
        samples.iter().map(|s| (s.time_ms, of(s))).collect();
    for pair in counters.windows(2) {
        let ((t0, a), (t1, b)) = (&pair[0], &pair[1]);
        let secs = ((t1 - t0) as f64 / 1000.0).max(0.001);
        for (name, now) in b {
            if let Some(before) = a.get(name).filter(|x| **x <= *now) {
                out.entry(name.clone()).or_default().push(Point {
                    time_ms: *t1,
                    value: (now - before) as f64 / secs,
                });
            }
        }
    }
    out
}

/// How long before `now_ms` `then_ms` was, for people.
pub fn ago(now_ms: i64, then_ms: i64) -> String {
    let secs = (now_ms - then_ms).max(0) / 1000;
    match secs {
        0..=119 => format!("{secs} s ago"),
        120..=7199 => format!("{} min ago", secs / 60),
        _ => format!("{} h ago", secs / 3600),
    }
}

fn findings(
    regions: &[Region],
    links: &[(String, bool, String)],
    samples: &VecDeque<Sample>,
    now_ms: i64,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |text: String, link: &str| {
        out.push(Finding {
            text,
            link: link.to_owned(),
        })
    };
    for r in regions {
        if !r.up {
            add(
                format!("Region {} is failed over: {}", r.name, r.reason),
                "/",
            );
        }
        for b in r.brokers.iter().filter(|b| !b.live) {
            let when = b
                .last_seen_ms
                .map_or("never seen by this console".to_owned(), |t| {
                    format!("last seen {}", ago(now_ms, t))
                });
            add(
                format!(
                    "Broker {} of region {} is not answering ({when})",
                    b.id, r.name
                ),
                &format!("/brokers#broker-{}-{}", r.name, b.id),
            );
        }
        for g in &r.groups {
            let link = format!("/brokers#group-{}-{}", r.name, g.id);
            if g.leader.is_none() {
                add(
                    format!("Log group {} of region {} has no leader", g.id, r.name),
                    &link,
                );
            }
            let gone: Vec<String> = g
                .replicas
                .iter()
                .filter(|id| !r.brokers.iter().any(|b| b.id == **id && b.live))
                .map(u32::to_string)
                .collect();
            if !gone.is_empty() {
                add(
                    format!(
                        "Log group {} of region {} is under-replicated: replica {} not live",
                        g.id,
                        r.name,
                        gone.join(", ")
                    ),
                    &link,
                );
            }
        }
        for b in &r.brokers {
            if let Some(d) = b.disk.filter(|d| d.total > 0) {
                let used = 1.0 - d.free as f64 / d.total as f64;
                if used >= DISK_FULL {
                    add(
                        format!(
                            "Broker {} of region {} has its disk {:.0}% full",
                            b.id,
                            r.name,
                            used * 100.0
                        ),
                        &format!("/brokers#broker-{}-{}", r.name, b.id),
                    );
                }
            }
        }
    }
    for (name, delivering, status) in links {
        if !delivering {
            add(format!("Mirror link {name}: {status}"), "/mirrors");
        }
    }
    // Lag growing at each of the last four samples (and not zero).
    let last: Vec<&Sample> = samples.iter().rev().take(4).collect();
    if last.len() == 4 {
        for ((region, group), lag) in &last[0].lag {
            let growing = last.windows(2).all(|w| {
                w[1].lag
                    .get(&(region.clone(), group.clone()))
                    .is_some_and(|before| {
                        before < w[0].lag.get(&(region.clone(), group.clone())).unwrap_or(&0)
                    })
            });
            if growing && *lag > 0 {
                add(
                    format!(
                        "Consumer group {group} falls behind in {region}: lag {lag} and growing"
                    ),
                    &format!("/groups/{}", crate::pages::url_encode(group)),
                );
            }
        }
    }
    out
}

/// Samples forever: every region's live brokers' reports, one round per
/// [`crate::charts::EVERY`].
pub async fn observe(app: crate::App) {
    loop {
        let now = data::now_ms();
        match data::regions(&app.control).await {
            Ok(mut regions) => {
                app.observer.remember(&mut regions, now);
                let mut reports = Vec::new();
                for r in &regions {
                    let Ok(client) = r.client().await else {
                        continue;
                    };
                    let Ok(answers) = client.broker_reports().await else {
                        continue;
                    };
                    for (id, _, report) in answers {
                        if let Ok(report) = report {
                            reports.push((r.name.clone(), id, report));
                        }
                    }
                }
                app.observer.add(now, reports);
            }
            Err(e) => tracing::debug!(error = %e, "observation skipped"),
        }
        tokio::time::sleep(crate::charts::EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(brokers: &[(u32, bool)], groups: &[(u32, &[u32], Option<u32>)]) -> Region {
        Region {
            name: "x".into(),
            up: true,
            reason: String::new(),
            by_operator: false,
            brokers: brokers
                .iter()
                .map(|&(id, live)| data::Broker {
                    id,
                    grpc: format!("127.0.0.1:{id}"),
                    kafka: String::new(),
                    live,
                    replicas: 0,
                    leads: 0,
                    journal_bytes: None,
                    last_seen_ms: None,
                    disk: None,
                })
                .collect(),
            groups: groups
                .iter()
                .map(|&(id, replicas, leader)| data::LogGroup {
                    id,
                    strategy: "raft".into(),
                    replicas: replicas.to_vec(),
                    leader,
                    epoch: 1,
                    partitions: 1,
                    watermark: None,
                    end: None,
                    follower_lag: Vec::new(),
                    move_targets: Vec::new(),
                })
                .collect(),
            live_brokers: 0,
            leaderless_groups: 0,
        }
    }

    fn report(topic: &str, latest: u64, committed: &[(&str, u64)]) -> v1::BrokerReportResponse {
        v1::BrokerReportResponse {
            partitions: vec![v1::PartitionReport {
                topic: topic.into(),
                partition: 0,
                earliest_offset: 0,
                latest_offset: latest,
                bytes: latest * 10,
                committed: committed
                    .iter()
                    .map(|(g, o)| v1::GroupCommitted {
                        group: (*g).into(),
                        offset: *o,
                    })
                    .collect(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_broker_that_stops_answering_stays_listed_as_gone_with_when_it_was_seen() {
        let o = Observer::default();
        let mut regions = vec![region(&[(1, true), (2, true)], &[(0, &[1, 2], Some(1))])];
        o.remember(&mut regions, 1_000);
        let mut regions = vec![region(&[(1, true)], &[(0, &[1, 2], Some(1))])];
        o.remember(&mut regions, 31_000);
        let gone = &regions[0].brokers[1];
        assert_eq!(
            (gone.id, gone.live, gone.last_seen_ms),
            (2, false, Some(1_000))
        );
        // Gone for long and named by no group any more (its replica moved): forgotten.
        let mut moved = vec![region(&[(1, true)], &[(0, &[1], Some(1))])];
        o.remember(&mut moved, 31_000);
        assert_eq!(moved[0].brokers.len(), 2, "not yet");
        let mut moved = vec![region(&[(1, true)], &[(0, &[1], Some(1))])];
        o.remember(&mut moved, 1_000 + UNNEEDED_FOR_MS);
        assert_eq!(moved[0].brokers.len(), 1);
        let f = o.findings(&regions, &[], 31_000);
        assert_eq!(
            f.iter().map(|f| f.text.as_str()).collect::<Vec<_>>(),
            [
                "Broker 2 of region x is not answering (last seen 30 s ago)",
                "Log group 0 of region x is under-replicated: replica 2 not live",
            ]
        );
        assert_eq!(f[0].link, "/brokers#broker-x-2");
    }

    #[test]
    fn leaderless_groups_stalled_links_and_growing_lag_are_findings() {
        let o = Observer::default();
        for (i, lag) in [5u64, 9, 14, 20].iter().enumerate() {
            o.add(
                i as i64 * 5_000,
                vec![("x".into(), 1, report("t", 100, &[("billing", 100 - lag)]))],
            );
        }
        let regions = vec![region(&[(1, true)], &[(3, &[1], None)])];
        let links = vec![("x → y".to_owned(), false, "stalled".to_owned())];
        let texts: Vec<String> = o
            .findings(&regions, &links, 20_000)
            .into_iter()
            .map(|f| f.text)
            .collect();
        assert_eq!(
            texts,
            [
                "Log group 3 of region x has no leader",
                "Mirror link x → y: stalled",
                "Consumer group billing falls behind in x: lag 20 and growing",
            ]
        );
        // Lag that stops growing is no finding; the groups and their history stay.
        o.add(
            25_000,
            vec![("x".into(), 1, report("t", 100, &[("billing", 90)]))],
        );
        assert_eq!(o.findings(&regions, &[], 25_000).len(), 1);
        assert_eq!(o.groups()["billing"]["x"].lag, 10);
        assert_eq!(o.lag_history("billing")["x"].len(), 5);
    }

    #[test]
    fn rates_come_from_offsets_between_samples() {
        let o = Observer::default();
        o.add(
            0,
            vec![
                ("x".into(), 1, report("t", 100, &[])),
                ("x".into(), 2, report("u", 10, &[])),
            ],
        );
        o.add(
            5_000,
            vec![
                ("x".into(), 1, report("t", 600, &[])),
                ("x".into(), 2, report("u", 60, &[])),
            ],
        );
        assert_eq!(o.topic_rates("t")["x"][0].value, 100.0);
        // The region's rate adds up its topics, led by any of its brokers.
        assert_eq!(o.region_rates()["x"][0].value, 110.0);
        assert_eq!(o.topic_byte_rates("t")["x"][0].value, 1000.0);
        assert_eq!(o.broker_byte_rates()["x broker 1"][0].value, 1000.0);
        assert_eq!(o.topics_now()["t"], (100.0, 1000.0, 6000));
        assert_eq!(o.broker_rates()["x broker 1"][0].value, 100.0);
        assert_eq!(o.topics_now()["t"].0, 100.0);
    }
}
