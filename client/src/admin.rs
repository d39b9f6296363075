//! Region administration: log groups' replication state, and the controlled failover of a
//! master-slave log group (what the control plane will drive; today the CLI does).

use std::time::Duration;

use meridian_proto::v1;

use crate::{Client, ClientError};

pub use meridian_proto::v1::LogGroupInfo;

/// How long one broker may take to answer an admin request.
pub(crate) const ADMIN_TIMEOUT: Duration = Duration::from_secs(3);

/// One broker's view of the region's log groups, or why it did not answer.
#[derive(Debug, Clone)]
pub struct BrokerLogGroups {
    /// The broker's id.
    pub broker_id: u32,
    /// Its gRPC address.
    pub addr: String,
    /// Its groups, or the error it (or the connection) gave.
    pub groups: Result<Vec<LogGroupInfo>, ClientError>,
}

/// What a failover did.
#[derive(Debug, Clone)]
pub struct FailoverReport {
    /// The log group.
    pub group: u32,
    /// The new epoch.
    pub epoch: u64,
    /// The master before, if one was known.
    pub old_master: Option<u32>,
    /// The master now.
    pub new_master: u32,
    /// Each replica's journal end when the new master was chosen: `(broker, end)`, `None`
    /// for one that did not answer.
    pub replicas: Vec<(u32, Option<u64>)>,
    /// The highest commit watermark any answering replica reported; the new master holds
    /// the journal at least this far.
    pub committed: u64,
    /// Steps that failed without failing the failover (a replica not told the new master
    /// learns it from its peers).
    pub warnings: Vec<String>,
}

