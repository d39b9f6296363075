//! Reading partitions wherever their leaders are, for what a broker serves its region's
//! clients of other protocols (an MQTT session's feeds, the MQTT listener's state topics):
//! each partition is fetched at its leader, through this broker's core when it leads it
//! and through the region client when another broker does, with the core's
//! `…_anywhere` calls for offsets and commits beside it.
//!
//! A [`RegionReader`] keeps, per partition, the next offset and what it has seen of each
//! origin region (a start from a commit made in another region skips what that commit
//! covers, as the SDK's consumer does). A poll long-polls every partition at once and
//! answers with the first that has messages. A position retention deleted moves on to the
//! partition's earliest offset (logged: those messages are gone).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use meridian_proto::v1;
use meridian_region_client::RegionError;
use tokio::task::JoinSet;

use super::{Broker, BrokerError, Committed, FetchedMessage, OffsetQuery};

/// A fetch's reply size at most.
const FETCH_BYTES_MAX: usize = 1 << 20;
/// How much longer than its long poll a fetch at another broker may take.
const ATTEMPT_SLACK: Duration = Duration::from_secs(10);

/// Why a partition could not be read.
#[derive(Debug)]
pub enum ReadFailure {
    /// The offset is outside the partition (retention deleted it).
    OutOfRange,
    /// Anything else, with why.
    Failed(String),
}

impl std::fmt::Display for ReadFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFailure::OutOfRange => f.write_str("the offset is outside the partition"),
            ReadFailure::Failed(why) => f.write_str(why),
        }
    }
}

/// Where a partition's reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Its earliest offset.
    Beginning,
    /// Its end (what is written from now on).
    End,
}

/// One message read, with its partition.
#[derive(Debug, Clone)]
pub struct Read {
    /// Its partition.
    pub partition: u32,
    /// It, with its offset and origin.
    pub fetched: FetchedMessage,
}

/// A partition's place: the next offset, and the highest position seen of each origin.
#[derive(Debug, Clone, Default)]
struct Place {
    offset: u64,
    seen: HashMap<String, u64>,
}

/// A reader of some partitions of one topic (see the module's text).
pub struct RegionReader {
    broker: std::sync::Arc<Broker>,
    topic: String,
    places: BTreeMap<u32, Place>,
}

impl RegionReader {
    /// A reader of `topic` reading no partition yet.
    pub fn new(broker: std::sync::Arc<Broker>, topic: &str) -> RegionReader {
        RegionReader {
            broker,
            topic: topic.to_owned(),
            places: BTreeMap::new(),
        }
    }

    /// Reads `partition` from `start`.
    pub async fn start(&mut self, partition: u32, start: Start) -> Result<u64, String> {
        let offset = self.offset_of(partition, start).await?;
        self.places.insert(
            partition,
            Place {
                offset,
                seen: HashMap::new(),
            },
        );
        Ok(offset)
    }

    /// Reads `partition` from where consumer group `group` committed (skipping what its
    /// commit says it has seen of each origin), or from `otherwise` when it has not.
    pub async fn start_committed(
        &mut self,
        partition: u32,
        group: &str,
        otherwise: Start,
    ) -> Result<u64, String> {
        let committed = self
            .broker
            .committed_anywhere(group, &self.topic, partition)
            .await?;
        let offset = match committed.offset {
            Some(o) => o,
            None => self.offset_of(partition, otherwise).await?,
        };
        self.places.insert(
            partition,
            Place {
                offset,
                seen: committed.positions.into_iter().collect(),
            },
        );
        Ok(offset)
    }

    /// Stops reading `partition`.
    pub fn stop(&mut self, partition: u32) {
        self.places.remove(&partition);
    }

    /// The partitions read and their next offsets.
    pub fn positions(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.places.iter().map(|(p, place)| (*p, place.offset))
    }

    async fn offset_of(&self, partition: u32, start: Start) -> Result<u64, String> {
        self.broker
            .list_offset_anywhere(&self.topic, partition, start)
            .await
    }

