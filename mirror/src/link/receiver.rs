//! The receiving side: every inbound stream of a region, as one state machine.
//!
//! A stream opens with `Hello` (origin region and group, and the topic when it ships one
//! alone). The receiver refuses a version it does not speak, its own region, or a region
//! the caller's certificate does not name; otherwise it asks for the origin group's mark
//! ([`Action::ReadMark`]: the highest seq of that origin any log group here holds — of the
//! groups shared by topics for the main stream, of the topic's own groups for a topic's
//! stream) and answers `Resume` one past it (0 when nothing is held: from the first record
//! the origin retains). From then on
//! each `Records` frame's batches are appended in order, a run of consecutive ones at a
//! time ([`Action::Append`], then [`Receiver::done`]), each `Commits` frame's commits merged
//! likewise, and the frame acknowledged once all of it is held.
//!
//! Why nothing is lost or stored twice: appends are idempotent on the origin seq (a target
//! log group writes a batch only if its seq is above its mark for that origin), and a
//! stream appends a batch only after the one before it is held, so "the highest seq held"
//! means "everything before it is held": a stream resuming one past it skips nothing, and
//! anything resent is a duplicate the append recognises. A newer stream for the same
//! origin group (a peer that redialled may leave a half-dead stream behind) replaces the
//! older one once it has its mark: the older is closed ([`LinkError::Replaced`]).
//!
//! A topic that joins a region after its creation has log groups of its own there, and
//! each origin ships it on a stream of its own, from the start of what the origin retains,
//! while the main stream (far ahead) leaves it out. The two streams' appends land in
//! disjoint log groups, so each stream's mark, taken over its own groups, is the argument
//! above again; a mark taken over fewer groups than it should (views not yet showing a
//! group) is only lower, which costs duplicates the appends recognise, never a loss.
//!
//! Memory is bounded whatever the peer's window: a stream holding more than
//! [`READ_AHEAD_BYTES_MAX`] of frames read and not yet acknowledged is paused
//! ([`Action::Pause`]: the shell stops reading it, so QUIC's flow control holds the peer
//! back) until its appends bring it under ([`Action::Resume`]).

use std::collections::{HashMap, VecDeque};

use meridian_proto::mirror::{Commit, Frame, ShippedBatch, VERSION};
use meridian_proto::origin::Origin;

use super::{LinkError, Refusal};

/// Most batches one [`Action::Append`] carries.
pub const APPEND_BATCHES_MAX: usize = 256;

/// Most payload bytes one [`Action::Append`] carries, unless its first batch alone is
/// larger (it then goes alone, as any batch the origin accepted fits a broker's gRPC
/// message limit, which is the batch limit and 1 MiB).
pub const APPEND_BYTES_MAX: usize = 2 << 20;

/// Bytes of frames one stream may hold read and not yet acknowledged before the shell stops
/// reading it (the frame that crosses it is kept: at most this plus one frame, 16 MiB).
/// Above the default sender window (16 MiB) less QUIC's stream window (16 MiB), so a
/// well-behaved peer is never paused.
pub const READ_AHEAD_BYTES_MAX: usize = 8 << 20;

/// Names an inbound stream (chosen by the shell, unique while the stream lives).
pub type StreamId = u64;

