//! Three raft nodes over three real journals: election, replication, a leader that stops, a
//! node recovered from disk that catches up, and membership change. The scenario runs twice:
//! over an in-process router of direct calls, and over the real gRPC transport on
//! 127.0.0.1 ports (a stopped node's server is shut down). The multi-process failure tests
//! (kill -9, SIGSTOP) come with the broker wiring.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{ClientWriteError, RaftError};
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft};
use tempfile::TempDir;

use super::{Command, JournalLogStore, JournalStateMachine, Snapshot, TypeConfig, Vote};
use crate::replication::transport::{GrpcNetwork, Peers, RaftTransportService};
use crate::storage::{GroupConfig, LogGroup, PartitionKey};

type Node = Raft<TypeConfig, JournalStateMachine>;
const KEY: PartitionKey = (1, 0);

#[derive(Clone, Default)]
struct Router {
    nodes: Arc<Mutex<HashMap<u64, Node>>>,
    down: Arc<Mutex<HashSet<u64>>>,
}

struct Conn {
    target: u64,
    router: Router,
}

impl Router {
    fn get(&self, target: u64) -> Result<Node, Unreachable<TypeConfig>> {
        if self.down.lock().unwrap().contains(&target) {
            return Err(Unreachable::from_string(format!("node {target} is down")));
        }
        self.nodes
            .lock()
            .unwrap()
            .get(&target)
            .cloned()
            .ok_or_else(|| Unreachable::from_string(format!("no node {target}")))
    }
}

impl RaftNetworkFactory<TypeConfig> for Router {
    type Network = Conn;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Conn {
        Conn {
            target,
            router: self.clone(),
        }
    }
}

impl RaftNetworkV2<TypeConfig> for Conn {
    type SnapshotData = super::SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let node = self.router.get(self.target)?;
        node.append_entries(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let node = self.router.get(self.target)?;
        node.vote(rpc)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let node = self
            .router
            .get(self.target)
            .map_err(StreamingError::Unreachable)?;
        node.install_full_snapshot(vote, snapshot)
            .await
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))
    }
}

struct Member {
    dir: PathBuf,
    group: Arc<LogGroup>,
    raft: Node,
}

fn raft_config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        ..Config::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

/// How the three nodes talk: direct calls, or gRPC over loopback.
#[derive(Default)]
struct Cluster {
    router: Router,
    grpc: Option<Grpc>,
}

#[derive(Default)]
struct Grpc {
    peers: Peers,
    addrs: HashMap<u64, std::net::SocketAddr>,
    servers: HashMap<
        u64,
        (
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        ),
    >,
}

impl Cluster {
    fn grpc() -> Cluster {
        Cluster {
            router: Router::default(),
            grpc: Some(Grpc::default()),
        }
    }

    fn node(&mut self, id: u64) -> BasicNode {
        match &mut self.grpc {
            None => BasicNode::default(),
            Some(g) => {
                let addr = *g.addrs.entry(id).or_insert_with(|| {
                    std::net::TcpListener::bind("127.0.0.1:0")
                        .and_then(|l| l.local_addr())
                        .expect("free port")
                });
                BasicNode {
                    addr: addr.to_string(),
                }
            }
        }
    }

    async fn start(&mut self, id: u64, dir: &Path) -> Member {
        let config = GroupConfig {
            segment_bytes: 1 << 14,
            replicated: true,
            ..GroupConfig::default()
        };
        let group = Arc::new(
            LogGroup::open(&dir.join("group"), config, &[(KEY, "orders".to_owned())]).unwrap(),
        );
        let store = JournalLogStore::open(group.clone(), dir).unwrap();
        let sm = JournalStateMachine::open(group.clone(), dir).unwrap();
        let raft = match &self.grpc {
            None => {
                let raft = Raft::new(id, raft_config(), self.router.clone(), store, sm)
                    .await
                    .unwrap();
                self.router.nodes.lock().unwrap().insert(id, raft.clone());
                self.router.down.lock().unwrap().remove(&id);
                raft
            }
            Some(g) => Raft::new(
                id,
                raft_config(),
                GrpcNetwork::new(0, g.peers.clone()),
                store,
                sm,
            )
            .await
            .unwrap(),
        };
        if self.grpc.is_some() {
            let addr: std::net::SocketAddr = self.node(id).addr.parse().unwrap();
            let service = RaftTransportService::default();
            service.register(0, raft.clone());
            let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(async move {
                tonic::transport::Server::builder()
                    .add_service(service.server())
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        async {
                            let _ = rx.await;
                        },
                    )
                    .await
                    .unwrap();
            });
            self.grpc.as_mut().unwrap().servers.insert(id, (tx, server));
        }
        Member {
            dir: dir.to_owned(),
            group,
            raft,
        }
    }

    async fn stop(&mut self, id: u64, member: Member) -> PathBuf {
        self.router.down.lock().unwrap().insert(id);
        self.router.nodes.lock().unwrap().remove(&id);
        if let Some((tx, server)) = self.grpc.as_mut().and_then(|g| g.servers.remove(&id)) {
            let _ = tx.send(());
            server.await.unwrap();
        }
        member.raft.shutdown().await.unwrap();
        let group = member.group;
        tokio::task::spawn_blocking(move || group.close())
            .await
            .unwrap();
        member.dir
    }
}

