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
//!
//! What to do is decided without I/O in [`decide`] (a snapshot of a region and the time in,
//! [`Action`]s out); this module is the runtime around it: it reads each region from the
//! store, asks for the actions and carries them out (compare-and-swap writes of the group
//! records, `ChangeReplicas` calls to the brokers, region marks).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_proto::v1;
use tokio::sync::watch;

use crate::election::Leader;
use crate::metadata::{Group, keys};
use crate::state::{self, RegionState, StateError};
use crate::store::{Store, StoreError};

pub mod decide;

pub use decide::{Action, Reconciler, Why};

/// How often the loop looks.
const TICK: Duration = Duration::from_millis(500);
/// How long `ChangeReplicas` may take (the new replica catches up first).
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a tick of the repair loop stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading the cluster failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Writing a record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No broker changed the log group's replicas.
    #[error(
        "changing the replicas of log group {group} in region {region} (+{add} -{remove}): {last}"
    )]
    ChangeReplicas {
        /// The region.
        region: String,
        /// The log group.
        group: u32,
        /// The broker to add.
        add: u32,
        /// The broker to remove.
        remove: u32,
        /// The last broker's answer (or why it could not be reached).
        last: String,
    },
}

/// Runs the loop while this process leads; `grace` is how long a broker must have been
/// gone (counted from when this process took office at the earliest) before it is replaced.
pub async fn run(
    store: Arc<dyn Store>,
    me: Leader,
    mut leader: watch::Receiver<Option<Leader>>,
    grace: Duration,
) {
    let mut reconciler = Reconciler::default();
    let mut leading_since: Option<Instant> = None;
    loop {
        let leads = leader.borrow().as_ref().is_some_and(|l| l.id == me.id);
        metrics::gauge!("meridian_control_leader").set(if leads { 1.0 } else { 0.0 });
        if !leads {
            leading_since = None;
            reconciler.clear();
            if leader.changed().await.is_err() {
                return;
            }
            continue;
        }
        let since = *leading_since.get_or_insert_with(Instant::now);
        if let Err(e) = tick(&*store, since, grace, &mut reconciler).await {
            tracing::warn!(error = %e, "repairing log groups");
        }
        tokio::time::sleep(TICK).await;
    }
}

async fn tick(
    store: &dyn Store,
    since: Instant,
    grace: Duration,
    reconciler: &mut Reconciler,
) -> Result<(), ReconcileError> {
    for name in state::regions(store).await?.keys() {
        let region = state::region(store, name).await?;
        let actions = reconciler.decide(&region, Instant::now(), since, grace);
        carry_out(store, &region, actions).await?;
    }
    Ok(())
}

/// Carries out one region's actions in order. Each log group's record is written at the
/// version last read or written; when a write finds it moved on, that group's remaining
/// actions are skipped (the next tick looks again).
async fn carry_out(
    store: &dyn Store,
    region: &RegionState,
    actions: Vec<Action>,
) -> Result<(), ReconcileError> {
    let mut records: BTreeMap<u32, Option<(Group, u64)>> = BTreeMap::new();
    for action in actions {
        let group = match &action {
            Action::MarkRegionDown { reason } => {
                let down = crate::metadata::Down {
                    by_operator: false,
                    reason: reason.clone(),
                    since_ms: crate::metadata::now_ms(),
                };
                state::set_region_down(store, &region.name, Some(down)).await?;
                continue;
            }
            Action::MarkRegionUp => {
                state::set_region_down(store, &region.name, None).await?;
                continue;
            }
            Action::AddReplacement { group, .. }
            | Action::ChangeReplicas { group, .. }
            | Action::DropReplica { group, .. } => *group,
        };
        let current = records
            .entry(group)
            .or_insert_with(|| region.groups.get(&group).cloned());
        let Some((record, version)) = current.clone() else {
            // Moved on (or never there): nothing more for this group this tick.
            continue;
        };
        match action {
            Action::AddReplacement { dead, new, why, .. } => {
                let next = record.with_replacement(dead, new);
                *current = write(store, region, next, version).await?;
                if current.is_some() {
                    match why {
                        Why::Lost => {
                            tracing::info!(region = %region.name, group, dead, new, "replacing a lost replica")
                        }
                        Why::Rebalance => {
                            tracing::info!(region = %region.name, group, from = dead, to = new, "moving a replica to a less loaded broker")
                        }
                    }
                }
            }
            Action::ChangeReplicas { add, remove, .. } => {
                change_replicas(region, group, add, remove).await?;
            }
            Action::DropReplica {
                broker, completes, ..
            } => {
                let next = record.without(broker);
                *current = write(store, region, next.clone(), version).await?;
                if completes {
                    tracing::info!(region = %region.name, group, old = broker, replicas = ?next.replicas, "log group replicas changed");
                    metrics::counter!("meridian_control_replicas_replaced_total").increment(1);
                }
            }
            Action::MarkRegionDown { .. } | Action::MarkRegionUp => {}
        }
    }
    Ok(())
}

/// An operator's move of log group `group`'s replica in `region` from broker `from` to
/// `to`, noted on the group's record for the loop to carry out
/// ([`decide::operator_move`]); the record written, or why the move is refused.
pub async fn move_replica(
    store: &dyn Store,
    region: &str,
    group: u32,
    from: u32,
    to: u32,
) -> Result<Result<Group, String>, ReconcileError> {
    let state = state::region(store, region).await?;
    if state.record.is_none() {
        return Ok(Err(format!("there is no region {region}")));
    }
    let next = match decide::operator_move(&state, group, from, to) {
        Ok(next) => next,
        Err(why) => return Ok(Err(why)),
    };
    let version = state.groups[&group].1;
    Ok(match write(store, &state, next.clone(), version).await? {
        Some(_) => {
            tracing::info!(region, group, from, to, "an operator moves a replica");
            Ok(next)
        }
        None => Err(format!(
            "log group {group}'s record changed meanwhile (the control plane is repairing it): try again"
        )),
    })
}

/// Writes a group record if it is still at `version`; the record with its new version,
/// `None` if it moved on.
async fn write(
    store: &dyn Store,
    region: &RegionState,
    record: Group,
    version: u64,
) -> Result<Option<(Group, u64)>, ReconcileError> {
    Ok(store
        .compare_and_swap(
            &keys::group(&region.name, record.id),
            Some(version),
            json(&record),
            None,
        )
        .await?
        .ok()
        .map(|v| (record, v)))
}

/// Asks the group's leader (as reported, else any live replica, following its redirect) to
/// add `new` and remove `dead`.
async fn change_replicas(
    region: &RegionState,
    group: u32,
    new: u32,
    dead: u32,
) -> Result<(), ReconcileError> {
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
        let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
            Ok(e) => e,
            Err(e) => {
                last = format!("{addr}: {e}");
                break;
            }
        }
        .connect_timeout(Duration::from_secs(2))
        .timeout(CHANGE_TIMEOUT);
        let channel = match meridian_proto::auth::connect(endpoint).await {
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
    Err(ReconcileError::ChangeReplicas {
        region: region.name.clone(),
        group,
        add: new,
        remove: dead,
        last,
    })
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("metadata records serialize")
}
