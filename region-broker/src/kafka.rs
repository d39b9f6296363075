//! The Kafka wire protocol, so existing Kafka clients and tools talk to a broker unchanged.
//! Request and response codecs and record batches come from the `kafka-protocol` crate;
//! this module maps them onto the broker: a Kafka topic is a Meridian topic, a partition's
//! leader is its log group's leader, offsets are the same offsets.
//!
//! Served: ApiVersions, Metadata (the region's brokers; raft voters as replicas and ISR),
//! Produce (record batch v2; none, gzip, snappy, lz4 and zstd; acks 0, 1 and -1;
//! idempotent producers: `producers.rs`), Fetch (long poll, max bytes), ListOffsets
//! (earliest, latest, by time), consumer groups (FindCoordinator, JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, DescribeGroups, ListGroups: `groups.rs`; each group is
//! coordinated by the leader of the log group its name hashes to) and their offsets
//! (OffsetCommit, OffsetFetch: the broker's offset commits, forwarded to the partition's
//! leader, so a group's position is the same over gRPC and Kafka), InitProducerId,
//! DescribeCluster, and the admin APIs (`admin.rs`: CreateTopics, DeleteTopics,
//! CreatePartitions, DescribeConfigs, AlterConfigs, IncrementalAlterConfigs — through the
//! control plane in a managed region), SASL (SaslHandshake, SaslAuthenticate: `sasl.rs`)
//! and the users' SCRAM credentials (`users.rs`), over TLS when configured. Other APIs
//! (ACLs, quotas) are not
//! advertised; a request for one closes the connection, as Kafka does for an API it does
//! not know.
//!
//! Consumer-group and group-offset requests are in `consumers.rs`. The consumer-group
//! [`Coordinator`](groups::Coordinator) is made by whoever starts the listener and handed
//! to [`serve`] (the gRPC service lists its groups too).
//!
//! Each connection pipelines requests: each starts in arrival order and answers go back in
//! order as they complete; a frame is refused before it is buffered when its length is over
//! [`FRAME_MAX`]: per-connection memory is bounded, and all connections together hold at
//! most `kafka.request_memory_max` bytes of frames. Connections are admitted up to
//! `kafka.connections_max` in all and `kafka.connections_per_address_max` per client
//! address (`meridian_daemon::listener::Admission`, shared with the gRPC listeners); an
//! idle connection, or a request whose bytes stop arriving, is closed after
//! `kafka.idle_timeout_ms`. Decoding (`meridian_proto::kafka`,
//! fuzzed) turns bytes no decoder expected into an error that closes the connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, RequestKind,
    ResponseHeader, ResponseKind, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use meridian_proto::kafka::kafka_protocol;
