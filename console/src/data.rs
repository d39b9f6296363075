//! What the console shows and changes, from the control plane (regions, brokers, log
//! groups, topics, failover) and the brokers of a region (offsets, messages, consumer
//! group commits). Pages and the JSON API both use these, so they always agree.
use meridian_client::{Client, OffsetSpec};
use meridian_proto::v1;
use serde::Serialize;

mod acls;
pub mod browse;
mod log_groups;
mod mqtt;

pub use acls::{AclRow, AclsView, acls, alter_acl};
pub use log_groups::{failover_group, move_leader, move_replica, topics_on_group};
pub use mqtt::{MqttRow, MqttStoredRow, MqttView, mqtt_sessions};

/// An error to show: what failed, in the words of whoever refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct Failed(pub String);

impl Failed {
    fn of(what: &str, e: impl std::fmt::Display) -> Failed {
        Failed(format!("{what}: {e}"))
    }
}

type Control = v1::control_plane_client::ControlPlaneClient<meridian_proto::auth::Authed>;

async fn control(addrs: &str) -> Result<Control, Failed> {
    meridian_client::connect_control(addrs)
        .await
        .map_err(|e| Failed::of("reaching the control plane", e))
}

/// Runs a control-plane write on its leader.
async fn on_leader<T, F, Fut>(addrs: &str, what: &str, call: F) -> Result<T, Failed>
where
    F: FnMut(Control) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let client = control(addrs).await?;
    meridian_client::on_control_leader(client, addrs, call)
        .await
        .map_err(|s| Failed::of(what, s.message()))
}

/// A broker as the console lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Broker {
    pub id: u32,
    pub grpc: String,
    pub kafka: String,
    pub live: bool,
    /// Log groups it is a replica of, and how many of them it leads.
    pub replicas: usize,
    pub leads: usize,
    /// Bytes of journal it holds over its groups (disk use), when it answered.
    pub journal_bytes: Option<u64>,
    /// When this console last saw it live (ms since the epoch; kept after it is gone).
    pub last_seen_ms: Option<i64>,
    /// Its disk, as it last reported it.
    pub disk: Option<crate::observer::Disk>,
}

/// A log group of a region.
#[derive(Debug, Clone, Serialize)]
pub struct LogGroup {
    pub id: u32,
    pub strategy: String,
    pub replicas: Vec<u32>,
    pub leader: Option<u32>,
    pub epoch: u64,
    pub partitions: u32,
    /// From its leader: the commit watermark and journal end (positions), and how many
    /// bytes of journal each follower is behind the end.
    pub watermark: Option<u64>,
    pub end: Option<u64>,
    pub follower_lag: Vec<(u32, u64)>,
    /// Live brokers of the region holding no replica: where a raft replica may move.
    pub move_targets: Vec<u32>,
}

/// A region with its brokers and log groups.
#[derive(Debug, Clone, Serialize)]
pub struct Region {
    pub name: String,
    pub up: bool,
    pub reason: String,
    pub by_operator: bool,
    pub brokers: Vec<Broker>,
    pub groups: Vec<LogGroup>,
    pub live_brokers: usize,
    pub leaderless_groups: usize,
}

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// [`regions`], with the brokers this console saw before and does not see live now kept
/// (gone, with when they were last seen) and each live broker's disk.
pub async fn regions_seen(app: &crate::Console) -> Result<Vec<Region>, Failed> {
    let mut regions = regions(&app.control).await?;
    app.observer.remember(&mut regions, now_ms());
    for r in &mut regions {
        r.live_brokers = r.brokers.iter().filter(|b| b.live).count();
    }
    Ok(regions)
}

