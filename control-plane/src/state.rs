//! The control plane's picture of the cluster, read from the store: regions, live brokers,
//! log groups, topics and assignments, and from them the *region view* a broker applies
//! (what it must host) and its version and hash.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};

use meridian_proto::v1;
use serde::de::DeserializeOwned;

use crate::metadata::{Broker, Group, Region, RegionState as Health, Topic, keys};
use crate::store::{KeyValue, Store, StoreError};

/// Why the cluster could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored record does not parse (written by something else, or a newer version).
    #[error("stored record {key} does not parse: {why}")]
    Corrupt {
        /// The key.
        key: String,
        /// The parse error.
        why: String,
    },
}

impl From<StateError> for tonic::Status {
    fn from(e: StateError) -> tonic::Status {
        match e {
            StateError::Store(e) => tonic::Status::unavailable(e.to_string()),
            e @ StateError::Corrupt { .. } => tonic::Status::internal(e.to_string()),
        }
    }
}

/// Decodes one stored JSON record.
pub fn decode<T: DeserializeOwned>(kv: &KeyValue) -> Result<T, StateError> {
    serde_json::from_slice(&kv.value).map_err(|e| StateError::Corrupt {
        key: kv.key.clone(),
        why: e.to_string(),
    })
}

/// One region as stored.
#[derive(Debug, Clone, Default)]
pub struct RegionState {
    /// Its name.
    pub name: String,
    /// Whether it takes traffic (absent: the region record is missing).
    pub record: Option<Region>,
    /// Live brokers (their lease holds), by id.
    pub brokers: BTreeMap<u32, Broker>,
    /// Log groups, by id, with their store versions.
    pub groups: BTreeMap<u32, (Group, u64)>,
    /// Assignments: topic → partition → (group, version).
    pub assignments: BTreeMap<String, BTreeMap<u32, (u32, u64)>>,
}

/// Topics and deleted ids, as stored.
#[derive(Debug, Clone, Default)]
pub struct Topics {
    /// Topics by name with their store versions.
    pub topics: BTreeMap<String, (Topic, u64)>,
    /// Deleted topic ids with the versions of their keys.
    pub retired: BTreeMap<u32, u64>,
}

/// Creates region `name` (up) unless it exists; whether it was created.
pub async fn create_region(store: &dyn Store, name: &str) -> Result<bool, StateError> {
    let region = Region {
        name: name.to_owned(),
        state: Health::Up,
        down: None,
    };
    let value = serde_json::to_vec(&region).expect("metadata records serialize");
    let created = store
        .compare_and_swap(&keys::region(name), None, value, None)
        .await?
        .is_ok();
    if created {
        tracing::info!(region = %name, "region created");
    }
    Ok(created)
}

/// Marks region `name` up (`down` None) or down, unless it already is; whether it
/// changed. A change moves the routing epoch, so clients know to route again.
pub async fn set_region_down(
    store: &dyn Store,
    name: &str,
    down: Option<crate::metadata::Down>,
) -> Result<bool, StateError> {
    loop {
        let Some(kv) = store.get(&keys::region(name)).await? else {
            return Err(StateError::Corrupt {
                key: keys::region(name),
                why: "the region does not exist".into(),
            });
        };
        let mut region: Region = decode(&kv)?;
        let state = if down.is_some() {
            Health::Down
        } else {
            Health::Up
        };
        if region.state == state
            && region.down.as_ref().map(|d| d.by_operator) == down.as_ref().map(|d| d.by_operator)
        {
            return Ok(false);
        }
        region.state = state;
        region.down = down.clone();
        let value = serde_json::to_vec(&region).expect("metadata records serialize");
        if store
            .compare_and_swap(&keys::region(name), Some(kv.version), value, None)
            .await?
            .is_ok()
        {
            let epoch = bump_routing_epoch(store).await?;
            tracing::warn!(region = %name, state = ?state, reason = ?down.as_ref().map(|d| &d.reason), routing_epoch = epoch, "region state changed");
            return Ok(true);
        }
    }
}

/// Moves the routing epoch on by one; returns the new epoch.
pub async fn bump_routing_epoch(store: &dyn Store) -> Result<u64, StateError> {
    loop {
        let current = store.get(keys::ROUTING_EPOCH).await?;
        let (epoch, version) = match &current {
            Some(kv) => (decode::<u64>(kv)?, Some(kv.version)),
            None => (0, None),
        };
        let next = epoch + 1;
        let value = serde_json::to_vec(&next).expect("a number serializes");
        if store
            .compare_and_swap(keys::ROUTING_EPOCH, version, value, None)
            .await?
            .is_ok()
        {
            return Ok(next);
        }
    }
}

/// Reads every region record.
pub async fn regions(store: &dyn Store) -> Result<BTreeMap<String, Region>, StateError> {
    let mut out = BTreeMap::new();
    for kv in store.list(keys::REGIONS).await? {
        let r: Region = decode(&kv)?;
        out.insert(r.name.clone(), r);
    }
    Ok(out)
}

