//! Topics through the control plane: create (validate, allocate a never-reused id, place the
//! partitions on log groups in every region the topic spans), alter (more partitions,
//! retention, configs, the regions it spans), delete, describe. The leader runs these one
//! at a time.
//!
//! A region added to a topic gets log groups of its own for it (`Group::topic`), and the
//! topic is marked as joined there later (`Topic::joined`): the other regions' mirrors then
//! ship it there on streams of its own, from the start of what each retains, apart from
//! their main streams (already far ahead in the same origin groups). A region removed
//! retires the topic's id there (`Topic::left`): its brokers drop it and stop taking its
//! writes, what it took is still mirrored out, and the topic never returns to it.
//!
//! Write order makes a half-done change invisible: new log groups first, then the
//! partitions' assignments, then the topic record last. A region view lists a topic only
//! when its record exists and every partition is assigned, so brokers never see a topic
//! whose groups do not exist.

use std::collections::BTreeMap;

use meridian_proto::v1;
use tonic::Status;

use crate::metadata::{Acks, Invalid, Region, Strategy, TimestampType, Topic, keys};
use crate::placement;
use crate::state::{self, StateError, decode};
use crate::store::Store;

/// Replicas per log group when the request names none (capped by the live brokers).
pub const DEFAULT_REPLICATION_FACTOR: u32 = 3;
/// Partitions when the request names none.
pub const DEFAULT_PARTITIONS: u32 = 3;
/// Retention when the request names none.
pub const DEFAULT_RETENTION: &str = "7d";

fn invalid(e: Invalid) -> Status {
    Status::invalid_argument(e.to_string())
}

/// A setting the request spells wrong (its error names it and what would work).
fn refused(e: impl std::error::Error) -> Status {
    Status::invalid_argument(e.to_string())
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("metadata records serialize")
}

/// Turns a request's spec into a topic record, filling defaults, and validates it against
/// the regions and their live brokers.
pub async fn topic_from_spec(store: &dyn Store, spec: &v1::TopicSpec) -> Result<Topic, Status> {
    let regions: BTreeMap<String, Region> = state::regions(store).await?;
    if regions.is_empty() {
        return Err(Status::failed_precondition(
            "there are no regions yet: create one first (meridian region create NAME)",
        ));
    }
    let names: Vec<String> = if spec.regions.is_empty() {
        regions.keys().cloned().collect()
    } else {
        spec.regions.clone()
    };
    let mut live = BTreeMap::new();
    for r in names.iter().filter(|r| regions.contains_key(*r)) {
        live.insert(r.clone(), state::region(store, r).await?.brokers.len());
    }
    let replication = Strategy::parse(&spec.replication).map_err(refused)?;
    let replication_factor = match spec.replication_factor {
        0 => DEFAULT_REPLICATION_FACTOR
            .min(live.values().copied().min().unwrap_or(1) as u32)
            .max(if replication == Strategy::MasterSlave {
                2
            } else {
                1
            }),
        n => n,
    };
    let topic = Topic {
        name: spec.name.clone(),
        id: 0,
        created_ms: crate::metadata::now_ms(),
        partitions: match spec.partitions {
            0 => DEFAULT_PARTITIONS,
            n => n,
        },
        replication,
        replication_factor,
        regions: names,
        home: spec.home.clone().filter(|h| !h.is_empty()),
        home_epoch: u64::from(spec.home.as_ref().is_some_and(|h| !h.is_empty())),
        home_closed: false,
        retention: if spec.retention.is_empty() {
            DEFAULT_RETENTION.into()
        } else {
            spec.retention.clone()
        },
        acks: Acks::parse(&spec.acks).map_err(refused)?,
        txn_default: spec.txn_default.clone(),
        timestamp_type: TimestampType::parse(&spec.timestamp_type).map_err(|e| {
            invalid(Invalid {
                field: "timestamp_type",
                value: format!("{:?}", spec.timestamp_type),
                why: e.to_string(),
            })
        })?,
        configs: spec
            .configs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        joined: Vec::new(),
        left: Vec::new(),
    };
    let known = regions.keys().cloned().collect();
    topic
        .validate(&known, |r| live.get(r).copied().unwrap_or(0))
        .map_err(invalid)?;
    Ok(topic)
}