/// Every region, with its brokers and log groups, as the control plane knows them (see
/// [`add_broker_reports`] for what the brokers report).
pub async fn regions(addrs: &str) -> Result<Vec<Region>, Failed> {
    let mut c = control(addrs).await?;
    let listed = c
        .list_regions(v1::ListRegionsRequest {})
        .await
        .map_err(|s| Failed::of("listing regions", s.message()))?
        .into_inner()
        .regions;
    let brokers = c
        .list_brokers(v1::ListBrokersRequest::default())
        .await
        .map_err(|s| Failed::of("listing brokers", s.message()))?
        .into_inner()
        .brokers;
    let mut out = Vec::new();
    for r in listed {
        let groups: Vec<LogGroup> = c
            .list_log_groups(v1::ListLogGroupsRequest {
                region: r.name.clone(),
            })
            .await
            .map_err(|s| Failed::of("listing log groups", s.message()))?
            .into_inner()
            .groups
            .into_iter()
            .map(|g| LogGroup {
                id: g.id,
                strategy: g.strategy,
                replicas: g.replicas,
                leader: g.leader,
                epoch: g.epoch,
                partitions: g.partitions,
                watermark: None,
                end: None,
                follower_lag: Vec::new(),
                move_targets: Vec::new(),
            })
            .collect();
        let mut groups = groups;
        for g in groups.iter_mut().filter(|g| g.strategy == "raft") {
            g.move_targets = brokers
                .iter()
                .filter(|b| b.region == r.name && b.live && !g.replicas.contains(&b.id))
                .map(|b| b.id)
                .collect();
        }
        let mut bs: Vec<Broker> = brokers
            .iter()
            .filter(|b| b.region == r.name)
            .map(|b| Broker {
                id: b.id,
                grpc: b.grpc.clone(),
                kafka: b.kafka.clone(),
                live: b.live,
                replicas: groups.iter().filter(|g| g.replicas.contains(&b.id)).count(),
                leads: groups.iter().filter(|g| g.leader == Some(b.id)).count(),
                journal_bytes: None,
                last_seen_ms: None,
                disk: None,
            })
            .collect();
        bs.sort_by_key(|b| b.id);
        out.push(Region {
            up: r.state == "up",
            live_brokers: bs.iter().filter(|b| b.live).count(),
            leaderless_groups: groups.iter().filter(|g| g.leader.is_none()).count(),
            name: r.name,
            reason: r.reason,
            by_operator: r.by_operator,
            brokers: bs,
            groups,
        });
    }
    Ok(out)
}

/// Adds what the brokers themselves say to `regions` (watermarks, follower progress, disk
/// use), asked of each live broker; a broker that does not answer leaves its cells empty.
/// Only the pages that show these pay for the round trips.
pub async fn add_broker_reports(regions: &mut [Region]) {
    for r in regions {
        let Ok(client) = r.client().await else {
            continue;
        };
        let Ok(reports) = client.region_log_groups().await else {
            continue;
        };
        for report in reports {
            let Ok(infos) = report.groups else { continue };
            if let Some(b) = r.brokers.iter_mut().find(|b| b.id == report.broker_id) {
                b.journal_bytes = Some(
                    infos
                        .iter()
                        .map(|i| i.end_position.saturating_sub(i.start_position))
                        .sum(),
                );
            }
            for info in infos.iter().filter(|i| i.leader == Some(report.broker_id)) {
                if let Some(g) = r.groups.iter_mut().find(|g| g.id == info.group) {
                    g.watermark = Some(info.watermark);
                    g.end = Some(info.end_position);
                    g.follower_lag = info
                        .replicas
                        .iter()
                        .map(|p| (p.broker_id, info.end_position.saturating_sub(p.position)))
                        .collect();
                }
            }
        }
    }
}

/// A topic as the list shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Topic {
    pub name: String,
    pub id: u32,
    pub partitions: u32,
    pub replication: String,
    pub replication_factor: u32,
    pub regions: Vec<String>,
    pub home: Option<String>,
    pub retention: String,
    pub acks: String,
    pub created_ms: i64,
    /// Its own configuration (Kafka's names), sorted; a key left out takes the default.
    pub configs: Vec<(String, String)>,
}

