//! The consumer: partitions are assigned explicitly, or by subscribing to topics; `poll`
//! fetches from every assigned partition, long-polling when none has data; `commit` stores
//! the positions for the consumer group through the broker's journal.
//!
//! A consumer with a group that subscribes is a member of the group ([`crate::membership`]):
//! the group's coordinator spreads the topics' partitions over its members, and each
//! `poll` first follows the coordinator's assignment: a partition taken away is committed
//! (everything returned by earlier polls counts as processed) and given up, a new one
//! starts at the group's committed offset. Its commits are refused once the partition is
//! another member's.
//!
//! Besides each partition's offset, the consumer keeps what it has seen of each origin
//! region (the highest origin position per region) and commits it with the offset. Offsets
//! are a region's own; origin positions mean the same in every region. So a consumer whose
//! client moves to another region (its region failed), or a group that resumes in another
//! region, starts at the first offset there holding a message it has not seen, and skips
//! the ones it has: no loss, no duplicate.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use meridian_proto::v1;
use tokio::task::JoinSet;

use crate::membership::{Member, Subscription};
use crate::{Client, ClientError, OffsetSpec, Positions};

/// Where a partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The first retained message.
    Beginning,
    /// Only messages produced from now on.
    End,
    /// This offset.
    Offset(u64),
    /// The first message appended at or after this time (ms since the epoch).
    Time(i64),
}

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Consumer group; without one, nothing is committed or resumed.
    pub group: Option<String>,
    /// Where partitions without a committed offset start.
    pub start: StartFrom,
    /// Bytes per partition per fetch, about.
    pub fetch_bytes_max: u32,
    /// A member's session: how long the coordinator keeps its partitions without a
    /// heartbeat (1 s to 5 min).
    pub session_timeout: Duration,
    /// How the group spreads partitions when this member founds it: range, round-robin,
    /// sticky, or broadcast (every member reads every partition, each from its own
    /// position, kept under its `instance`).
    pub assignor: String,
    /// A broadcast group's member's instance: a name it keeps across restarts, under
    /// which the group keeps its positions (needed with the broadcast assignor).
    pub instance: Option<String>,
    /// How long a broadcast group this member founds keeps an idle instance's positions
    /// (zero: the coordinator's default, a day).
    pub instance_idle: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group: None,
            start: StartFrom::End,
            fetch_bytes_max: 1 << 20,
            session_timeout: Duration::from_secs(10),
            assignor: "sticky".to_owned(),
            instance: None,
            instance_idle: Duration::ZERO,
        }
    }
}

/// One consumed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedMessage {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: u64,
    /// Key.
    pub key: Option<Bytes>,
    /// Payload; `None` when it is null (a tombstone), which is not the same as empty.
    pub value: Option<Bytes>,
    /// Headers, in the order they were produced; a name may repeat and a value may be
    /// null (`None`).
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Producer timestamp.
    pub timestamp_ms: i64,
    /// Broker append time.
    pub append_time_ms: i64,
    /// The region that first wrote it.
    pub origin_region: String,
    /// Its position there (`meridian_proto::origin::position`).
    pub origin_position: u64,
}

/// An assigned partition's place.
#[derive(Debug, Clone, Default)]
struct Place {
    /// Next offset to read in the client's region.
    offset: u64,
    /// What has been seen of each origin region.
    seen: Positions,
}

/// A consumer of assigned partitions.
#[derive(Debug)]
pub struct Consumer {
    client: Client,
    config: ConsumerConfig,
    /// Where each assigned partition stands.
    positions: BTreeMap<(String, u32), Place>,
    /// The client's region moves when the offsets were last valid.
    moves: u64,
    /// Its membership of the group, once it subscribed with one.
    member: Option<Member>,
    /// The topics it subscribes to.
    topics: BTreeSet<String>,
    /// What it had seen of partitions it dropped when its membership was lost (its lease
    /// ran out, or its client moved region): if the group gives one back, it resumes past
    /// both the group's commit and what it read itself.
    forgotten: BTreeMap<(String, u32), Positions>,
}