/// Reads one region.
pub async fn region(store: &dyn Store, name: &str) -> Result<RegionState, StateError> {
    let mut state = RegionState {
        name: name.to_owned(),
        record: match store.get(&keys::region(name)).await? {
            Some(kv) => Some(decode(&kv)?),
            None => None,
        },
        ..RegionState::default()
    };
    for kv in store.list(&keys::brokers(name)).await? {
        let b: Broker = decode(&kv)?;
        state.brokers.insert(b.id, b);
    }
    for kv in store.list(&keys::groups(name)).await? {
        let g: Group = decode(&kv)?;
        state.groups.insert(g.id, (g, kv.version));
    }
    let prefix = format!("/meridian/assignments/{name}/");
    for kv in store.list(&prefix).await? {
        let rest = &kv.key[prefix.len()..];
        let Some((topic, partition)) = rest.rsplit_once('/') else {
            continue;
        };
        let partition: u32 = partition.parse().map_err(|_| StateError::Corrupt {
            key: kv.key.clone(),
            why: "the partition is not a number".into(),
        })?;
        let group: u32 = decode(&kv)?;
        state
            .assignments
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, (group, kv.version));
    }
    Ok(state)
}

/// Reads every topic and deleted id.
pub async fn topics(store: &dyn Store) -> Result<Topics, StateError> {
    let mut out = Topics::default();
    for kv in store.list(keys::TOPICS).await? {
        let t: Topic = decode(&kv)?;
        out.topics.insert(t.name.clone(), (t, kv.version));
    }
    for kv in store.list(keys::RETIRED).await? {
        if let Ok(id) = kv.key[keys::RETIRED.len()..].parse() {
            out.retired.insert(id, kv.version);
        }
    }
    Ok(out)
}

impl RegionState {
    /// The leader of `group` as its live brokers report it: the highest epoch claimed.
    pub fn leader(&self, group: u32) -> Option<(u32, u64)> {
        self.brokers
            .values()
            .filter_map(|b| b.leading.get(&group).map(|&epoch| (b.id, epoch)))
            .max_by_key(|&(id, epoch)| (epoch, std::cmp::Reverse(id)))
    }

    /// Partitions placed on each group.
    pub fn load(&self) -> BTreeMap<u32, usize> {
        let mut load = BTreeMap::new();
        for partitions in self.assignments.values() {
            for (group, _) in partitions.values() {
                *load.entry(*group).or_default() += 1;
            }
        }
        load
    }

    /// Whether clients may be routed here: marked up, with at least one live broker.
    pub fn healthy(&self) -> bool {
        self.record.as_ref().is_some_and(|r| r.state == Health::Up) && !self.brokers.is_empty()
    }

    /// Why clients may not be routed here (None: they may).
    pub fn why_not_healthy(&self) -> Option<String> {
        match &self.record {
            None => Some("the region record is missing".into()),
            Some(r) if r.state == Health::Down => Some(match &r.down {
                Some(d) if d.by_operator => format!(
                    "{} (restore it: meridian region restore {})",
                    d.reason, self.name
                ),
                Some(d) => d.reason.clone(),
                None => "marked down".into(),
            }),
            Some(_) if self.brokers.is_empty() => Some("no live broker".into()),
            Some(_) => None,
        }
    }

    /// The log group of each partition of `topic` here, when every partition is assigned.
    pub fn partition_groups(&self, topic: &Topic) -> Option<Vec<u32>> {
        let assigned = self.assignments.get(&topic.name)?;
        (0..topic.partitions)
            .map(|p| assigned.get(&p).map(|(g, _)| *g))
            .collect()
    }

    /// A log group as the API shows it.
    pub fn group_placement(&self, group: &Group) -> v1::LogGroupPlacement {
        let leader = self.leader(group.id);
        v1::LogGroupPlacement {
            region: self.name.clone(),
            id: group.id,
            strategy: group.strategy.as_str().into(),
            replicas: group.replicas.clone(),
            changes: group.changes,
            leader: leader.map(|(id, _)| id),
            epoch: leader.map_or(0, |(_, e)| e),
            partitions: self.load().get(&group.id).copied().unwrap_or(0) as u32,
            topic: group.topic.unwrap_or(0),
        }
    }
}

/// A broker as the API shows it.
pub fn endpoint(b: &Broker) -> v1::BrokerEndpoint {
    v1::BrokerEndpoint {
        id: b.id,
        region: b.region.clone(),
        grpc: b.grpc.clone(),
        raft: b.raft.clone(),
        live: true,
        kafka: b.kafka.clone(),
        version: b.version.clone(),
    }
}

