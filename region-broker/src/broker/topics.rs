//! Topics: creating, growing and deleting them and placing their partitions on log
//! groups. Alone, the broker changes its catalog itself; in a static region changes travel
//! as commands in log group 0's raft and every broker applies them (and log group 0's
//! snapshots carry the catalog); in a managed region the control plane's view brings them.

use std::io;
use std::sync::Arc;

use meridian_proto::names;

use super::catalog::CatalogSnapshot;
use super::{Acks, Broker, BrokerError, Strategy, Topic, now_ms};
use crate::replication::raft::{CatalogChange, Command, JournalStateMachine, SnapshotHooks};

impl Broker {
    /// Creates a raft-replicated topic; see [`Broker::create_topic_with`].
    pub async fn create_topic(&self, name: &str, partitions: u32) -> Result<Topic, BrokerError> {
        self.create_topic_with(name, partitions, Strategy::Raft)
            .await
    }

    /// Creates a topic with `partitions` partitions (0: the default), spread round-robin
    /// over the log groups of its replication strategy. In a region the change goes through
    /// log group 0's raft and every broker applies it.
    pub async fn create_topic_with(
        &self,
        name: &str,
        partitions: u32,
        replication: Strategy,
    ) -> Result<Topic, BrokerError> {
        names::validate("topic", name).map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let partitions = if partitions == 0 {
            self.config.default_partitions
        } else {
            partitions
        };
        if partitions > self.config.partitions_max {
            return Err(BrokerError::Invalid(format!(
                "{partitions} partitions requested; this broker allows at most {} (partitions_max)",
                self.config.partitions_max
            )));
        }
        if !self.config.control.is_empty() {
            return Err(BrokerError::Invalid(
                "this region's topics are managed by the control plane: create topics there (meridian topic create --control ADDR)".into(),
            ));
        }
        if self.strategy_groups(replication).is_empty() {
            return Err(BrokerError::Invalid(format!(
                "this region has no {} log groups: start its brokers with --master-slave GROUP=MASTER_ID (or [[replication.master_slave]] in the config)",
                replication.as_str()
            )));
        }
        if self.is_replicated() {
            return self
                .create_topic_replicated(name, partitions, replication)
                .await;
        }
        let _serial = self.catalog_writes.lock().await;
        let id = {
            let catalog = self.catalog.read().expect("catalog lock poisoned");
            if catalog.get(name).is_some() {
                return Err(BrokerError::TopicExists(name.to_owned()));
            }
            catalog.next_id()
        };
        let topic = Topic {
            name: name.to_owned(),
            id,
            groups: self.spread(id, partitions, replication),
            created_ms: now_ms(),
            replication,
            acks: Acks::default(),
            home: None,
            txn_default: None,
            timestamp_type: Default::default(),
            config: Default::default(),
            retention_ms: None,
        };
        self.create_topic_local(topic.clone())?;
        Ok(topic)
    }

    /// Grows a topic to `partitions` partitions (never fewer; Kafka's CreatePartitions).
    /// Existing partitions keep their log groups; new ones are spread like a new topic's.
    pub async fn add_partitions(&self, name: &str, partitions: u32) -> Result<Topic, BrokerError> {
        if !self.config.control.is_empty() {
            return Err(BrokerError::Invalid(
                "this region's topics are managed by the control plane: add partitions there (meridian topic alter --partitions N)".into(),
            ));
        }
        if self.is_replicated() {
            return self.grow_topic_replicated(name, partitions).await;
        }
        let _serial = self.catalog_writes.lock().await;
        let mut topic = self.topic(name)?;
        topic.groups = self.grown_groups(&topic, partitions)?;
        self.create_topic_local(topic.clone())?;
        Ok(topic)
    }

