//! The native gRPC API: a thin adapter from `meridian.v1.Broker` to [`Broker`].

use std::sync::Arc;
use std::time::Duration;

mod acls;
mod callers;
mod wire;

pub use wire::status;
use wire::*;

use meridian_proto::batch::Message;
use meridian_proto::producer::ProducerBatch;
use meridian_proto::v1::{self, broker_server};
use meridian_security::acl::{CLUSTER, Operation, ResourceType};
use tonic::{Request, Response, Status};

use crate::broker::consumer_groups::membership::Heartbeat;
use crate::broker::{Acks, Broker, BrokerError, LogGroupState, OffsetQuery, Strategy, Topic};
use crate::kafka::groups::Coordinator;
use crate::log_group::{LogGroupError, Transferred};
use crate::storage::{AppendError, SeqRefusal};

/// How long a leadership hand-over waits for the new leader when the request names no
/// timeout, and at most.
const TRANSFER_WAIT_DEFAULT: Duration = Duration::from_secs(5);
const TRANSFER_WAIT_MAX: Duration = Duration::from_secs(60);

/// The response header that names the leader's address on a `FailedPrecondition` (not
/// leader) error.
pub const LEADER_HEADER: &str = "x-meridian-leader";
/// The log group a "not the leader" answer is about (`meridian_region_client::LOG_GROUP_HEADER`).
pub const LOG_GROUP_HEADER: &str = "x-meridian-log-group";
/// The leader's broker id in a "not the leader" answer, when known.
pub const LEADER_ID_HEADER: &str = "x-meridian-leader-id";
/// The response header that carries the group's current epoch on an `Aborted` (stale
/// epoch) error.
pub const EPOCH_HEADER: &str = "x-meridian-epoch";

/// The response header that says why an idempotent producer's batch was refused, on an
/// `OutOfRange` error: `fenced` (a newer epoch of the producer wrote to the partition) or
/// `out-of-order` (a sequence gap, or a new epoch not starting at 0). Nothing was written.
pub const SEQUENCE_HEADER: &str = "x-meridian-sequence";

/// Serves the broker over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcService {
    broker: Arc<Broker>,
    /// The Kafka listener's consumer-group coordinator (ListConsumerGroups), when the
    /// broker serves Kafka.
    consumer_groups: Option<Arc<Coordinator>>,
    /// The MQTT listeners' sessions (ListMqttSessions), when the broker serves MQTT.
    mqtt: Option<Arc<crate::mqtt::Mqtt>>,
}

impl GrpcService {
    /// The tonic service, with message limits derived from the broker's batch limit;
    /// `consumer_groups` is the Kafka listener's coordinator and `mqtt` the MQTT
    /// listeners' state, when there are.
    pub fn server(
        broker: Arc<Broker>,
        consumer_groups: Option<Arc<Coordinator>>,
        mqtt: Option<Arc<crate::mqtt::Mqtt>>,
    ) -> broker_server::BrokerServer<GrpcService> {
        let limit = broker.config().batch_bytes_max + (1 << 20);
        broker_server::BrokerServer::new(GrpcService {
            broker,
            consumer_groups,
            mqtt,
        })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(usize::MAX)
    }
}

impl GrpcService {
    /// One log group's state on this broker.
    fn group_info(&self, group: u32) -> Result<Response<v1::LogGroupInfo>, Status> {
        let state = self
            .broker
            .log_groups_info()
            .into_iter()
            .find(|s| s.log_group == group)
            .ok_or_else(|| Status::not_found(format!("no log group {group}")))?;
        Ok(Response::new(log_group_info(state)))
    }
}

#[tonic::async_trait]
impl broker_server::Broker for GrpcService {
    async fn create_topic(
        &self,
        request: Request<v1::CreateTopicRequest>,
    ) -> Result<Response<v1::TopicInfo>, Status> {
        let name = &request.get_ref().name;
        self.user_may(&request, Operation::Create, ResourceType::Topic, name)
            .await?;
        let r = request.into_inner();
        let replication =
            Strategy::parse(&r.replication).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let topic = self
            .broker
            .create_topic_with(&r.name, r.partitions, replication)
            .await
            .map_err(status)?;
        Ok(Response::new(topic_info(&self.broker, &topic).await?))
    }