fn topic_row(d: &v1::TopicDescription) -> Topic {
    let spec = d.spec.clone().unwrap_or_default();
    Topic {
        name: spec.name,
        id: d.id,
        partitions: spec.partitions,
        replication: spec.replication,
        replication_factor: spec.replication_factor,
        regions: spec.regions,
        home: spec.home.filter(|h| !h.is_empty()),
        retention: spec.retention,
        acks: spec.acks,
        created_ms: d.created_ms,
        configs: spec
            .configs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect(),
    }
}

/// Every topic, those whose name contains `query` (case-insensitive) when one is given.
pub async fn topics(addrs: &str, query: &str) -> Result<Vec<Topic>, Failed> {
    let mut c = control(addrs).await?;
    let q = query.to_lowercase();
    let mut out: Vec<Topic> = c
        .list_topics(v1::ControlListTopicsRequest {})
        .await
        .map_err(|s| Failed::of("listing topics", s.message()))?
        .into_inner()
        .topics
        .iter()
        .map(topic_row)
        .filter(|t| t.name.to_lowercase().contains(&q))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// One partition of a topic in one region.
#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    pub partition: u32,
    pub log_group: u32,
    pub replicas: Vec<u32>,
    pub leader: Option<u32>,
    pub epoch: u64,
    pub earliest: Option<u64>,
    pub latest: Option<u64>,
}

/// A topic in one region.
#[derive(Debug, Clone, Serialize)]
pub struct Placement {
    pub region: String,
    pub partitions: Vec<Partition>,
    /// Why offsets are missing, when the region's brokers did not answer.
    pub offsets_error: Option<String>,
}

/// A topic with its placement in every region and each partition's offsets.
#[derive(Debug, Clone, Serialize)]
pub struct TopicDetail {
    pub topic: Topic,
    pub placements: Vec<Placement>,
}

/// Describes a topic.
pub async fn topic(addrs: &str, name: &str) -> Result<TopicDetail, Failed> {
    let mut c = control(addrs).await?;
    let d = c
        .describe_topic(v1::TopicNameRequest {
            name: name.to_owned(),
        })
        .await
        .map_err(|s| Failed::of(&format!("describing topic {name}"), s.message()))?
        .into_inner();
    let mut placements = Vec::new();
    for p in &d.placements {
        let mut partitions: Vec<Partition> = p
            .partition_groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let group = p.groups.iter().find(|lg| lg.id == *g);
                Partition {
                    partition: i as u32,
                    log_group: *g,
                    replicas: group.map(|lg| lg.replicas.clone()).unwrap_or_default(),
                    leader: group.and_then(|lg| lg.leader),
                    epoch: group.map_or(0, |lg| lg.epoch),
                    earliest: None,
                    latest: None,
                }
            })
            .collect();
        let offsets_error = match region_client(addrs, name, &p.region).await {
            Ok(client) => {
                let mut error = None;
                for part in &mut partitions {
                    match offsets(&client, name, part.partition).await {
                        Ok((e, l)) => (part.earliest, part.latest) = (Some(e), Some(l)),
                        Err(e) => error = Some(e.0),
                    }
                }
                error
            }
            Err(e) => Some(e.0),
        };
        placements.push(Placement {
            region: p.region.clone(),
            partitions,
            offsets_error,
        });
    }
    Ok(TopicDetail {
        topic: topic_row(&d),
        placements,
    })
}

async fn offsets(client: &Client, topic: &str, partition: u32) -> Result<(u64, u64), Failed> {
    let what = || format!("offsets of {topic}/{partition}");
    let (earliest, _) = client
        .list_offset(topic, partition, OffsetSpec::Earliest)
        .await
        .map_err(|e| Failed::of(&what(), e))?;
    let (latest, _) = client
        .list_offset(topic, partition, OffsetSpec::Latest)
        .await
        .map_err(|e| Failed::of(&what(), e))?;
    Ok((earliest, latest))
}

/// A client of the brokers of `region` serving `topic` (the region must be healthy).
pub(crate) async fn region_client(
    addrs: &str,
    topic: &str,
    region: &str,
) -> Result<Client, Failed> {
    let (client, route) = Client::connect_routed(addrs, topic, Some(region))
        .await
        .map_err(|e| Failed::of(&format!("reaching region {region}"), e))?;
    if route.region != region {
        return Err(Failed(format!(
            "region {region} is not healthy (the control plane routes to {} instead)",
            route.region
        )));
    }
    Ok(client)
}