    /// Up to `max` messages from the partitions read: the first partitions to answer with
    /// some, each long-polled for up to `max_wait`; none when nothing came in that time.
    pub async fn poll(&mut self, max_wait: Duration, max: usize) -> Result<Vec<Read>, String> {
        if self.places.is_empty() {
            tokio::time::sleep(max_wait).await;
            return Ok(Vec::new());
        }
        let mut fetches = JoinSet::new();
        for (&partition, place) in &self.places {
            let (broker, topic, offset) = (self.broker.clone(), self.topic.clone(), place.offset);
            fetches.spawn(async move {
                let fetched = broker
                    .fetch_anywhere(&topic, partition, offset, max_wait)
                    .await;
                (partition, offset, fetched)
            });
        }
        let mut answers = Vec::new();
        let mut failure = None;
        while let Some(joined) = fetches.join_next().await {
            let Ok((partition, offset, fetched)) = joined else {
                continue;
            };
            match fetched {
                Ok(messages) if messages.is_empty() => {}
                Ok(messages) => {
                    answers.push((partition, messages));
                    fetches.abort_all();
                }
                Err(ReadFailure::OutOfRange) => {
                    let earliest = self.offset_of(partition, Start::Beginning).await?;
                    if earliest > offset {
                        tracing::warn!(topic = %self.topic, partition, offset, earliest, "messages were deleted (retention) before they were read; reading on from the earliest");
                        if let Some(p) = self.places.get_mut(&partition) {
                            p.offset = p.offset.max(earliest);
                        }
                    }
                }
                Err(ReadFailure::Failed(why)) => failure = Some(why),
            }
        }
        if answers.is_empty()
            && let Some(why) = failure
        {
            return Err(why);
        }
        let out = take(&mut self.places, answers, max);
        Ok(out)
    }
}

/// What a poll hands on from the partitions' answers, at most `max` messages, moving each
/// partition's place past what it hands on or skips: a message before the place (a fetch
/// answers from the start of the batch holding it) is not handed on, nor one its origin
/// positions say was seen (read in another region before a commit shipped here).
fn take(
    places: &mut BTreeMap<u32, Place>,
    answers: Vec<(u32, Vec<FetchedMessage>)>,
    max: usize,
) -> Vec<Read> {
    let mut out = Vec::new();
    'partitions: for (partition, messages) in answers {
        let Some(place) = places.get_mut(&partition) else {
            continue;
        };
        for m in messages {
            if out.len() >= max {
                break 'partitions;
            }
            if m.offset < place.offset {
                continue;
            }
            place.offset = m.offset + 1;
            if place
                .seen
                .get(&m.origin_region)
                .is_some_and(|&seen| seen >= m.origin_position)
            {
                continue;
            }
            if !place.seen.is_empty() {
                place
                    .seen
                    .insert(m.origin_region.clone(), m.origin_position);
            }
            out.push(Read {
                partition,
                fetched: m,
            });
        }
    }
    out
}

impl Broker {
    /// [`Broker::fetch`] at the partition's leader, wherever it is.
    pub async fn fetch_anywhere(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_wait: Duration,
    ) -> Result<Vec<FetchedMessage>, ReadFailure> {
        match self
            .fetch(topic, partition, offset, FETCH_BYTES_MAX, max_wait)
            .await
        {
            Ok((messages, _)) => return Ok(messages),
            Err(BrokerError::NotLeader { .. }) => {}
            Err(BrokerError::OffsetOutOfRange { .. }) => return Err(ReadFailure::OutOfRange),
            Err(e) => return Err(ReadFailure::Failed(e.to_string())),
        }
        let request = v1::FetchRequest {
            topic: topic.to_owned(),
            partition,
            offset,
            max_bytes: FETCH_BYTES_MAX as u32,
            max_wait_ms: max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
        };
        let answer = self
            .at_partition_leader(topic, partition, max_wait + ATTEMPT_SLACK, |mut c| {
                let r = request.clone();
                async move { c.fetch(r).await }
            })
            .await
            .map_err(|e: RegionError| match e.code() {
                Some(tonic::Code::OutOfRange) => ReadFailure::OutOfRange,
                _ => ReadFailure::Failed(e.to_string()),
            })?;
        Ok(answer
            .messages
            .into_iter()
            .map(|mut m| FetchedMessage {
                offset: m.offset,
                message: m.take_message(),
                append_time_ms: m.append_time_ms,
                origin_region: m.origin_region,
                origin_position: m.origin_position,
            })
            .collect())
    }

