//! A consumer's membership in its group: it joins at the group's coordinator, heartbeats
//! in the background with the partitions it owns, and learns which it may own now.
//!
//! The partitions it owns are a lease: the coordinator gives a silent member's partitions
//! to another once its session (counted from when the coordinator last heard it) lapses.
//! So the member counts its lease from when it *sent* its last answered heartbeat, which
//! is no later than when the coordinator heard it: once that lease runs out it stops
//! reading and committing before anyone else can have its partitions. A process paused
//! past its session (SIGSTOP) that wakes up finds its lease gone, drops everything and
//! joins again.
//!
//! The SDK's consumers are members, and so is a broker's MQTT shared subscription: each
//! reaches the coordinator through its own [`Coordinator`].

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_proto::v1;
use tokio::time::Instant;

use crate::{RegionClient, RegionError};

/// A partition: topic and index.
pub type TopicPartition = (String, u32);

/// What the member and its heartbeat task share.
#[derive(Debug)]
struct State {
    member_id: String,
    epoch: i32,
    /// What the coordinator last said the member may own.
    assignment: BTreeSet<TopicPartition>,
    /// What the member owns (reads and commits) now.
    owned: BTreeSet<TopicPartition>,
    /// Until when the partitions are surely the member's.
    lease_until: Instant,
    /// The coordinator no longer knows the member.
    lost: bool,
    /// Bumped by every (re)join: an answer to a heartbeat sent before it is an older
    /// member's, never applied to this one.
    incarnation: u64,
}

/// What a member joins with.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Its topics.
    pub topics: BTreeSet<String>,
    /// The assignor it asks for (the group's founder's is the group's).
    pub assignor: String,
    /// Its session timeout.
    pub session: Duration,
    /// The client id the coordinator shows for it ("meridian-sdk", "meridian-mqtt").
    pub client_id: String,
    /// Its instance (a broadcast group's member's).
    pub instance: String,
    /// How long a broadcast group it founds keeps an idle instance's positions (zero: the
    /// coordinator's default).
    pub instance_idle: Duration,
}

/// How a member reaches its group's coordinator.
pub trait Coordinator: Send + Sync + 'static {
    /// Sends one heartbeat (a join, a leave) to the group's coordinator.
    fn heartbeat(
        &self,
        request: v1::ConsumerHeartbeatRequest,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<v1::ConsumerHeartbeatResponse, RegionError>> + Send + '_>,
    >;
}

impl Coordinator for RegionClient {
    fn heartbeat(
        &self,
        request: v1::ConsumerHeartbeatRequest,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<v1::ConsumerHeartbeatResponse, RegionError>> + Send + '_>,
    > {
        Box::pin(self.call(move |mut c| {
            let r = request.clone();
            async move { c.consumer_heartbeat(r).await }
        }))
    }
}

/// A member of a consumer group.
pub struct Member {
    client: Arc<dyn Coordinator>,
    group: String,
    sub: Subscription,
    state: Arc<Mutex<State>>,
    heartbeats: Option<tokio::task::JoinHandle<()>>,
}

/// What a member must do to match its assignment.
#[derive(Debug, Default)]
pub struct Changes {
    /// Stop reading these (commit them first: they are still the member's).
    pub revoked: Vec<TopicPartition>,
    /// Start reading these.
    pub added: Vec<TopicPartition>,
    /// The lease ran out or the coordinator forgot the member: everything owned is gone
    /// (another member may have it: do not commit it).
    pub lost: bool,
}

impl Member {
    /// Joins `group` as `sub` says.
    pub async fn join(
        client: Arc<dyn Coordinator>,
        group: &str,
        sub: Subscription,
    ) -> Result<Member, RegionError> {
        let state = Arc::new(Mutex::new(State {
            member_id: String::new(),
            epoch: 0,
            assignment: BTreeSet::new(),
            owned: BTreeSet::new(),
            lease_until: Instant::now(),
            lost: false,
            incarnation: 0,
        }));
        let mut member = Member {
            client,
            group: group.to_owned(),
            sub,
            state,
            heartbeats: None,
        };
        member.rejoin().await?;
        Ok(member)
    }

    /// Joins afresh, owning nothing, and (re)starts the heartbeats.
    async fn rejoin(&mut self) -> Result<(), RegionError> {
        if let Some(h) = self.heartbeats.take() {
            h.abort();
        }
        {
            let mut s = self.state.lock().expect("member lock poisoned");
            s.member_id.clear();
            s.epoch = 0;
            s.assignment.clear();
            s.owned.clear();
            s.lost = false;
            s.incarnation += 1;
            // Nothing is this member's until the join is answered (a failed join leaves
            // the lease run out, so the next poll joins again).
            s.lease_until = Instant::now();
        }
        let interval = beat(&self.client, &self.group, &self.sub, true, &self.state).await?;
        let (client, group, state, sub) = (
            self.client.clone(),
            self.group.clone(),
            self.state.clone(),
            self.sub.clone(),
        );
        self.heartbeats = Some(tokio::spawn(async move {
            let mut interval = interval;
            loop {
                tokio::time::sleep(interval).await;
                match beat(&client, &group, &sub, false, &state).await {
                    Ok(next) => interval = next,
                    Err(e) if e.code() == Some(tonic::Code::NotFound) => {
                        state.lock().expect("member lock poisoned").lost = true;
                        return;
                    }
                    // The coordinator moves or is down a while: keep trying; the lease
                    // runs out meanwhile if this lasts.
                    Err(e) => tracing::debug!(error = %e, "a heartbeat failed; retrying"),
                }
            }
        }));
        Ok(())
    }

