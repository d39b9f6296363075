//! Native consumer groups with membership: the shell around [`membership`], the decision
//! core. A group is coordinated by the leader of the log group its name hashes to (as a
//! transactional id is); its state is written, before it takes effect, to that log
//! group's own partition [`STATE_TOPIC`] (outside the catalog, never mirrored), one record
//! holding the whole group per change, and loaded from there when a broker starts leading
//! the log group. Heartbeats that change nothing write nothing.
//!
//! A member's commit is checked here, under the coordinator's lock, and written at the
//! partition's leader while the lock is held: the group cannot hand the partition to
//! another member between the check and the write.

pub mod assign;
pub mod membership;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::names;

use super::coordinator_state::{Locked, PerGroup};
use super::{Broker, BrokerError, HostedGroup, Positions, now_ms};
use crate::storage::PartitionKey;
use membership::{Answer, GroupRecord, Heartbeat, Limits, Membership};

/// The id of every log group's consumer-group state partition; the catalog never gives it.
pub const STATE_TOPIC_ID: u32 = u32::MAX - 1;
/// Its name (its index directory).
pub const STATE_TOPIC: &str = "__consumer_groups";
/// Its partition key in each log group.
pub const STATE_KEY: PartitionKey = (STATE_TOPIC_ID, 0);
/// How often silent members are looked for.
const TICK: Duration = Duration::from_millis(500);

/// The coordinators of the log groups this broker leads.
#[derive(Debug, Default)]
pub struct ConsumerGroups {
    limits: Limits,
    /// Per log group: its coordinator (the lock also serializes a member's commit with its
    /// check).
    loaded: PerGroup<Membership>,
}

impl Broker {
    /// One heartbeat (join, beat, leave) at the group's coordinator: this broker, or
    /// `NotLeader` naming the one.
    pub async fn consumer_heartbeat(&self, hb: Heartbeat) -> Result<Answer, BrokerError> {
        names::validate("group", &hb.group).map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let group = self.group_coordinator(&hb.group)?;
        let mut loaded = self.membership(&group).await?;
        // The partition counts of the topics it names and the group's.
        let mut topics: BTreeSet<String> = hb.topics.clone().unwrap_or_default();
        if let Some(g) = loaded.get(&hb.group) {
            topics.extend(g.members.values().flat_map(|m| m.topics.iter().cloned()));
        }
        let mut partitions = BTreeMap::new();
        for t in topics {
            match self.topic(&t) {
                Ok(topic) => {
                    partitions.insert(t, topic.groups.len() as u32);
                }
                // A topic named now must exist; one deleted since a member named it is
                // simply not assigned.
                Err(e) if hb.topics.as_ref().is_some_and(|n| n.contains(&t)) => return Err(e),
                Err(_) => {}
            }
        }
        let decision = loaded.heartbeat(hb, &partitions, now_ms() as u64);
        if let Some(record) = decision.write {
            write_record(&group, &record).await?;
            loaded.apply(record);
        }
        Ok(decision.answer?)
    }

    /// How often the group's coordinator asks members to heartbeat.
    pub fn heartbeat_interval_ms(&self) -> u32 {
        self.consumer_groups.limits.heartbeat_ms
    }

