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

use crate::Record;
use crate::retry::{self, RetryPolicy, Tracker, Verdict};
use crate::{Client, ClientError, OffsetSpec, Positions};
use meridian_region_client::membership::{Member, Subscription};

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
    /// The last this many messages of each partition as it is when reading starts (its
    /// end less this, not before its first retained message; kcat's `-o -N`).
    Last(u64),
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
    /// Retry and dead letters (needs a group): every returned message is then acked or
    /// nacked, nacked ones retried on the policy's backoff and dead-lettered after its
    /// attempts (`crate::retry`); `None`: a commit covers everything returned.
    pub retry: Option<RetryPolicy>,
    /// Whether what it returned counts as read for the group when a partition leaves it
    /// (a rebalance, a lost membership): committed then, as Kafka's auto-commit does, so
    /// the partition's next member starts after it. Off, the next member starts at the
    /// group's last commit: an application that hands messages on (and commits what was
    /// finished itself, [`crate::Client::commit_offset`]) has them read again rather than
    /// skipped when it could not finish them.
    pub commit_on_rebalance: bool,
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
            retry: None,
            commit_on_rebalance: true,
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

impl ConsumedMessage {
    /// Which delivery this is to its group (1 for the first; more once retried).
    pub fn attempt(&self) -> u32 {
        retry::attempt_of(self)
    }

    /// The topic it was first consumed from (a retried copy comes from the group's retry
    /// topic).
    pub fn first_topic(&self) -> &str {
        self.headers
            .iter()
            .find(|(k, _)| k == retry::ORIGIN_TOPIC)
            .and_then(|(_, v)| std::str::from_utf8(v.as_ref()?).ok())
            .unwrap_or(&self.topic)
    }
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
    /// With a retry policy: what is out and held.
    tracker: Option<Tracker>,
    /// Where dead letters are sent (with a retry policy).
    dead_letters: Option<crate::Producer>,
}