use meridian_proto::kafka::{RequestError, SUPPORTED, decode_records_within, decode_request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use meridian_daemon::listener::{Admission, Refusals};

use crate::broker::{Acks, Broker, BrokerError, OffsetQuery};
use crate::log_group::LogGroupError;

mod acls;
mod admin;
mod authorize;
mod consumers;
mod elections;
mod fetch;
mod logs;

use meridian_region_client::{RegionClient, RegionError};

use consumers::{
    describe_groups, find_coordinator, join_group, leave_group, list_groups, offset_commit,
    offset_fetch, sync_group,
};

pub mod groups;
mod producers;
mod quotas;
mod sasl;
mod topic_configs;
mod transactions;
mod users;

/// What every Kafka connection of a broker shares.
pub(crate) struct Kafka {
    broker: Arc<Broker>,
    consumer_groups: Arc<groups::Coordinator>,
    /// `meridian_kafka_requests_total` of each served API, registered once (not a label
    /// string made per request).
    requests: std::collections::HashMap<i16, metrics::Counter>,
    /// Bytes of request frames every connection together may hold
    /// (`kafka.request_memory_max`).
    request_memory: Arc<tokio::sync::Semaphore>,
    /// How long a connection may be idle, or a request half-sent.
    idle_timeout: Duration,
    /// The SASL mechanisms a client must authenticate with (none: it need not).
    offered: Vec<sasl::Offered>,
    /// The listener's TLS identity, when it speaks TLS.
    tls: Option<meridian_security::tls::ServerTls>,
}

impl Kafka {
    /// The broker's client of its region, for partitions another broker leads.
    async fn region(&self) -> Result<&RegionClient, RegionError> {
        self.broker.region_client().await
    }
}

/// The largest request accepted ([`crate::config::KAFKA_FRAME_MAX`]).
pub const FRAME_MAX: usize = crate::config::KAFKA_FRAME_MAX;

/// Kafka error codes used here (`org.apache.kafka.common.protocol.Errors`).
mod code {
    pub(super) const NONE: i16 = 0;
    pub(super) const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub(super) const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub(super) const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub(super) const LEADER_NOT_AVAILABLE: i16 = 5;
    pub(super) const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub(super) const REQUEST_TIMED_OUT: i16 = 7;
    pub(super) const MESSAGE_TOO_LARGE: i16 = 10;
    pub(super) const NOT_ENOUGH_REPLICAS: i16 = 19;
    pub(super) const NOT_ENOUGH_REPLICAS_AFTER_APPEND: i16 = 20;
    pub(super) const INVALID_TIMESTAMP: i16 = 32;
    pub(super) const UNSUPPORTED_VERSION: i16 = 35;
    pub(super) const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub(super) const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub(super) const NOT_COORDINATOR: i16 = 16;
    pub(super) const POLICY_VIOLATION: i16 = 44;
    pub(super) const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub(super) const INVALID_TXN_STATE: i16 = 48;
    pub(super) const INVALID_PRODUCER_ID_MAPPING: i16 = 49;
    pub(super) const INVALID_TRANSACTION_TIMEOUT: i16 = 50;
    pub(super) const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub(super) const OPERATION_NOT_ATTEMPTED: i16 = 55;
    pub(super) const PRODUCER_FENCED: i16 = 90;
    pub(super) const KAFKA_STORAGE_ERROR: i16 = 56;
    pub(super) const INVALID_REQUEST: i16 = 42;
    pub(super) const INVALID_RECORD: i16 = 87;
    pub(super) const OFFSET_METADATA_TOO_LARGE: i16 = 12;
}

/// A partition index from a Kafka request. A negative one names no partition: it is refused
/// with UNKNOWN_TOPIC_OR_PARTITION (as Kafka does), never read as another partition.
fn partition_index(index: i32) -> Result<u32, i16> {
    u32::try_from(index).map_err(|_| code::UNKNOWN_TOPIC_OR_PARTITION)
}

/// The Kafka error code for a broker error, so clients retry as they do against Kafka.
fn error_code(e: &BrokerError) -> i16 {
    match e {
        BrokerError::UnknownTopic(_) | BrokerError::UnknownPartition { .. } => {
            code::UNKNOWN_TOPIC_OR_PARTITION
        }
        BrokerError::NotLeader {
            leader_id: None, ..
        } => code::LEADER_NOT_AVAILABLE,
        BrokerError::NotLeader { .. } | BrokerError::StaleEpoch { .. } => {
            code::NOT_LEADER_OR_FOLLOWER
        }
        BrokerError::TooLarge { .. } => code::MESSAGE_TOO_LARGE,
        BrokerError::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
        BrokerError::Invalid(_) => meridian_proto::kafka::CORRUPT_MESSAGE,
        BrokerError::NotHome(_) => code::POLICY_VIOLATION,
        BrokerError::InvalidTimestamp(_) => code::INVALID_TIMESTAMP,
        BrokerError::InvalidRecord(_) => code::INVALID_RECORD,
        BrokerError::MetadataTooLarge(_) => code::OFFSET_METADATA_TOO_LARGE,
        BrokerError::NotInTransaction { fenced: true, .. } => code::INVALID_PRODUCER_EPOCH,
        BrokerError::NotInTransaction { .. } => code::INVALID_TXN_STATE,
        BrokerError::Append(crate::storage::AppendError::DiskFull { .. }) => {
            code::KAFKA_STORAGE_ERROR
        }
        BrokerError::Replication(_) => code::REQUEST_TIMED_OUT,
        BrokerError::NotEnoughReplicas(LogGroupError::NotEnoughReplicas { .. }) => {
            code::NOT_ENOUGH_REPLICAS
        }
        BrokerError::NotEnoughReplicas(_) => code::NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        BrokerError::Sequence(LogGroupError::Sequence { refusal, .. }) => {
            producers::refusal_code(refusal)
        }
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

/// The Kafka error code for a failed call to another broker of the region.
fn client_error_code(e: &RegionError) -> i16 {
    match e {
        RegionError::Broker { code: c, .. } if *c == tonic::Code::NotFound => {
            code::UNKNOWN_TOPIC_OR_PARTITION
        }
        _ => code::REQUEST_TIMED_OUT,
    }
}

/// The listener's TLS identity (`kafka.tls_cert`, `kafka.tls_key`, and the client
/// certificates it asks for), when configured; the error names the file and what is
/// wrong, so the broker refuses to start with it.
pub fn load_tls(
    config: &crate::config::KafkaLimits,
) -> anyhow::Result<Option<meridian_security::tls::ServerTls>> {
    meridian_security::tls::listener_tls(
        "kafka.",
        config.tls_cert.as_deref(),
        config.tls_key.as_deref(),
        config.tls_client_auth,
        config.tls_client_ca.as_deref(),
    )
}

/// Accepts Kafka connections on `listener` until the task is dropped, coordinating
/// consumer groups with `consumer_groups` (shared with the gRPC service, which lists them);
/// over TLS when `tls` is given ([`load_tls`]).
pub async fn serve(
    broker: Arc<Broker>,
    consumer_groups: Arc<groups::Coordinator>,
    listener: TcpListener,
    tls: Option<meridian_security::tls::ServerTls>,
) {
    consumer_groups.start();
    let limits = broker.config().kafka.clone();
    let offered: Vec<sasl::Offered> = limits
        .sasl_mechanisms
        .iter()
        .filter_map(|m| sasl::Offered::parse(m))
        .collect();
    if !offered.is_empty() {
        broker.start_credentials();
    }
    if broker.config().auth.acls_enabled {
        broker.start_acls();
    }
    broker.start_quotas();
    let admission = Admission::new(
        "Kafka",
        "kafka.",
        limits.connections_max,
        limits.connections_per_address_max,
    );
    let kafka = Arc::new(Kafka {
        request_memory: Arc::new(tokio::sync::Semaphore::new(limits.request_memory_max)),
        idle_timeout: Duration::from_millis(limits.idle_timeout_ms),
        requests: SUPPORTED
            .iter()
            .map(|&(key, ..)| {
                let api = format!("{key:?}");
                (
                    key as i16,
                    metrics::counter!("meridian_kafka_requests_total", "api" => api),
                )
            })
            .collect(),
        broker,
        consumer_groups,
        offered,
        tls,
    });
    let mut refusals = Refusals::new("Kafka");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a Kafka connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ticket = match admission.admit(peer.ip()) {
            Ok(t) => t,
            Err(refused) => {
                // Closed at once: Kafka has no refusal frame before a request.
                metrics::counter!("meridian_kafka_connections_refused_total").increment(1);
                refusals.note(&peer, &refused);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let kafka = kafka.clone();
        tokio::spawn(async move {
            metrics::gauge!("meridian_kafka_connections").increment(1.0);
            let closed = match &kafka.tls {
                None => connection(&kafka, stream, peer, None).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                    match tokio::time::timeout(kafka.idle_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let name = meridian_security::tls::certificate_name(stream.get_ref().1);
                            connection(&kafka, stream, peer, name).await
                        }
                        Ok(Err(e)) => {
                            metrics::counter!("meridian_kafka_tls_handshake_failures_total")
                                .increment(1);
                            Err(Closed::Tls(e.to_string()))
                        }
                        Err(_) => Err(Closed::Tls("no TLS handshake in time".into())),
                    }
                }
            };
            if let Err(e) = closed {
                tracing::debug!(%peer, error = %e, "Kafka connection closed");
            }
            metrics::gauge!("meridian_kafka_connections").decrement(1.0);
            drop(ticket);
        });
    }
}

/// Why a connection was closed.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("a frame of {0} bytes is over the {FRAME_MAX}-byte limit")]
    TooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsupported API {key} version {version}")]
    Unsupported { key: i16, version: i16 },
    #[error("a request stopped arriving half-way: {0} of {1} bytes in {2:?}")]
    HalfSent(usize, usize, Duration),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0:?} before authenticating (SASL is required on this listener)")]
    Unauthenticated(ApiKey),
    #[error(
        "{0:?} refused: only principals allowed Alter on the cluster may use it while ACLs are on"
    )]
    Unauthorized(ApiKey),
}

