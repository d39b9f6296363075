//! Three raft nodes over three real journals in one process: election, replication, a
//! leader that stops, a follower recovered from disk that catches up, and membership change.
//! Only the network is in-process (a router of direct calls that can mark a node down); the
//! cross-broker gRPC network and the multi-process failure tests come with the broker wiring.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft};
use tempfile::TempDir;

use super::{Command, JournalLogStore, JournalStateMachine, Snapshot, TypeConfig, Vote};
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

async fn start(router: &Router, id: u64, dir: &Path) -> Member {
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
    let raft = Raft::new(id, raft_config(), router.clone(), store, sm)
        .await
        .unwrap();
    router.nodes.lock().unwrap().insert(id, raft.clone());
    router.down.lock().unwrap().remove(&id);
    Member {
        dir: dir.to_owned(),
        group,
        raft,
    }
}

async fn stop(router: &Router, id: u64, member: Member) -> PathBuf {
    router.down.lock().unwrap().insert(id);
    router.nodes.lock().unwrap().remove(&id);
    member.raft.shutdown().await.unwrap();
    let group = member.group;
    tokio::task::spawn_blocking(move || group.close())
        .await
        .unwrap();
    member.dir
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

async fn write(raft: &Node, n: usize, tag: &str) -> Vec<u64> {
    let mut offsets = Vec::new();
    for i in 0..n {
        let message = meridian_proto::batch::Message {
            value: Bytes::from(format!("{tag}-{i}")),
            timestamp_ms: 1,
            ..Default::default()
        };
        let payload = Bytes::from(meridian_proto::batch::encode_batch(&[message]));
        let resp = raft
            .client_write(Command::Batch {
                topic_id: KEY.0,
                partition: KEY.1,
                count: 1,
                payload,
            })
            .await
            .unwrap();
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
                out.push(String::from_utf8(m.value.to_vec()).unwrap());
            }
            next = b.base_offset + u64::from(b.count);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_elect_replicate_fail_over_and_recover() {
    let tmp = TempDir::new().unwrap();
    let router = Router::default();
    let mut members = BTreeMap::new();
    for id in 1..=3u64 {
        members.insert(
            id,
            start(&router, id, &tmp.path().join(format!("n{id}"))).await,
        );
    }
    let nodes: BTreeMap<u64, BasicNode> = (1..=3).map(|id| (id, BasicNode::default())).collect();
    members[&1].raft.initialize(nodes).await.unwrap();

    let first = leader(&members).await;
    let offsets = write(&members[&first].raft, 50, "a").await;
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
    let old_dir = stop(&router, first, old).await;
    let second = leader(&members).await;
    assert_ne!(second, first);
    write(&members[&second].raft, 30, "b").await;

    // The old leader restarts from its journal (recovery) and catches up.
    members.insert(first, start(&router, first, &old_dir).await);
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
    write(&members[&leader_id].raft, 10, "c").await;
    for id in &keep {
        assert_eq!(values(&members[id].group, 90).await.len(), 90);
    }
    for (id, m) in std::mem::take(&mut members) {
        stop(&router, id, m).await;
    }
}