impl Consumer {
    pub(crate) fn new(client: Client, config: ConsumerConfig) -> Consumer {
        let moves = client.moves();
        Consumer {
            client,
            config,
            positions: BTreeMap::new(),
            moves,
            member: None,
            topics: BTreeSet::new(),
            forgotten: BTreeMap::new(),
        }
    }

    /// Subscribes to `topic`: with a group, joins it (the group's coordinator assigns this
    /// member its share of the partitions, from the next `poll` on); without one, assigns
    /// every partition.
    pub async fn subscribe(&mut self, topic: &str) -> Result<(), ClientError> {
        let Some(group) = self.config.group.clone() else {
            let info = self.client.describe_topic(topic).await?;
            let partitions: Vec<u32> = info.partitions.iter().map(|p| p.partition).collect();
            return self.assign(topic, &partitions).await;
        };
        if !self.topics.insert(topic.to_owned()) {
            return Ok(());
        }
        // A new set of topics: join again with all of them, after committing and leaving.
        if let Some(member) = self.member.as_ref() {
            if let Err(e) = self.commit_as(Some(member)).await {
                self.topics.remove(topic);
                return Err(e);
            }
            self.positions.clear();
            if let Some(member) = self.member.take() {
                member.leave().await?;
            }
        }
        let sub = Subscription {
            topics: self.topics.clone(),
            assignor: self.config.assignor.clone(),
            session: self.config.session_timeout,
            instance: self.config.instance.clone().unwrap_or_default(),
            instance_idle: self.config.instance_idle,
        };
        if self.broadcast() && sub.instance.is_empty() {
            self.topics.remove(topic);
            return Err(ClientError::Usage(format!(
                "a member of broadcast group {group:?} names its instance (ConsumerConfig::instance), a name it keeps across restarts"
            )));
        }
        self.member = Some(Member::join(self.client.clone(), &group, sub).await?);
        Ok(())
    }

    /// Whether it reads as a member of a broadcast group.
    fn broadcast(&self) -> bool {
        self.config.assignor == "broadcast"
    }

    /// The name its positions are committed under: the group's, or a broadcast member's
    /// instance's own (`None`: no group).
    fn offsets_owner(&self) -> Option<String> {
        let group = self.config.group.as_deref()?;
        Some(match self.config.instance.as_deref() {
            Some(instance) if self.broadcast() => {
                meridian_proto::names::instance_offsets(group, instance)
            }
            _ => group.to_owned(),
        })
    }

    /// Commits, then leaves the group (its partitions move to the other members at once).
    pub async fn close(mut self) -> Result<(), ClientError> {
        if let Some(member) = self.member.take() {
            if member.holds_lease() {
                self.commit_as(Some(&member)).await?;
            }
            member.leave().await?;
        }
        Ok(())
    }

    /// Follows the group's assignment: commits and drops partitions taken away, starts
    /// new ones at their committed offsets; drops everything when membership was lost.
    async fn follow_assignment(&mut self) -> Result<(), ClientError> {
        let Some(mut member) = self.member.take() else {
            return Ok(());
        };
        let result = self.follow(&mut member).await;
        self.member = Some(member);
        result
    }

    /// Drops every partition after membership was lost (or the client moved region),
    /// keeping what was read of each by origin positions: committed for the group where
    /// it can be, remembered in case the group gives the partition back.
    async fn set_aside(&mut self) {
        let group = self.offsets_owner().unwrap_or_default();
        for (tp, place) in std::mem::take(&mut self.positions) {
            // What it read stays the group's (a commit past both the group's and what it
            // read, never behind either), so whichever member gets the partition skips
            // it. One that fails leaves those messages to be read again, never lost.
            if !place.seen.is_empty()
                && let Err(e) = self
                    .client
                    .commit_seen(&group, &tp.0, tp.1, &place.seen)
                    .await
            {
                tracing::warn!(group = %group, topic = %tp.0, partition = tp.1, error = %e, "what this consumer read could not be committed for its group; another member may read it again");
            }
            let kept = self.forgotten.entry(tp).or_default();
            merge(kept, &place.seen);
        }
    }