/// Requests of one connection in flight at once.
const PIPELINE: usize = 32;

/// One connection. Kafka clients pipeline requests (librdkafka keeps many produce requests
/// in flight): requests are read and started in the order they come — each one runs up to
/// where it waits (a produce has enqueued its appends by then, so one partition's batches
/// are written in request order) — and answered in that order as they complete, so a
/// produce waiting for its fsync or its quorum does not hold up the ones behind it.
/// Memory is bounded: at most [`PIPELINE`] requests and [`FRAME_MAX`] bytes of request
/// frames are held at once.
///
/// `certified`: the common name of the client's certificate, when it presented one the
/// listener checked: its user when the listener asks for no SASL.
async fn connection<S>(
    kafka: &Kafka,
    stream: S,
    peer: std::net::SocketAddr,
    certified: Option<String>,
) -> Result<(), Closed>
where
    S: AsyncRead + AsyncWrite + Send,
{
    use futures_util::StreamExt;
    use std::future::Future;
    use std::pin::Pin;
    type Answer<'a> = Pin<Box<dyn Future<Output = Result<Option<BytesMut>, Closed>> + Send + 'a>>;
    let (rd, wr) = tokio::io::split(stream);
    let (mut rd, mut wr) = (std::pin::pin!(rd), std::pin::pin!(wr));
    let mut session = sasl::Session::new(&kafka.offered, certified);
    let budget = Arc::new(tokio::sync::Semaphore::new(FRAME_MAX));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Answer<'_>>(PIPELINE);
    let mute = Arc::new(quotas::Mute::default());
    // Owns the sender: when it ends, the writer answers what was read, then ends.
    let reader = async move {
        loop {
            // A client past its quota: nothing more is read until its throttle is over.
            mute.wait().await;
            let mut len = [0u8; 4];
            match tokio::time::timeout(kafka.idle_timeout, rd.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(Closed::from(e)),
                // Idle (Kafka's connections.max.idle.ms): closed; clients reconnect.
                Err(_) => {
                    metrics::counter!("meridian_kafka_idle_closed_total").increment(1);
                    return Ok(());
                }
            }
            // Kafka frames are big-endian.
            let len = (&len[..]).get_i32();
            if len < 8 || len as usize > FRAME_MAX {
                metrics::counter!("meridian_kafka_bad_frames_total").increment(1);
                return Err(Closed::TooLarge(len.max(0) as usize));
            }
            let permit = budget
                .clone()
                .acquire_many_owned(len as u32)
                .await
                .expect("the budget is never closed");
            // The broker-wide budget too: past it this connection waits (and its client
            // with it) before the frame is read.
            let shared = kafka
                .request_memory
                .clone()
                .acquire_many_owned(len as u32)
                .await
                .expect("the budget is never closed");
            let permit = (permit, shared);
            let mut body = vec![0u8; len as usize];
            let mut read = 0;
            let deadline = tokio::time::Instant::now() + kafka.idle_timeout;
            while read < body.len() {
                match tokio::time::timeout_at(deadline, rd.read(&mut body[read..])).await {
                    Ok(Ok(0)) => {
                        return Err(Closed::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    Ok(Ok(n)) => read += n,
                    Ok(Err(e)) => return Err(Closed::from(e)),
                    Err(_) => {
                        metrics::counter!("meridian_kafka_idle_closed_total").increment(1);
                        return Err(Closed::HalfSent(read, body.len(), kafka.idle_timeout));
                    }
                }
            }
            let (header, request) = decode_request(Bytes::from(body)).map_err(|e| match e {
                RequestError::Unsupported { key, version } => Closed::Unsupported { key, version },
                other => Closed::Malformed(other.to_string()),
            })?;
            // Authentication: answered here, in order, before the next request is read.
            let sasl = match &request {
                Some(RequestKind::SaslHandshake(r)) => {
                    let (out, next) =
                        session.handshake(&kafka.offered, r, header.request_api_version);
                    Some((ResponseKind::SaslHandshake(out), next))
                }
                Some(RequestKind::SaslAuthenticate(r)) => {
                    let (out, next) = session.authenticate(&kafka.broker, r).await;
                    Some((ResponseKind::SaslAuthenticate(out), next))
                }
                _ => None,
            };
            if let Some((response, next)) = sasl {
                drop(permit);
                let version = header.request_api_version;
                let out = frame(kafka, &header, version, response);
                if tx
                    .send(Box::pin(std::future::ready(out.map(Some))))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                match next {
                    sasl::Next::Continue => continue,
                    sasl::Next::Close => return Ok(()),
                }
            }
            if !session.serves() && !matches!(request, None | Some(RequestKind::ApiVersions(_))) {
                metrics::counter!("meridian_kafka_unauthenticated_requests_total").increment(1);
                let key = ApiKey::try_from(header.request_api_key).unwrap_or(ApiKey::ApiVersions);
                return Err(Closed::Unauthenticated(key));
            }
            let who = authorize::who(session.user(), peer);
            let mute = mute.clone();
            let mut answer: Answer<'_> = Box::pin(async move {
                let answer = respond(kafka, header, request, &who, &mute).await;
                drop(permit);
                answer
            });
            // Run it up to its first wait now, in arrival order.
            let first =
                std::future::poll_fn(|cx| std::task::Poll::Ready(answer.as_mut().poll(cx))).await;
            if let std::task::Poll::Ready(done) = first {
                answer = Box::pin(std::future::ready(done));
            }
            if tx.send(answer).await.is_err() {
                return Ok(());
            }
        }
    };
    let writer = async {
        let mut in_flight = futures_util::stream::FuturesOrdered::new();
        let mut reading = true;
        loop {
            tokio::select! {
                next = rx.recv(), if reading => match next {
                    Some(answer) => in_flight.push_back(answer),
                    None => reading = false,
                },
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(out) = done? {
                        wr.write_all(&out).await?;
                    }
                }
                else => return Ok::<(), Closed>(()),
            }
        }
    };
    tokio::try_join!(reader, writer).map(drop)
}