/// Something for the shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write a frame on a stream.
    Send {
        /// The stream.
        stream: StreamId,
        /// The frame.
        frame: Frame,
    },
    /// Find the highest seq of `origin`'s group `group` held here, then call
    /// [`Receiver::mark`]: for `topic` 0 over the log groups shared by topics, else over
    /// that topic's own log groups (it joined this region later).
    ReadMark {
        /// The stream waiting for it.
        stream: StreamId,
        /// Origin region.
        origin: String,
        /// Origin log group.
        group: u32,
        /// 0: the main stream; else the topic the stream ships alone.
        topic: u32,
    },
    /// Append shipped batches, in this order (idempotently, retrying until all are held),
    /// then call [`Receiver::done`]. Consecutive batches of a frame go together, up to
    /// [`APPEND_BATCHES_MAX`] and [`APPEND_BYTES_MAX`], so a target group can take them in
    /// one replication round.
    Append {
        /// The stream they came on.
        stream: StreamId,
        /// Each batch with where it was first written.
        batches: Vec<(Origin, ShippedBatch)>,
    },
    /// Merge a consumer group's commit (idempotently, retrying until taken), then call
    /// [`Receiver::done`].
    Merge {
        /// The stream it came on.
        stream: StreamId,
        /// Origin region.
        origin: String,
        /// The commit.
        commit: Commit,
    },
    /// Stop reading a stream: it holds [`READ_AHEAD_BYTES_MAX`] unacknowledged.
    Pause {
        /// The stream.
        stream: StreamId,
    },
    /// Read a paused stream again.
    Resume {
        /// The stream.
        stream: StreamId,
    },
    /// Close a stream (after the frames sent before this): it is forgotten here.
    Close {
        /// The stream.
        stream: StreamId,
        /// Why.
        error: LinkError,
    },
}

#[derive(Debug)]
enum Work {
    Append(ShippedBatch, u64),
    Merge(Commit),
    /// The end of a frame: acknowledge through this seq, and release its bytes.
    Ack {
        through: u64,
        bytes: usize,
    },
}

#[derive(Debug)]
enum Inbound {
    AwaitingHello,
    AwaitingMark {
        origin: String,
        group: u32,
        topic: u32,
    },
    Receiving {
        origin: String,
        group: u32,
        topic: u32,
        work: VecDeque<Work>,
        busy: bool,
        /// Bytes of frames read and not yet acknowledged.
        held: usize,
        /// Whether the shell was told to stop reading.
        paused: bool,
    },
}

/// The protocol state of a region's inbound streams.
#[derive(Debug)]
pub struct Receiver {
    region: String,
    streams: HashMap<StreamId, Inbound>,
    /// The newest stream of each origin `(region, group, topic)` (topic 0: the main one).
    current: HashMap<(String, u32, u32), StreamId>,
    actions: VecDeque<Action>,
}

impl Receiver {
    /// The receiver of region `region`.
    pub fn new(region: &str) -> Self {
        Receiver {
            region: region.to_owned(),
            streams: HashMap::new(),
            current: HashMap::new(),
            actions: VecDeque::new(),
        }
    }

    /// A peer opened stream `stream`.
    pub fn accept(&mut self, stream: StreamId) {
        self.streams.insert(stream, Inbound::AwaitingHello);
    }

    /// A frame arrived on `stream`; `certified` says whether the caller's certificate
    /// names a region.
    /// A frame of `bytes` bytes (as read) arrived on `stream`; `certified` tells whether the
    /// caller's certificate names a region.
    pub fn handle(
        &mut self,
        stream: StreamId,
        frame: Frame,
        bytes: usize,
        certified: impl Fn(&str) -> bool,
    ) {
        let Some(state) = self.streams.get_mut(&stream) else {
            return;
        };
        match (state, frame) {
            (
                state @ Inbound::AwaitingHello,
                Frame::Hello {
                    version,
                    region,
                    group,
                    topic,
                },
            ) => {
                let refusal = if version != VERSION {
                    Some(Refusal::Version {
                        version,
                        ours: VERSION,
                    })
                } else if region == self.region {
                    Some(Refusal::OwnRegion(region.clone()))
                } else if !certified(&region) {
                    Some(Refusal::NotCertified(region.clone()))
                } else {
                    None
                };
                if let Some(refusal) = refusal {
                    self.actions.push_back(Action::Send {
                        stream,
                        frame: Frame::Refuse {
                            reason: refusal.to_string(),
                        },
                    });
                    self.close(stream, LinkError::Refusing(refusal));
                    return;
                }
                self.actions.push_back(Action::ReadMark {
                    stream,
                    origin: region.clone(),
                    group,
                    topic,
                });
                *state = Inbound::AwaitingMark {
                    origin: region,
                    group,
                    topic,
                };
            }
            (Inbound::AwaitingHello, f) => self.close(
                stream,
                LinkError::Unexpected {
                    expected: "Hello",
                    got: f.name(),
                },
            ),
            (Inbound::AwaitingMark { .. }, f) => self.close(
                stream,
                LinkError::Unexpected {
                    expected: "nothing before Resume",
                    got: f.name(),
                },
            ),
            (
                Inbound::Receiving {
                    work, held, paused, ..
                },
                frame,
            ) => match work_of(frame) {
                Ok((through, items)) => {
                    work.extend(items);
                    hold(
                        &mut self.actions,
                        stream,
                        work,
                        held,
                        paused,
                        through,
                        bytes,
                    );
                    self.drive(stream);
                }
                Err(Frame::Refuse { reason }) => self.close(stream, LinkError::Refused(reason)),
                Err(f) => self.close(
                    stream,
                    LinkError::Unexpected {
                        expected: "Records or Commits",
                        got: f.name(),
                    },
                ),
            },
        }
    }

