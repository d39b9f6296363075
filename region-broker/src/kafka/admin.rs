//! Kafka's admin APIs: CreateTopics (with topic configs, `topic_configs.rs`),
//! DeleteTopics, CreatePartitions, DescribeConfigs, AlterConfigs and
//! IncrementalAlterConfigs. A topic made over Kafka is the same topic over
//! gRPC: in a region without a control plane the broker changes its catalog (through log
//! group 0's raft); in a managed region the request goes to the control plane, as
//! `meridian topic create|alter|delete` does, for this region only.

use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::StrBytes;
use meridian_proto::kafka::kafka_protocol;
use meridian_proto::settings::TimestampType;
use meridian_proto::v1;

use super::{Kafka, code, error_code, str, topic_configs};
use crate::broker::BrokerError;
use crate::storage::compaction::Compaction;

/// Kafka error codes of admin requests.
mod admin_code {
    pub(super) const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub(super) const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub(super) const INVALID_PARTITIONS: i16 = 37;
    pub(super) const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub(super) const INVALID_CONFIG: i16 = 40;
    pub(super) const INVALID_REQUEST: i16 = 42;
}

/// The refusal of topic configs where no control plane keeps them.
fn no_control_plane() -> Refusal {
    (
        code::POLICY_VIOLATION,
        "this region has no control plane: its topics take the brokers' settings (retention is the journal-wide storage.retention, the message limit message_bytes_max) and carry the producer's time".into(),
    )
}

/// Config resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// A refusal: a Kafka error code and what went wrong.
type Refusal = (i16, String);

/// The Kafka error code of a broker's refusal of a topic change.
fn broker_refusal(e: BrokerError) -> Refusal {
    let code = match &e {
        BrokerError::TopicExists(_) => admin_code::TOPIC_ALREADY_EXISTS,
        BrokerError::UnknownTopic(_) => code::UNKNOWN_TOPIC_OR_PARTITION,
        BrokerError::Invalid(m) if m.contains("control plane") => code::POLICY_VIOLATION,
        BrokerError::Invalid(m) if m.contains("partitions") => admin_code::INVALID_PARTITIONS,
        BrokerError::Invalid(_) => admin_code::INVALID_TOPIC_EXCEPTION,
        other => error_code(other),
    };
    (code, e.to_string())
}

/// The Kafka error code of a control plane's refusal.
fn control_refusal(s: tonic::Status) -> Refusal {
    let m = s.message();
    let code = match s.code() {
        tonic::Code::AlreadyExists => admin_code::TOPIC_ALREADY_EXISTS,
        tonic::Code::NotFound => code::UNKNOWN_TOPIC_OR_PARTITION,
        tonic::Code::InvalidArgument if m.contains("invalid partitions") => {
            admin_code::INVALID_PARTITIONS
        }
        tonic::Code::InvalidArgument if m.contains("invalid replication_factor") => {
            admin_code::INVALID_REPLICATION_FACTOR
        }
        tonic::Code::InvalidArgument
            if m.contains("invalid retention") || m.contains("topic config") =>
        {
            admin_code::INVALID_CONFIG
        }
        tonic::Code::InvalidArgument => admin_code::INVALID_TOPIC_EXCEPTION,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => code::REQUEST_TIMED_OUT,
        _ => code::POLICY_VIOLATION,
    };
    (code, format!("the control plane refused: {m}"))
}

impl Kafka {
    /// The control plane of a managed region (comma-separated addresses).
    fn control(&self) -> Option<String> {
        let c = &self.broker.config().control;
        (!c.is_empty()).then(|| c.join(","))
    }

    /// Runs a control-plane write on its leader.
    async fn on_control<T, F, Fut>(&self, control: &str, call: F) -> Result<T, Refusal>
    where
        F: FnMut(v1::control_plane_client::ControlPlaneClient<meridian_proto::auth::Authed>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let client = meridian_region_client::control::connect_control(control)
            .await
            .map_err(|e| (code::REQUEST_TIMED_OUT, e.to_string()))?;
        meridian_region_client::control::on_control_leader(client, control, call)
            .await
            .map_err(control_refusal)
    }