async fn leader(members: &BTreeMap<u64, Member>) -> u64 {
    for _ in 0..200 {
        for m in members.values() {
            if let Some(l) = m.raft.current_leader().await
                && members.contains_key(&l)
                && members[&l].raft.current_leader().await == Some(l)
            {
                return l;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("no leader elected");
}

/// Writes `n` messages through whichever node leads, retrying a write that was refused
/// before being proposed (not leader, or a leader whose lease lapsed), as a client would.
async fn write(members: &BTreeMap<u64, Member>, n: usize, tag: &str) -> Vec<u64> {
    let mut offsets = Vec::new();
    for i in 0..n {
        let message = meridian_proto::batch::Message {
            value: Some(Bytes::from(format!("{tag}-{i}"))),
            timestamp_ms: 1,
            ..Default::default()
        };
        let payload = Bytes::from(meridian_proto::batch::encode_batch(&[message]));
        let command = Command::Batch {
            topic_id: KEY.0,
            partition: KEY.1,
            count: 1,
            payload,
            mirrored: false,
            producer: None,
            transaction: None,
            local_ack: Default::default(),
        };
        let mut attempts = 0;
        let resp = loop {
            let l = leader(members).await;
            match members[&l].raft.client_write(command.clone()).await {
                Ok(resp) => break resp,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))
                    if attempts < 100 =>
                {
                    attempts += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("write {tag}-{i} failed: {e}"),
            }
        };
        offsets.push(resp.data.base_offset.expect("a batch has a base offset"));
    }
    offsets
}

/// Waits until `group` shows `count` messages and returns their values.
async fn values(group: &LogGroup, count: u64) -> Vec<String> {
    let mut visible = group.subscribe();
    for _ in 0..400 {
        if group.offsets(KEY).unwrap().1 >= count {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(25), visible.changed()).await;
    }
    assert_eq!(
        group.offsets(KEY).unwrap().1,
        count,
        "messages visible on a replica"
    );
    let mut out = Vec::new();
    let mut next = 0;
    while next < count {
        for b in group.read(KEY, next, 1 << 20).unwrap() {
            for m in meridian_proto::batch::decode_batch(&b.payload, b.count as usize).unwrap() {
                out.push(String::from_utf8(m.value.unwrap().to_vec()).unwrap());
            }
            next = b.base_offset + u64::from(b.count);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_replicate_fail_over_and_recover() {
    scenario(Cluster::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_over_the_grpc_transport() {
    scenario(Cluster::grpc()).await;
}

async fn scenario(mut cluster: Cluster) {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("warn,openraft=warn")
        .try_init();
    let tmp = TempDir::new().unwrap();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        members.insert(
            id,
            cluster.start(id, &tmp.path().join(format!("n{id}"))).await,
        );
    }
    let nodes: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, cluster.node(id))).collect();
    members[&1].raft.initialize(nodes).await.unwrap();

    let first = leader(&members).await;
    let offsets = write(&members, 50, "a").await;
    assert_eq!(
        offsets,
        (0..50).collect::<Vec<_>>(),
        "offsets are dense and in order"
    );
    let expected: Vec<String> = (0..50).map(|i| format!("a-{i}")).collect();
    for m in members.values() {
        assert_eq!(values(&m.group, 50).await, expected);
    }

    // The leader stops; the other two elect a new one and keep accepting writes.
    let old = members.remove(&first).unwrap();
    let old_dir = cluster.stop(first, old).await;
    let second = leader(&members).await;
    assert_ne!(second, first);
    write(&members, 30, "b").await;

    // The old leader restarts from its journal (recovery) and catches up.
    members.insert(first, cluster.start(first, &old_dir).await);
    let expected: Vec<String> = (0..50)
        .map(|i| format!("a-{i}"))
        .chain((0..30).map(|i| format!("b-{i}")))
        .collect();
    for m in members.values() {
        assert_eq!(
            values(&m.group, 80).await,
            expected,
            "every replica holds the same messages in the same order"
        );
    }

    // Membership change: remove a follower, write, and the remaining two still agree.
    let leader_id = leader(&members).await;
    let follower = *members.keys().find(|&&id| id != leader_id).unwrap();
    let keep: BTreeSet<u64> = members
        .keys()
        .copied()
        .filter(|&id| id != follower)
        .collect();
    members[&leader_id]
        .raft
        .change_membership(keep.clone(), false)
        .await
        .unwrap();
    write(&members, 10, "c").await;
    for id in &keep {
        assert_eq!(values(&members[id].group, 90).await.len(), 90);
    }
    for (id, m) in std::mem::take(&mut members) {
        cluster.stop(id, m).await;
    }
}
