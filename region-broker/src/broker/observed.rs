//! The series an SRE alerts on, sampled from the broker's state every [`EVERY`]: per log
//! group it hosts, whether it leads it, its term, its journal's bytes, the bytes not yet
//! committed here and, where it leads, each follower's lag; how many of the groups it leads
//! are under-replicated (fewer replicas in sync than voters) and how many it hosts have no
//! leader; per partition it holds a replica of, its start and end offsets (a partition's
//! rate is `rate()` of its end) and each consumer group's lag behind the end; the data
//! disk's total and free bytes.
//!
//! Every replica reports its partitions' offsets and lags (they replicate), so the series
//! do not go stale when leadership moves: aggregate them with `max by (topic, partition)`.
//! A series a sample no longer makes is set to 0 (the exporter keeps every series it saw).
//! What the sample holds is gathered from the broker ([`Broker::observation`]); which
//! series it makes is [`series`], pure. At most [`LAG_SERIES_MAX`] consumer-lag series are
//! made per sample (the largest lags first).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::Broker;

/// How often the series are sampled.
pub const EVERY: Duration = Duration::from_secs(5);

/// The most consumer-lag series one broker exports (groups × partitions can be many).
pub const LAG_SERIES_MAX: usize = 5_000;

/// One log group as this broker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSeen {
    pub group: u32,
    /// This broker leads it.
    pub leads: bool,
    /// Some broker leads it, as far as this one knows.
    pub has_leader: bool,
    pub term: u64,
    pub journal_bytes: u64,
    pub uncommitted_bytes: u64,
    /// Voters (raft) or replicas (master-slave); 1 for an unreplicated group.
    pub replicas: usize,
    /// Replicas in sync, where this broker leads.
    pub in_sync: usize,
    /// Where this broker leads: each follower's bytes behind the leader's journal end.
    pub followers_behind: Vec<(u32, u64)>,
}

/// One partition this broker holds a replica of.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionSeen {
    pub topic: String,
    pub partition: u32,
    /// Its log group.
    pub group: u32,
    pub start: u64,
    pub end: u64,
    /// Each consumer group's committed offset in it.
    pub committed: Vec<(String, u64)>,
}

/// What one sample gathered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub groups: Vec<GroupSeen>,
    pub partitions: Vec<PartitionSeen>,
    /// The data directory's disk: (total, free) bytes, when it could be read.
    pub disk: Option<(u64, u64)>,
}

/// One series: its name, its labels and its value.
pub type Series = (&'static str, Vec<(&'static str, String)>, f64);

/// A series without its value.
type SeriesKey = (&'static str, Vec<(&'static str, String)>);

/// A log group's committed offsets by (topic id, partition): (consumer group, offset).
type Commits = HashMap<(u32, u32), Vec<(String, u64)>>;

/// The series an observation makes.
pub fn series(seen: &Observation) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    let (mut under, mut leaderless) = (0, 0);
    for g in &seen.groups {
        let group = || vec![("group", g.group.to_string())];
        out.push((
            "meridian_log_group_leader",
            group(),
            f64::from(u8::from(g.leads)),
        ));
        out.push(("meridian_log_group_term", group(), g.term as f64));
        out.push((
            "meridian_log_group_journal_bytes",
            group(),
            g.journal_bytes as f64,
        ));
        out.push((
            "meridian_log_group_uncommitted_bytes",
            group(),
            g.uncommitted_bytes as f64,
        ));
        for (follower, behind) in &g.followers_behind {
            let mut labels = group();
            labels.push(("follower", follower.to_string()));
            // Zero where this broker does not lead: its own series must not keep the lag
            // it saw while it led.
            let behind = if g.leads { *behind as f64 } else { 0.0 };
            out.push(("meridian_log_group_follower_lag_bytes", labels, behind));
        }
        if g.leads && g.in_sync < g.replicas {
            under += 1;
        }
        if !g.has_leader {
            leaderless += 1;
        }
    }
    out.push((
        "meridian_log_groups_under_replicated",
        Vec::new(),
        f64::from(under),
    ));
    out.push((
        "meridian_log_groups_leaderless",
        Vec::new(),
        f64::from(leaderless),
    ));
    let mut lags = Vec::new();
    for p in &seen.partitions {
        let labels = || {
            vec![
                ("topic", p.topic.clone()),
                ("partition", p.partition.to_string()),
            ]
        };
        out.push(("meridian_partition_start_offset", labels(), p.start as f64));
        out.push(("meridian_partition_end_offset", labels(), p.end as f64));
        for (group, offset) in &p.committed {
            let mut labels = labels();
            labels.insert(0, ("group", group.clone()));
            lags.push((p.end.saturating_sub(*offset), labels));
        }
    }
    lags.sort_by_key(|lag| std::cmp::Reverse(lag.0));
    for (lag, labels) in lags.into_iter().take(LAG_SERIES_MAX) {
        out.push(("meridian_consumer_lag_messages", labels, lag as f64));
    }
    if let Some((total, free)) = seen.disk {
        out.push(("meridian_disk_total_bytes", Vec::new(), total as f64));
        out.push(("meridian_disk_free_bytes", Vec::new(), free as f64));
    }
    out
}