    async fn follow(&mut self, member: &mut Member) -> Result<(), ClientError> {
        // The client moved to another region: the group there has its own coordinator,
        // which does not know this member. Join it at once (offsets are per region; what
        // was read is kept by origin positions, below).
        let moves = self.client.moves();
        let changes = if moves != self.moves {
            // Its positions are the old region's offsets: set aside (by origin positions)
            // before anything else, so a failed join cannot leave them in use here.
            self.moves = moves;
            self.set_aside().await;
            member.rejoin_now().await?
        } else {
            member.changes().await?
        };
        if changes.lost {
            self.set_aside().await;
            return Ok(());
        }
        if !changes.revoked.is_empty() {
            for tp in &changes.revoked {
                if let Some(place) = self.positions.get(tp) {
                    let (id, epoch) = member.id();
                    match self
                        .client
                        .commit_member(
                            self.config.group.as_deref().unwrap_or_default(),
                            (&id, epoch),
                            &tp.0,
                            tp.1,
                            place.offset,
                            &place.seen,
                        )
                        .await
                    {
                        Ok(()) => {}
                        // Already another's, or this member is gone: give it up anyway
                        // (its successor resumes at the group's last commit).
                        Err(e)
                            if matches!(
                                e.code(),
                                Some(tonic::Code::PermissionDenied | tonic::Code::NotFound)
                            ) =>
                        {
                            tracing::warn!(topic = %tp.0, partition = tp.1, error = %e, "a partition given up could not be committed; another member may read some of it again");
                        }
                        Err(e) => return Err(e),
                    }
                }
                self.positions.remove(tp);
                member.own(tp, false);
            }
            // Say so now: the partitions go on to their new members at once.
            member.beat_now().await?;
        }
        for tp in changes.added {
            self.assign(&tp.0, &[tp.1]).await?;
            member.own(&tp, true);
        }
        Ok(())
    }

    /// Assigns the given partitions of `topic`, each starting at the group's committed
    /// offset or, without one, at the configured start.
    pub async fn assign(&mut self, topic: &str, partitions: &[u32]) -> Result<(), ClientError> {
        for &p in partitions {
            let (committed, seen) = match self.offsets_owner() {
                Some(g) => self.client.committed(&g, topic, p).await?,
                None => (None, Positions::new()),
            };
            let mut offset = match committed {
                Some(o) => o,
                None => self.resolve(topic, p, self.config.start).await?,
            };
            let mut seen = seen;
            if let Some(own) = self.forgotten.remove(&(topic.to_owned(), p))
                && !own.is_empty()
            {
                // Past what the group committed and what this consumer read itself.
                merge(&mut seen, &own);
                offset = offset.max(self.client.offset_for_positions(topic, p, &seen).await?);
            }
            self.positions
                .insert((topic.to_owned(), p), Place { offset, seen });
        }
        Ok(())
    }

    /// The assigned partitions and their next offsets.
    pub fn positions(&self) -> impl Iterator<Item = (&str, u32, u64)> {
        self.positions
            .iter()
            .map(|((t, p), place)| (t.as_str(), *p, place.offset))
    }

    /// What has been seen of each origin region in an assigned partition.
    pub fn origin_positions(&self, topic: &str, partition: u32) -> Option<&Positions> {
        self.positions
            .get(&(topic.to_owned(), partition))
            .map(|place| &place.seen)
    }

    /// Moves an assigned partition to `offset`.
    pub fn seek(&mut self, topic: &str, partition: u32, offset: u64) -> Result<(), ClientError> {
        let position = self
            .positions
            .get_mut(&(topic.to_owned(), partition))
            .ok_or_else(|| {
                ClientError::Usage(format!(
                    "partition {topic}/{partition} is not assigned to this consumer"
                ))
            })?;
        // A seek is a new start: what was seen no longer says what to skip.
        *position = Place {
            offset,
            seen: Positions::new(),
        };
        Ok(())
    }