/// What the create form asks.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct NewTopic {
    pub name: String,
    #[serde(default)]
    pub partitions: String,
    /// Comma-separated; empty: every region.
    #[serde(default)]
    pub regions: String,
    #[serde(default)]
    pub replication: String,
    #[serde(default)]
    pub replication_factor: String,
    /// "strict" for a strictly ordered topic.
    #[serde(default)]
    pub ordering: String,
    #[serde(default)]
    pub home: String,
    #[serde(default)]
    pub retention: String,
}

fn number(field: &str, text: &str) -> Result<u32, Failed> {
    if text.trim().is_empty() {
        return Ok(0);
    }
    text.trim()
        .parse()
        .map_err(|_| Failed(format!("{field}: {text:?} is not a whole number")))
}

/// Creates a topic; the control plane validates it (its message names the field).
pub async fn create_topic(addrs: &str, t: &NewTopic) -> Result<Topic, Failed> {
    let strict = t.ordering == "strict";
    if strict && t.home.trim().is_empty() {
        return Err(Failed(
            "home: a strictly ordered topic needs a home region (the one region that accepts its writes)".into(),
        ));
    }
    let spec = v1::TopicSpec {
        name: t.name.trim().to_owned(),
        partitions: number("partitions", &t.partitions)?,
        replication: t.replication.trim().to_owned(),
        replication_factor: number("replication factor", &t.replication_factor)?,
        regions: t
            .regions
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect(),
        home: strict.then(|| t.home.trim().to_owned()),
        retention: t.retention.trim().to_owned(),
        acks: String::new(),
        txn_default: String::new(),
        timestamp_type: String::new(),
        configs: Default::default(),
    };
    let created = on_leader(addrs, "creating the topic", |mut c| {
        let spec = spec.clone();
        async move {
            c.create_topic(v1::ControlCreateTopicRequest { spec: Some(spec) })
                .await
        }
    })
    .await?;
    Ok(topic_row(&created))
}

/// Grows a topic's partitions and/or changes its retention.
pub async fn alter_topic(
    addrs: &str,
    name: &str,
    partitions: Option<u32>,
    retention: Option<String>,
) -> Result<Topic, Failed> {
    let altered = on_leader(addrs, "altering the topic", |mut c| {
        let request = v1::AlterTopicRequest {
            name: name.to_owned(),
            partitions,
            retention: retention.clone(),
            ..Default::default()
        };
        async move { c.alter_topic(request).await }
    })
    .await?;
    Ok(topic_row(&altered))
}

/// Sets (`set`) or removes (`delete`) a topic config; the topic as it is now.
pub async fn alter_topic_config(
    addrs: &str,
    name: &str,
    set: Option<(String, String)>,
    delete: Option<String>,
) -> Result<Topic, Failed> {
    let altered = on_leader(addrs, "changing the topic's configuration", |mut c| {
        let request = v1::AlterTopicRequest {
            name: name.to_owned(),
            set_configs: set.clone().into_iter().collect(),
            delete_configs: delete.clone().into_iter().collect(),
            ..Default::default()
        };
        async move { c.alter_topic(request).await }
    })
    .await?;
    Ok(topic_row(&altered))
}

/// Moves a strictly ordered topic's home (the old home is fenced first).
pub async fn move_home(addrs: &str, name: &str, to: &str) -> Result<(), Failed> {
    on_leader(addrs, "moving the home", |mut c| {
        let request = v1::AlterTopicRequest {
            name: name.to_owned(),
            home: Some(to.to_owned()),
            ..Default::default()
        };
        async move { c.alter_topic(request).await }
    })
    .await
    .map(drop)
}

/// Deletes a topic.
pub async fn delete_topic(addrs: &str, name: &str) -> Result<(), Failed> {
    on_leader(addrs, "deleting the topic", |mut c| {
        let name = name.to_owned();
        async move { c.delete_topic(v1::TopicNameRequest { name }).await }
    })
    .await
    .map(drop)
}