/// Handles one request; its response frame, or none (acks=0 produce).
async fn respond(
    kafka: &Kafka,
    header: kafka_protocol::messages::RequestHeader,
    request: Option<RequestKind>,
    who: &authorize::Who,
    mute: &quotas::Mute,
) -> Result<Option<BytesMut>, Closed> {
    let version = header.request_api_version;
    let (response, version) = match request {
        Some(request) => match authorize::check(kafka, who, request).await {
            authorize::Checked::Answer(r) => (r, version),
            authorize::Checked::Close(key) => return Err(Closed::Unauthorized(key)),
            authorize::Checked::Serve(request, refused) => {
                let produced = quotas::produced_bytes(&request);
                match handle(kafka, &header, request, who).await {
                    Some(mut r) => {
                        let client_id = header.client_id.as_deref().unwrap_or("");
                        let held =
                            quotas::throttle(kafka, &who.principal, client_id, produced, &mut r);
                        tokio::time::sleep(held).await;
                        (authorize::finish(kafka, who, refused, r).await, version)
                    }
                    // acks=0: Kafka sends no answer.
                    None => {
                        let client_id = header.client_id.as_deref().unwrap_or("");
                        quotas::throttle_unanswered(
                            kafka,
                            &who.principal,
                            client_id,
                            produced,
                            mute,
                        );
                        return Ok(None);
                    }
                }
            }
        },
        // An ApiVersions request newer than ours: answered at version 0 with the
        // versions we support, as Kafka does, so the client can pick.
        None => (
            ResponseKind::ApiVersions(api_versions(code::UNSUPPORTED_VERSION)),
            0,
        ),
    };
    frame(kafka, &header, version, response).map(Some)
}