    /// Where `start` is in a partition (its earliest offset or its end), at its leader,
    /// wherever it is.
    pub async fn list_offset_anywhere(
        &self,
        topic: &str,
        partition: u32,
        start: Start,
    ) -> Result<u64, String> {
        let (query, spec) = match start {
            Start::Beginning => (OffsetQuery::Earliest, v1::OffsetSpec::Earliest),
            Start::End => (OffsetQuery::Latest, v1::OffsetSpec::Latest),
        };
        match self.list_offset(topic, partition, query).await {
            Ok((offset, _)) => return Ok(offset),
            Err(BrokerError::NotLeader { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
        let request = v1::ListOffsetsRequest {
            topic: topic.to_owned(),
            partition,
            spec: spec as i32,
            timestamp_ms: 0,
        };
        self.at_partition_leader(topic, partition, ATTEMPT_SLACK, |mut c| {
            let r = request.clone();
            async move { c.list_offsets(r).await }
        })
        .await
        .map(|r| r.offset)
        .map_err(|e| e.to_string())
    }

    /// [`Broker::committed_offset`] at the partition's leader, wherever it is.
    pub async fn committed_anywhere(
        &self,
        consumer_group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Committed, String> {
        match self
            .committed_offset(consumer_group, topic, partition)
            .await
        {
            Ok(c) => return Ok(c),
            Err(BrokerError::NotLeader { .. }) => {}
            Err(e) => return Err(e.to_string()),
        }
        let region = self.region_client().await.map_err(|e| e.to_string())?;
        let (offset, positions, metadata) = region
            .committed(
                &meridian_region_client::Stay,
                consumer_group,
                topic,
                partition,
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(Committed {
            offset,
            positions: positions.into_iter().collect(),
            metadata,
        })
    }

    /// Commits `consumer_group`'s `offset` of a partition at its leader, wherever it is
    /// (the leader derives the origin positions below it).
    pub async fn commit_offset_anywhere(
        &self,
        consumer_group: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<(), String> {
        self.commit_anywhere(consumer_group, topic, partition, offset, Vec::new(), "")
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(offset: u64, origin: &str, position: u64) -> FetchedMessage {
        FetchedMessage {
            offset,
            message: meridian_proto::batch::Message {
                key: None,
                value: Some(bytes::Bytes::from(format!("m{offset}"))),
                headers: Vec::new(),
                timestamp_ms: 0,
            },
            append_time_ms: 0,
            origin_region: origin.to_owned(),
            origin_position: position,
        }
    }

    fn offsets(read: &[Read]) -> Vec<(u32, u64)> {
        read.iter()
            .map(|r| (r.partition, r.fetched.offset))
            .collect()
    }

    #[test]
    fn messages_before_the_place_or_seen_elsewhere_are_skipped_and_the_place_moves_past_them() {
        let mut places = BTreeMap::from([
            (
                0,
                Place {
                    offset: 2,
                    seen: HashMap::new(),
                },
            ),
            // Resumed from another region's commit: eu's messages up to position 20 seen.
            (
                1,
                Place {
                    offset: 0,
                    seen: HashMap::from([("eu".to_owned(), 20)]),
                },
            ),
        ]);
        let answers = vec![
            (0, (0..5).map(|o| message(o, "us", o)).collect()),
            (
                1,
                vec![
                    message(0, "eu", 10),
                    message(1, "us", 3),
                    message(2, "eu", 20),
                    message(3, "eu", 21),
                ],
            ),
        ];
        let read = take(&mut places, answers, usize::MAX);
        assert_eq!(offsets(&read), [(0, 2), (0, 3), (0, 4), (1, 1), (1, 3)]);
        assert_eq!((places[&0].offset, places[&1].offset), (5, 4));
        // What it handed on counts as seen from now on.
        assert_eq!(places[&1].seen["eu"], 21);
        assert_eq!(places[&1].seen["us"], 3);
    }

    #[test]
    fn at_most_max_are_handed_on_and_the_rest_is_read_again() {
        let mut places = BTreeMap::from([(0, Place::default()), (1, Place::default())]);
        let answers = vec![
            (0, (0..3).map(|o| message(o, "us", o)).collect()),
            (1, (0..3).map(|o| message(o, "us", o)).collect()),
        ];
        let read = take(&mut places, answers, 4);
        assert_eq!(offsets(&read), [(0, 0), (0, 1), (0, 2), (1, 0)]);
        assert_eq!((places[&0].offset, places[&1].offset), (3, 1));
        // A partition no longer read is left out.
        places.remove(&1);
        let read = take(&mut places, vec![(1, vec![message(1, "us", 1)])], 4);
        assert!(read.is_empty());
    }
}
