//! The inter-broker raft transport over gRPC: a client ([`GrpcNetwork`]) implementing
//! openraft's network for every log group, and a server ([`RaftTransportService`]) that
//! hands each request to the group's raft. Requests and responses travel as openraft's own
//! serde types in MessagePack (binary, so message payloads stay bytes; JSON would spell
//! every byte as a number).
//!
//! All groups between two brokers share one tonic channel (one HTTP/2 connection), and their
//! heartbeats share messages: a heartbeat (openraft's heartbeat worker sends a stream of one
//! empty AppendEntries; replication streams stay open) waits in its peer's coalescer until
//! the next [`HEARTBEAT_WINDOW`] boundary of the wall clock, and every group's heartbeats of
//! that window go as one `Heartbeats` call. With a 100 ms heartbeat interval a broker sends
//! at most four heartbeat messages per peer per interval, however many groups it leads;
//! heartbeats arrive up to 25 ms later, against election timeouts of 600 ms or more.
//!
//! A leader's heartbeat also carries its in-sync set of the group (Kafka's ISR), which the
//! follower keeps ([`Announced`]) to answer Metadata as the leader would.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::v1::raft_transport_client::RaftTransportClient;
use meridian_proto::v1::{RaftRpc, raft_transport_server};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::v2::RaftNetworkV2;
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use meridian_security::tls::PeerTls;

use super::in_sync::Announced;
use super::master_slave::{CallError, MasterSlaveGroup, PeerCall, ReplicaRequest, ReplicaResponse};
use super::raft::{JournalStateMachine, Snapshot, SnapshotData, SnapshotMeta, TypeConfig, Vote};

/// One log group's raft on this broker.
pub type GroupRaft = Raft<TypeConfig, JournalStateMachine>;

/// Heartbeats to a broker are sent together at the end of each window of this length.
pub const HEARTBEAT_WINDOW: Duration = Duration::from_millis(25);

/// Time until the next multiple of [`HEARTBEAT_WINDOW`] on the wall clock, so every group's
/// heartbeats to a peer fall into the same few windows per heartbeat interval.
fn until_next_window() -> Duration {
    let window = HEARTBEAT_WINDOW.as_micros() as u64;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    Duration::from_micros(window - now % window)
}

/// A heartbeat waiting in a peer's coalescer.
type PendingHeartbeat = (
    u32,
    AppendEntriesRequest<TypeConfig>,
    tokio::sync::oneshot::Sender<Result<AppendEntriesResponse<TypeConfig>, String>>,
);

/// One group's heartbeat in a `Heartbeats` call, with the leader's in-sync set.
type HeartbeatRequest<R> = (u32, R, Option<Vec<u32>>);

/// The leader's in-sync set of a log group, `None` where this broker does not lead it.
pub type InSyncSource = Arc<dyn Fn(u32) -> Option<Vec<u32>> + Send + Sync>;

/// The answer to one group's heartbeat in a `Heartbeats` call.
type HeartbeatAnswer = (u32, Result<AppendEntriesResponse<TypeConfig>, String>);

/// Connections to peer brokers, shared by every group's network.
#[derive(Debug, Clone, Default)]
pub struct Peers {
    /// Raft addresses by broker id, newer than the ones raft memberships hold (a broker
    /// that moved to another address); set from the control plane's view.
    addresses: Arc<Mutex<HashMap<u64, String>>>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    heartbeats: Arc<Mutex<HashMap<String, tokio::sync::mpsc::UnboundedSender<PendingHeartbeat>>>>,
    /// Where heartbeats find the in-sync sets they carry.
    in_sync: Arc<std::sync::OnceLock<InSyncSourceCell>>,
    /// Mutual TLS with the region's other brokers, when configured.
    tls: Option<Arc<PeerTls>>,
}

/// [`InSyncSource`] in a `Debug` type.
struct InSyncSourceCell(InSyncSource);

impl std::fmt::Debug for InSyncSourceCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InSyncSource")
    }
}

impl Peers {
    /// Connections to peers, over mutual TLS when `tls` is given.
    pub fn new(tls: Option<Arc<PeerTls>>) -> Peers {
        Peers {
            tls,
            ..Peers::default()
        }
    }

    /// The mutual TLS the replication transport speaks, if any.
    pub fn tls(&self) -> Option<&Arc<PeerTls>> {
        self.tls.as_ref()
    }