    /// The log groups of `topic` grown to `partitions` partitions.
    fn grown_groups(&self, topic: &Topic, partitions: u32) -> Result<Vec<u32>, BrokerError> {
        let held = topic.groups.len() as u32;
        if partitions <= held {
            return Err(BrokerError::Invalid(format!(
                "topic {:?} has {held} partitions; asked for {partitions}: partitions can only be added",
                topic.name
            )));
        }
        if partitions > self.config.partitions_max {
            return Err(BrokerError::Invalid(format!(
                "{partitions} partitions requested; this broker allows at most {} (partitions_max)",
                self.config.partitions_max
            )));
        }
        let mut groups = topic.groups.clone();
        groups.extend(
            self.spread(topic.id, partitions, topic.replication)
                .into_iter()
                .skip(held as usize),
        );
        Ok(groups)
    }

    /// The log group of each partition of a new topic: round-robin over the groups of its
    /// strategy.
    fn spread(&self, id: u32, partitions: u32, replication: Strategy) -> Vec<u32> {
        let groups = self.strategy_groups(replication);
        let n = groups.len() as u32;
        (0..partitions)
            .map(|p| groups[((id + p) % n) as usize])
            .collect()
    }

    /// The log groups of a replication strategy. A broker running alone replicates
    /// nothing, so every group serves either strategy.
    fn strategy_groups(&self, replication: Strategy) -> Vec<u32> {
        let all = self
            .log_groups
            .read()
            .expect("log groups lock poisoned")
            .keys()
            .copied()
            .collect::<Vec<_>>()
            .into_iter();
        if self.config.replication.peers.is_empty() {
            return all.collect();
        }
        all.filter(|&g| {
            let ms = self.config.master_slave_master(g).is_some();
            ms == (replication == Strategy::MasterSlave)
        })
        .collect()
    }

    /// Adds a topic to this broker (or partitions to a topic it has): indexes first,
    /// catalog last, so a crash in between leaves index directories the next start removes
    /// because no topic owns them. Partitions on groups hosted elsewhere (a managed region)
    /// are only recorded; a group opened later picks them up from the catalog.
    pub(super) fn create_topic_local(&self, topic: Topic) -> Result<(), BrokerError> {
        let mut catalog = self.catalog.write().expect("catalog lock poisoned");
        let held = catalog
            .get(&topic.name)
            .filter(|t| t.id == topic.id)
            .map_or(0, |t| t.groups.len());
        for (p, &g) in topic.groups.iter().enumerate().skip(held) {
            match self.log_group(g) {
                Some(group) => group
                    .storage()
                    .add_partition((topic.id, p as u32), &topic.name)?,
                None if !self.config.control.is_empty() => {}
                None => {
                    return Err(BrokerError::Invalid(format!(
                        "topic {:?} names log group {g}, which this broker does not have",
                        topic.name
                    )));
                }
            }
        }
        tracing::info!(topic = %topic.name, id = topic.id, partitions = topic.groups.len(), "topic created");
        catalog.insert(topic)?;
        Ok(())
    }

    /// Deletes a topic: its partitions become unreadable at once; its records leave the
    /// disk with the segments that hold them.
    pub async fn delete_topic(&self, name: &str) -> Result<(), BrokerError> {
        if !self.config.control.is_empty() {
            return Err(BrokerError::Invalid(
                "this region's topics are managed by the control plane: delete topics there (meridian topic delete --control ADDR)".into(),
            ));
        }
        if self.is_replicated() {
            return self.delete_topic_replicated(name).await;
        }
        self.delete_topic_local(name)
    }