/// Fails a region over (`fail`) or restores it.
pub async fn set_region(addrs: &str, name: &str, fail: bool) -> Result<(), Failed> {
    let what = if fail {
        "failing the region over"
    } else {
        "restoring the region"
    };
    on_leader(addrs, what, |mut c| {
        let name = name.to_owned();
        async move {
            let r = v1::RegionNameRequest { name };
            if fail {
                c.fail_region(r).await
            } else {
                c.restore_region(r).await
            }
        }
    })
    .await
    .map(drop)
}

/// What failing a region over costs, for the confirmation page.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverCost {
    pub region: String,
    /// Healthy regions clients move to.
    pub others: Vec<String>,
    /// Topics whose writes it takes (spanning it).
    pub topics: Vec<String>,
    /// Strictly ordered topics homed there: their writes stop until their home moves.
    pub homed: Vec<String>,
    /// Topics that live only there: unreadable until it is restored.
    pub only_here: Vec<String>,
}

/// What failing `region` over would cost.
pub async fn failover_cost(addrs: &str, region: &str) -> Result<FailoverCost, Failed> {
    let regions = regions(addrs).await?;
    let topics = topics(addrs, "").await?;
    let all: Vec<String> = regions.iter().map(|r| r.name.clone()).collect();
    let spans = |t: &Topic| t.regions.iter().any(|r| r == region) || t.regions.is_empty();
    Ok(FailoverCost {
        region: region.to_owned(),
        others: regions
            .iter()
            .filter(|r| r.up && r.name != region)
            .map(|r| r.name.clone())
            .collect(),
        topics: topics
            .iter()
            .filter(|t| spans(t))
            .map(|t| t.name.clone())
            .collect(),
        homed: topics
            .iter()
            .filter(|t| t.home.as_deref() == Some(region))
            .map(|t| t.name.clone())
            .collect(),
        only_here: topics
            .iter()
            .filter(|t| {
                let named = if t.regions.is_empty() {
                    &all
                } else {
                    &t.regions
                };
                named.len() == 1 && named[0] == region
            })
            .map(|t| t.name.clone())
            .collect(),
    })
}

/// Where the browser starts reading.
#[derive(Debug, Clone)]
pub enum From {
    Offset(u64),
    Time(i64),
    Beginning,
}

impl From {
    /// `beginning`, an offset, or an RFC 3339 time.
    pub fn parse(text: &str) -> Result<From, Failed> {
        let t = text.trim();
        if t.is_empty() || t == "beginning" {
            return Ok(From::Beginning);
        }
        if let Ok(o) = t.parse() {
            return Ok(From::Offset(o));
        }
        humantime::parse_rfc3339_weak(t)
            .map(|time| {
                From::Time(
                    time.duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as i64),
                )
            })
            .map_err(|_| {
                Failed(format!(
                    "from: {t:?} is not an offset, \"beginning\" or a time like 2026-12-01T10:00:00Z"
                ))
            })
    }
}

/// A connection to every live broker of `regions` that accepts one, with its region's name
/// and its id.
async fn live_brokers(
    regions: &[Region],
) -> Vec<(
    String,
    u32,
    v1::broker_client::BrokerClient<meridian_proto::auth::Authed>,
)> {
    let mut out = Vec::new();
    for region in regions {
        for b in region.brokers.iter().filter(|b| b.live) {
            if let Ok(channel) = connect_channel(&b.grpc).await {
                let c = v1::broker_client::BrokerClient::new(channel);
                out.push((region.name.clone(), b.id, c));
            }
        }
    }
    out
}

/// A transaction as the console lists it.
#[derive(Debug, Clone, Serialize)]
pub struct TxnRow {
    pub region: String,
    pub id: String,
    pub phase: String,
    /// Open past its timeout, not decided yet.
    pub in_doubt: bool,
    pub age: String,
    pub producer: String,
    pub producer_group: String,
    pub check_backs: u32,
    pub decided_by: String,
    pub participants: String,
}