    /// Creates one topic with the topic configs `configs` (refused unless a control plane
    /// keeps them); its partition count and replication factor.
    async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: Vec<(String, Option<String>)>,
        validate_only: bool,
    ) -> Result<(i32, i16), Refusal> {
        // Entries without a value ask for the default, which a new topic has.
        let configs: Vec<_> = configs.into_iter().filter(|(_, v)| v.is_some()).collect();
        let wanted = topic_configs::settings(configs)?;
        if partitions == 0 || partitions < -1 {
            return Err((
                admin_code::INVALID_PARTITIONS,
                format!(
                    "{partitions} partitions asked: a topic needs at least one (or -1 for the default)"
                ),
            ));
        }
        if replication_factor == 0 || replication_factor < -1 {
            return Err((
                admin_code::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {replication_factor} asked: at least 1 (or -1 for the default)"
                ),
            ));
        }
        let partitions = partitions.max(0) as u32;
        if let Some(control) = self.control() {
            let spec = v1::TopicSpec {
                name: name.to_owned(),
                partitions,
                replication_factor: replication_factor.max(0) as u32,
                regions: self.broker.config().kafka.topic_regions.clone(),
                retention: wanted.retention.clone().unwrap_or_default(),
                timestamp_type: wanted.timestamp_type.clone().unwrap_or_default(),
                configs: wanted
                    .set
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                ..Default::default()
            };
            if validate_only {
                // The control plane has no dry run; the name is checked here.
                meridian_proto::names::validate("topic", name)
                    .map_err(|e| (admin_code::INVALID_TOPIC_EXCEPTION, e.to_string()))?;
                return Ok((partitions as i32, replication_factor));
            }
            let created = self
                .on_control(&control, |mut c| {
                    let spec = spec.clone();
                    async move {
                        c.create_topic(v1::ControlCreateTopicRequest { spec: Some(spec) })
                            .await
                    }
                })
                .await?;
            let spec = created.spec.unwrap_or_default();
            return Ok((spec.partitions as i32, spec.replication_factor as i16));
        }
        if !wanted.is_empty() {
            return Err(no_control_plane());
        }
        // A region without a control plane replicates every log group over all its
        // brokers: that is the replication factor.
        let replicas = self.broker.config().replication.peers.len().max(1) as i16;
        if replication_factor > 0 && replication_factor != replicas {
            return Err((
                admin_code::INVALID_REPLICATION_FACTOR,
                format!(
                    "replication factor {replication_factor} asked; this region replicates every log group {replicas} times"
                ),
            ));
        }
        if validate_only {
            meridian_proto::names::validate("topic", name)
                .map_err(|e| (admin_code::INVALID_TOPIC_EXCEPTION, e.to_string()))?;
            return Ok((partitions as i32, replicas));
        }
        let topic = self
            .broker
            .create_topic(name, partitions)
            .await
            .map_err(broker_refusal)?;
        Ok((topic.groups.len() as i32, replicas))
    }

    /// CreateTopics.
    pub(super) async fn create_topics(
        &self,
        r: kafka_protocol::messages::CreateTopicsRequest,
        version: i16,
    ) -> kafka_protocol::messages::CreateTopicsResponse {
        use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
        let mut out = kafka_protocol::messages::CreateTopicsResponse::default();
        for t in r.topics {
            let mut res = CreatableTopicResult::default();
            res.name = t.name.clone();
            let result = if t.assignments.is_empty() {
                let configs = t
                    .configs
                    .iter()
                    .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                    .collect();
                self.create_topic(
                    &t.name.0,
                    t.num_partitions,
                    t.replication_factor,
                    configs,
                    r.validate_only,
                )
                .await
            } else {
                Err((
                    admin_code::INVALID_REQUEST,
                    "replica assignments are Meridian's to choose: give a partition count and a replication factor".into(),
                ))
            };
            match result {
                Ok((partitions, replicas)) => {
                    if version >= 5 {
                        res.num_partitions = partitions;
                        res.replication_factor = replicas;
                    }
                }
                Err((c, message)) => {
                    res.error_code = c;
                    res.error_message = Some(str(&message));
                    if version >= 5 {
                        res.num_partitions = -1;
                        res.replication_factor = -1;
                    }
                }
            }
            out.topics.push(res);
        }
        out
    }

    /// DeleteTopics: by name.
    pub(super) async fn delete_topics(
        &self,
        r: kafka_protocol::messages::DeleteTopicsRequest,
    ) -> kafka_protocol::messages::DeleteTopicsResponse {
        use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
        let mut out = kafka_protocol::messages::DeleteTopicsResponse::default();
        // v6 names topics in `topics`, earlier versions in `topic_names`.
        let names: Vec<TopicName> = r
            .topic_names
            .into_iter()
            .chain(r.topics.into_iter().filter_map(|t| t.name))
            .collect();
        for name in names {
            let mut res = DeletableTopicResult::default();
            res.name = Some(name.clone());
            let result = match self.control() {
                Some(control) => self
                    .on_control(&control, |mut c| {
                        let name = name.0.to_string();
                        async move { c.delete_topic(v1::TopicNameRequest { name }).await }
                    })
                    .await
                    .map(drop),
                None => self
                    .broker
                    .delete_topic(&name.0)
                    .await
                    .map_err(broker_refusal),
            };
            if let Err((c, message)) = result {
                res.error_code = c;
                res.error_message = Some(str(&message));
            }
            out.responses.push(res);
        }
        out
    }

    /// CreatePartitions: a topic grows to `count` partitions (never shrinks).
    pub(super) async fn create_partitions(
        &self,
        r: kafka_protocol::messages::CreatePartitionsRequest,
    ) -> kafka_protocol::messages::CreatePartitionsResponse {
        use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
        let mut out = kafka_protocol::messages::CreatePartitionsResponse::default();
        for t in r.topics {
            let mut res = CreatePartitionsTopicResult::default();
            res.name = t.name.clone();
            let name = t.name.0.to_string();
            let result = match (t.count, self.control()) {
                (n, _) if n < 1 => Err((
                    admin_code::INVALID_PARTITIONS,
                    format!("{n} partitions asked: a topic has at least one"),
                )),
                (_, _) if t.assignments.is_some() => Err((
                    admin_code::INVALID_REQUEST,
                    "replica assignments are Meridian's to choose: give only the new count".into(),
                )),
                (n, _) if r.validate_only => match self.broker.topic(&name) {
                    Ok(topic) if n as usize <= topic.groups.len() => Err((
                        admin_code::INVALID_PARTITIONS,
                        format!(
                            "topic {name:?} has {} partitions; asked for {n}: partitions can only be added",
                            topic.groups.len()
                        ),
                    )),
                    Ok(_) => Ok(()),
                    Err(e) => Err(broker_refusal(e)),
                },
                (n, Some(control)) => self
                    .on_control(&control, |mut c| {
                        let name = name.clone();
                        async move {
                            c.alter_topic(v1::AlterTopicRequest {
                                name,
                                partitions: Some(n as u32),
                                ..Default::default()
                            })
                            .await
                        }
                    })
                    .await
                    .map(drop),
                (n, None) => self
                    .broker
                    .add_partitions(&name, n as u32)
                    .await
                    .map(drop)
                    .map_err(broker_refusal),
            };
            if let Err((c, message)) = result {
                res.error_code = c;
                res.error_message = Some(str(&message));
            }
            out.results.push(res);
        }
        out
    }

    /// The retention of `topic` as Kafka's `retention.ms` (-1: kept forever): the control
    /// plane's setting in a managed region, else the broker's journal-wide one.
    async fn retention_ms(&self, topic: &str) -> Result<i64, Refusal> {
        let text = match self.control() {
            Some(control) => {
                let client = meridian_region_client::control::connect_control(&control)
                    .await
                    .map_err(|e| (code::REQUEST_TIMED_OUT, e.to_string()))?;
                let mut client = client;
                client
                    .describe_topic(v1::TopicNameRequest {
                        name: topic.to_owned(),
                    })
                    .await
                    .map_err(control_refusal)?
                    .into_inner()
                    .spec
                    .unwrap_or_default()
                    .retention
            }
            None => {
                self.broker.topic(topic).map_err(broker_refusal)?;
                self.broker.config().storage.retention.clone()
            }
        };
        Ok(meridian_proto::settings::retention_ms(&text).unwrap_or(-1))
    }

    /// The configs of one resource, as `(name, value, read only, source, type)`.
    async fn configs(
        &self,
        resource_type: i8,
        name: &str,
    ) -> Result<Vec<(&'static str, String, bool, i8, i8)>, Refusal> {
        // Sources: 1 dynamic topic config, 4 static broker config, 5 default.
        // Types: 1 boolean, 2 string, 3 int, 5 long.
        let c = self.broker.config();
        match resource_type {
            TOPIC => {
                let retention = self.retention_ms(name).await?;
                let topic = self.broker.topic(name).map_err(broker_refusal)?;
                let managed = !c.control.is_empty();
                Ok(vec![
                    (
                        "retention.ms",
                        retention.to_string(),
                        !managed,
                        if managed { 1 } else { 4 },
                        5,
                    ),
                    match topic.config.cleanup_policy {
                        Some(p) => ("cleanup.policy", p.as_str().into(), false, 1, 7),
                        None => ("cleanup.policy", "delete".into(), !managed, 5, 7),
                    },
                    match topic.config.retention_bytes {
                        Some(b) => ("retention.bytes", b.to_string(), false, 1, 5),
                        None => ("retention.bytes", "-1".into(), !managed, 5, 5),
                    },
                    match topic.config.delete_retention_ms {
                        Some(ms) => ("delete.retention.ms", ms.to_string(), false, 1, 5),
                        None => (
                            "delete.retention.ms",
                            Compaction::default().delete_retention_ms.to_string(),
                            !managed,
                            5,
                            5,
                        ),
                    },
                    match topic.config.max_message_bytes {
                        Some(n) => ("max.message.bytes", n.to_string(), false, 1, 3),
                        None => (
                            "max.message.bytes",
                            c.message_bytes_max.to_string(),
                            !managed,
                            4,
                            3,
                        ),
                    },
                    (
                        "segment.bytes",
                        c.storage.segment_bytes.to_string(),
                        true,
                        4,
                        3,
                    ),
                    match topic.config.compression {
                        Some(c) => ("compression.type", c.as_str().into(), false, 1, 2),
                        None => ("compression.type", "producer".into(), !managed, 5, 2),
                    },
                    (
                        "message.timestamp.type",
                        topic.timestamp_type.kafka_name().into(),
                        !managed,
                        if topic.timestamp_type == TimestampType::CreateTime {
                            5
                        } else {
                            1
                        },
                        2,
                    ),
                    match topic.config.min_insync_replicas {
                        Some(n) => ("min.insync.replicas", n.to_string(), false, 1, 3),
                        None => (
                            "min.insync.replicas",
                            // acks=all waits for the commit quorum of the topic's log
                            // group, or for min_insync_replicas when that asks for more.
                            (topic.groups.first().map_or(1, |&g| {
                                let replicas = self.broker.replicas_of(g).len();
                                crate::replication::in_sync::acks_all_needs(
                                    replicas,
                                    replicas / 2 + 1,
                                    self.broker.config().replication.min_insync_replicas,
                                )
                            }))
                            .to_string(),
                            !managed,
                            5,
                            3,
                        ),
                    },
                ])
            }
            BROKER => {
                if name != c.broker_id.to_string() && !name.is_empty() {
                    return Err((
                        admin_code::INVALID_REQUEST,
                        format!("this is broker {}; ask broker {name} itself", c.broker_id),
                    ));
                }
                let retention =
                    meridian_proto::settings::retention_ms(&c.storage.retention).unwrap_or(-1);
                Ok(vec![
                    ("broker.id", c.broker_id.to_string(), true, 4, 3),
                    ("log.retention.ms", retention.to_string(), true, 4, 5),
                    (
                        "message.max.bytes",
                        c.message_bytes_max.to_string(),
                        true,
                        4,
                        3,
                    ),
                    (
                        "num.partitions",
                        c.default_partitions.to_string(),
                        true,
                        4,
                        3,
                    ),
                    ("auto.create.topics.enable", "false".into(), true, 4, 1),
                    (
                        "log.segment.bytes",
                        c.storage.segment_bytes.to_string(),
                        true,
                        4,
                        3,
                    ),
                ])
            }
            other => Err((
                admin_code::INVALID_REQUEST,
                format!("resource type {other}: only topics (2) and brokers (4) have configs here"),
            )),
        }
    }

    /// DescribeConfigs: a topic's or this broker's settings.
    pub(super) async fn describe_configs(
        &self,
        r: kafka_protocol::messages::DescribeConfigsRequest,
        version: i16,
    ) -> kafka_protocol::messages::DescribeConfigsResponse {
        use kafka_protocol::messages::describe_configs_response::{
            DescribeConfigsResourceResult, DescribeConfigsResult,
        };
        let mut out = kafka_protocol::messages::DescribeConfigsResponse::default();
        for resource in r.resources {
            let mut res = DescribeConfigsResult::default();
            res.resource_type = resource.resource_type;
            res.resource_name = resource.resource_name.clone();
            match self
                .configs(resource.resource_type, &resource.resource_name)
                .await
            {
                Ok(configs) => {
                    let wanted = |n: &str| {
                        resource
                            .configuration_keys
                            .as_ref()
                            .is_none_or(|keys| keys.iter().any(|k| k.as_str() == n))
                    };
                    for (name, value, read_only, source, kind) in configs {
                        if !wanted(name) {
                            continue;
                        }
                        let mut c = DescribeConfigsResourceResult::default();
                        c.name = str(name);
                        c.value = Some(str(&value));
                        c.read_only = read_only;
                        c.config_source = source;
                        if version >= 3 {
                            c.config_type = kind;
                            c.documentation = None;
                        }
                        res.configs.push(c);
                    }
                }
                Err((c, message)) => {
                    res.error_code = c;
                    res.error_message = Some(str(&message));
                }
            }
            out.results.push(res);
        }
        out
    }

    /// Sets topic configs (`retention.ms`, `message.timestamp.type` and the topic's own,
    /// `meridian_proto::topic_config`), only where a control plane keeps per-topic
    /// settings (a region without one has one journal-wide retention and the broker's
    /// limits, and its topics carry the producer's time).
    async fn alter_topic_configs(
        &self,
        resource_type: i8,
        name: &StrBytes,
        configs: Vec<(String, Option<String>)>,
        validate_only: bool,
    ) -> Result<(), Refusal> {
        if resource_type != TOPIC {
            return Err((
                admin_code::INVALID_REQUEST,
                "only topic configs can be changed; broker settings come from its configuration file".into(),
            ));
        }
        let wanted = topic_configs::settings(configs)?;
        let Some(control) = self.control() else {
            return Err(no_control_plane());
        };
        self.broker.topic(name).map_err(broker_refusal)?;
        if validate_only || wanted.is_empty() {
            return Ok(());
        }
        self.on_control(&control, |mut c| {
            let request = v1::AlterTopicRequest {
                name: name.to_string(),
                retention: wanted.retention.clone(),
                timestamp_type: wanted.timestamp_type.clone(),
                set_configs: wanted
                    .set
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                delete_configs: wanted.delete.clone(),
                ..Default::default()
            };
            async move { c.alter_topic(request).await }
        })
        .await
        .map(drop)
    }

    /// AlterConfigs (the whole set: keys left out go back to their defaults).
    pub(super) async fn alter_configs(
        &self,
        r: kafka_protocol::messages::AlterConfigsRequest,
    ) -> kafka_protocol::messages::AlterConfigsResponse {
        use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
        let mut out = kafka_protocol::messages::AlterConfigsResponse::default();
        for resource in r.resources {
            let mut configs: Vec<(String, Option<String>)> = resource
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            let resettable = ["retention.ms", "message.timestamp.type"]
                .into_iter()
                .chain(meridian_proto::topic_config::KEYS.iter().map(|(k, _)| *k));
            for key in resettable {
                if !configs.iter().any(|(k, _)| k == key) {
                    configs.push((key.into(), None));
                }
            }
            let mut res = AlterConfigsResourceResponse::default();
            res.resource_type = resource.resource_type;
            res.resource_name = resource.resource_name.clone();
            if let Err((c, message)) = self
                .alter_topic_configs(
                    resource.resource_type,
                    &resource.resource_name,
                    configs,
                    r.validate_only,
                )
                .await
            {
                res.error_code = c;
                res.error_message = Some(str(&message));
            }
            out.responses.push(res);
        }
        out
    }

    /// IncrementalAlterConfigs: SET (0) and DELETE (1, back to the default) of single keys.
    pub(super) async fn incremental_alter_configs(
        &self,
        r: kafka_protocol::messages::IncrementalAlterConfigsRequest,
    ) -> kafka_protocol::messages::IncrementalAlterConfigsResponse {
        use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
        let mut out = kafka_protocol::messages::IncrementalAlterConfigsResponse::default();
        for resource in r.resources {
            let mut res = AlterConfigsResourceResponse::default();
            res.resource_type = resource.resource_type;
            res.resource_name = resource.resource_name.clone();
            let configs: Result<Vec<(String, Option<String>)>, Refusal> = resource
                .configs
                .iter()
                .map(|c| match c.config_operation {
                    0 => Ok((c.name.to_string(), c.value.as_ref().map(|v| v.to_string()))),
                    1 => Ok((c.name.to_string(), None)),
                    op => Err((
                        admin_code::INVALID_CONFIG,
                        format!("{}: operation {op} (APPEND/SUBTRACT) applies to list configs; none is alterable here", c.name),
                    )),
                })
                .collect();
            let result = match configs {
                Ok(configs) => {
                    self.alter_topic_configs(
                        resource.resource_type,
                        &resource.resource_name,
                        configs,
                        r.validate_only,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            if let Err((c, message)) = result {
                res.error_code = c;
                res.error_message = Some(str(&message));
            }
            out.responses.push(res);
        }
        out
    }
}