    /// The origin group's mark, asked for by [`Action::ReadMark`]: `None` when nothing of
    /// it is held (the stream then resumes from the first record the origin retains). The
    /// stream becomes the origin group's current one and resumes.
    pub fn mark(&mut self, stream: StreamId, mark: Option<u64>) {
        let Some(Inbound::AwaitingMark {
            origin,
            group,
            topic,
        }) = self.streams.remove(&stream)
        else {
            return;
        };
        if let Some(older) = self.current.insert((origin.clone(), group, topic), stream)
            && older != stream
            && self.streams.remove(&older).is_some()
        {
            self.actions.push_back(Action::Close {
                stream: older,
                error: LinkError::Replaced,
            });
        }
        self.streams.insert(
            stream,
            Inbound::Receiving {
                origin,
                group,
                topic,
                work: VecDeque::new(),
                busy: false,
                held: 0,
                paused: false,
            },
        );
        self.actions.push_back(Action::Send {
            stream,
            frame: Frame::Resume {
                from: mark.map_or(0, |m| m + 1),
            },
        });
    }

    /// The append or merge last asked of `stream` is done: the next one goes.
    pub fn done(&mut self, stream: StreamId) {
        if let Some(Inbound::Receiving { busy, .. }) = self.streams.get_mut(&stream) {
            *busy = false;
            self.drive(stream);
        }
    }

    /// The peer ended `stream` (cleanly or not); the shell closes it.
    pub fn ended(&mut self, stream: StreamId) {
        self.forget(stream);
    }

    /// The next thing to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Streams open.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    fn drive(&mut self, stream: StreamId) {
        let Some(Inbound::Receiving {
            origin,
            group,
            work,
            busy,
            held,
            paused,
            ..
        }) = self.streams.get_mut(&stream)
        else {
            return;
        };
        while !*busy {
            match work.pop_front() {
                None => return,
                Some(Work::Ack { through, bytes }) => {
                    self.actions.push_back(Action::Send {
                        stream,
                        frame: Frame::Ack { through },
                    });
                    *held -= bytes;
                    if *paused && *held <= READ_AHEAD_BYTES_MAX {
                        *paused = false;
                        self.actions.push_back(Action::Resume { stream });
                    }
                }
                Some(Work::Append(batch, through)) => {
                    *busy = true;
                    let origin_of = |batch: &ShippedBatch, through| Origin {
                        region: origin.clone(),
                        group: *group,
                        seq: batch.seq,
                        through,
                    };
                    let mut bytes = batch.payload.len();
                    let mut batches = vec![(origin_of(&batch, through), batch)];
                    while batches.len() < APPEND_BATCHES_MAX
                        && matches!(work.front(), Some(Work::Append(next, _))
                            if bytes + next.payload.len() <= APPEND_BYTES_MAX)
                        && let Some(Work::Append(next, through)) = work.pop_front()
                    {
                        bytes += next.payload.len();
                        batches.push((origin_of(&next, through), next));
                    }
                    self.actions.push_back(Action::Append { stream, batches });
                }
                Some(Work::Merge(commit)) => {
                    *busy = true;
                    self.actions.push_back(Action::Merge {
                        stream,
                        origin: origin.clone(),
                        commit,
                    });
                }
            }
        }
    }

    fn close(&mut self, stream: StreamId, error: LinkError) {
        self.forget(stream);
        self.actions.push_back(Action::Close { stream, error });
    }

    fn forget(&mut self, stream: StreamId) {
        if let Some(
            Inbound::AwaitingMark {
                origin,
                group,
                topic,
            }
            | Inbound::Receiving {
                origin,
                group,
                topic,
                ..
            },
        ) = self.streams.remove(&stream)
        {
            let key = (origin, group, topic);
            if self.current.get(&key) == Some(&stream) {
                self.current.remove(&key);
            }
        }
    }
}

