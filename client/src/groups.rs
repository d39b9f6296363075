//! Consumer groups as an operator sees them: every group the region's coordinators know
//! (native and Kafka), a group's committed offsets and lag per partition, and a reset
//! (beginning, end, an offset, a time) with a dry run. The CLI's `meridian group` and the
//! console both use these, so they agree.

use meridian_proto::v1;

use crate::{Client, ClientError, OffsetSpec};

/// A consumer group as its coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    /// The group's name.
    pub name: String,
    /// `meridian` (native membership) or Kafka's protocol type (`consumer`).
    pub protocol_type: String,
    /// Its state (`Stable`, `Reconciling`; Kafka's `Empty`, `PreparingRebalance`, …).
    pub state: String,
    /// Its assignor.
    pub protocol: String,
    /// The broker coordinating it.
    pub coordinator: u32,
    /// Its members.
    pub members: Vec<GroupMember>,
    /// A broadcast group's instances without a member, whose positions it keeps a while.
    pub idle_instances: Vec<String>,
}

/// A member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Its id.
    pub id: String,
    /// The client id it joined with.
    pub client_id: String,
    /// The partitions it has.
    pub partitions: Vec<(String, u32)>,
    /// Its instance (a broadcast group's member's; empty otherwise).
    pub instance: String,
}

/// A group's place on one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPartition {
    /// The partition.
    pub partition: u32,
    /// The committed offset, if any.
    pub committed: Option<u64>,
    /// The first retained offset.
    pub earliest: u64,
    /// One past the last message.
    pub latest: u64,
    /// Messages not yet consumed (latest - committed; all retained ones without a commit).
    pub lag: u64,
    /// Where a reset moves it, when one was asked.
    pub reset_to: Option<u64>,
}

/// Where a reset moves a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The first retained message.
    Beginning,
    /// Past the last message.
    End,
    /// This offset (clamped to what is retained).
    Offset(u64),
    /// The first message at or after this time (ms since the epoch).
    Time(i64),
}

impl Client {
    /// Every consumer group the region's coordinators know, each asked directly.
    pub async fn consumer_groups(&self) -> Result<Vec<GroupInfo>, ClientError> {
        let mut out = Vec::new();
        for b in self.region_log_groups().await? {
            let Ok(mut c) = self.connection(&b.addr).await else {
                continue;
            };
            let mut req = tonic::Request::new(v1::ListConsumerGroupsRequest {});
            req.set_timeout(crate::admin::ADMIN_TIMEOUT);
            let Ok(answer) = c.list_consumer_groups(req).await else {
                continue;
            };
            for g in answer.into_inner().groups {
                out.push(GroupInfo {
                    name: g.name,
                    protocol_type: g.protocol_type,
                    state: g.state,
                    protocol: g.protocol,
                    coordinator: b.broker_id,
                    members: g
                        .members
                        .into_iter()
                        .map(|m| GroupMember {
                            partitions: v1::TopicPartitions::pairs(m.assignment).collect(),
                            id: m.member_id,
                            client_id: m.client_id,
                            instance: m.instance_id,
                        })
                        .collect(),
                    idle_instances: g.idle_instances,
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// A group's committed offsets and lag on every partition of `topic`; with `reset`,
    /// where a reset would move each (nothing changes).
    pub async fn group_partitions(
        &self,
        group: &str,
        topic: &str,
        reset: Option<ResetTo>,
    ) -> Result<Vec<GroupPartition>, ClientError> {
        meridian_proto::names::validate_offsets_owner(group)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        let info = self.describe_topic(topic).await?;
        let mut out = Vec::new();
        for p in &info.partitions {
            let partition = p.partition;
            let committed = self.committed_offset(group, topic, partition).await?;
            if p.offsets_unknown {
                return Err(ClientError::Broker {
                    code: tonic::Code::Unavailable,
                    message: format!(
                        "partition {partition} of {topic}: its offsets are unknown (log group {} does not answer); see meridian cluster health",
                        p.log_group
                    ),
                });
            }
            let (earliest, latest) = (p.earliest_offset, p.latest_offset);
            let reset_to = match reset {
                None => None,
                Some(ResetTo::Beginning) => Some(earliest),
                Some(ResetTo::End) => Some(latest),
                Some(ResetTo::Offset(o)) => Some(o.clamp(earliest, latest)),
                Some(ResetTo::Time(t)) => Some(
                    self.list_offset(topic, partition, OffsetSpec::Time(t))
                        .await?
                        .0,
                ),
            };
            out.push(GroupPartition {
                partition,
                committed,
                earliest,
                latest,
                lag: latest.saturating_sub(committed.unwrap_or(earliest).max(earliest)),
                reset_to,
            });
        }
        Ok(out)
    }

    /// Resets `group` on every partition of `topic` (each commit clears what the group
    /// had seen above its new offset, so its consumers read from there again); the plan
    /// applied. Refused while the group has members: they would commit over it.
    pub async fn reset_group(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
    ) -> Result<Vec<GroupPartition>, ClientError> {
        self.refuse_active(group, "reset").await?;
        let plan = self.group_partitions(group, topic, Some(to)).await?;
        for p in &plan {
            if let Some(offset) = p.reset_to {
                self.commit_offset(group, topic, p.partition, offset)
                    .await?;
            }
        }
        Ok(plan)
    }

    /// Deletes `group`'s committed offsets in every partition of every topic (its
    /// consumers then start where `StartFrom` says); how many there were. Refused while
    /// the group has members.
    pub async fn delete_group(&self, group: &str) -> Result<usize, ClientError> {
        meridian_proto::names::validate_offsets_owner(group)
            .map_err(|e| ClientError::Usage(e.to_string()))?;
        self.refuse_active(group, "delete").await?;
        let mut deleted = 0;
        for topic in self.list_topics().await? {
            for p in &topic.partitions {
                if self
                    .region
                    .delete_offset(group, &topic.name, p.partition)
                    .await?
                {
                    deleted += 1;
                }
            }
        }
        Ok(deleted)
    }

    /// A usage error when `group` has members (they would commit over what `action`
    /// changes).
    async fn refuse_active(&self, group: &str, action: &str) -> Result<(), ClientError> {
        match self
            .consumer_groups()
            .await?
            .into_iter()
            .find(|g| g.name == group && !g.members.is_empty())
        {
            Some(g) => Err(ClientError::Usage(format!(
                "consumer group {group:?} has {} active member(s) (coordinated by broker {}): stop its consumers, then {action}",
                g.members.len(),
                g.coordinator
            ))),
            None => Ok(()),
        }
    }
}