/// The total and usable bytes of the disk holding `dir`.
pub fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; all zeroes is a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a writable statvfs.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let block = stat.f_frsize as u64;
    Some((stat.f_blocks as u64 * block, stat.f_bavail as u64 * block))
}

impl Broker {
    /// What the series are made of, read from the broker's state now.
    pub fn observation(&self) -> Observation {
        let mut seen = Observation {
            disk: disk_space(&self.config.data_dir),
            ..Observation::default()
        };
        for (g, group) in self.log_groups() {
            use crate::log_group::Replication;
            let state = group.state();
            let me = self.config.broker_id;
            let led = state.leader == Some(me);
            let uncommitted = state.end_position.saturating_sub(state.watermark);
            // (leads, has a leader, replicas, bytes not committed here)
            let (leads, has_leader, replicas, uncommitted) = match group.replication() {
                // Nothing to replicate to: led here, everything it holds is committed.
                Replication::Standalone => (true, true, 1, 0),
                // Not yet replicating: no leader yet, which is what an alert must see.
                Replication::Starting => (false, false, 1, uncommitted),
                Replication::Raft(_) => (
                    led,
                    state.leader.is_some(),
                    state.voters.len().max(1),
                    uncommitted,
                ),
                Replication::MasterSlave(ms) => {
                    (led, state.leader.is_some(), ms.replica_count(), uncommitted)
                }
            };
            let in_sync = if leads {
                group.in_sync().map_or(1, |members| members.len())
            } else {
                0
            };
            let followers_behind = state
                .replicas
                .iter()
                .map(|&(id, at)| (id, state.end_position.saturating_sub(at)))
                .collect();
            seen.groups.push(GroupSeen {
                group: g,
                leads,
                has_leader,
                term: state.epoch,
                journal_bytes: state.end_position.saturating_sub(state.start_position),
                uncommitted_bytes: uncommitted,
                replicas,
                in_sync,
                followers_behind,
            });
        }
        // Each group's commits, by partition, read once per sample.
        let mut commits: HashMap<u32, Commits> = HashMap::new();
        for topic in self.topics() {
            for (p, &g) in topic.groups.iter().enumerate() {
                let Some(group) = self.log_group(g) else {
                    continue;
                };
                let Ok((start, end)) = group.storage().offsets((topic.id, p as u32)) else {
                    continue;
                };
                let by_partition = commits.entry(g).or_insert_with(|| {
                    let mut by = Commits::new();
                    for (name, t, part, offset) in group.storage().committed_offsets() {
                        by.entry((t, part)).or_default().push((name, offset));
                    }
                    by
                });
                seen.partitions.push(PartitionSeen {
                    topic: topic.name.clone(),
                    partition: p as u32,
                    group: g,
                    start,
                    end,
                    committed: by_partition
                        .remove(&(topic.id, p as u32))
                        .unwrap_or_default(),
                });
            }
        }
        seen
    }