/// A receiving stream's frame as the work it queues and the seq it acknowledges through;
/// any other frame back as it came.
fn work_of(frame: Frame) -> Result<(u64, Vec<Work>), Frame> {
    match frame {
        Frame::Records { through, entries } => Ok((
            through,
            entries
                .into_iter()
                .map(|e| Work::Append(e, through))
                .collect(),
        )),
        Frame::Commits { through, commits } => {
            Ok((through, commits.into_iter().map(Work::Merge).collect()))
        }
        other => Err(other),
    }
}

/// A frame of `bytes` through `through` is queued: acknowledge it after its work, and pause
/// the stream if it now holds too much.
fn hold(
    actions: &mut VecDeque<Action>,
    stream: StreamId,
    work: &mut VecDeque<Work>,
    held: &mut usize,
    paused: &mut bool,
    through: u64,
    bytes: usize,
) {
    work.push_back(Work::Ack { through, bytes });
    *held += bytes;
    if *held > READ_AHEAD_BYTES_MAX && !*paused {
        *paused = true;
        actions.push_back(Action::Pause { stream });
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn hello(region: &str, group: u32) -> Frame {
        Frame::Hello {
            version: VERSION,
            region: region.into(),
            group,
            topic: 0,
        }
    }

    fn drain(r: &mut Receiver) -> Vec<Action> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    fn batch(seq: u64) -> ShippedBatch {
        ShippedBatch {
            seq,
            payload: Bytes::from_static(b"x"),
            ..Default::default()
        }
    }

    #[test]
    fn resumes_one_past_the_mark_appends_in_order_then_acks() {
        let mut r = Receiver::new("eu");
        r.accept(1);
        r.handle(1, hello("us", 7), 0, |_| true);
        assert_eq!(
            drain(&mut r),
            [Action::ReadMark {
                stream: 1,
                origin: "us".into(),
                group: 7,
                topic: 0,
            }]
        );
        r.mark(1, Some(41));
        assert_eq!(
            drain(&mut r),
            [Action::Send {
                stream: 1,
                frame: Frame::Resume { from: 42 }
            }]
        );
        r.handle(
            1,
            Frame::Records {
                through: 45,
                entries: vec![batch(42), batch(44)],
            },
            0,
            |_| true,
        );
        r.handle(
            1,
            Frame::Records {
                through: 47,
                entries: vec![batch(47)],
            },
            0,
            |_| true,
        );
        // One frame's batches go as one run; the next frame's wait for its ack.
        assert_eq!(seqs(&drain(&mut r)), [vec![(42, 45), (44, 45)]]);
        r.done(1);
        let a = drain(&mut r);
        assert_eq!(
            a[0],
            Action::Send {
                stream: 1,
                frame: Frame::Ack { through: 45 }
            }
        );
        assert_eq!(seqs(&a[1..]), [vec![(47, 47)]]);
        assert!(drain(&mut r).is_empty(), "one run at a time");
        r.done(1);
        assert_eq!(
            drain(&mut r),
            [Action::Send {
                stream: 1,
                frame: Frame::Ack { through: 47 }
            }]
        );
    }

    /// The (seq, through) of each append's batches.
    fn seqs(actions: &[Action]) -> Vec<Vec<(u64, u64)>> {
        actions
            .iter()
            .map(|a| match a {
                Action::Append { batches, .. } => {
                    batches.iter().map(|(o, _)| (o.seq, o.through)).collect()
                }
                other => panic!("expected an append, got {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_run_is_bounded_in_batches_and_bytes() {
        let mut r = Receiver::new("eu");
        r.accept(1);
        r.handle(1, hello("us", 7), 0, |_| true);
        r.mark(1, None);
        drain(&mut r);
        let n = APPEND_BATCHES_MAX as u64 + 3;
        let mut entries: Vec<ShippedBatch> = (1..=n).map(batch).collect();
        let big = ShippedBatch {
            seq: n + 1,
            payload: Bytes::from(vec![0; APPEND_BYTES_MAX]),
            ..Default::default()
        };
        entries.push(big);
        entries.push(batch(n + 2));
        r.handle(
            1,
            Frame::Records {
                through: n + 2,
                entries,
            },
            0,
            |_| true,
        );
        let mut runs = Vec::new();
        loop {
            let a = drain(&mut r);
            let appends: Vec<Action> = a
                .into_iter()
                .filter(|a| matches!(a, Action::Append { .. }))
                .collect();
            if appends.is_empty() {
                break;
            }
            runs.extend(seqs(&appends).into_iter().map(|run| run.len()));
            r.done(1);
        }
        // 256 batches; 3 more (the big one would pass the byte bound); the big one alone
        // (a run always takes its first); the last.
        assert_eq!(runs, [APPEND_BATCHES_MAX, 3, 1, 1]);
    }

    #[test]
    fn refuses_other_versions_itself_and_uncertified_regions() {
        let mut r = Receiver::new("eu");
        for (id, frame, certified) in [
            (
                1,
                Frame::Hello {
                    version: VERSION + 1,
                    region: "us".into(),
                    group: 1,
                    topic: 0,
                },
                true,
            ),
            (2, hello("eu", 1), true),
            (3, hello("us", 1), false),
        ] {
            r.accept(id);
            r.handle(id, frame, 0, |_| certified);
            let a = drain(&mut r);
            assert!(
                matches!(
                    &a[..],
                    [
                        Action::Send {
                            frame: Frame::Refuse { .. },
                            ..
                        },
                        Action::Close {
                            error: LinkError::Refusing(_),
                            ..
                        }
                    ]
                ),
                "{a:?}"
            );
        }
        assert_eq!(r.streams(), 0);
    }

    #[test]
    fn a_newer_stream_replaces_the_older_once_it_has_its_mark() {
        let mut r = Receiver::new("eu");
        r.accept(1);
        r.handle(1, hello("us", 7), 0, |_| true);
        r.mark(1, None);
        r.accept(2);
        r.handle(2, hello("us", 7), 0, |_| true);
        drain(&mut r);
        r.mark(2, Some(3));
        assert_eq!(
            drain(&mut r),
            [
                Action::Close {
                    stream: 1,
                    error: LinkError::Replaced
                },
                Action::Send {
                    stream: 2,
                    frame: Frame::Resume { from: 4 }
                }
            ]
        );
        // The replaced stream's late frames are ignored.
        r.handle(
            1,
            Frame::Records {
                through: 9,
                entries: vec![batch(9)],
            },
            0,
            |_| true,
        );
        assert!(drain(&mut r).is_empty());
    }

    #[test]
    fn a_topics_own_stream_lives_beside_the_main_one_and_starts_at_the_origins_start() {
        let mut r = Receiver::new("eu");
        r.accept(1);
        r.handle(1, hello("us", 7), 0, |_| true);
        r.mark(1, Some(900));
        r.accept(2);
        let topic = Frame::Hello {
            version: VERSION,
            region: "us".into(),
            group: 7,
            topic: 5,
        };
        r.handle(2, topic, 0, |_| true);
        assert_eq!(
            drain(&mut r)[2..],
            [Action::ReadMark {
                stream: 2,
                origin: "us".into(),
                group: 7,
                topic: 5,
            }]
        );
        r.mark(2, None);
        // Nothing replaced: the main stream (far ahead) and the topic's (from the start).
        assert_eq!(
            drain(&mut r),
            [Action::Send {
                stream: 2,
                frame: Frame::Resume { from: 0 }
            }]
        );
        assert_eq!(r.streams(), 2);
        r.handle(
            1,
            Frame::Records {
                through: 901,
                entries: vec![batch(901)],
            },
            0,
            |_| true,
        );
        r.handle(
            2,
            Frame::Records {
                through: 3,
                entries: vec![batch(2)],
            },
            0,
            |_| true,
        );
        let seqs: Vec<(StreamId, u64)> = drain(&mut r)
            .into_iter()
            .filter_map(|a| match a {
                Action::Append { stream, batches } => Some((stream, batches[0].0.seq)),
                _ => None,
            })
            .collect();
        assert_eq!(seqs, [(1, 901), (2, 2)]);
    }

    #[test]
    fn frames_out_of_place_close_the_stream() {
        let mut r = Receiver::new("eu");
        r.accept(1);
        r.handle(1, Frame::Ack { through: 1 }, 0, |_| true);
        assert_eq!(
            drain(&mut r),
            [Action::Close {
                stream: 1,
                error: LinkError::Unexpected {
                    expected: "Hello",
                    got: "ack"
                }
            }]
        );
    }

    #[test]
    fn a_stream_holding_too_much_is_paused_until_its_appends_catch_up() {
        let mut r = Receiver::new("eu");
        r.accept(1);
        r.handle(1, hello("us", 7), 0, |_| true);
        r.mark(1, None);
        drain(&mut r);
        let frame = |seq: u64| Frame::Records {
            through: seq,
            entries: vec![batch(seq)],
        };
        // Four frames of a third of the bound each: the fourth crosses it.
        let third = READ_AHEAD_BYTES_MAX / 3;
        let mut actions = Vec::new();
        for seq in 1..=4 {
            r.handle(1, frame(seq), third, |_| true);
            actions.extend(drain(&mut r));
        }
        let pauses = |a: &[Action]| {
            a.iter()
                .filter(|a| matches!(a, Action::Pause { .. }))
                .count()
        };
        assert_eq!(pauses(&actions), 1, "{actions:?}");
        assert_eq!(actions.last(), Some(&Action::Pause { stream: 1 }));
        // A fifth frame already read is kept (nothing read is dropped), with no second pause.
        r.handle(1, frame(5), third, |_| true);
        assert!(drain(&mut r).is_empty());
        // The first append done: its ack releases a third, still above the bound.
        r.done(1);
        let a = drain(&mut r);
        assert!(!a.contains(&Action::Resume { stream: 1 }), "{a:?}");
        // The second done: back under the bound, reading resumes, once.
        r.done(1);
        let a = drain(&mut r);
        assert_eq!(
            a.iter()
                .filter(|a| **a == Action::Resume { stream: 1 })
                .count(),
            1,
            "{a:?}"
        );
        // Every frame is still appended and acknowledged in order.
        let mut acks = Vec::new();
        for _ in 0..5 {
            r.done(1);
            for a in drain(&mut r) {
                if let Action::Send {
                    frame: Frame::Ack { through },
                    ..
                } = a
                {
                    acks.push(through);
                }
            }
        }
        assert_eq!(acks, [3, 4, 5]);
    }
}