    /// A member's commit: checked at the group's coordinator (this broker, or `NotLeader`
    /// naming it) and written at the partition's leader under the coordinator's lock.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_as_member(
        &self,
        consumer_group: &str,
        member: (&str, i32),
        topic: &str,
        partition: u32,
        offset: u64,
        positions: Positions,
        metadata: &str,
    ) -> Result<(), BrokerError> {
        let group = self.group_coordinator(consumer_group)?;
        let loaded = self.membership(&group).await?;
        loaded.check_commit(
            consumer_group,
            member.0,
            member.1,
            &(topic.to_owned(), partition),
        )?;
        let owner = loaded
            .offsets_owner(consumer_group, member.0)
            .unwrap_or_else(|| consumer_group.to_owned());
        self.commit_anywhere(&owner, topic, partition, offset, positions, metadata)
            .await
    }

    /// Whether `consumer_group` is a group with membership here (its coordinator is this
    /// broker and knows it).
    pub async fn has_native_group(&self, consumer_group: &str) -> bool {
        let Ok(group) = self.group_coordinator(consumer_group) else {
            return false;
        };
        match self.membership(&group).await {
            Ok(loaded) => loaded.get(consumer_group).is_some(),
            Err(_) => false,
        }
    }

    /// The native group `name` as its coordinator knows it: this broker, or `NotLeader`
    /// naming the one (`None`: no such group).
    pub async fn native_group(&self, name: &str) -> Result<Option<membership::Group>, BrokerError> {
        let group = self.group_coordinator(name)?;
        let loaded = self.membership(&group).await?;
        Ok(loaded.get(name).cloned())
    }

    /// The native groups this broker coordinates.
    pub async fn native_groups(&self) -> Vec<membership::Group> {
        // Only of the log groups it leads now (a coordinator it was keeps its old state).
        let mut out = Vec::new();
        for (g, cell) in self.consumer_groups.loaded.cells() {
            if !self.hosted(g).is_ok_and(|h| h.check_leader().is_ok()) {
                continue;
            }
            let loaded = cell.lock().await;
            if loaded.is_loaded() {
                out.extend(loaded.groups().cloned());
            }
        }
        out
    }

    /// The log group coordinating `consumer_group`, hosted here.
    fn group_coordinator(&self, consumer_group: &str) -> Result<Arc<HostedGroup>, BrokerError> {
        let g = self
            .coordinator_group(consumer_group)
            .ok_or_else(|| BrokerError::Replication("this region has no log groups yet".into()))?;
        self.hosted(g)
    }

    /// The coordinator of `group`, loaded from its state partition if this broker has not
    /// loaded it in the group's current leadership epoch; locked.
    async fn membership(&self, group: &HostedGroup) -> Result<Locked<Membership>, BrokerError> {
        self.consumer_groups
            .loaded
            .lock(
                self,
                (group, STATE_KEY),
                || load(group, self.consumer_groups.limits.clone()),
                ("consumer group", |m: &Membership| m.groups().count()),
            )
            .await
    }

    /// Removes silent members of the groups this broker coordinates, and forgets broadcast
    /// instances idle past their group's idle time (their positions deleted first), twice
    /// a second.
    pub async fn run_consumer_groups(self: Arc<Self>) {
        let mut tick = super::coordinator_state::ticker(TICK);
        loop {
            tick.tick().await;
            for group in self.led_groups() {
                let Ok(mut loaded) = self.membership(&group).await else {
                    continue;
                };
                for record in loaded.expire(now_ms() as u64) {
                    if let GroupRecord::Put(g) = &record {
                        tracing::info!(group = %g.name, epoch = g.epoch, members = g.members.len(), "consumer group member's session lapsed; rebalancing");
                    }
                    match write_record(&group, &record).await {
                        Ok(()) => loaded.apply(record),
                        Err(e) => {
                            tracing::warn!(error = %e, "a consumer group record was not written; retried");
                            break;
                        }
                    }
                }
                for (name, instance, topics) in loaded.idle_instances(now_ms() as u64) {
                    if let Err(e) = self
                        .forget_instance(&mut loaded, &group, &name, &instance, &topics)
                        .await
                    {
                        tracing::warn!(group = %name, instance = %instance, error = %e, "an idle broadcast instance was not forgotten; retried");
                        break;
                    }
                }
            }
        }
    }
}

impl Broker {
    /// Deletes an idle broadcast instance's positions in every partition of its topics,
    /// then writes that its group forgot it (a failure leaves it to the next tick).
    async fn forget_instance(
        &self,
        loaded: &mut Locked<Membership>,
        group: &HostedGroup,
        name: &str,
        instance: &str,
        topics: &BTreeSet<String>,
    ) -> Result<(), BrokerError> {
        let owner = names::instance_offsets(name, instance);
        for t in topics {
            // A topic deleted since holds no positions any more.
            let Ok(topic) = self.topic(t) else { continue };
            for p in 0..topic.groups.len() as u32 {
                self.delete_offset_anywhere(&owner, t, p).await?;
            }
        }
        if let Some(record) = loaded.forget_instance(name, instance) {
            write_record(group, &record).await?;
            loaded.apply(record);
            tracing::info!(group = %name, instance = %instance, "an idle broadcast instance's positions were deleted");
        }
        Ok(())
    }
}

/// Writes a coordinator record, keyed by the group's name.
async fn write_record(group: &HostedGroup, record: &GroupRecord) -> Result<(), BrokerError> {
    super::coordinator_state::write(group, STATE_KEY, record.name(), record).await
}

/// A coordinator rebuilt from every record of the log group's state partition.
fn load(group: &HostedGroup, limits: Limits) -> Result<Membership, BrokerError> {
    let mut membership = Membership::new(limits);
    super::coordinator_state::replay(group, STATE_KEY, |r| membership.apply(r))?;
    Ok(membership)
}