/// Every region's transactions, asked of each live broker (a transaction lives on its
/// coordinator).
pub async fn transactions(regions: &[Region]) -> Vec<TxnRow> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut out = Vec::new();
    for (region, _, mut c) in live_brokers(regions).await {
        let Ok(answer) = c.list_transactions(v1::ListTransactionsRequest {}).await else {
            continue;
        };
        for t in answer.into_inner().transactions {
            let since = t.started_ms.unwrap_or(t.updated_ms);
            let open = t.phase == "ongoing";
            out.push(TxnRow {
                region: region.clone(),
                in_doubt: open && now >= since.saturating_add(t.timeout_ms),
                age: format!("{:.1} s", (now - since).max(0) as f64 / 1000.0),
                producer: format!("{} ({})", t.producer_id, t.producer_epoch),
                producer_group: t.producer_group.clone().unwrap_or_else(|| "–".into()),
                check_backs: t.check_backs,
                decided_by: if t.decided_by.is_empty() {
                    "–".into()
                } else {
                    t.decided_by.clone()
                },
                participants: t
                    .participants
                    .iter()
                    .map(|p| format!("{}/{}", p.topic, p.partition))
                    .collect::<Vec<_>>()
                    .join(", "),
                id: t.id,
                phase: t.phase,
            });
        }
    }
    out.sort_by(|a, b| (&a.region, &a.id).cmp(&(&b.region, &b.id)));
    out
}

/// A Kafka consumer group as its coordinator knows it.
#[derive(Debug, Clone, Serialize)]
pub struct KafkaGroup {
    pub region: String,
    pub name: String,
    pub state: String,
    pub protocol: String,
    /// The broker coordinating it.
    pub coordinator: u32,
    /// Member id, client id, and its assignment as `topic: partitions` lines.
    pub members: Vec<(String, String, Vec<String>)>,
    /// The topics its members are assigned.
    pub topics: Vec<String>,
}

/// The Kafka consumer groups of every region, asked of each live broker (a group lives on
/// its coordinator).
pub async fn kafka_groups(regions: &[Region]) -> Vec<KafkaGroup> {
    let mut out = Vec::new();
    for (region, broker, mut c) in live_brokers(regions).await {
        let Ok(answer) = c
            .list_consumer_groups(v1::ListConsumerGroupsRequest {})
            .await
        else {
            continue;
        };
        for g in answer.into_inner().groups {
            let mut topics: Vec<String> = g
                .members
                .iter()
                .flat_map(|m| m.assignment.iter().map(|a| a.topic.clone()))
                .collect();
            topics.sort();
            topics.dedup();
            out.push(KafkaGroup {
                region: region.clone(),
                name: g.name,
                state: g.state,
                protocol: g.protocol,
                coordinator: broker,
                members: g
                    .members
                    .into_iter()
                    .map(|m| {
                        let assigned = m
                            .assignment
                            .iter()
                            .map(|a| {
                                let parts: Vec<String> =
                                    a.partitions.iter().map(u32::to_string).collect();
                                format!("{}: {}", a.topic, parts.join(", "))
                            })
                            .collect();
                        (m.member_id, m.client_id, assigned)
                    })
                    .collect(),
                topics,
            });
        }
    }
    out
}

/// A consumer group's place on one partition.
#[derive(Debug, Clone, Serialize)]
pub struct GroupPartition {
    pub partition: u32,
    pub committed: Option<u64>,
    pub earliest: u64,
    pub latest: u64,
    /// Messages not yet consumed (latest - committed; all retained ones without a commit).
    pub lag: u64,
    /// Where a reset would move it (the preview), when one was asked.
    pub reset_to: Option<u64>,
}

impl std::convert::From<meridian_client::GroupPartition> for GroupPartition {
    fn from(p: meridian_client::GroupPartition) -> GroupPartition {
        GroupPartition {
            partition: p.partition,
            committed: p.committed,
            earliest: p.earliest,
            latest: p.latest,
            lag: p.lag,
            reset_to: p.reset_to,
        }
    }
}