/// The frame of `response` to `header`'s request, at `version`.
fn frame(
    kafka: &Kafka,
    header: &kafka_protocol::messages::RequestHeader,
    version: i16,
    response: ResponseKind,
) -> Result<BytesMut, Closed> {
    let key = ApiKey::try_from(header.request_api_key).map_err(|_| Closed::Unsupported {
        key: header.request_api_key,
        version,
    })?;
    if let Some(c) = kafka.requests.get(&header.request_api_key) {
        c.increment(1);
    }
    let mut out = BytesMut::new();
    out.put_i32(0);
    let mut h = ResponseHeader::default();
    h.correlation_id = header.correlation_id;
    // ApiVersions answers always use header v0 (so a client can read an error).
    let header_version = if key == ApiKey::ApiVersions {
        0
    } else {
        key.response_header_version(version)
    };
    h.encode(&mut out, header_version)
        .map_err(|e| Closed::Malformed(format!("encoding the response header: {e}")))?;
    response
        .encode(&mut out, version)
        .map_err(|e| Closed::Malformed(format!("encoding the response: {e}")))?;
    let n = (out.len() - 4) as i32;
    (&mut out[..4]).put_i32(n);
    Ok(out)
}

async fn handle(
    kafka: &Kafka,
    header: &kafka_protocol::messages::RequestHeader,
    request: RequestKind,
    who: &authorize::Who,
) -> Option<ResponseKind> {
    let version = header.request_api_version;
    let (broker, groups) = (&*kafka.broker, &kafka.consumer_groups);
    Some(match request {
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(find_coordinator(kafka, r))
        }
        RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(offset_commit(kafka, r).await),
        RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(offset_fetch(kafka, r).await),
        RequestKind::JoinGroup(r) => {
            let refused = kafka.check_coordinator(&r.group_id.0);
            ResponseKind::JoinGroup(if refused == code::NONE {
                join_group(groups, header, r, version).await
            } else {
                let mut out = kafka_protocol::messages::JoinGroupResponse::default();
                out.error_code = refused;
                out.generation_id = -1;
                out
            })
        }
        RequestKind::SyncGroup(r) => {
            let refused = kafka.check_coordinator(&r.group_id.0);
            ResponseKind::SyncGroup(if refused == code::NONE {
                sync_group(groups, r).await
            } else {
                let mut out = kafka_protocol::messages::SyncGroupResponse::default();
                out.error_code = refused;
                out
            })
        }
        RequestKind::Heartbeat(r) => {
            let mut out = kafka_protocol::messages::HeartbeatResponse::default();
            out.error_code = match kafka.check_coordinator(&r.group_id.0) {
                code::NONE => groups.heartbeat(&r.group_id.0, &r.member_id, r.generation_id),
                refused => refused,
            };
            ResponseKind::Heartbeat(out)
        }
        RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(leave_group(groups, r, version)),
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(describe_groups(kafka, r, version))
        }
        RequestKind::ListGroups(r) => ResponseKind::ListGroups(list_groups(groups, r)),
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(consumers::delete_groups(kafka, r).await)
        }
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(consumers::offset_delete(kafka, r).await)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => {
            let client_id = header.client_id.as_deref().unwrap_or("kafka").to_owned();
            ResponseKind::ConsumerGroupHeartbeat(
                consumers::consumer_group_heartbeat(kafka, &client_id, r).await,
            )
        }
        RequestKind::ConsumerGroupDescribe(r) => {
            ResponseKind::ConsumerGroupDescribe(consumers::consumer_group_describe(kafka, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(kafka.create_topics(r, version).await)
        }
        RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(kafka.delete_topics(r).await),
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(kafka.create_partitions(r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(kafka.describe_configs(r, version).await)
        }
        RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(kafka.alter_configs(r).await),
        RequestKind::IncrementalAlterConfigs(r) => {
            ResponseKind::IncrementalAlterConfigs(kafka.incremental_alter_configs(r).await)
        }
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(transactions::init_producer_id(kafka, r).await)
        }
        RequestKind::AddPartitionsToTxn(r) => {
            ResponseKind::AddPartitionsToTxn(transactions::add_partitions_to_txn(kafka, r).await)
        }
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(transactions::add_offsets_to_txn(kafka, r).await)
        }
        RequestKind::TxnOffsetCommit(r) => {
            ResponseKind::TxnOffsetCommit(transactions::txn_offset_commit(kafka, r).await)
        }
        RequestKind::EndTxn(r) => ResponseKind::EndTxn(transactions::end_txn(kafka, r).await),
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(transactions::list_transactions(kafka, r).await)
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(transactions::describe_transactions(kafka, r).await)
        }
        RequestKind::DescribeProducers(r) => {
            ResponseKind::DescribeProducers(transactions::describe_producers(kafka, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(describe_cluster(broker, r))
        }
        RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(code::NONE)),
        RequestKind::CreateAcls(r) => {
            ResponseKind::CreateAcls(acls::create(&kafka.broker, &who.principal, r).await)
        }
        RequestKind::DescribeAcls(r) => {
            ResponseKind::DescribeAcls(acls::describe(&kafka.broker, r).await)
        }
        RequestKind::DeleteAcls(r) => {
            ResponseKind::DeleteAcls(acls::delete(&kafka.broker, &who.principal, r).await)
        }
        RequestKind::DescribeUserScramCredentials(r) => {
            ResponseKind::DescribeUserScramCredentials(users::describe(&kafka.broker, r).await)
        }
        RequestKind::AlterUserScramCredentials(r) => {
            ResponseKind::AlterUserScramCredentials(users::alter(&kafka.broker, r).await)
        }
        RequestKind::DescribeClientQuotas(r) => {
            ResponseKind::DescribeClientQuotas(quotas::describe(kafka, r).await)
        }
        RequestKind::AlterClientQuotas(r) => {
            ResponseKind::AlterClientQuotas(quotas::alter(kafka, r).await)
        }
        RequestKind::DescribeLogDirs(r) => {
            ResponseKind::DescribeLogDirs(logs::describe_log_dirs(kafka, r).await)
        }
        RequestKind::OffsetForLeaderEpoch(r) => {
            ResponseKind::OffsetForLeaderEpoch(logs::offset_for_leader_epoch(kafka, r).await)
        }
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(logs::delete_records(kafka, r).await)
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(elections::elect_leaders(kafka, r).await)
        }
        RequestKind::Metadata(r) => ResponseKind::Metadata(metadata(broker, r)),
        RequestKind::Produce(r) => ResponseKind::Produce(produce(kafka, r).await?),
        RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::fetch(broker, r).await),
        RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(list_offsets(broker, r).await),
        // Not advertised: `decode` refused it already.
        _ => return None,
    })
}