    /// Moves every assigned partition to where `start` says (beginning, end, a time).
    pub async fn seek_all(&mut self, start: StartFrom) -> Result<(), ClientError> {
        let keys: Vec<_> = self.positions.keys().cloned().collect();
        for (topic, p) in keys {
            let offset = self.resolve(&topic, p, start).await?;
            self.positions.insert(
                (topic, p),
                Place {
                    offset,
                    seen: Positions::new(),
                },
            );
        }
        Ok(())
    }

    /// After the client moved to another region: each partition resumes at the first
    /// offset there holding a message it has not seen (offsets are per region; origin
    /// positions are not). A partition with nothing seen starts as configured.
    async fn reposition(&mut self) -> Result<(), ClientError> {
        let moves = self.client.moves();
        let keys: Vec<_> = self.positions.keys().cloned().collect();
        for (topic, p) in keys {
            let seen = self.positions[&(topic.clone(), p)].seen.clone();
            let offset = if seen.is_empty() {
                self.resolve(&topic, p, self.config.start).await?
            } else {
                self.client.offset_for_positions(&topic, p, &seen).await?
            };
            self.positions
                .get_mut(&(topic, p))
                .expect("listed above")
                .offset = offset;
        }
        self.moves = moves;
        Ok(())
    }

    /// Fetches what is available from every assigned partition; when nothing is, waits up
    /// to `max_wait` for the first message to arrive anywhere.
    pub async fn poll(&mut self, max_wait: Duration) -> Result<Vec<ConsumedMessage>, ClientError> {
        self.poll_up_to(max_wait, usize::MAX).await
    }