impl Consumer {
    pub(crate) fn new(client: Client, config: ConsumerConfig) -> Consumer {
        let moves = client.moves();
        let tracker = config.retry.clone().map(Tracker::new);
        let dead_letters = tracker
            .as_ref()
            .map(|_| client.producer(crate::ProducerConfig::default()));
        Consumer {
            client,
            config,
            positions: BTreeMap::new(),
            moves,
            member: None,
            topics: BTreeSet::new(),
            forgotten: BTreeMap::new(),
            tracker,
            dead_letters,
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
        if self.tracker.is_some() && self.topics.is_empty() {
            // A retrying member also reads its group's retry topic; both it and the
            // dead-letter topic are made on first use.
            for t in [retry::retry_topic(&group), retry::dead_letter_topic(&group)] {
                if self.client.describe_topic(&t).await.is_ok() {
                    continue;
                }
                match self.client.create_topic(&t, 1).await {
                    Ok(_) => {}
                    Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {}
                    Err(e) => return Err(e),
                }
            }
            self.topics.insert(retry::retry_topic(&group));
        }
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
            client_id: "meridian-sdk".to_owned(),
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
        self.member =
            Some(Member::join(std::sync::Arc::new(self.client.clone()), &group, sub).await?);
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
        for (tp, mut place) in std::mem::take(&mut self.positions) {
            if let Some(t) = self.tracker.as_mut() {
                // Messages not finished stay the group's to read again: nothing of this
                // partition counts as read.
                if t.unfinished(&tp).is_some() {
                    place.seen.clear();
                }
                t.forget(&tp);
            }
            // What it read stays the group's (a commit past both the group's and what it
            // read, never behind either), so whichever member gets the partition skips
            // it. One that fails leaves those messages to be read again, never lost.
            if self.config.commit_on_rebalance
                && !place.seen.is_empty()
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
                if let Some((offset, seen)) = self
                    .commit_point(tp)
                    .filter(|_| self.config.commit_on_rebalance)
                {
                    let (id, epoch) = member.id();
                    match self
                        .client
                        .commit_member(
                            self.config.group.as_deref().unwrap_or_default(),
                            (&id, epoch),
                            &tp.0,
                            tp.1,
                            offset,
                            &seen,
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
                if let Some(t) = self.tracker.as_mut() {
                    t.forget(tp);
                }
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
        if self.tracker.is_some() {
            if self.config.group.is_none() {
                return Err(ClientError::Usage(
                    "retry and dead letters need a consumer group (ConsumerConfig::group)".into(),
                ));
            }
            let ordered = self.client.describe_topic(topic).await?.strict_order;
            if let Some(t) = self.tracker.as_mut() {
                for &p in partitions {
                    t.forget(&(topic.to_owned(), p));
                    if ordered {
                        t.set_ordered((topic.to_owned(), p));
                    }
                }
            }
        }
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
        if self.tracker.is_none() {
            return self.fetch_up_to(max_wait, max).await;
        }
        // With a retry policy: what timed out is nacked; what waits here and is due comes
        // first, and the fetch waits no longer than the next such is due.
        self.nack_timed_out().await?;
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let now = now_ms();
            let ready = self.tracker.as_ref().is_some_and(|t| t.has_ready(now));
            let wait = if ready {
                Duration::ZERO
            } else {
                deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .min(Duration::from_millis(100))
            };
            let fetched = self.fetch_up_to(wait, max).await?;
            let tracker = self.tracker.as_mut().expect("checked above");
            let got = tracker.deliver(fetched, now_ms());
            if !got.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(got);
            }
        }
    }

    async fn fetch_up_to(
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
        for tp in self.positions.keys() {
            let Some((offset, seen)) = self.commit_point(tp) else {
                continue;
            };
            let (topic, p) = tp;
            match member {
                Some(m) => {
                    let (id, epoch) = m.id();
                    self.client
                        .commit_member(group, (&id, epoch), topic, *p, offset, &seen)
                        .await?
                }
                None => {
                    let owner = self.offsets_owner().unwrap_or_else(|| group.to_owned());
                    self.client
                        .commit_positions(&owner, topic, *p, offset, &seen)
                        .await?
                }
            }
        }
        Ok(())
    }

    /// Where the group's commit of `tp` goes: the next offset to read, or with a retry
    /// policy the first message not finished (then without origin positions: what was
    /// seen above it is not all read).
    fn commit_point(&self, tp: &(String, u32)) -> Option<(u64, Positions)> {
        let place = self.positions.get(tp)?;
        match self.tracker.as_ref().and_then(|t| t.unfinished(tp)) {
            Some(first) if first < place.offset => Some((first, Positions::new())),
            _ => Some((place.offset, place.seen.clone())),
        }
    }

    /// The message was processed (with a retry policy; without one, nothing to do).
    pub fn ack(&mut self, m: &ConsumedMessage) {
        if let Some(t) = self.tracker.as_mut() {
            t.ack(m);
        }
    }

    /// The message failed, for `reason`: it is retried after the policy's backoff, or
    /// once its attempts are spent, moved to the group's dead-letter topic (`GROUP.dlq`)
    /// with headers saying why, how often and from where (`crate::retry`). On a strictly
    /// ordered topic it is retried in this consumer and later messages of its key wait.
    pub async fn nack(&mut self, m: &ConsumedMessage, reason: &str) -> Result<(), ClientError> {
        let (Some(group), Some(tracker)) = (self.config.group.clone(), self.tracker.as_mut())
        else {
            return Err(ClientError::Usage(
                "nack needs a consumer group and a retry policy (ConsumerConfig::retry)".into(),
            ));
        };
        let record = |topic: String, headers| Record {
            topic,
            partition: None,
            key: m.key.clone(),
            value: m.value.clone(),
            headers,
            timestamp_ms: m.timestamp_ms,
        };
        match tracker.nack(m, now_ms()) {
            Verdict::RetryHere { .. } => {}
            Verdict::RetryLater {
                attempt,
                deliver_at_ms,
            } => {
                let headers =
                    retry::copy_headers(m, reason, &[(retry::ATTEMPT, attempt.to_string())]);
                self.client
                    .send_delayed(record(retry::retry_topic(&group), headers), deliver_at_ms)
                    .await?;
                tracker.handed_off(m);
            }
            Verdict::DeadLetter { attempts } => {
                let headers = retry::copy_headers(
                    m,
                    reason,
                    &[
                        (retry::ATTEMPTS, attempts.to_string()),
                        (retry::GROUP, group.clone()),
                    ],
                );
                let producer = self.dead_letters.as_ref().expect("made with the tracker");
                producer
                    .send(record(retry::dead_letter_topic(&group), headers))
                    .await
                    .await?;
                tracing::warn!(group = %group, topic = %m.topic, partition = m.partition, offset = m.offset, attempts, reason, "a message was dead-lettered");
                tracker.handed_off(m);
            }
        }
        Ok(())
    }

    /// Nacks what was out past the policy's ack timeout.
    async fn nack_timed_out(&mut self) -> Result<(), ClientError> {
        let Some(t) = self.tracker.as_ref() else {
            return Ok(());
        };
        let Some(limit) = t.policy().ack_timeout else {
            return Ok(());
        };
        for m in t.timed_out(now_ms()) {
            self.nack(&m, &format!("processing timed out after {limit:?}"))
                .await?;
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
            StartFrom::Last(n) => {
                let (earliest, _) = self
                    .client
                    .list_offset(topic, partition, OffsetSpec::Earliest)
                    .await?;
                let (latest, _) = self
                    .client
                    .list_offset(topic, partition, OffsetSpec::Latest)
                    .await?;
                latest.saturating_sub(n).max(earliest)
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
            if self
                .tracker
                .as_ref()
                .is_some_and(|t| t.paused(&(topic.clone(), *partition)))
            {
                continue;
            }
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
        if set.is_empty() {
            // Every partition is paused (a retry policy's held bound): nothing to fetch;
            // wait as a long poll would.
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
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
            for mut m in messages {
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
                let message = m.take_message();
                out.push(ConsumedMessage {
                    topic: topic.clone(),
                    partition,
                    offset: m.offset,
                    key: message.key,
                    value: message.value,
                    headers: message.headers,
                    timestamp_ms: message.timestamp_ms,
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

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