fn api_versions(error: i16) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    r.error_code = error;
    r.api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            let mut v = kafka_protocol::messages::api_versions_response::ApiVersion::default();
            v.api_key = key as i16;
            v.min_version = min;
            v.max_version = max;
            v
        })
        .collect();
    r
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// Metadata: this broker's region — its brokers with a Kafka address, and each partition's
/// leader (its log group's).
fn metadata(broker: &Broker, r: MetadataRequest) -> MetadataResponse {
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    let config = broker.config();
    let me = config.broker_id as i32;
    let mut out = MetadataResponse::default();
    out.cluster_id = Some(str(&format!("meridian-{}", config.region)));
    out.controller_id = BrokerId(me);
    for (id, host, port) in broker.kafka_brokers() {
        let mut b = MetadataResponseBroker::default();
        b.node_id = BrokerId(id as i32);
        b.host = str(&host);
        b.port = i32::from(port);
        out.brokers.push(b);
    }
    let names: Vec<String> = match r.topics {
        Some(topics) if !topics.is_empty() => topics
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect(),
        _ => broker.topics().into_iter().map(|t| t.name).collect(),
    };
    for name in names {
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(str(&name)));
        match broker.topic(&name) {
            Ok(topic) => {
                t.topic_id = consumers::kafka_topic_id(&topic);
                for (p, &g) in topic.groups.iter().enumerate() {
                    let mut part = MetadataResponsePartition::default();
                    part.partition_index = p as i32;
                    match broker.leader_id(g) {
                        Some(leader) => {
                            part.leader_id = BrokerId(leader as i32);
                            part.leader_epoch = broker.epoch(g) as i32;
                            part.replica_nodes = broker
                                .replicas_of(g)
                                .into_iter()
                                .map(|b| BrokerId(b as i32))
                                .collect();
                            part.isr_nodes = broker
                                .in_sync_replicas(g)
                                .into_iter()
                                .map(|b| BrokerId(b as i32))
                                .collect();
                        }
                        None => {
                            part.error_code = code::LEADER_NOT_AVAILABLE;
                            part.leader_id = BrokerId(-1);
                        }
                    }
                    t.partitions.push(part);
                }
            }
            Err(_) => t.error_code = code::UNKNOWN_TOPIC_OR_PARTITION,
        }
        out.topics.push(t);
    }
    out
}