    /// [`Consumer::poll`], returning at most `max` messages: the positions move only past
    /// those returned, so a commit after it covers exactly them.
    pub async fn poll_up_to(
        &mut self,
        max_wait: Duration,
        max: usize,
    ) -> Result<Vec<ConsumedMessage>, ClientError> {
        if self.member.is_none() {
            if self.positions.is_empty() {
                return Err(ClientError::Usage(
                    "poll on a consumer with no assigned partitions: subscribe or assign first"
                        .into(),
                ));
            }
            if self.client.moves() != self.moves {
                self.reposition().await?;
            }
            let first = self.fetch_all(Duration::ZERO, max).await?;
            if !first.is_empty() || max_wait.is_zero() {
                return Ok(first);
            }
            return self.fetch_all(max_wait, max).await;
        }
        // A member: follows the group's assignment at least every half second while it
        // waits (its partitions may change meanwhile).
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            self.follow_assignment().await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.positions.is_empty() {
                // Nothing assigned yet (or any more): wait for the group.
                if left.is_zero() {
                    return Ok(Vec::new());
                }
                tokio::time::sleep(left.min(Duration::from_millis(100))).await;
                continue;
            }
            // Whatever every partition has now; only when none has anything, a long poll
            // (which answers with the first partition to get some).
            let got = self.fetch_all(Duration::ZERO, max).await?;
            if !got.is_empty() || left.is_zero() {
                return Ok(got);
            }
            let got = self
                .fetch_all(left.min(Duration::from_millis(500)), max)
                .await?;
            if !got.is_empty() {
                return Ok(got);
            }
        }
    }

    /// Commits the current positions of every assigned partition for the group (a member
    /// as one: refused for a partition that is another member's now).
    pub async fn commit(&self) -> Result<(), ClientError> {
        self.commit_as(self.member.as_ref()).await
    }

    async fn commit_as(&self, member: Option<&Member>) -> Result<(), ClientError> {
        let group = self
            .config
            .group
            .as_deref()
            .ok_or_else(|| ClientError::Usage("commit needs a consumer group".into()))?;
        if member.is_some_and(|m| !m.holds_lease()) {
            return Err(ClientError::Usage(format!(
                "not committed: this consumer's membership of group {group:?} lapsed (its partitions may be another member's); the next poll joins again"
            )));
        }
        for ((topic, p), place) in &self.positions {
            match member {
                Some(m) => {
                    let (id, epoch) = m.id();
                    self.client
                        .commit_member(group, (&id, epoch), topic, *p, place.offset, &place.seen)
                        .await?
                }
                None => {
                    let owner = self.offsets_owner().unwrap_or_else(|| group.to_owned());
                    self.client
                        .commit_positions(&owner, topic, *p, place.offset, &place.seen)
                        .await?
                }
            }
        }
        Ok(())
    }

    async fn resolve(
        &self,
        topic: &str,
        partition: u32,
        start: StartFrom,
    ) -> Result<u64, ClientError> {
        Ok(match start {
            StartFrom::Beginning => {
                self.client
                    .list_offset(topic, partition, OffsetSpec::Earliest)
                    .await?
                    .0
            }
            StartFrom::End => {
                self.client
                    .list_offset(topic, partition, OffsetSpec::Latest)
                    .await?
                    .0
            }
            StartFrom::Offset(o) => o,
            StartFrom::Time(t) => {
                self.client
                    .list_offset(topic, partition, OffsetSpec::Time(t))
                    .await?
                    .0
            }
        })
    }

    /// Fetches every partition at once; with a wait, returns as soon as one has data.
    async fn fetch_all(
        &mut self,
        wait: Duration,
        max: usize,
    ) -> Result<Vec<ConsumedMessage>, ClientError> {
        let mut set = JoinSet::new();
        for ((topic, partition), place) in &self.positions {
            let offset = place.offset;
            let client = self.client.clone();
            let request = v1::FetchRequest {
                topic: topic.clone(),
                partition: *partition,
                offset,
                max_bytes: self.config.fetch_bytes_max,
                max_wait_ms: wait.as_millis().min(u128::from(u32::MAX)) as u32,
            };
            set.spawn(async move {
                (
                    request.topic.clone(),
                    request.partition,
                    client
                        .call(|mut c| {
                            let r = request.clone();
                            async move { c.fetch(r).await }
                        })
                        .await,
                )
            });
        }
        let mut fetched = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (topic, partition, result) =
                joined.map_err(|e| ClientError::Usage(format!("fetch task failed: {e}")))?;
            let messages = result?.messages;
            let any = !messages.is_empty();
            fetched.push((topic, partition, messages));
            if !wait.is_zero() && any {
                set.abort_all();
                break;
            }
        }
        if self.client.moves() != self.moves {
            // The client moved to another region since its positions were last made
            // valid (a move during the fetch, or during the calls that placed them): its
            // answers may be at the old region's offsets. Drop them; the next poll
            // repositions (a member joins the group there).
            return Ok(Vec::new());
        }
        if self.member.as_ref().is_some_and(|m| !m.holds_lease()) {
            // The lease ran out while fetching: these partitions may be another's now.
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        'partitions: for (topic, partition, messages) in fetched {
            let place = self
                .positions
                .get_mut(&(topic.clone(), partition))
                .expect("fetched partitions are assigned");
            for m in messages {
                if out.len() >= max {
                    break 'partitions;
                }
                place.offset = m.offset + 1;
                if !m.origin_region.is_empty() {
                    if place
                        .seen
                        .get(&m.origin_region)
                        .is_some_and(|&seen| seen >= m.origin_position)
                    {
                        // Seen in another region before the move.
                        continue;
                    }
                    place
                        .seen
                        .insert(m.origin_region.clone(), m.origin_position);
                }
                out.push(ConsumedMessage {
                    topic: topic.clone(),
                    partition,
                    offset: m.offset,
                    key: m.key,
                    value: (!m.value_null).then_some(m.value),
                    headers: m
                        .headers
                        .into_iter()
                        .map(|h| (h.key, (!h.value_null).then_some(h.value)))
                        .collect(),
                    timestamp_ms: m.timestamp_ms,
                    append_time_ms: m.append_time_ms,
                    origin_region: m.origin_region,
                    origin_position: m.origin_position,
                });
            }
        }
        Ok(out)
    }
}

/// Raises each origin's position in `into` to `from`'s where higher.
fn merge(into: &mut Positions, from: &Positions) {
    for (region, &p) in from {
        let e = into.entry(region.clone()).or_default();
        *e = (*e).max(p);
    }
}