/// What the brokers of `region` must host: its live brokers, its log groups (with reported
/// leaders), the topics spanning it whose every partition is assigned, and the ids of
/// topics deleted or removed from it.
pub fn view(region: &RegionState, topics: &Topics) -> v1::RegionView {
    let mut version = 0;
    let groups: Vec<v1::LogGroupPlacement> = region
        .groups
        .values()
        .map(|(g, v)| {
            version = version.max(*v);
            region.group_placement(g)
        })
        .collect();
    let mut in_region = Vec::new();
    let mut retired: Vec<u32> = topics.retired.keys().copied().collect();
    let mut left = Vec::new();
    for (topic, v) in topics.topics.values() {
        if topic.left.contains(&region.name) {
            version = version.max(*v);
            retired.push(topic.id);
            // The groups it had here (its assignments are kept): the mirror still ships
            // what this region took of it.
            left.push(v1::TopicInRegion {
                name: topic.name.clone(),
                id: topic.id,
                groups: region
                    .assignments
                    .get(&topic.name)
                    .map(|a| a.values().map(|(g, _)| *g).collect())
                    .unwrap_or_default(),
                ..Default::default()
            });
        }
        if !topic.regions.contains(&region.name) {
            continue;
        }
        let Some(partition_groups) = region.partition_groups(topic) else {
            continue;
        };
        version = version.max(*v);
        for (_, av) in region.assignments[&topic.name].values() {
            version = version.max(*av);
        }
        in_region.push(v1::TopicInRegion {
            name: topic.name.clone(),
            id: topic.id,
            groups: partition_groups,
            strategy: topic.replication.as_str().into(),
            created_ms: topic.created_ms,
            acks: topic.acks.as_str().into(),
            home: topic.home.clone().unwrap_or_default(),
            home_epoch: topic.home_epoch,
            home_closed: topic.home_closed,
            txn_default: topic.txn_default.clone(),
            timestamp_type: topic.timestamp_type.as_str().into(),
            configs: topic
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            retention: topic.retention.clone(),
            joined_later: topic.joined.contains(&region.name),
        });
    }
    retired.sort_unstable();
    retired.dedup();
    for v in topics.retired.values() {
        version = version.max(*v);
    }
    let mut view = v1::RegionView {
        region: region.name.clone(),
        version,
        hash: 0,
        brokers: region.brokers.values().map(endpoint).collect(),
        groups,
        topics: in_region,
        retired,
        left,
        ..Default::default()
    };
    view.hash = view_hash(&view);
    view
}

/// `view` of a region that is down, with why and the region that takes its writes over:
/// the healthy region sharing most of its topics (ties: the first by name), with its live
/// brokers. A region that is up is left as it is.
pub async fn add_takeover(
    store: &dyn Store,
    view: &mut v1::RegionView,
    region: &RegionState,
    topics: &Topics,
) -> Result<(), StateError> {
    let Some(down) = region
        .record
        .as_ref()
        .filter(|r| r.state == Health::Down)
        .map(|r| r.down.as_ref().map_or("down", |d| d.reason.as_str()))
    else {
        return Ok(());
    };
    view.down = down.to_owned();
    let mut best: Option<(usize, RegionState)> = None;
    for name in regions(store).await?.into_keys() {
        if name == region.name {
            continue;
        }
        let other = self::region(store, &name).await?;
        if !other.healthy() {
            continue;
        }
        let shared = topics
            .topics
            .values()
            .filter(|(t, _)| t.regions.contains(&region.name) && t.regions.contains(&name))
            .count();
        if best.as_ref().is_none_or(|(n, _)| shared > *n) {
            best = Some((shared, other));
        }
    }
    if let Some((_, other)) = best {
        view.takeover = other.name.clone();
        view.takeover_brokers = other.brokers.values().map(endpoint).collect();
    }
    view.hash = view_hash(view);
    Ok(())
}

/// A hash of everything a view holds but its hash (stable across processes: the std hasher
/// with its fixed default keys).
fn view_hash(view: &v1::RegionView) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    view.version.hash(&mut h);
    (&view.down, &view.takeover).hash(&mut h);
    for b in &view.takeover_brokers {
        (b.id, &b.grpc).hash(&mut h);
    }
    for b in &view.brokers {
        (b.id, &b.grpc, &b.raft).hash(&mut h);
    }
    for g in &view.groups {
        (
            g.id,
            &g.strategy,
            &g.replicas,
            g.changes,
            g.leader,
            g.epoch,
            g.topic,
        )
            .hash(&mut h);
    }
    for t in &view.topics {
        (
            &t.name,
            t.id,
            &t.groups,
            &t.strategy,
            &t.acks,
            &t.txn_default,
            &t.timestamp_type,
            t.configs.iter().collect::<BTreeMap<_, _>>(),
            &t.retention,
            t.joined_later,
        )
            .hash(&mut h);
    }
    view.retired.hash(&mut h);
    for t in &view.left {
        (t.id, &t.groups).hash(&mut h);
    }
    h.finish()
}

/// Replicas each live broker of the region holds.
pub fn replicas_per_broker(region: &RegionState) -> BTreeMap<u32, usize> {
    let mut n: BTreeMap<u32, usize> = region.brokers.keys().map(|&b| (b, 0)).collect();
    for (g, _) in region.groups.values() {
        for b in &g.replicas {
            if let Some(c) = n.get_mut(b) {
                *c += 1;
            }
        }
    }
    n
}

/// The live broker ids of a region.
pub fn live(region: &RegionState) -> BTreeSet<u32> {
    region.brokers.keys().copied().collect()
}