    async fn delete_topic(
        &self,
        request: Request<v1::DeleteTopicRequest>,
    ) -> Result<Response<v1::DeleteTopicResponse>, Status> {
        let name = &request.get_ref().name;
        self.user_may(&request, Operation::Delete, ResourceType::Topic, name)
            .await?;
        self.broker
            .delete_topic(&request.into_inner().name)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        _: Request<v1::ListTopicsRequest>,
    ) -> Result<Response<v1::ListTopicsResponse>, Status> {
        let topics = topics_info(&self.broker, &self.broker.topics()).await?;
        Ok(Response::new(v1::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<v1::DescribeTopicRequest>,
    ) -> Result<Response<v1::TopicInfo>, Status> {
        let topic = self
            .broker
            .topic(&request.into_inner().name)
            .map_err(status)?;
        Ok(Response::new(topic_info(&self.broker, &topic).await?))
    }

    async fn produce(
        &self,
        request: Request<v1::ProduceRequest>,
    ) -> Result<Response<v1::ProduceResponse>, Status> {
        let topic = &request.get_ref().topic;
        self.user_may(&request, Operation::Write, ResourceType::Topic, topic)
            .await?;
        let r = request.into_inner();
        // Without replication all three are the same durable write; in a region `leader`
        // answers once the leader holds the batch and `all` waits for every replica.
        let acks = match v1::Acks::try_from(r.acks)
            .map_err(|_| Status::invalid_argument(format!("unknown acks value {}", r.acks)))?
        {
            v1::Acks::Leader => Some(Acks::Leader),
            v1::Acks::All => Some(Acks::All),
            v1::Acks::Quorum => Some(Acks::Quorum),
            // The topic's default.
            v1::Acks::Unspecified => None,
        };
        let messages: Vec<Message> = r
            .messages
            .into_iter()
            .map(Message::try_from)
            .collect::<Result<_, _>>()
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (produced, duplicate) = match r.producer {
            Some(_) if r.deliver_at_ms != 0 => {
                return Err(Status::invalid_argument(
                    "a delayed batch (deliver_at_ms) is sent without a producer sequence: delayed sends are not idempotent",
                ));
            }
            None if r.deliver_at_ms != 0 => {
                let timer = self
                    .broker
                    .produce_delayed(
                        (&r.topic, r.partition),
                        messages,
                        acks,
                        r.epoch,
                        r.deliver_at_ms,
                    )
                    .await
                    .map_err(status)?;
                return Ok(Response::new(v1::ProduceResponse {
                    base_offset: timer.base_offset,
                    append_time_ms: timer.append_time_ms,
                    epoch: timer.epoch,
                    duplicate: false,
                    delayed: true,
                }));
            }
            // A transactional batch: idempotent too, inside the producer's transaction.
            Some(p) if r.transactional => {
                let producer = producer_batch(&p, messages.len())?;
                if r.transactional_id.is_empty() {
                    return Err(Status::invalid_argument(
                        "a transactional batch names its transactional_id (the transaction's id; an SDK from before it does not: upgrade it)",
                    ));
                }
                self.broker
                    .produce_transactional(
                        &r.transactional_id,
                        (&r.topic, r.partition),
                        messages,
                        acks,
                        producer,
                    )
                    .await
                    .map_err(status)?
            }
            // An idempotent producer's batch: stored once however often it is sent.
            Some(p) => {
                let producer = producer_batch(&p, messages.len())?;
                self.broker
                    .produce_idempotent_at(&r.topic, r.partition, messages, acks, producer, r.epoch)
                    .await
                    .map_err(status)?
            }
            None if r.transactional => {
                return Err(Status::invalid_argument(
                    "a transactional batch needs its producer (id, epoch, first sequence), as the transaction's begin answered",
                ));
            }
            None => (
                self.broker
                    .produce(&r.topic, r.partition, messages, acks, r.epoch)
                    .await
                    .map_err(status)?,
                false,
            ),
        };
        Ok(Response::new(v1::ProduceResponse {
            base_offset: produced.base_offset,
            append_time_ms: produced.append_time_ms,
            epoch: produced.epoch,
            duplicate,
            delayed: false,
        }))
    }

    async fn fetch(
        &self,
        request: Request<v1::FetchRequest>,
    ) -> Result<Response<v1::FetchResponse>, Status> {
        let topic = &request.get_ref().topic;
        self.user_may(&request, Operation::Read, ResourceType::Topic, topic)
            .await?;
        let r = request.into_inner();
        let max_bytes = if r.max_bytes == 0 {
            1 << 20
        } else {
            r.max_bytes as usize
        };
        let (messages, (earliest, latest)) = self
            .broker
            .fetch(
                &r.topic,
                r.partition,
                r.offset,
                max_bytes,
                Duration::from_millis(u64::from(r.max_wait_ms)),
            )
            .await
            .map_err(status)?;
        let messages = messages
            .into_iter()
            .map(|f| v1::FetchedMessage {
                offset: f.offset,
                key: f.message.key,
                value_null: f.message.value.is_none(),
                value: f.message.value.unwrap_or_default(),
                headers: f
                    .message
                    .headers
                    .into_iter()
                    .map(|(key, value)| v1::Header::from_pair(key, value))
                    .collect(),
                timestamp_ms: f.message.timestamp_ms,
                append_time_ms: f.append_time_ms,
                origin_region: f.origin_region,
                origin_position: f.origin_position,
            })
            .collect();
        Ok(Response::new(v1::FetchResponse {
            messages,
            earliest_offset: earliest,
            latest_offset: latest,
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<v1::ListOffsetsRequest>,
    ) -> Result<Response<v1::ListOffsetsResponse>, Status> {
        let r = request.into_inner();
        let query = match v1::OffsetSpec::try_from(r.spec) {
            Ok(v1::OffsetSpec::Earliest) => OffsetQuery::Earliest,
            Ok(v1::OffsetSpec::Latest) => OffsetQuery::Latest,
            Ok(v1::OffsetSpec::Time) => OffsetQuery::Time(r.timestamp_ms),
            _ => {
                return Err(Status::invalid_argument(
                    "spec must be EARLIEST, LATEST or TIME",
                ));
            }
        };
        let (offset, timestamp_ms) = self
            .broker
            .list_offset(&r.topic, r.partition, query)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ListOffsetsResponse {
            offset,
            timestamp_ms,
        }))
    }

    async fn commit_offset(
        &self,
        request: Request<v1::CommitOffsetRequest>,
    ) -> Result<Response<v1::CommitOffsetResponse>, Status> {
        let r = request.into_inner();
        let positions = from_positions(r.positions);
        if r.member_id.is_empty() {
            self.broker
                .commit_offset(
                    &r.group,
                    &r.topic,
                    r.partition,
                    r.offset,
                    positions,
                    &r.metadata,
                )
                .await
        } else {
            self.broker
                .commit_as_member(
                    &r.group,
                    (&r.member_id, r.member_epoch),
                    &r.topic,
                    r.partition,
                    r.offset,
                    positions,
                    &r.metadata,
                )
                .await
        }
        .map_err(status)?;
        Ok(Response::new(v1::CommitOffsetResponse {}))
    }

    async fn delete_offset(
        &self,
        request: Request<v1::DeleteOffsetRequest>,
    ) -> Result<Response<v1::DeleteOffsetResponse>, Status> {
        let r = request.into_inner();
        let deleted = self
            .broker
            .delete_offset(&r.group, &r.topic, r.partition)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::DeleteOffsetResponse { deleted }))
    }

    async fn fetch_offset(
        &self,
        request: Request<v1::FetchOffsetRequest>,
    ) -> Result<Response<v1::FetchOffsetResponse>, Status> {
        let r = request.into_inner();
        let committed = self
            .broker
            .committed_offset(&r.group, &r.topic, r.partition)
            .await
            .map_err(status)?;
        Ok(Response::new(v1::FetchOffsetResponse {
            offset: committed.offset,
            positions: to_positions(committed.positions),
            metadata: committed.metadata,
        }))
    }

    async fn merge_positions(
        &self,
        request: Request<v1::MergePositionsRequest>,
    ) -> Result<Response<v1::MergePositionsResponse>, Status> {
        self.mirror_only(&request, "merge mirrored consumer positions")?;
        let r = request.into_inner();
        let changed = self
            .broker
            .merge_positions(
                &r.group,
                r.topic_id,
                r.partition,
                from_positions(r.positions),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(v1::MergePositionsResponse { changed }))
    }

    async fn offset_for_positions(
        &self,
        request: Request<v1::OffsetForPositionsRequest>,
    ) -> Result<Response<v1::OffsetForPositionsResponse>, Status> {
        let r = request.into_inner();
        let offset = self
            .broker
            .offset_for_positions(&r.topic, r.partition, &from_positions(r.positions))
            .await
            .map_err(status)?;
        Ok(Response::new(v1::OffsetForPositionsResponse { offset }))
    }

    async fn transaction(
        &self,
        request: Request<v1::TransactionRequest>,
    ) -> Result<Response<v1::TransactionResponse>, Status> {
        use crate::broker::transactions::{TxnRequestError, coordinator::Answer, wire};
        let fresh = self.broker.next_producer_id();
        let request = wire::request_from_wire(request.into_inner(), fresh)
            .map_err(Status::invalid_argument)?;
        match self.broker.transaction(request).await {
            Ok(Answer::Producer { producer_id, epoch }) => {
                Ok(Response::new(v1::TransactionResponse {
                    producer_id,
                    producer_epoch: i32::from(epoch),
                }))
            }
            Ok(Answer::Done) => Ok(Response::new(v1::TransactionResponse::default())),
            Err(TxnRequestError::Refused(e)) => {
                Err(Status::new(wire::refusal_code(&e), e.to_string()))
            }
            Err(TxnRequestError::Broker(e)) => Err(status(e)),
        }
    }

    async fn list_transactions(
        &self,
        _: Request<v1::ListTransactionsRequest>,
    ) -> Result<Response<v1::ListTransactionsResponse>, Status> {
        use crate::broker::transactions::wire;
        let transactions = self.broker.list_transactions().await;
        Ok(Response::new(v1::ListTransactionsResponse {
            broker_id: self.broker.config().broker_id,
            transactions: transactions.iter().map(wire::transaction_info).collect(),
        }))
    }

    async fn list_mqtt_sessions(
        &self,
        _: Request<v1::ListMqttSessionsRequest>,
    ) -> Result<Response<v1::ListMqttSessionsResponse>, Status> {
        Ok(Response::new(match &self.mqtt {
            Some(m) => m.list_sessions(),
            None => v1::ListMqttSessionsResponse {
                broker_id: self.broker.config().broker_id,
                ..Default::default()
            },
        }))
    }

    type CheckBackStream = std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<v1::CheckBackQuery, Status>> + Send>,
    >;

    async fn check_back(
        &self,
        request: Request<tonic::Streaming<v1::CheckBackReply>>,
    ) -> Result<Response<Self::CheckBackStream>, Status> {
        use crate::broker::transactions::coordinator::Outcome;
        use v1::check_back_reply::Msg;
        let mut replies = request.into_inner();
        let group = match replies.message().await? {
            Some(v1::CheckBackReply {
                msg: Some(Msg::RegisterGroup(group)),
            }) => group,
            _ => {
                return Err(Status::invalid_argument(
                    "a check-back stream starts with register_group, naming its producer group",
                ));
            }
        };
        meridian_proto::names::validate("group", &group)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (id, queries) = self
            .broker
            .check_backs()
            .register(&group)
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        tracing::info!(producer_group = %group, "a check-back stream opened");
        // Answers come back on the request stream until the producer closes it.
        let broker = self.broker.clone();
        tokio::spawn(async move {
            while let Ok(Some(reply)) = replies.message().await {
                if let Some(Msg::Answer(a)) = reply.msg {
                    let outcome = match v1::CheckBackOutcome::try_from(a.outcome) {
                        Ok(v1::CheckBackOutcome::CheckBackCommit) => Some(Outcome::Commit),
                        Ok(v1::CheckBackOutcome::CheckBackRollback) => Some(Outcome::Abort),
                        _ => None,
                    };
                    broker.check_backs().answer(a.query, outcome);
                }
            }
            broker.check_backs().unregister(&group, id);
            tracing::info!(producer_group = %group, "a check-back stream closed");
        });
        let stream = futures_util::stream::unfold(queries, |mut queries| async move {
            queries.recv().await.map(|q| (Ok(q), queries))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn write_txn_marker(
        &self,
        request: Request<v1::WriteTxnMarkerRequest>,
    ) -> Result<Response<v1::WriteTxnMarkerResponse>, Status> {
        self.broker_only(&request, "write a transaction marker")?;
        let r = request.into_inner();
        let epoch = i16::try_from(r.producer_epoch)
            .map_err(|_| Status::invalid_argument("producer_epoch must fit 16 bits"))?;
        let offset = self
            .broker
            .write_marker(
                &r.topic,
                r.partition,
                (r.producer_id, epoch),
                meridian_proto::record::TxnMarker {
                    commit: r.commit,
                    coordinator_epoch: r.coordinator_epoch,
                },
            )
            .await
            .map_err(status)?;
        Ok(Response::new(v1::WriteTxnMarkerResponse { offset }))
    }

    async fn broker_report(
        &self,
        request: Request<v1::BrokerReportRequest>,
    ) -> Result<Response<v1::BrokerReportResponse>, Status> {
        use meridian_security::acl::{CLUSTER, Operation, ResourceType};
        self.user_may(
            &request,
            Operation::Describe,
            ResourceType::Cluster,
            CLUSTER,
        )
        .await?;
        let seen = self.broker.observation();
        let led: std::collections::HashSet<u32> = seen
            .groups
            .iter()
            .filter(|g| g.leads)
            .map(|g| g.group)
            .collect();
        let (disk_total_bytes, disk_free_bytes) = seen.disk.unwrap_or_default();
        Ok(Response::new(v1::BrokerReportResponse {
            broker_id: self.broker.config().broker_id,
            disk_total_bytes,
            disk_free_bytes,
            journal_bytes: seen.groups.iter().map(|g| g.journal_bytes).sum(),
            partitions: seen
                .partitions
                .into_iter()
                .filter(|p| led.contains(&p.group))
                .map(|p| v1::PartitionReport {
                    bytes: self
                        .broker
                        .topic(&p.topic)
                        .ok()
                        .zip(self.broker.log_group(p.group))
                        .and_then(|(t, g)| g.storage().partition_bytes((t.id, p.partition)).ok())
                        .unwrap_or(0),
                    topic: p.topic,
                    partition: p.partition,
                    earliest_offset: p.start,
                    latest_offset: p.end,
                    committed: p
                        .committed
                        .into_iter()
                        .map(|(group, offset)| v1::GroupCommitted { group, offset })
                        .collect(),
                })
                .collect(),
        }))
    }

    async fn list_consumer_groups(
        &self,
        _: Request<v1::ListConsumerGroupsRequest>,
    ) -> Result<Response<v1::ListConsumerGroupsResponse>, Status> {
        let mut groups = self
            .consumer_groups
            .as_deref()
            .map(consumer_groups)
            .unwrap_or_default();
        groups.extend(
            self.broker
                .native_groups()
                .await
                .into_iter()
                .map(native_group),
        );
        Ok(Response::new(v1::ListConsumerGroupsResponse {
            broker_id: self.broker.config().broker_id,
            groups,
        }))
    }

    async fn consumer_heartbeat(
        &self,
        request: Request<v1::ConsumerHeartbeatRequest>,
    ) -> Result<Response<v1::ConsumerHeartbeatResponse>, Status> {
        let r = request.into_inner();
        let joining = r.member_id.is_empty();
        let hb = Heartbeat {
            group: r.group,
            member_id: r.member_id,
            member_epoch: r.member_epoch,
            client_id: r.client_id,
            topics: (joining || !r.topics.is_empty()).then(|| r.topics.into_iter().collect()),
            owned: Some(v1::TopicPartitions::pairs(r.owned).collect()),
            assignor: r.assignor,
            session_ms: r.session_timeout_ms,
            instance_id: r.instance_id,
            instance_idle_ms: r.instance_idle_ms,
        };
        let answer = self.broker.consumer_heartbeat(hb).await.map_err(status)?;
        Ok(Response::new(v1::ConsumerHeartbeatResponse {
            member_id: answer.member_id,
            member_epoch: answer.member_epoch,
            assignment: v1::TopicPartitions::group(&answer.assignment),
            heartbeat_interval_ms: self.broker.heartbeat_interval_ms(),
        }))
    }

    async fn alter_user(
        &self,
        request: Request<v1::AlterUserRequest>,
    ) -> Result<Response<v1::AlterUserResponse>, Status> {
        self.user_may(&request, Operation::Alter, ResourceType::Cluster, CLUSTER)
            .await?;
        use meridian_security::scram::{Credential, Mechanism};
        let r = request.into_inner();
        let mechanism = Mechanism::from_name(&r.mechanism).ok_or_else(|| {
            Status::invalid_argument(format!(
                "unknown mechanism {:?}: SCRAM-SHA-512 or SCRAM-SHA-256",
                r.mechanism
            ))
        })?;
        let credential = r.credential.map(|c| Credential {
            salt: c.salt.to_vec(),
            iterations: c.iterations,
            stored_key: c.stored_key.to_vec(),
            server_key: c.server_key.to_vec(),
        });
        use crate::broker::credentials::SetError;
        self.broker
            .set_credential(&r.user, mechanism, credential)
            .await
            .map_err(|e| match e {
                SetError::Invalid(_) => Status::invalid_argument(e.to_string()),
                SetError::Full(_) => Status::resource_exhausted(e.to_string()),
                SetError::NotFound(..) => Status::not_found(e.to_string()),
                SetError::Unavailable(_) => Status::unavailable(e.to_string()),
            })?;
        Ok(Response::new(v1::AlterUserResponse {}))
    }

    async fn list_users(
        &self,
        request: Request<v1::ListUsersRequest>,
    ) -> Result<Response<v1::ListUsersResponse>, Status> {
        self.user_may(
            &request,
            Operation::Describe,
            ResourceType::Cluster,
            CLUSTER,
        )
        .await?;
        let credentials = self
            .broker
            .credentials()
            .await
            .map_err(Status::unavailable)?;
        let users = credentials
            .list(&[])
            .into_iter()
            .map(|u| v1::UserCredentials {
                user: u.user,
                mechanisms: u
                    .mechanisms
                    .into_iter()
                    .map(|(m, iterations)| v1::UserMechanism {
                        mechanism: m.name().to_owned(),
                        iterations,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(v1::ListUsersResponse { users }))
    }

    async fn alter_acl(
        &self,
        request: Request<v1::AlterAclRequest>,
    ) -> Result<Response<v1::AlterAclResponse>, Status> {
        self.alter_acl_call(request).await
    }

    async fn list_acls(
        &self,
        request: Request<v1::ListAclsRequest>,
    ) -> Result<Response<v1::ListAclsResponse>, Status> {
        self.list_acls_call(request).await
    }

    async fn log_groups(
        &self,
        _: Request<v1::LogGroupsRequest>,
    ) -> Result<Response<v1::LogGroupsResponse>, Status> {
        let config = self.broker.config();
        let mut brokers: Vec<v1::BrokerAddress> = self
            .broker
            .directory()
            .iter()
            .map(|p| v1::BrokerAddress {
                id: p.id,
                grpc: p.grpc.clone(),
            })
            .collect();
        if brokers.is_empty() {
            brokers.push(v1::BrokerAddress {
                id: config.broker_id,
                grpc: config.grpc_address(),
            });
        }
        Ok(Response::new(v1::LogGroupsResponse {
            broker_id: config.broker_id,
            groups: self
                .broker
                .log_groups_info()
                .into_iter()
                .map(log_group_info)
                .collect(),
            brokers,
        }))
    }

    async fn set_master(
        &self,
        request: Request<v1::SetMasterRequest>,
    ) -> Result<Response<v1::LogGroupInfo>, Status> {
        self.operator_only(&request).await?;
        let r = request.into_inner();
        self.broker
            .set_master(r.group, r.epoch, r.master)
            .await
            .map_err(status)?;
        self.group_info(r.group)
    }

    async fn change_replicas(
        &self,
        request: Request<v1::ChangeReplicasRequest>,
    ) -> Result<Response<v1::LogGroupInfo>, Status> {
        self.operator_only(&request).await?;
        let r = request.into_inner();
        self.broker
            .change_replicas(r.group, &r.add, &r.remove)
            .await
            .map_err(status)?;
        self.group_info(r.group)
    }

    async fn transfer_leadership(
        &self,
        request: Request<v1::TransferLeadershipRequest>,
    ) -> Result<Response<v1::TransferLeadershipResponse>, Status> {
        self.operator_only(&request).await?;
        let r = request.into_inner();
        let wait = match r.timeout_ms {
            0 => TRANSFER_WAIT_DEFAULT,
            ms => Duration::from_millis(u64::from(ms)).min(TRANSFER_WAIT_MAX),
        };
        let (leader, moved) = match self
            .broker
            .transfer_leadership(r.group, r.to, wait)
            .await
            .map_err(status)?
        {
            Transferred::AlreadyLeading(leader) => (leader, false),
            Transferred::Moved(leader) => (leader, true),
        };
        Ok(Response::new(v1::TransferLeadershipResponse {
            leader,
            moved,
        }))
    }

    async fn append_mirrored(
        &self,
        request: Request<v1::AppendMirroredRequest>,
    ) -> Result<Response<v1::AppendMirroredResponse>, Status> {
        self.mirror_only(&request, "append mirrored records into this region")?;
        let r = request.into_inner();
        let batches = r
            .batches
            .into_iter()
            .map(|b| crate::broker::MirroredIn {
                topic_id: b.topic_id,
                partition: b.partition,
                origin: meridian_proto::origin::Origin {
                    region: r.origin_region.clone(),
                    group: r.origin_group,
                    seq: b.seq,
                    through: b.through,
                },
                count: b.count,
                payload: b.payload,
                txn: b.txn.map(Into::into),
            })
            .collect();
        let appended = self.broker.append_mirrored(batches).await.map_err(status)?;
        Ok(Response::new(v1::AppendMirroredResponse {
            results: appended
                .into_iter()
                .map(|a| v1::MirroredResult {
                    duplicate: a.duplicate,
                    base_offset: a.base_offset,
                })
                .collect(),
        }))
    }

    async fn mirror_marks(
        &self,
        request: Request<v1::MirrorMarksRequest>,
    ) -> Result<Response<v1::MirrorMarksResponse>, Status> {
        self.mirror_only(&request, "read the mirror's marks")?;
        let r = request.into_inner();
        Ok(Response::new(v1::MirrorMarksResponse {
            marks: self
                .broker
                .mirror_marks(&r.origin_region, r.origin_group)
                .into_iter()
                .map(|(group, seq, through)| v1::MirrorMark {
                    group,
                    seq,
                    through,
                })
                .collect(),
        }))
    }

    async fn read_local(
        &self,
        request: Request<v1::ReadLocalRequest>,
    ) -> Result<Response<v1::ReadLocalResponse>, Status> {
        self.mirror_only(&request, "read a journal for the mirror")?;
        let r = request.into_inner();
        let found = self
            .broker
            .read_local(
                r.group,
                r.from_seq,
                r.skip_deleted,
                (r.max_bytes as usize).clamp(1, 16 << 20),
                Duration::from_millis(u64::from(r.max_wait_ms)),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(v1::ReadLocalResponse {
            batches: found
                .batches
                .into_iter()
                .map(v1::LocalBatch::from)
                .collect(),
            next_seq: found.next,
            commits: found
                .commits
                .into_iter()
                .map(|c| v1::LocalCommit {
                    seq: c.seq,
                    group: c.group,
                    topic_id: c.topic_id,
                    partition: c.partition,
                    positions: to_positions(c.positions),
                })
                .collect(),
        }))
    }
}