    /// Samples the series every [`EVERY`] until the process ends. A series the last
    /// sample made and this one does not (a group moved away, a lag no longer among the
    /// largest, a follower lag where this broker stopped leading) is set to 0 once, so
    /// no value lingers from a state that ended.
    pub async fn run_observed(self: std::sync::Arc<Self>) {
        let mut before: HashSet<SeriesKey> = HashSet::new();
        loop {
            let mut now = HashSet::new();
            for (name, labels, value) in series(&self.observation()) {
                metrics::gauge!(name, to_labels(&labels)).set(value);
                now.insert((name, labels));
            }
            for (name, labels) in before.difference(&now) {
                metrics::gauge!(*name, to_labels(labels)).set(0.0);
            }
            before = now;
            tokio::time::sleep(EVERY).await;
        }
    }
}

fn to_labels(labels: &[(&'static str, String)]) -> Vec<metrics::Label> {
    labels
        .iter()
        .map(|(k, v)| metrics::Label::new(*k, v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(id: u32, leads: bool, has_leader: bool, replicas: usize, in_sync: usize) -> GroupSeen {
        GroupSeen {
            group: id,
            leads,
            has_leader,
            term: 3,
            journal_bytes: 100,
            uncommitted_bytes: 0,
            replicas,
            in_sync,
            followers_behind: vec![(2, 40)],
        }
    }

    fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        series
            .iter()
            .find(|(n, l, _)| {
                *n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| *v)
    }

    #[test]
    fn under_replicated_counts_led_groups_short_of_replicas_and_leaderless_any() {
        let seen = Observation {
            groups: vec![
                group(1, true, true, 3, 3),
                group(2, true, true, 3, 2),
                // Not led here: its in-sync set is its leader's to judge.
                group(3, false, true, 3, 0),
                group(4, false, false, 3, 0),
            ],
            ..Observation::default()
        };
        let s = series(&seen);
        assert_eq!(
            value(&s, "meridian_log_groups_under_replicated", &[]),
            Some(1.0)
        );
        assert_eq!(value(&s, "meridian_log_groups_leaderless", &[]), Some(1.0));
        assert_eq!(
            value(&s, "meridian_log_group_leader", &[("group", "2")]),
            Some(1.0)
        );
        assert_eq!(
            value(&s, "meridian_log_group_leader", &[("group", "3")]),
            Some(0.0)
        );
        let lag = |g: &str| {
            value(
                &s,
                "meridian_log_group_follower_lag_bytes",
                &[("group", g), ("follower", "2")],
            )
        };
        assert_eq!(lag("1"), Some(40.0));
        assert_eq!(lag("3"), Some(0.0), "a lag seen while leading is not kept");
        assert_eq!(value(&s, "meridian_disk_free_bytes", &[]), None);
    }

    #[test]
    fn consumer_lag_is_the_end_less_the_commit_and_bounded() {
        let partition = |p: u32, committed: Vec<(String, u64)>| PartitionSeen {
            topic: "orders".into(),
            partition: p,
            group: 0,
            start: 5,
            end: 100,
            committed,
        };
        let many: Vec<(String, u64)> = (0..LAG_SERIES_MAX as u64 + 10)
            .map(|i| (format!("g{i}"), i.min(100)))
            .collect();
        let seen = Observation {
            partitions: vec![
                partition(0, vec![("billing".into(), 60)]),
                partition(1, many),
            ],
            disk: Some((1000, 250)),
            ..Observation::default()
        };
        let s = series(&seen);
        assert_eq!(
            value(
                &s,
                "meridian_consumer_lag_messages",
                &[
                    ("group", "billing"),
                    ("topic", "orders"),
                    ("partition", "0")
                ]
            ),
            Some(40.0)
        );
        assert_eq!(
            value(
                &s,
                "meridian_partition_end_offset",
                &[("topic", "orders"), ("partition", "1")]
            ),
            Some(100.0)
        );
        let lags = s
            .iter()
            .filter(|(n, ..)| *n == "meridian_consumer_lag_messages")
            .count();
        assert_eq!(lags, LAG_SERIES_MAX);
        // The largest lags are the ones kept: g0's (100 behind) is.
        let kept = |g: &str| {
            value(
                &s,
                "meridian_consumer_lag_messages",
                &[("group", g), ("topic", "orders"), ("partition", "1")],
            )
        };
        assert_eq!(kept("g0"), Some(100.0));
        assert_eq!(value(&s, "meridian_disk_free_bytes", &[]), Some(250.0));
    }
}