/// The id the next topic gets, taken by compare-and-swap so two leaders (one stale) can
/// never hand out the same one.
async fn next_topic_id(store: &dyn Store) -> Result<u32, Status> {
    loop {
        let current = store.get(keys::TOPIC_IDS).await.map_err(StateError::from)?;
        let (next, version) = match &current {
            Some(kv) => (decode::<u32>(kv)?, Some(kv.version)),
            None => (1, None),
        };
        if store
            .compare_and_swap(keys::TOPIC_IDS, version, json(&(next + 1)), None)
            .await
            .map_err(StateError::from)?
            .is_ok()
        {
            return Ok(next);
        }
    }
}

/// Places `count` more partitions of `topic` (numbered from `first`) in every region it
/// spans, writing new groups and the assignments.
async fn place_partitions(
    store: &dyn Store,
    topic: &Topic,
    first: u32,
    count: u32,
) -> Result<(), Status> {
    for r in &topic.regions {
        place_in_region(store, topic, r, first, count).await?;
    }
    Ok(())
}

/// [`place_partitions`] in region `r` alone: on groups of the topic's own where it joined
/// the region later.
async fn place_in_region(
    store: &dyn Store,
    topic: &Topic,
    r: &str,
    first: u32,
    count: u32,
) -> Result<(), Status> {
    let region = state::region(store, r).await?;
    let groups: Vec<_> = region.groups.values().map(|(g, _)| g.clone()).collect();
    let placed = placement::place(
        count,
        topic.replication,
        topic.replication_factor,
        topic.joined.iter().any(|j| j == r).then_some(topic.id),
        &state::live(&region),
        &groups,
        &region.load(),
    )
    .ok_or_else(|| {
        invalid(Invalid {
            field: "replication_factor",
            value: topic.replication_factor.to_string(),
            why: format!(
                "region {r} has {} live broker(s): lower it or add brokers",
                region.brokers.len()
            ),
        })
    })?;
    for g in &placed.new_groups {
        let created = store
            .compare_and_swap(&keys::group(r, g.id), None, json(g), None)
            .await
            .map_err(StateError::from)?;
        if created.is_err() {
            return Err(Status::aborted(format!(
                "log group {} of region {r} was created concurrently: retry",
                g.id
            )));
        }
        tracing::info!(region = %r, group = g.id, replicas = ?g.replicas, strategy = g.strategy.as_str(), "log group created");
    }
    for (i, group) in placed.partitions.iter().enumerate() {
        store
            .put(
                &keys::assignment(r, &topic.name, first + i as u32),
                json(group),
                None,
            )
            .await
            .map_err(StateError::from)?;
    }
    Ok(())
}

/// Creates a topic; returns it with its id.
pub async fn create(store: &dyn Store, spec: &v1::TopicSpec) -> Result<Topic, Status> {
    let mut topic = topic_from_spec(store, spec).await?;
    if store
        .get(&keys::topic(&topic.name))
        .await
        .map_err(StateError::from)?
        .is_some()
    {
        return Err(Status::already_exists(format!(
            "topic {:?} already exists: describe it with meridian topic describe {0}, or pick another name",
            topic.name
        )));
    }
    topic.id = next_topic_id(store).await?;
    place_partitions(store, &topic, 0, topic.partitions).await?;
    let created = store
        .compare_and_swap(&keys::topic(&topic.name), None, json(&topic), None)
        .await
        .map_err(StateError::from)?;
    if created.is_err() {
        return Err(Status::already_exists(format!(
            "topic {:?} already exists",
            topic.name
        )));
    }
    tracing::info!(topic = %topic.name, id = topic.id, partitions = topic.partitions, regions = ?topic.regions, "topic created");
    Ok(topic)
}

pub(crate) async fn load(store: &dyn Store, name: &str) -> Result<(Topic, u64), Status> {
    match store
        .get(&keys::topic(name))
        .await
        .map_err(StateError::from)?
    {
        Some(kv) => Ok((decode(&kv)?, kv.version)),
        None => Err(Status::not_found(format!(
            "unknown topic {name:?}: list topics with meridian topic list"
        ))),
    }
}