impl Client {
    /// Creates a topic whose log groups replicate by `replication` (`raft` or
    /// `master-slave`; empty: raft).
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        replication: &str,
    ) -> Result<v1::TopicInfo, ClientError> {
        let r = v1::CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            replication: replication.to_owned(),
        };
        self.call(|mut c| {
            let r = r.clone();
            async move { c.create_topic(r).await }
        })
        .await
    }

    /// Sets (`Some`) or deletes (`None`) `user`'s SCRAM credential for `mechanism`
    /// (`SCRAM-SHA-512`, `SCRAM-SHA-256`) in the region's credentials; only the
    /// credential travels, never the password.
    pub async fn alter_user(
        &self,
        user: &str,
        mechanism: &str,
        credential: Option<v1::ScramCredential>,
    ) -> Result<(), ClientError> {
        let r = v1::AlterUserRequest {
            user: user.to_owned(),
            mechanism: mechanism.to_owned(),
            credential,
        };
        self.call(|mut c| {
            let r = r.clone();
            async move { c.alter_user(r).await }
        })
        .await
        .map(drop)
    }

    /// Every user of the region's credentials, with its mechanisms.
    pub async fn list_users(&self) -> Result<Vec<v1::UserCredentials>, ClientError> {
        Ok(self
            .call(|mut c| async move { c.list_users(v1::ListUsersRequest {}).await })
            .await?
            .users)
    }

    /// Adds (or, with `delete`, deletes) one of the region's ACL bindings.
    pub async fn alter_acl(
        &self,
        binding: v1::AclBinding,
        delete: bool,
    ) -> Result<(), ClientError> {
        let r = v1::AlterAclRequest {
            binding: Some(binding),
            delete,
        };
        self.call(|mut c| {
            let r = r.clone();
            async move { c.alter_acl(r).await }
        })
        .await
        .map(drop)
    }

    /// Every ACL binding of the region.
    pub async fn list_acls(&self) -> Result<Vec<v1::AclBinding>, ClientError> {
        Ok(self
            .call(|mut c| async move { c.list_acls(v1::ListAclsRequest {}).await })
            .await?
            .bindings)
    }

    /// Adds and removes voting replicas (broker ids) of a raft log group, at its leader.
    pub async fn change_replicas(
        &self,
        group: u32,
        add: &[u32],
        remove: &[u32],
    ) -> Result<LogGroupInfo, ClientError> {
        let r = v1::ChangeReplicasRequest {
            group,
            add: add.to_vec(),
            remove: remove.to_vec(),
        };
        self.call(|mut c| {
            let r = r.clone();
            async move { c.change_replicas(r).await }
        })
        .await
    }

    /// Moves a raft log group's leadership to voter `to` (`None`: its preferred replica)
    /// at its leader, which waits up to `wait` for the election. The leader after it, and
    /// whether it changed.
    pub async fn transfer_leadership(
        &self,
        group: u32,
        to: Option<u32>,
        wait: Duration,
    ) -> Result<v1::TransferLeadershipResponse, ClientError> {
        let r = v1::TransferLeadershipRequest {
            group,
            to,
            timeout_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
        };
        self.call(|mut c| async move { c.transfer_leadership(r).await })
            .await
    }

    /// Every broker of the region (learned from the first that answers) and its log
    /// groups, each broker asked directly.
    pub async fn region_log_groups(&self) -> Result<Vec<BrokerLogGroups>, ClientError> {
        let first = self
            .call(|mut c| async move { c.log_groups(v1::LogGroupsRequest {}).await })
            .await?;
        let mut out = Vec::new();
        for b in first.brokers {
            let groups = self.log_groups_at(&b.grpc).await.map(|r| r.groups);
            out.push(BrokerLogGroups {
                broker_id: b.id,
                addr: b.grpc,
                groups,
            });
        }
        Ok(out)
    }

    /// What each broker of the region sees now (its disk, the partitions it leads with
    /// their offsets and committed consumer groups), each asked directly; a broker that does
    /// not answer has its error.
    pub async fn broker_reports(
        &self,
    ) -> Result<Vec<(u32, String, Result<v1::BrokerReportResponse, ClientError>)>, ClientError>
    {
        let first = self
            .call(|mut c| async move { c.log_groups(v1::LogGroupsRequest {}).await })
            .await?;
        let mut out = Vec::new();
        for b in first.brokers {
            let report = async {
                let mut c = self.connection(&b.grpc).await?;
                let mut req = tonic::Request::new(v1::BrokerReportRequest {});
                req.set_timeout(ADMIN_TIMEOUT);
                Ok(c.broker_report(req).await?.into_inner())
            }
            .await;
            out.push((b.id, b.grpc, report));
        }
        Ok(out)
    }

    async fn log_groups_at(&self, addr: &str) -> Result<v1::LogGroupsResponse, ClientError> {
        let mut c = self.connection(addr).await?;
        let mut req = tonic::Request::new(v1::LogGroupsRequest {});
        req.set_timeout(ADMIN_TIMEOUT);
        Ok(c.log_groups(req).await?.into_inner())
    }

    async fn set_master_at(
        &self,
        addr: &str,
        group: u32,
        epoch: u64,
        master: Option<u32>,
    ) -> Result<LogGroupInfo, ClientError> {
        let mut c = self.connection(addr).await?;
        let mut req = tonic::Request::new(v1::SetMasterRequest {
            group,
            epoch,
            master,
        });
        req.set_timeout(ADMIN_TIMEOUT);
        Ok(c.set_master(req).await?.into_inner())
    }

    /// Fails a master-slave log group over to its most caught-up slave: fences every
    /// reachable replica with a new epoch (so the old master can commit nothing more),
    /// reads where each replica's journal ends, names the one holding the most the master,
    /// and tells the others. Replicas that were unreachable learn the new epoch from their
    /// peers when they return; an old master then truncates what it alone held.
    ///
    /// Refuses, before changing anything, when the answering slaves cannot be sure to
    /// include one that holds every committed record (as many slaves unreachable as
    /// `sync_replicas`), unless `force` (an unclean failover that may lose what only the
    /// unreachable replicas hold).
    pub async fn failover_log_group(
        &self,
        group: u32,
        force: bool,
    ) -> Result<FailoverReport, ClientError> {
        let brokers = self.region_log_groups().await?;
        let view = |b: &BrokerLogGroups| -> Option<LogGroupInfo> {
            b.groups
                .as_ref()
                .ok()
                .and_then(|g| g.iter().find(|i| i.group == group).cloned())
        };
        let mut answering = Vec::new();
        for b in &brokers {
            if let Some(info) = view(b) {
                if info.strategy != "master-slave" {
                    return Err(ClientError::Usage(format!(
                        "log group {group} is replicated by {}: only master-slave groups are failed over by hand (raft elects its own leader)",
                        info.strategy
                    )));
                }
                answering.push((b.broker_id, b.addr.clone(), info));
            }
        }
        if answering.is_empty() {
            return Err(ClientError::Usage(format!(
                "no broker of the region answered about log group {group}: nothing to fail over to"
            )));
        }
        let newest = answering
            .iter()
            .map(|(_, _, i)| i)
            .max_by_key(|i| (i.epoch, i.leader.is_some()))
            .expect("non-empty");
        let old_master = newest.leader;
        let epoch = newest.epoch + 1;
        let sync_replicas = newest.sync_replicas as usize;
        // Brokers that did not answer may hold a slave; one that answered without the
        // group holds none (a managed region places a group on some of its brokers: they
        // used to count as silent slaves, so a failover there was always refused).
        let silent: Vec<u32> = brokers
            .iter()
            .filter(|b| Some(b.broker_id) != old_master && b.groups.is_err())
            .map(|b| b.broker_id)
            .collect();
        if sync_replicas > 0 && silent.len() >= sync_replicas && !force {
            return Err(ClientError::Usage(format!(
                "log group {group}: slave(s) {silent:?} do not answer and a commit needs {sync_replicas} slave(s), so no answering replica is sure to hold every committed record; bring them back, or fail over with --force and accept losing what only they hold"
            )));
        }
        // Fence: from here on no replica follows the old epoch.
        let mut fenced = Vec::new();
        for (id, addr, _) in &answering {
            match self.set_master_at(addr, group, epoch, None).await {
                Ok(info) => fenced.push((*id, addr.clone(), info)),
                // An old master that stopped answering is fenced by its slaves, which no
                // longer pull from it.
                Err(_) if Some(*id) == old_master => {}
                Err(e) => {
                    return Err(ClientError::Usage(format!(
                        "fencing log group {group} at epoch {epoch} on broker {id} ({addr}) failed: {e}; the group may be fenced without a master: rerun the failover"
                    )));
                }
            }
        }
        let committed = fenced
            .iter()
            .map(|(_, _, i)| i.watermark)
            .max()
            .unwrap_or(0);
        let (new_master, new_addr) = fenced
            .iter()
            .filter(|(id, _, _)| Some(*id) != old_master || fenced.len() == 1)
            .max_by_key(|(id, _, i)| (i.last_term, i.last_index, std::cmp::Reverse(*id)))
            .map(|(id, addr, _)| (*id, addr.clone()))
            .ok_or_else(|| ClientError::Usage(format!("log group {group}: no slave answers")))?;
        self.set_master_at(&new_addr, group, epoch, Some(new_master))
            .await
            .map_err(|e| {
                ClientError::Usage(format!(
                    "naming broker {new_master} master of log group {group} at epoch {epoch} failed: {e}; the group is fenced without a master: rerun the failover"
                ))
            })?;
        let mut warnings = Vec::new();
        for (id, addr, _) in &fenced {
            if *id != new_master
                && let Err(e) = self
                    .set_master_at(addr, group, epoch, Some(new_master))
                    .await
            {
                warnings.push(format!(
                    "broker {id} was not told the new master of log group {group} ({e}); it learns it from its peers"
                ));
            }
        }
        let replicas = brokers
            .iter()
            .map(|b| {
                let end = fenced
                    .iter()
                    .find(|(id, _, _)| *id == b.broker_id)
                    .map(|(_, _, i)| i.end_position);
                (b.broker_id, end)
            })
            .collect();
        Ok(FailoverReport {
            group,
            epoch,
            old_master,
            new_master,
            replicas,
            committed,
            warnings,
        })
    }
}