    /// Sends a heartbeat now (after giving partitions up, so they move on at once).
    pub async fn beat_now(&self) -> Result<(), RegionError> {
        beat(&self.client, &self.group, &self.sub, false, &self.state)
            .await
            .map(|_| ())
    }

    /// Drops everything and joins again (the client moved to another region).
    pub async fn rejoin_now(&mut self) -> Result<Changes, RegionError> {
        self.rejoin().await?;
        Ok(Changes {
            lost: true,
            ..Changes::default()
        })
    }

    /// What the member must do now; with `lost`, it has already dropped everything and
    /// joined again.
    pub async fn changes(&mut self) -> Result<Changes, RegionError> {
        let lost = {
            let s = self.state.lock().expect("member lock poisoned");
            s.lost || Instant::now() >= s.lease_until
        };
        if lost {
            tracing::warn!(group = %self.group, "group membership lost (session lapsed): dropping every partition and joining again");
            self.rejoin().await?;
            return Ok(Changes {
                lost: true,
                ..Changes::default()
            });
        }
        let s = self.state.lock().expect("member lock poisoned");
        Ok(Changes {
            revoked: s.owned.difference(&s.assignment).cloned().collect(),
            added: s.assignment.difference(&s.owned).cloned().collect(),
            lost: false,
        })
    }

    /// Records that the member owns `tp` now (`true`) or no longer (`false`).
    pub fn own(&self, tp: &TopicPartition, owns: bool) {
        let mut s = self.state.lock().expect("member lock poisoned");
        if owns {
            s.owned.insert(tp.clone());
        } else {
            s.owned.remove(tp);
        }
    }

    /// Whether the lease still holds (so reading and committing are the member's).
    pub fn holds_lease(&self) -> bool {
        let s = self.state.lock().expect("member lock poisoned");
        !s.lost && Instant::now() < s.lease_until
    }

    /// The member's id and epoch, for its commits.
    pub fn id(&self) -> (String, i32) {
        let s = self.state.lock().expect("member lock poisoned");
        (s.member_id.clone(), s.epoch)
    }

    /// Leaves the group: its partitions move on at once.
    pub async fn leave(mut self) -> Result<(), RegionError> {
        if let Some(h) = self.heartbeats.take() {
            h.abort();
        }
        let (member_id, _) = self.id();
        let r = v1::ConsumerHeartbeatRequest {
            group: self.group.clone(),
            member_id,
            member_epoch: -1,
            ..Default::default()
        };
        self.client.heartbeat(r).await?;
        Ok(())
    }
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("group", &self.group)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeats.take() {
            h.abort();
        }
    }
}

/// One heartbeat (`join`: the first, with everything a join says): records the answer
/// and the lease it gives; the interval until the next.
async fn beat(
    client: &Arc<dyn Coordinator>,
    group: &str,
    sub: &Subscription,
    join: bool,
    state: &Mutex<State>,
) -> Result<Duration, RegionError> {
    let session = sub.session;
    let (r, incarnation) = {
        let s = state.lock().expect("member lock poisoned");
        let r = v1::ConsumerHeartbeatRequest {
            group: group.to_owned(),
            member_id: s.member_id.clone(),
            member_epoch: s.epoch,
            client_id: sub.client_id.clone(),
            topics: if join {
                sub.topics.iter().cloned().collect()
            } else {
                Vec::new()
            },
            owned: v1::TopicPartitions::group(&s.owned),
            assignor: if join {
                sub.assignor.clone()
            } else {
                String::new()
            },
            session_timeout_ms: session.as_millis().min(u128::from(u32::MAX)) as u32,
            instance_id: sub.instance.clone(),
            instance_idle_ms: sub.instance_idle.as_millis().min(u128::from(u64::MAX)) as u64,
        };
        (r, s.incarnation)
    };
    let sent = Instant::now();
    let answer = client.heartbeat(r).await?;
    let mut s = state.lock().expect("member lock poisoned");
    // An answer to an older member (this one rejoined meanwhile) is not this one's.
    if s.incarnation != incarnation || (!s.member_id.is_empty() && s.member_id != answer.member_id)
    {
        return Ok(Duration::from_millis(
            answer.heartbeat_interval_ms.max(100).into(),
        ));
    }
    s.member_id = answer.member_id;
    s.epoch = answer.member_epoch;
    s.assignment = v1::TopicPartitions::pairs(answer.assignment).collect();
    s.lease_until = sent + session;
    Ok(Duration::from_millis(
        answer.heartbeat_interval_ms.clamp(100, 10_000).into(),
    ))
}