/// Produce: every partition's record batches become one Meridian batch. An idempotent
/// producer's batch is checked against the sequences it sent before (`producers.rs`): a
/// retry is answered with the offset it was first written at.
async fn produce(kafka: &Kafka, r: ProduceRequest) -> Option<ProduceResponse> {
    use kafka_protocol::messages::produce_response::{
        PartitionProduceResponse, TopicProduceResponse,
    };
    let acks = match r.acks {
        -1 => Some(Acks::All),
        _ => Some(Acks::Leader),
    };
    // Every partition's append starts at once, in request order (`join_all` polls them in
    // turn), and the answer waits for the slowest.
    let txn_id = r.transactional_id.as_ref().map(|t| t.0.as_str());
    let results = futures_util::future::join_all(r.topic_data.iter().flat_map(|topic| {
        topic.partition_data.iter().map(move |part| {
            produce_partition(
                kafka,
                (&topic.name.0, part.index),
                part.records.clone(),
                acks,
                txn_id,
            )
        })
    }))
    .await;
    let mut results = results.into_iter();
    let mut out = ProduceResponse::default();
    for topic in r.topic_data {
        let mut t = TopicProduceResponse::default();
        t.name = topic.name.clone();
        for part in topic.partition_data {
            let mut p = PartitionProduceResponse::default();
            p.index = part.index;
            p.base_offset = -1;
            p.log_append_time_ms = -1;
            p.log_start_offset = -1;
            match results.next().expect("one result per partition") {
                Ok(offset) => p.base_offset = offset,
                Err((code, message)) => {
                    p.error_code = code;
                    p.error_message = Some(str(&message));
                }
            }
            metrics::counter!("meridian_kafka_produce_partitions_total").increment(1);
            t.partition_responses.push(p);
        }
        out.responses.push(t);
    }
    (r.acks != 0).then_some(out)
}