    /// Heartbeats carry the in-sync sets `source` gives (set once; later calls are ignored).
    pub fn set_in_sync_source(&self, source: InSyncSource) {
        let _ = self.in_sync.set(InSyncSourceCell(source));
    }

    /// Records where broker `id`'s replication listens now.
    pub fn set_address(&self, id: u64, raft: String) {
        self.addresses
            .lock()
            .expect("peers lock poisoned")
            .insert(id, raft);
    }

    /// Where broker `id` listens: the recorded address, else `fallback` (the membership's).
    fn address(&self, id: u64, fallback: &str) -> String {
        self.addresses
            .lock()
            .expect("peers lock poisoned")
            .get(&id)
            .cloned()
            .unwrap_or_else(|| fallback.to_owned())
    }

    fn channel(&self, addr: &str) -> Result<Channel, Unreachable<TypeConfig>> {
        let mut channels = self.channels.lock().expect("peers lock poisoned");
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| Unreachable::from_string(format!("bad peer address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let channel = match &self.tls {
            None => endpoint.connect_lazy(),
            // The peer's certificate must be valid for the region's broker name (whatever
            // address it is reached at); this broker presents its own, as current at
            // each connect.
            Some(tls) => {
                let source = tls.clone();
                endpoint.connect_with_connector_lazy(meridian_proto::auth::tls_connector(
                    Arc::new(move || source.client_config()),
                    Some(tls.peer_name().clone()),
                ))
            }
        };
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

impl Peers {
    /// Sends `group`'s heartbeat to the peer at `addr` through its coalescer.
    async fn heartbeat(
        &self,
        addr: &str,
        group: u32,
        request: AppendEntriesRequest<TypeConfig>,
    ) -> Result<AppendEntriesResponse<TypeConfig>, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let mut pending = Some((group, request, reply));
        for _ in 0..2 {
            let tx = {
                let mut coalescers = self.heartbeats.lock().expect("peers lock poisoned");
                coalescers
                    .entry(addr.to_owned())
                    .or_insert_with(|| self.spawn_coalescer(addr.to_owned()))
                    .clone()
            };
            match tx.send(pending.take().expect("set")) {
                Ok(()) => break,
                // The coalescer stopped (its runtime went away): start another.
                Err(e) => {
                    pending = Some(e.0);
                    self.heartbeats
                        .lock()
                        .expect("peers lock poisoned")
                        .remove(addr);
                }
            }
        }
        answer
            .await
            .map_err(|_| format!("{addr}: heartbeat coalescer stopped"))?
    }

    fn spawn_coalescer(
        &self,
        addr: String,
    ) -> tokio::sync::mpsc::UnboundedSender<PendingHeartbeat> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PendingHeartbeat>();
        let peers = self.clone();
        tokio::spawn(async move {
            // Heartbeats wait for the next window boundary (the same instants for every
            // group), then go in one call.
            while let Some(first) = rx.recv().await {
                tokio::time::sleep(until_next_window()).await;
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                peers.send_heartbeats(&addr, batch).await;
            }
        });
        tx
    }

    async fn send_heartbeats(&self, addr: &str, batch: Vec<PendingHeartbeat>) {
        metrics::histogram!("meridian_raft_heartbeats_per_message").record(batch.len() as f64);
        let in_sync = |g: u32| self.in_sync.get().and_then(|source| (source.0)(g));
        let requests: Vec<HeartbeatRequest<&AppendEntriesRequest<TypeConfig>>> =
            batch.iter().map(|(g, r, _)| (*g, r, in_sync(*g))).collect();
        let result: Result<Vec<HeartbeatAnswer>, String> = async {
            let payload = rmp_serde::to_vec_named(&requests).map_err(|e| e.to_string())?;
            let channel = self.channel(addr).map_err(|e| e.to_string())?;
            let mut client = RaftTransportClient::new(channel)
                .max_decoding_message_size(usize::MAX)
                .max_encoding_message_size(usize::MAX);
            let mut req = Request::new(RaftRpc {
                group: 0,
                payload: Bytes::from(payload),
            });
            req.set_timeout(Duration::from_secs(1));
            let response = client
                .heartbeats(req)
                .await
                .map_err(|s| format!("{addr}: {} ({:?})", s.message(), s.code()))?;
            rmp_serde::from_slice(&response.into_inner().payload)
                .map_err(|e| format!("{addr}: malformed heartbeat answer: {e}"))
        }
        .await;
        match result {
            Ok(answers) => {
                let mut answers: HashMap<u32, Result<AppendEntriesResponse<TypeConfig>, String>> =
                    answers.into_iter().collect();
                for (group, _, reply) in batch {
                    let answer = answers
                        .remove(&group)
                        .unwrap_or_else(|| Err(format!("{addr}: no answer for log group {group}")));
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                for (_, _, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// The client side of master-slave replication: sends a request to the replication
    /// port at an address, for a group.
    pub fn master_slave_call(&self) -> PeerCall {
        let peers = self.clone();
        Arc::new(
            move |addr: String, group: u32, request: ReplicaRequest, timeout: Duration| {
                let peers = peers.clone();
                Box::pin(async move {
                    let payload = rmp_serde::to_vec_named(&request)?;
                    let channel = peers
                        .channel(&addr)
                        .map_err(|e| CallError::Unreachable(e.to_string()))?;
                    let mut client = RaftTransportClient::new(channel)
                        .max_decoding_message_size(usize::MAX)
                        .max_encoding_message_size(usize::MAX);
                    let mut req = Request::new(RaftRpc {
                        group,
                        payload: Bytes::from(payload),
                    });
                    req.set_timeout(timeout);
                    let response =
                        client
                            .master_slave(req)
                            .await
                            .map_err(|status| CallError::Status {
                                addr: addr.clone(),
                                status,
                            })?;
                    rmp_serde::from_slice::<ReplicaResponse>(&response.into_inner().payload)
                        .map_err(|source| CallError::Malformed { addr, source })
                })
            },
        )
    }
}

/// openraft's network factory for one log group.
#[derive(Debug, Clone)]
pub struct GrpcNetwork {
    group: u32,
    peers: Peers,
}

impl GrpcNetwork {
    /// The network of log group `group`, over shared peer connections.
    pub fn new(group: u32, peers: Peers) -> GrpcNetwork {
        GrpcNetwork { group, peers }
    }
}

/// A connection from one group's raft to the same group on a peer.
#[derive(Debug)]
pub struct GrpcConnection {
    group: u32,
    /// The peer's broker id and the address its membership entry names.
    target: u64,
    addr: String,
    peers: Peers,
    /// The next empty AppendEntries is a heartbeat (a one-request stream from openraft's
    /// heartbeat worker) and may wait for its peer's coalescing window.
    heartbeat_next: bool,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> GrpcConnection {
        GrpcConnection {
            group: self.group,
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            heartbeat_next: false,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
struct SnapshotRequest {
    vote: Vote,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The slowest transfer rate a raft RPC's timeout allows for (20 MB/s).
const APPEND_BYTES_PER_MS: u64 = 20_000;

impl GrpcConnection {
    async fn call<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        kind: Rpc,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, Unreachable<TypeConfig>> {
        let payload = rmp_serde::to_vec_named(request).map_err(|e| Unreachable::new(&e))?;
        // openraft allows an append one heartbeat interval; entries of megabytes (a Kafka
        // producer's batches) cannot cross in that, and a timed-out append is sent again
        // whole, forever. Give each megabyte time at a pessimistic 20 MB/s.
        let timeout = timeout.max(Duration::from_millis(
            250 + payload.len() as u64 / APPEND_BYTES_PER_MS,
        ));
        let addr = self.peers.address(self.target, &self.addr);
        let mut client = RaftTransportClient::new(self.peers.channel(&addr)?)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut req = Request::new(RaftRpc {
            group: self.group,
            payload: Bytes::from(payload),
        });
        req.set_timeout(timeout);
        let response = match kind {
            Rpc::Append => client.append_entries(req).await,
            Rpc::Vote => client.vote(req).await,
            Rpc::Snapshot => client.install_snapshot(req).await,
            Rpc::TransferLeader => client.transfer_leader(req).await,
        }
        .map_err(|s| {
            Unreachable::from_string(format!("{addr}: {} ({:?})", s.message(), s.code()))
        })?;
        rmp_serde::from_slice(&response.into_inner().payload).map_err(|e| Unreachable::new(&e))
    }
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
    TransferLeader,
}

impl RaftNetworkV2<TypeConfig> for GrpcConnection {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        if rpc.entries.is_empty() && std::mem::take(&mut self.heartbeat_next) {
            // A heartbeat: coalesced with other groups' heartbeats to the same broker.
            let addr = self.peers.address(self.target, &self.addr);
            return self
                .peers
                .heartbeat(&addr, self.group, rpc)
                .await
                .map_err(|e| RPCError::Unreachable(Unreachable::from_string(e)));
        }
        Ok(self.call(Rpc::Append, &rpc, option.hard_ttl()).await?)
    }

    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> openraft::base::BoxFuture<
        's,
        Result<
            openraft::base::BoxStream<
                's,
                Result<openraft::raft::StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>,
            >,
            RPCError<TypeConfig>,
        >,
    >
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<TypeConfig>>
            + openraft::OptionalSend
            + Unpin
            + 'static,
    {
        use futures_util::{FutureExt, StreamExt};
        // Fused: the input may be polled again after it ended (it ends right after a
        // heartbeat).
        let mut input = input.fuse();
        Box::pin(async move {
            // openraft's heartbeat worker sends a stream of one empty request; replication
            // streams stay open for more. Only the former waits for coalescing.
            let first = input.next().await;
            let second = match first {
                Some(_) => input.next().now_or_never(),
                None => Some(None),
            };
            self.heartbeat_next = first.as_ref().is_some_and(|r| r.entries.is_empty())
                && matches!(second, Some(None));
            let head: Vec<AppendEntriesRequest<TypeConfig>> =
                first.into_iter().chain(second.flatten()).collect();
            let rest = futures_util::stream::iter(head).chain(input);
            openraft::network::stream_append_sequential(self, Box::pin(rest), option).await
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self.call(Rpc::Vote, &rpc, option.hard_ttl()).await?)
    }

    /// Without it, a leader handing over would stop and the others wait out its lease
    /// (an election timeout) before electing someone, perhaps not the broker named.
    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        Ok(self
            .call(Rpc::TransferLeader, &req, option.hard_ttl())
            .await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let request = SnapshotRequest {
            vote,
            meta: snapshot.meta,
            data: snapshot.snapshot.into_inner(),
        };
        Ok(self
            .call(Rpc::Snapshot, &request, option.hard_ttl())
            .await?)
    }
}

/// Serves the raft transport for every group this broker hosts.
#[derive(Debug, Clone, Default)]
pub struct RaftTransportService {
    groups: Arc<RwLock<HashMap<u32, GroupRaft>>>,
    master_slave: Arc<RwLock<HashMap<u32, Arc<MasterSlaveGroup>>>>,
    journals: Arc<RwLock<HashMap<u32, Arc<crate::storage::LogGroup>>>>,
    announced: Announced,
}

impl RaftTransportService {
    /// Routes requests for `group` to `raft`.
    pub fn register(&self, group: u32, raft: GroupRaft) {
        self.groups
            .write()
            .expect("groups lock poisoned")
            .insert(group, raft);
    }

    /// Serves journal reads ([`ReplicaRequest::Read`]) of `group` from `journal`.
    pub fn register_journal(&self, group: u32, journal: Arc<crate::storage::LogGroup>) {
        self.journals
            .write()
            .expect("groups lock poisoned")
            .insert(group, journal);
    }

    /// Routes master-slave requests for `group` to `replica`.
    pub fn register_master_slave(&self, group: u32, replica: Arc<MasterSlaveGroup>) {
        self.master_slave
            .write()
            .expect("groups lock poisoned")
            .insert(group, replica);
    }

    /// The in-sync sets leaders announced with their heartbeats.
    pub fn announced(&self) -> &Announced {
        &self.announced
    }

    /// Stops routing requests for `group`.
    pub fn unregister(&self, group: u32) {
        self.announced.forget(group);
        self.groups
            .write()
            .expect("groups lock poisoned")
            .remove(&group);
        self.master_slave
            .write()
            .expect("groups lock poisoned")
            .remove(&group);
        self.journals
            .write()
            .expect("groups lock poisoned")
            .remove(&group);
    }

    /// The tonic service.
    pub fn server(self) -> raft_transport_server::RaftTransportServer<RaftTransportService> {
        raft_transport_server::RaftTransportServer::new(self)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    fn raft(&self, group: u32) -> Result<GroupRaft, Status> {
        self.groups
            .read()
            .expect("groups lock poisoned")
            .get(&group)
            .cloned()
            .ok_or_else(|| Status::not_found(format!("this broker hosts no log group {group}")))
    }
}

fn decode<T: serde::de::DeserializeOwned>(rpc: &RaftRpc) -> Result<T, Status> {
    rmp_serde::from_slice(&rpc.payload)
        .map_err(|e| Status::invalid_argument(format!("malformed raft request: {e}")))
}

fn encode<T: Serialize>(group: u32, value: &T) -> Result<Response<RaftRpc>, Status> {
    let payload = rmp_serde::to_vec_named(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftRpc {
        group,
        payload: Bytes::from(payload),
    }))
}

#[tonic::async_trait]
impl raft_transport_server::RaftTransport for RaftTransportService {
    async fn append_entries(&self, request: Request<RaftRpc>) -> Result<Response<RaftRpc>, Status> {
        let rpc = request.into_inner();
        let raft = self.raft(rpc.group)?;
        let req: AppendEntriesRequest<TypeConfig> = decode(&rpc)?;
        let resp = raft
            .append_entries(req)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        encode(rpc.group, &resp)
    }

    async fn vote(&self, request: Request<RaftRpc>) -> Result<Response<RaftRpc>, Status> {
        let rpc = request.into_inner();
        let raft = self.raft(rpc.group)?;
        let req: VoteRequest<TypeConfig> = decode(&rpc)?;
        let resp = raft
            .vote(req)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        encode(rpc.group, &resp)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRpc>,
    ) -> Result<Response<RaftRpc>, Status> {
        let rpc = request.into_inner();
        let raft = self.raft(rpc.group)?;
        let req: SnapshotRequest = decode(&rpc)?;
        let snapshot = Snapshot {
            meta: req.meta,
            snapshot: std::io::Cursor::new(req.data),
        };
        let resp = raft
            .install_full_snapshot(req.vote, snapshot)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        encode(rpc.group, &resp)
    }

    async fn transfer_leader(
        &self,
        request: Request<RaftRpc>,
    ) -> Result<Response<RaftRpc>, Status> {
        let rpc = request.into_inner();
        let raft = self.raft(rpc.group)?;
        let req: TransferLeaderRequest<TypeConfig> = decode(&rpc)?;
        let resp = raft
            .handle_transfer_leader(req)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        encode(rpc.group, &resp)
    }

    async fn heartbeats(&self, request: Request<RaftRpc>) -> Result<Response<RaftRpc>, Status> {
        let rpc = request.into_inner();
        let requests: Vec<HeartbeatRequest<AppendEntriesRequest<TypeConfig>>> = decode(&rpc)?;
        let answers =
            futures_util::future::join_all(requests.into_iter().map(|(group, req, in_sync)| {
                let raft = self.raft(group);
                async move {
                    let answer = match raft {
                        Ok(raft) => raft.append_entries(req).await.map_err(|e| e.to_string()),
                        Err(status) => Err(status.message().to_owned()),
                    };
                    // Kept only from a leader this replica follows (not a deposed one).
                    if let (Ok(r), Some(members)) = (&answer, in_sync)
                        && !matches!(r, AppendEntriesResponse::HigherVote(_))
                    {
                        self.announced
                            .announce(group, members, std::time::Instant::now());
                    }
                    (group, answer)
                }
            }))
            .await;
        encode(rpc.group, &answers)
    }

    async fn master_slave(&self, request: Request<RaftRpc>) -> Result<Response<RaftRpc>, Status> {
        let rpc = request.into_inner();
        let req: ReplicaRequest = decode(&rpc)?;
        if let ReplicaRequest::Read(read) = &req {
            let journal = self
                .journals
                .read()
                .expect("groups lock poisoned")
                .get(&rpc.group)
                .cloned()
                .ok_or_else(|| {
                    Status::not_found(format!("this broker hosts no log group {}", rpc.group))
                })?;
            let resp = match super::pull::serve(&journal, read) {
                Ok(answer) => ReplicaResponse::Read {
                    answer,
                    watermark: journal.watermark(),
                },
                Err(e) => ReplicaResponse::Failed {
                    reason: e.to_string(),
                },
            };
            return encode(rpc.group, &resp);
        }
        let replica = self
            .master_slave
            .read()
            .expect("groups lock poisoned")
            .get(&rpc.group)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!(
                    "this broker hosts no master-slave log group {}",
                    rpc.group
                ))
            })?;
        let resp = replica.handle(req).await;
        encode(rpc.group, &resp)
    }
}
