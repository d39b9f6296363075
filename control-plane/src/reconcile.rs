//! The leader's repair loop: when a broker's lease has been gone for a grace period, every
//! raft log group it held gets a replacement replica on the least-loaded live broker that
//! does not hold one, so the group is back at its replication factor.
//!
//! A replacement is three steps, each safe to repeat: (1) the group record gains the new
//! broker and notes `replacing = (dead, new)` — the new broker, watching its region, opens
//! the group; (2) the group's raft leader adds the new broker (as a learner until it has
//! caught up, then a voter) and removes the dead one, through the broker's
//! `ChangeReplicas`; (3) the record drops the dead broker and the note. A leader that dies
//! between steps leaves the note, and its successor finishes the same replacement.
//!
//! When nothing needs repair, the same steps move one replica at a time from the broker
//! holding the most to the one holding the fewest (two or more apart), so a new or
//! returning broker takes load gradually.
//!
//! Master-slave groups are not repaired or moved here: their replica sets are fixed when
//! created (failover is `meridian log-group failover`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::v1;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::election::Leader;
use crate::metadata::{Group, Strategy, keys};
use crate::state::{self, RegionState};
use crate::store::Store;

/// How often the loop looks.
const TICK: Duration = Duration::from_millis(500);
/// How long `ChangeReplicas` may take (the new replica catches up first).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the loop while this process leads; `grace` is how long a broker must have been
/// gone (counted from when this process took office at the earliest) before it is replaced.
pub async fn run(
    store: Arc<dyn Store>,
    me: Leader,
    mut leader: watch::Receiver<Option<Leader>>,
    grace: Duration,
) {
    let mut gone_since: BTreeMap<(String, u32), Instant> = BTreeMap::new();
    let mut leading_since: Option<Instant> = None;
    loop {
        let leads = leader.borrow().as_ref().is_some_and(|l| l.id == me.id);
        metrics::gauge!("meridian_control_leader").set(if leads { 1.0 } else { 0.0 });
        if !leads {
            leading_since = None;
            gone_since.clear();
            if leader.changed().await.is_err() {
                return;
            }
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        if let Err(e) = tick(&*store, since, grace, &mut gone_since).await {
            tracing::warn!(error = %e, "repairing log groups");
        }
        tokio::time::sleep(TICK).await;
    }
}

async fn tick(
    store: &dyn Store,
    since: Instant,
    grace: Duration,
    gone_since: &mut BTreeMap<(String, u32), Instant>,
) -> Result<(), String> {
    for name in state::regions(store)
        .await
        .map_err(|e| e.to_string())?
        .keys()
    {
        let region = state::region(store, name)
            .await
            .map_err(|e| e.to_string())?;
        health(store, &region, since, grace).await?;
        if !repair(store, &region, since, grace, gone_since).await? {
            // Nothing to repair: let an idle broker take a replica, one at a time.
            let region = state::region(store, name)
                .await
                .map_err(|e| e.to_string())?;
            rebalance(store, &region).await?;
        }
    }
    Ok(())
}

/// Fails a region over when it holds log groups and none of its brokers holds a lease (their
/// leases ran out: the region is dead or cut off), once this process has led for `grace`
/// (a new leader first lets brokers renew); brings a region it failed back once every
/// log group there has a leader again. A region an operator failed stays down until an
/// operator restores it.
async fn health(
    store: &dyn Store,
    region: &RegionState,
    since: Instant,
    grace: Duration,
) -> Result<(), String> {
    let Some(record) = &region.record else {
        return Ok(());
    };
    if record.down.as_ref().is_some_and(|d| d.by_operator) {
        return Ok(());
    }
    let up = record.state == crate::metadata::RegionState::Up;
    if up && region.brokers.is_empty() && !region.groups.is_empty() && since.elapsed() >= grace {
        let down = crate::metadata::Down {
            by_operator: false,
            reason: "every broker of the region lost its lease".into(),
            since_ms: crate::metadata::now_ms(),
        };
        state::set_region_down(store, &region.name, Some(down))
            .await
            .map_err(|e| e.to_string())?;
    } else if !up && !region.brokers.is_empty() {
        let led: std::collections::BTreeSet<u32> = region
            .brokers
            .values()
            .flat_map(|b| b.leading.keys().copied())
            .collect();
        if region.groups.keys().all(|g| led.contains(g)) {
            state::set_region_down(store, &region.name, None)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Moves one raft replica from the broker holding the most to the one holding the fewest,
/// when they differ by two or more: a new (or returning) broker takes load gradually, one
/// group at a time, each move a full replacement (the new replica catches up before the
/// old one leaves).
async fn rebalance(store: &dyn Store, region: &RegionState) -> Result<(), String> {
    let load = state::replicas_per_broker(region);
    let (Some((&most, &high)), Some((&fewest, &low))) = (
        load.iter()
            .max_by_key(|&(b, n)| (*n, std::cmp::Reverse(*b))),
        load.iter().min_by_key(|&(b, n)| (*n, *b)),
    ) else {
        return Ok(());
    };
    if high < low + 2 {
        return Ok(());
    }
    // A group `most` holds and `fewest` does not; rather one `most` does not lead.
    let Some((group, version)) = region
        .groups
        .values()
        .filter(|(g, _)| {
            g.strategy == Strategy::Raft
                && g.replicas.contains(&most)
                && !g.replicas.contains(&fewest)
        })
        .min_by_key(|(g, _)| region.leader(g.id).map(|(l, _)| l) == Some(most))
    else {
        return Ok(());
    };
    let Some((record, version)) = begin(store, region, group, *version, most, fewest).await? else {
        return Ok(());
    };
    tracing::info!(region = %region.name, group = group.id, from = most, to = fewest, "moving a replica to a less loaded broker");
    finish(store, region, &record, version, most, fewest).await
}

/// Replaces the replicas of brokers gone longer than `grace`; whether anything needed
/// repair (or a replacement was under way).
async fn repair(
    store: &dyn Store,
    region: &RegionState,
    since: Instant,
    grace: Duration,
    gone_since: &mut BTreeMap<(String, u32), Instant>,
) -> Result<bool, String> {
    let now = Instant::now();
    let name = &region.name;
    let mut busy = false;
    {
        gone_since.retain(|(r, b), _| r != name || !region.brokers.contains_key(b));
        for (group, version) in region.groups.values() {
            if group.strategy != Strategy::Raft {
                continue;
            }
            if let Some((dead, new)) = group.replacing {
                busy = true;
                finish(store, region, group, *version, dead, new).await?;
                continue;
            }
            let Some(&dead) = group
                .replicas
                .iter()
                .find(|b| !region.brokers.contains_key(b))
            else {
                continue;
            };
            busy = true;
            let first = (*gone_since.entry((name.clone(), dead)).or_insert(now)).max(since);
            if now.duration_since(first) < grace {
                continue;
            }
            let load = state::replicas_per_broker(region);
            let Some((&new, _)) = load
                .iter()
                .filter(|(b, _)| !group.replicas.contains(b))
                .min_by_key(|&(b, n)| (*n, *b))
            else {
                tracing::debug!(region = %name, group = group.id, dead, "no spare live broker to restore the log group's replication factor");
                continue;
            };
            let Some((record, version)) = begin(store, region, group, *version, dead, new).await?
            else {
                continue;
            };
            tracing::info!(region = %name, group = group.id, dead, new, "replacing a lost replica");
            finish(store, region, &record, version, dead, new).await?;
        }
    }
    Ok(busy)
}

/// Steps 2 and 3 of a replacement.
async fn finish(
    store: &dyn Store,
    region: &RegionState,
    group: &Group,
    version: u64,
    dead: u32,
    new: u32,
) -> Result<(), String> {
    if !region.brokers.contains_key(&new) {
        // The new broker died too: take it out and let the next tick choose again.
        write(store, region, group.without(new), version).await?;
        return Ok(());
    }
    change_replicas(region, group.id, new, dead).await?;
    let record = group.without(dead);
    write(store, region, record.clone(), version).await?;
    tracing::info!(region = %region.name, group = group.id, old = dead, new, replicas = ?record.replicas, "log group replicas changed");
    metrics::counter!("meridian_control_replicas_replaced_total").increment(1);
    Ok(())
}

/// Step 1: the record gains `new` and notes the replacement of `old`; `None` when the
/// record moved on meanwhile (the next tick looks again).
async fn begin(
    store: &dyn Store,
    region: &RegionState,
    group: &Group,
    version: u64,
    old: u32,
    new: u32,
) -> Result<Option<(Group, u64)>, String> {
    let mut record = group.clone();
    record.replicas.push(new);
    record.changes += 1;
    record.replacing = Some((old, new));
    let written = write(store, region, record.clone(), version).await?;
    Ok(written.map(|v| (record, v)))
}

/// Writes a group record if it is still at `version`; its new version, `None` if it moved
/// on.
async fn write(
    store: &dyn Store,
    region: &RegionState,
    record: Group,
    version: u64,
) -> Result<Option<u64>, String> {
    Ok(store
        .compare_and_swap(
            &keys::group(&region.name, record.id),
            Some(version),
            json(&record),
            None,
        )
        .await
        .map_err(|e| e.to_string())?
        .ok())
}

impl Group {
    /// This record with `broker` out of its replicas and no replacement under way.
    fn without(&self, broker: u32) -> Group {
        let mut record = self.clone();
        record.replicas.retain(|b| *b != broker);
        record.replacing = None;
        record.changes += 1;
        record
    }
}

/// Asks the group's leader (as reported, else any live replica, following its redirect) to
/// add `new` and remove `dead`.
async fn change_replicas(
    region: &RegionState,
    group: u32,
    new: u32,
    dead: u32,
) -> Result<(), String> {
    let mut targets: Vec<String> = Vec::new();
    if let Some((leader, _)) = region.leader(group)
        && let Some(b) = region.brokers.get(&leader)
    {
        targets.push(b.grpc.clone());
    }
    targets.extend(region.brokers.values().map(|b| b.grpc.clone()));
    let mut last = String::from("no live broker");
    for _ in 0..2 {
        let Some(addr) = targets.first().cloned() else {
            break;
        };
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(CHANGE_TIMEOUT);
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                last = format!("{addr}: {e}");
                targets.remove(0);
                continue;
            }
        };
        let answer = v1::broker_client::BrokerClient::new(channel)
            .change_replicas(v1::ChangeReplicasRequest {
                group,
                add: vec![new],
                remove: vec![dead],
            })
            .await;
        match answer {
            Ok(_) => return Ok(()),
            Err(status) => {
                last = format!("{addr}: {}", status.message());
                match status
                    .metadata()
                    .get("x-meridian-leader")
                    .and_then(|v| v.to_str().ok())
                {
                    Some(leader) => targets.insert(0, leader.to_owned()),
                    None => {
                        targets.remove(0);
                    }
                }
            }
        }
    }
    Err(format!(
        "changing the replicas of log group {group} in region {} (+{new} -{dead}): {last}",
        region.name
    ))
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("metadata records serialize")
}