/// Alters a topic: more partitions (placed like new ones), a new retention, configs set
/// or removed.
pub async fn alter(store: &dyn Store, request: &v1::AlterTopicRequest) -> Result<Topic, Status> {
    let (mut topic, version) = load(store, &request.name).await?;
    if let Some(retention) = &request.retention {
        crate::metadata::validate_retention(retention).map_err(invalid)?;
        topic.retention = retention.clone();
    }
    if let Some(acks) = &request.acks {
        topic.acks = Acks::parse(acks).map_err(refused)?;
    }
    if let Some(default) = &request.txn_default {
        topic.txn_default = match default.as_str() {
            "broker" => String::new(),
            "commit" | "rollback" => default.clone(),
            other => {
                return Err(invalid(Invalid {
                    field: "txn_default",
                    value: format!("{other:?}"),
                    why: "use commit, rollback or broker (the brokers' default)".into(),
                }));
            }
        };
    }
    if let Some(t) = &request.timestamp_type {
        topic.timestamp_type = TimestampType::parse(t).map_err(|e| {
            invalid(Invalid {
                field: "timestamp_type",
                value: format!("{t:?}"),
                why: e.to_string(),
            })
        })?;
    }
    for key in &request.delete_configs {
        topic.configs.remove(key);
    }
    for (key, value) in &request.set_configs {
        topic.configs.insert(key.clone(), value.clone());
    }
    if !request.set_configs.is_empty() {
        meridian_proto::topic_config::TopicConfig::parse(&topic.configs).map_err(refused)?;
    }
    // Everything is checked before anything is written.
    let regions = match &request.regions {
        Some(r) => Some(plan_regions(store, &topic, &r.names).await?),
        None => None,
    };
    if let Some(partitions) = request.partitions {
        if partitions < topic.partitions {
            return Err(invalid(Invalid {
                field: "partitions",
                value: partitions.to_string(),
                why: format!(
                    "topic {:?} has {} partitions; partitions can be added, never removed",
                    topic.name, topic.partitions
                ),
            }));
        }
        if partitions > crate::metadata::PARTITIONS_MAX {
            return Err(invalid(Invalid {
                field: "partitions",
                value: partitions.to_string(),
                why: format!("must be at most {}", crate::metadata::PARTITIONS_MAX),
            }));
        }
    }
    if let Some((next, added)) = regions {
        for r in &added {
            place_in_region(store, &next, r, 0, next.partitions).await?;
            tracing::info!(topic = %next.name, region = %r, partitions = next.partitions, "topic placed in a region it joins");
        }
        topic.regions = next.regions;
        topic.joined = next.joined;
        topic.left = next.left;
    }
    if let Some(partitions) = request.partitions
        && partitions > topic.partitions
    {
        place_partitions(
            store,
            &topic,
            topic.partitions,
            partitions - topic.partitions,
        )
        .await?;
        topic.partitions = partitions;
    }
    replace(store, &topic, version, "being altered").await?;
    tracing::info!(topic = %topic.name, partitions = topic.partitions, retention = %topic.retention, "topic altered");
    Ok(topic)
}

/// `topic` spanning `names`, checked (nothing is written): the topic as it will be, and
/// the regions added. Each region added is then placed on groups of the topic's own
/// ([`place_in_region`]) before the record is written; a region removed keeps its
/// assignments, so its view still names the groups it shipped the topic from (`left`).
async fn plan_regions(
    store: &dyn Store,
    topic: &Topic,
    names: &[String],
) -> Result<(Topic, Vec<String>), Status> {
    let refuse = |value: String, why: String| {
        Err(invalid(Invalid {
            field: "regions",
            value,
            why,
        }))
    };
    if names.is_empty() {
        return refuse(
            "[]".into(),
            format!(
                "a topic spans at least one region: to drop it everywhere, delete it (meridian topic delete {})",
                topic.name
            ),
        );
    }
    let added: Vec<String> = names
        .iter()
        .filter(|r| !topic.regions.contains(r))
        .cloned()
        .collect();
    let removed: Vec<String> = topic
        .regions
        .iter()
        .filter(|r| !names.contains(r))
        .cloned()
        .collect();
    if let Some(r) = added.iter().find(|r| topic.left.contains(r)) {
        return refuse(
            r.clone(),
            format!(
                "topic {:?} was removed from region {r}, and a topic never returns to a region it left (its id is retired there): create a new topic to span it",
                topic.name
            ),
        );
    }
    if let Some(home) = topic.home.as_ref().filter(|h| removed.contains(h)) {
        return refuse(
            home.clone(),
            format!(
                "region {home} is the home of strictly ordered topic {:?}: move the home first (meridian topic alter {0} --home REGION)",
                topic.name
            ),
        );
    }
    let mut next = topic.clone();
    next.regions = names.to_vec();
    next.joined.retain(|r| !removed.contains(r));
    next.joined.extend(added.iter().cloned());
    next.left.extend(removed.iter().cloned());
    let known: std::collections::BTreeSet<String> =
        state::regions(store).await?.keys().cloned().collect();
    let mut live = BTreeMap::new();
    for r in names.iter().filter(|r| known.contains(*r)) {
        live.insert(r.clone(), state::region(store, r).await?.brokers.len());
    }
    next.validate(&known, |r| live.get(r).copied().unwrap_or(0))
        .map_err(invalid)?;
    Ok((next, added))
}