/// One partition's records: written (or found written, for an idempotent retry) at the
/// returned base offset.
async fn produce_partition(
    kafka: &Kafka,
    (topic, partition): (&str, i32),
    records: Option<Bytes>,
    acks: Option<Acks>,
    transactional_id: Option<&str>,
) -> Result<i64, (i16, String)> {
    let index = partition_index(partition)
        .map_err(|code| (code, format!("{topic} has no partition {partition}")))?;
    // A compressed batch inflates at most to the broker's batch limit: past it, it is
    // refused while it is decompressed (a decompression bomb never allocates more).
    let records = decode_records_within(records, kafka.broker.config().batch_bytes_max)
        .map_err(|e| (e.code, e.message))?;
    // This region is failed over: the write goes to the region taking over (see
    // broker::failover), never here.
    if let Some(takeover) = kafka.broker.takeover() {
        // An idempotent (or transactional) producer's sequences live in this region's log
        // groups: written elsewhere, its retries could not be recognised here after the
        // restore. It waits (retrying) until the region is restored.
        if records.producer.is_some() || records.transactional {
            return Err((
                code::NOT_LEADER_OR_FOLLOWER,
                format!(
                    "region {} is failed over ({}): an idempotent or transactional producer's batches wait for its restore (plain producers' go to region {})",
                    kafka.broker.config().region,
                    takeover.reason,
                    takeover.region
                ),
            ));
        }
        return kafka
            .broker
            .forward_produce(&takeover, (topic, index), records.messages, acks)
            .await
            .map(|offset| offset as i64)
            .map_err(|e| {
                (
                    client_error_code(&e),
                    format!(
                        "region {} is failed over; writing to region {}: {e}",
                        kafka.broker.config().region,
                        takeover.region
                    ),
                )
            });
    }
    // An idempotent producer's batch is checked and written by the partition's log group
    // against the producer state every replica keeps from the journal: a retry (even one
    // crossing a leader change, or of a batch committed but answered with an error) gets
    // the offset of the first write. A transactional batch is one too, written inside its
    // producer's transaction (readers of committed data see it once it commits).
    if records.transactional && records.producer.is_none() {
        return Err((
            code::INVALID_RECORD,
            "a transactional batch needs its producer id, epoch and sequence: nothing was written"
                .into(),
        ));
    }
    if records.transactional && transactional_id.is_none() {
        return Err((
            code::INVALID_TXN_STATE,
            "a transactional batch comes in a produce request naming its transactional id: nothing was written".into(),
        ));
    }
    let (produced, duplicate) = kafka
        .broker
        .produce_kafka(
            (topic, index),
            (records.messages, records.verbatim),
            acks,
            records.producer.map(Into::into),
            transactional_id.filter(|_| records.transactional),
        )
        .await
        .map_err(|e| (error_code(&e), e.to_string()))?;
    if duplicate {
        metrics::counter!("meridian_kafka_duplicate_batches_total").increment(1);
    }
    Ok(produced.base_offset as i64)
}

/// ListOffsets: -2 earliest, -1 latest, else the first offset at or after the time.
async fn list_offsets(broker: &Broker, r: ListOffsetsRequest) -> ListOffsetsResponse {
    use kafka_protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };
    let mut out = ListOffsetsResponse::default();
    for topic in r.topics {
        let name = topic.name.0.to_string();
        let mut t = ListOffsetsTopicResponse::default();
        t.name = topic.name.clone();
        for part in topic.partitions {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = part.partition_index;
            p.timestamp = -1;
            p.offset = -1;
            p.leader_epoch = -1;
            let query = match part.timestamp {
                -2 => OffsetQuery::Earliest,
                // A read_committed consumer's end is the last stable offset.
                -1 if r.isolation_level == 1 => OffsetQuery::LastStable,
                -1 => OffsetQuery::Latest,
                t => OffsetQuery::Time(t),
            };
            let index = match partition_index(part.partition_index) {
                Ok(index) => index,
                Err(code) => {
                    p.error_code = code;
                    t.partitions.push(p);
                    continue;
                }
            };
            match broker.list_offset(&name, index, query).await {
                Ok((offset, time)) => {
                    p.offset = offset as i64;
                    p.timestamp = time.unwrap_or(-1);
                }
                Err(e) => p.error_code = error_code(&e),
            }
            t.partitions.push(p);
        }
        out.topics.push(t);
    }
    out
}

/// DescribeCluster: the region's brokers (as Metadata lists them).
fn describe_cluster(
    broker: &Broker,
    _r: kafka_protocol::messages::DescribeClusterRequest,
) -> kafka_protocol::messages::DescribeClusterResponse {
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    let config = broker.config();
    let mut out = kafka_protocol::messages::DescribeClusterResponse::default();
    out.cluster_id = str(&format!("meridian-{}", config.region));
    out.controller_id = BrokerId(config.broker_id as i32);
    out.endpoint_type = 1;
    out.cluster_authorized_operations = i32::MIN;
    for (id, host, port) in broker.kafka_brokers() {
        let mut b = DescribeClusterBroker::default();
        b.broker_id = BrokerId(id as i32);
        b.host = str(&host);
        b.port = i32::from(port);
        out.brokers.push(b);
    }
    out
}