/// Where a reset moves a group (the SDK's).
pub use meridian_client::ResetTo;

/// `beginning`, `end`, an offset, or an RFC 3339 time: where a reset moves a group.
pub fn parse_reset(text: &str) -> Result<ResetTo, Failed> {
    match text.trim() {
        "beginning" => Ok(ResetTo::Beginning),
        "end" => Ok(ResetTo::End),
        t => match From::parse(t)? {
            From::Offset(o) => Ok(ResetTo::Offset(o)),
            From::Time(ms) => Ok(ResetTo::Time(ms)),
            From::Beginning => Err(Failed("to: say beginning, end, an offset or a time".into())),
        },
    }
}

/// A group's committed offsets and lag on every partition of `topic` in `region`; with
/// `reset`, where a reset would move each partition (nothing is changed).
pub async fn group(
    addrs: &str,
    group: &str,
    topic: &str,
    region: &str,
    reset: Option<&ResetTo>,
) -> Result<Vec<GroupPartition>, Failed> {
    let client = region_client(addrs, topic, region).await?;
    let plan = client
        .group_partitions(group, topic, reset.copied())
        .await
        .map_err(|e| Failed::of(&format!("the offsets of group {group} on {topic}"), e))?;
    Ok(plan.into_iter().map(GroupPartition::from).collect())
}

/// Resets a group on every partition of `topic` in `region`; the plan it applied.
pub async fn reset_group(
    addrs: &str,
    group_name: &str,
    topic: &str,
    region: &str,
    to: &ResetTo,
) -> Result<Vec<GroupPartition>, Failed> {
    let client = region_client(addrs, topic, region).await?;
    let plan = client
        .reset_group(group_name, topic, *to)
        .await
        .map_err(|e| Failed::of(&format!("resetting group {group_name} on {topic}"), e))?;
    Ok(plan.into_iter().map(GroupPartition::from).collect())
}

/// A channel to the gRPC API at `addr`, when it parses and connects.
async fn connect_channel(addr: &str) -> Result<meridian_proto::auth::Authed, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?;
    meridian_proto::auth::connect(endpoint)
        .await
        .map_err(|e| e.to_string())
}

/// A client of `region`'s live brokers.
async fn brokers_of(app: &crate::Console, region: &str) -> Result<Client, Failed> {
    let regions = regions(&app.control).await?;
    let Some(r) = regions.iter().find(|r| r.name == region) else {
        return Err(Failed(format!("there is no region {region}")));
    };
    r.client().await
}

impl Region {
    /// A client of the region's live brokers.
    pub async fn client(&self) -> Result<Client, Failed> {
        let live: Vec<&str> = self
            .brokers
            .iter()
            .filter(|b| b.live)
            .map(|b| b.grpc.as_str())
            .collect();
        if live.is_empty() {
            return Err(Failed(format!(
                "region {} has no live broker: start one (see the brokers page)",
                self.name
            )));
        }
        Client::connect(&live.join(","))
            .await
            .map_err(|e| Failed::of(&format!("reaching region {}'s brokers", self.name), e))
    }
}

/// Produces one message to `topic` in `region` (to `partition`, else by its key); where it
/// was written.
pub async fn produce_one(
    addrs: &str,
    topic: &str,
    region: &str,
    partition: Option<u32>,
    key: Option<&str>,
    value: &str,
    headers: &[(String, String)],
) -> Result<(u32, u64), Failed> {
    let client = region_client(addrs, topic, region).await?;
    let mut record = meridian_client::Record::new(topic, value.to_owned());
    if let Some(k) = key {
        record = record.key(k.to_owned());
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    for (k, v) in headers {
        record = record.header(k.clone(), v.clone());
    }
    let producer = client.producer(meridian_client::ProducerConfig::default());
    let sent = producer.send(record).await.await;
    let meta = sent.map_err(|e| Failed::of(&format!("producing to {topic} in {region}"), e))?;
    Ok((meta.partition, meta.offset))
}