/// One step of moving a strictly ordered topic's home to `new_home`: without `open`, closes
/// the old home (no region accepts writes; the caller then waits until every live broker
/// applied that); with `open`, names the new home and opens it. Each step moves the home
/// epoch.
pub async fn move_home(
    store: &dyn Store,
    name: &str,
    new_home: &str,
    open: bool,
) -> Result<Topic, Status> {
    let (mut topic, version) = load(store, name).await?;
    let Some(old) = topic.home.clone() else {
        return Err(invalid(Invalid {
            field: "home",
            value: new_home.to_owned(),
            why: format!(
                "topic {name:?} is not strictly ordered: every region it spans accepts writes"
            ),
        }));
    };
    if !topic.regions.iter().any(|r| r == new_home) {
        return Err(invalid(Invalid {
            field: "home",
            value: new_home.to_owned(),
            why: format!(
                "the home must be one of the topic's regions: {}",
                topic.regions.join(", ")
            ),
        }));
    }
    if open {
        topic.home = Some(new_home.to_owned());
        topic.home_closed = false;
    } else {
        topic.home_closed = true;
    }
    topic.home_epoch += 1;
    replace(store, &topic, version, "its home was being moved").await?;
    tracing::warn!(topic = %name, from = %old, to = %new_home, epoch = topic.home_epoch, open, "home of a strictly ordered topic moving");
    Ok(topic)
}

/// Writes `topic` over the record read at `version`; refused (retry) if it changed since.
async fn replace(
    store: &dyn Store,
    topic: &Topic,
    version: u64,
    doing: &str,
) -> Result<(), Status> {
    let written = store
        .compare_and_swap(&keys::topic(&topic.name), Some(version), json(topic), None)
        .await
        .map_err(StateError::from)?;
    if written.is_err() {
        return Err(Status::aborted(format!(
            "topic {:?} changed while {doing}: retry",
            topic.name
        )));
    }
    Ok(())
}

/// Deletes a topic: its id is retired first (so no replica ever reads its records as
/// another topic's), then the record goes (brokers drop it), then its assignments.
pub async fn delete(store: &dyn Store, name: &str) -> Result<(), Status> {
    let (topic, _) = load(store, name).await?;
    let e = StateError::from;
    store
        .put(&keys::retired(topic.id), json(&topic.name), None)
        .await
        .map_err(e)?;
    store.delete(&keys::topic(name)).await.map_err(e)?;
    for r in topic.regions.iter().chain(&topic.left) {
        for kv in store.list(&keys::assignments(r, name)).await.map_err(e)? {
            store.delete(&kv.key).await.map_err(e)?;
        }
    }
    tracing::info!(topic = name, id = topic.id, "topic deleted");
    Ok(())
}

/// A topic as the API shows it, with its placement in each region.
pub async fn describe_topic(
    store: &dyn Store,
    topic: &Topic,
) -> Result<v1::TopicDescription, Status> {
    let mut placements = Vec::new();
    for r in &topic.regions {
        let region = state::region(store, r).await?;
        let partition_groups = region.partition_groups(topic).unwrap_or_default();
        let mut used: Vec<u32> = partition_groups.clone();
        used.sort_unstable();
        used.dedup();
        placements.push(v1::TopicRegionPlacement {
            region: r.clone(),
            groups: used
                .iter()
                .filter_map(|g| region.groups.get(g))
                .map(|(g, _)| region.group_placement(g))
                .collect(),
            partition_groups,
        });
    }
    Ok(v1::TopicDescription {
        spec: Some(v1::TopicSpec {
            name: topic.name.clone(),
            partitions: topic.partitions,
            replication: topic.replication.as_str().into(),
            replication_factor: topic.replication_factor,
            regions: topic.regions.clone(),
            home: topic.home.clone(),
            retention: topic.retention.clone(),
            acks: topic.acks.as_str().into(),
            txn_default: topic.txn_default.clone(),
            timestamp_type: topic.timestamp_type.as_str().into(),
            configs: topic
                .configs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }),
        id: topic.id,
        created_ms: topic.created_ms,
        placements,
    })
}

/// Describes a topic by name.
pub async fn describe(store: &dyn Store, name: &str) -> Result<v1::TopicDescription, Status> {
    let (topic, _) = load(store, name).await?;
    describe_topic(store, &topic).await
}