    pub(super) fn delete_topic_local(&self, name: &str) -> Result<(), BrokerError> {
        let mut catalog = self.catalog.write().expect("catalog lock poisoned");
        let topic = catalog
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))?;
        catalog.remove(name)?;
        let mut used: Vec<u32> = topic.groups.clone();
        used.sort_unstable();
        used.dedup();
        for g in used {
            if let Some(group) = self.log_group(g) {
                group.storage().remove_topic(topic.id, name)?;
            }
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Every topic, by name.
    pub fn topics(&self) -> Vec<Topic> {
        self.catalog
            .read()
            .expect("catalog lock poisoned")
            .topics()
            .cloned()
            .collect()
    }

    /// One topic.
    pub fn topic(&self, name: &str) -> Result<Topic, BrokerError> {
        self.catalog
            .read()
            .expect("catalog lock poisoned")
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic(name.to_owned()))
    }

    /// `(earliest, latest)` of one partition as its leader holds them; `NotLeader` on any
    /// other replica (a follower may be behind, and a replica just added, still catching
    /// up, holds next to nothing: its offsets described as the partition's made readers
    /// stop early).
    pub fn partition_offsets(
        &self,
        topic: &Topic,
        partition: u32,
    ) -> Result<(u64, u64), BrokerError> {
        let (group, key) = self.locate(topic, partition)?;
        self.require_leader(group.id())?;
        group.storage().offsets(key).map_err(BrokerError::Read)
    }

    /// Bytes of one partition's records held here, in any replica role; `None` when no
    /// replica of it is here (or the partition is unknown).
    pub fn partition_bytes(&self, topic: &Topic, partition: u32) -> Option<u64> {
        let (group, key) = self.locate(topic, partition).ok()?;
        group.storage().partition_bytes(key).ok()
    }

    /// The leader's epoch of a partition's log group and the partition's end (what a
    /// consumer may read up to), answered by the leader only.
    pub fn leader_end(&self, topic: &Topic, partition: u32) -> Result<(u64, u64), BrokerError> {
        let (group, key) = self.locate(topic, partition)?;
        self.require_leader(group.id())?;
        let (_, latest) = group.storage().offsets(key).map_err(BrokerError::Read)?;
        Ok((group.epoch(), latest))
    }

    /// Creates a topic through log group 0's raft.
    pub(super) async fn create_topic_replicated(
        &self,
        name: &str,
        partitions: u32,
        replication: Strategy,
    ) -> Result<Topic, BrokerError> {
        let _serial = self.catalog_writes.lock().await;
        self.require_leader(0)?;
        if let Some(group) = self.log_group(0) {
            // Every committed catalog change is applied here before the next id is chosen.
            group
                .ensure_applied()
                .await
                .map_err(|e| self.group_error(e))?;
        }
        let (id, groups) = {
            let catalog = self.catalog.read().expect("catalog lock poisoned");
            if catalog.get(name).is_some() {
                return Err(BrokerError::TopicExists(name.to_owned()));
            }
            let id = catalog.next_id();
            (id, self.spread(id, partitions, replication))
        };
        let change = CatalogChange::CreateTopic {
            name: name.to_owned(),
            id,
            groups,
            created_ms: now_ms(),
            replication,
        };
        self.replicate(0, Command::Catalog(change)).await?;
        self.topic(name)
    }

    /// Adds partitions to a topic through log group 0's raft: the same entry as a creation,
    /// with the same id and more groups (every broker adds what it does not hold).
    pub(super) async fn grow_topic_replicated(
        &self,
        name: &str,
        partitions: u32,
    ) -> Result<Topic, BrokerError> {
        let _serial = self.catalog_writes.lock().await;
        self.require_leader(0)?;
        let topic = self.topic(name)?;
        let groups = self.grown_groups(&topic, partitions)?;
        let change = CatalogChange::CreateTopic {
            name: name.to_owned(),
            id: topic.id,
            groups,
            created_ms: topic.created_ms,
            replication: topic.replication,
        };
        self.replicate(0, Command::Catalog(change)).await?;
        self.topic(name)
    }

    /// Deletes a topic through log group 0's raft.
    pub(super) async fn delete_topic_replicated(&self, name: &str) -> Result<(), BrokerError> {
        let _serial = self.catalog_writes.lock().await;
        self.require_leader(0)?;
        let topic = self.topic(name)?;
        self.replicate(
            0,
            Command::Catalog(CatalogChange::DeleteTopic {
                name: name.to_owned(),
                id: topic.id,
            }),
        )
        .await?;
        Ok(())
    }

    /// Makes the local catalog the one a snapshot of log group 0 carries: topics it lacks
    /// are created, topics it no longer has are deleted, retired ids are kept.
    fn restore_catalog(&self, snapshot: &CatalogSnapshot) -> Result<(), BrokerError> {
        for local in self.topics() {
            if !snapshot
                .topics
                .iter()
                .any(|t| t.name == local.name && t.id == local.id)
            {
                self.delete_topic_local(&local.name)?;
            }
        }
        for topic in &snapshot.topics {
            let held = self
                .catalog
                .read()
                .expect("catalog lock poisoned")
                .get(&topic.name)
                .map(|t| (t.id, t.groups.len()));
            if held.is_none_or(|(id, n)| id != topic.id || n < topic.groups.len()) {
                self.create_topic_local(topic.clone())?;
            }
        }
        for &id in &snapshot.retired {
            self.catalog
                .write()
                .expect("catalog lock poisoned")
                .retire(id)?;
            for (_, g) in self.log_groups() {
                g.storage().retire_topic(id);
            }
        }
        tracing::info!(
            topics = snapshot.topics.len(),
            "topic catalog restored from a snapshot"
        );
        Ok(())
    }

    /// Applies a catalog change from log group 0 (on every broker, the leader included).
    /// Idempotent: entries are applied again after a restart.
    fn apply_catalog(&self, change: &CatalogChange) -> Result<(), BrokerError> {
        match change {
            CatalogChange::CreateTopic {
                name,
                id,
                groups,
                created_ms,
                replication,
            } => {
                match self
                    .catalog
                    .read()
                    .expect("catalog lock poisoned")
                    .get(name)
                {
                    Some(t) if t.id == *id && t.groups.len() >= groups.len() => return Ok(()),
                    // Partitions added: the same topic with more groups.
                    Some(t) if t.id == *id => {
                        let mut grown = t.clone();
                        grown.groups = groups.clone();
                        self.create_topic_local(grown)?;
                        return Ok(());
                    }
                    Some(t) => {
                        tracing::warn!(topic = %name, id, existing = t.id, "ignoring a catalog entry for a name already in use");
                        return Ok(());
                    }
                    None => {}
                }
                self.create_topic_local(Topic {
                    name: name.clone(),
                    id: *id,
                    groups: groups.clone(),
                    created_ms: *created_ms,
                    replication: *replication,
                    acks: Acks::default(),
                    home: None,
                    txn_default: None,
                    timestamp_type: Default::default(),
                    config: Default::default(),
                    retention_ms: None,
                })?;
            }
            CatalogChange::DeleteTopic { name, id } => {
                let current = self
                    .catalog
                    .read()
                    .expect("catalog lock poisoned")
                    .get(name)
                    .map(|t| t.id);
                if current == Some(*id) {
                    self.delete_topic_local(name)?;
                }
            }
        }
        Ok(())
    }

    /// Log group 0's state machine in a static region: applies catalog changes, and puts
    /// the catalog in snapshots.
    pub(super) fn with_catalog_hooks(
        self: &Arc<Self>,
        sm: JournalStateMachine,
    ) -> JournalStateMachine {
        let save = Arc::downgrade(self);
        let restore = Arc::downgrade(self);
        let broker = Arc::downgrade(self);
        sm.with_snapshot_hooks(SnapshotHooks {
            save: Arc::new(move || {
                let broker = save
                    .upgrade()
                    .ok_or_else(|| io::Error::other("broker stopped"))?;
                let snapshot = broker
                    .catalog
                    .read()
                    .expect("catalog lock poisoned")
                    .snapshot();
                serde_json::to_value(snapshot).map_err(io::Error::other)
            }),
            restore: Arc::new(move |value| {
                let broker = restore
                    .upgrade()
                    .ok_or_else(|| io::Error::other("broker stopped"))?;
                let snapshot: CatalogSnapshot =
                    serde_json::from_value(value.clone()).map_err(io::Error::other)?;
                broker.restore_catalog(&snapshot).map_err(io::Error::other)
            }),
        })
        .with_hook(Arc::new(move |command: &Command| {
            match (broker.upgrade(), command) {
                (Some(broker), Command::Catalog(change)) => {
                    broker.apply_catalog(change).map_err(io::Error::other)
                }
                _ => Ok(()),
            }
        }))
    }
}
