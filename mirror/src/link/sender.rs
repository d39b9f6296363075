//! The shipping side of one stream: ships one origin log group to one peer region.
//!
//! It opens with `Hello` (the origin region and group, and the topic when it ships one that
//! joined the peer's region later), waits for `Resume` (the first seq the peer wants: one
//! past the highest it holds, or 0: from the first record retained), then asks for reads
//! of the origin group
//! from there ([`ShipStream::poll_read`]); each read's batches and commits (already
//! narrowed to the topics the peer holds) become `Commits` and `Records` frames, sent while
//! the bytes shipped but not acknowledged stay within the window. An `Ack` frees the
//! frames it covers. Anything else ends the stream with a [`LinkError`]; the shell opens a
//! new one, which resumes where the peer says.

use std::collections::VecDeque;

use meridian_proto::mirror::{Commit, Frame, ShippedBatch, VERSION};

use super::LinkError;

/// One frame to write on the stream, encoded, with what it carries (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The encoded frame.
    pub bytes: Vec<u8>,
    /// The origin records it covers through (`None` for `Hello`).
    pub through: Option<u64>,
    /// Batches it carries.
    pub batches: u64,
    /// Messages in those batches.
    pub messages: u64,
    /// Consumer commits it carries.
    pub commits: u64,
}

/// What a frame from the peer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The peer wants records from this seq on: shipping starts.
    Resumed {
        /// The first seq to ship.
        from: u64,
    },
    /// The peer holds every record through this seq.
    Acked {
        /// The seq.
        through: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingResume,
    Shipping,
    Closed,
}

/// The protocol state of one shipping stream.
#[derive(Debug)]
pub struct ShipStream {
    window_bytes: u64,
    state: State,
    /// Frames made and not yet written (waiting for room in the window).
    queued: VecDeque<Transmit>,
    /// Frames written and not acknowledged: the seq each covers through, its window share.
    in_flight: VecDeque<(u64, u64)>,
    in_flight_bytes: u64,
    /// The first seq not read yet.
    next: u64,
    reading: bool,
    acked: u64,
}

impl ShipStream {
    /// A stream shipping origin group `group` of `region` (`topic` 0: the main stream;
    /// else that topic alone), with at most `window_bytes` shipped and not acknowledged.
    /// Its first transmit is the `Hello`.
    pub fn new(region: &str, group: u32, topic: u32, window_bytes: u64) -> Self {
        let mut bytes = Vec::new();
        Frame::Hello {
            version: VERSION,
            region: region.to_owned(),
            group,
            topic,
        }
        .encode(&mut bytes);
        ShipStream {
            window_bytes: window_bytes.max(1),
            state: State::AwaitingResume,
            queued: VecDeque::from([Transmit {
                bytes,
                through: None,
                batches: 0,
                messages: 0,
                commits: 0,
            }]),
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            next: 0,
            reading: false,
            acked: 0,
        }
    }

    /// A frame from the peer. An error ends the stream.
    pub fn handle(&mut self, frame: Frame) -> Result<Event, LinkError> {
        let result = match (self.state, frame) {
            (State::Closed, f) => Err(LinkError::Unexpected {
                expected: "nothing (the stream is closed)",
                got: f.name(),
            }),
            (_, Frame::Refuse { reason }) => Err(LinkError::Refused(reason)),
            (State::AwaitingResume, Frame::Resume { from }) => {
                self.state = State::Shipping;
                self.next = from;
                self.acked = from.saturating_sub(1);
                Ok(Event::Resumed { from })
            }
            (State::AwaitingResume, f) => Err(LinkError::Unexpected {
                expected: "Resume",
                got: f.name(),
            }),
            (State::Shipping, Frame::Ack { through }) => {
                while self.in_flight.front().is_some_and(|(t, _)| *t <= through) {
                    let (_, share) = self.in_flight.pop_front().expect("checked");
                    self.in_flight_bytes -= share;
                }
                self.acked = self.acked.max(through);
                Ok(Event::Acked { through })
            }
            (State::Shipping, f) => Err(LinkError::Unexpected {
                expected: "Ack",
                got: f.name(),
            }),
        };
        if result.is_err() {
            self.state = State::Closed;
        }
        result
    }

    /// The stream ended (the peer closed it, or the connection failed).
    pub fn ended(&mut self) -> LinkError {
        self.state = State::Closed;
        LinkError::Closed
    }

    /// The next frame to write, if the window has room for it.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.state == State::Closed {
            return None;
        }
        let front = self.queued.front()?;
        let Some(through) = front.through else {
            return self.queued.pop_front();
        };
        let share = (front.bytes.len() as u64).min(self.window_bytes);
        if self.in_flight_bytes + share > self.window_bytes {
            return None;
        }
        self.in_flight_bytes += share;
        self.in_flight.push_back((through, share));
        self.queued.pop_front()
    }

    /// Where the next read of the origin group starts, when one should be issued now (the
    /// stream ships, no read is under way, and every frame made is written); 0: at the first
    /// record the origin retains.
    pub fn poll_read(&mut self) -> Option<u64> {
        if self.state != State::Shipping || self.reading || !self.queued.is_empty() {
            return None;
        }
        self.reading = true;
        Some(self.next)
    }

    /// A read finished: the batches and commits to ship (those of topics the peer holds,
    /// in seq order), covering the origin's records through `through`.
    pub fn read_done(&mut self, batches: Vec<ShippedBatch>, commits: Vec<Commit>, through: u64) {
        self.reading = false;
        if self.state != State::Shipping || through < self.next || through == 0 {
            return;
        }
        self.next = through + 1;
        if !commits.is_empty() {
            let n = commits.len() as u64;
            let mut bytes = Vec::new();
            Frame::Commits { through, commits }.encode(&mut bytes);
            self.queued.push_back(Transmit {
                bytes,
                through: Some(through),
                batches: 0,
                messages: 0,
                commits: n,
            });
        }
        if !batches.is_empty() {
            let n = batches.len() as u64;
            let messages = batches.iter().map(|b| u64::from(b.count)).sum();
            let mut bytes = Vec::new();
            Frame::Records {
                through,
                entries: batches,
            }
            .encode(&mut bytes);
            self.queued.push_back(Transmit {
                bytes,
                through: Some(through),
                batches: n,
                messages,
                commits: 0,
            });
        }
    }

    /// A read failed: the next [`ShipStream::poll_read`] asks again from the same seq.
    pub fn read_failed(&mut self) {
        self.reading = false;
    }

    /// Every seq up to this is held by the peer (as far as this stream knows).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Bytes shipped and not acknowledged.
    pub fn in_flight_bytes(&self) -> u64 {
        self.in_flight_bytes
    }

    /// Whether the stream ended.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn decode(t: &Transmit) -> Frame {
        Frame::decode(&Bytes::from(t.bytes.clone()))
            .unwrap()
            .unwrap()
            .0
    }

    fn batch(seq: u64, len: usize) -> ShippedBatch {
        ShippedBatch {
            seq,
            count: 1,
            payload: Bytes::from(vec![0u8; len]),
            ..Default::default()
        }
    }

    #[test]
    fn hello_then_nothing_until_resume() {
        let mut s = ShipStream::new("us", 3, 9, 1 << 20);
        let hello = s.poll_transmit().unwrap();
        assert_eq!(
            decode(&hello),
            Frame::Hello {
                version: VERSION,
                region: "us".into(),
                group: 3,
                topic: 9,
            }
        );
        assert_eq!(s.poll_read(), None);
        assert_eq!(
            s.handle(Frame::Resume { from: 0 }),
            Ok(Event::Resumed { from: 0 })
        );
        assert_eq!(s.poll_read(), Some(0), "from the first record retained");
        assert_eq!(s.poll_read(), None, "one read at a time");
        // The read started where the origin's journal starts (record 40 here).
        s.read_done(vec![batch(41, 10)], vec![], 45);
        assert!(s.poll_transmit().is_some());
        assert_eq!(s.poll_read(), Some(46));
    }

    #[test]
    fn the_window_holds_frames_until_acknowledged() {
        let mut s = ShipStream::new("us", 1, 0, 300);
        s.poll_transmit().unwrap();
        s.handle(Frame::Resume { from: 5 }).unwrap();
        assert_eq!(s.poll_read(), Some(5));
        s.read_done(vec![batch(5, 200)], vec![], 6);
        let t = s.poll_transmit().unwrap();
        assert_eq!(t.through, Some(6));
        assert_eq!(s.poll_read(), Some(7));
        s.read_done(vec![batch(7, 200)], vec![], 7);
        assert_eq!(s.poll_transmit(), None, "the window is full");
        assert_eq!(s.poll_read(), None, "no read while a frame waits");
        // An old or partial ack frees only what it covers.
        s.handle(Frame::Ack { through: 5 }).unwrap();
        assert_eq!(s.poll_transmit(), None);
        s.handle(Frame::Ack { through: 6 }).unwrap();
        assert!(s.poll_transmit().is_some());
        assert_eq!(s.acked(), 6);
    }

    #[test]
    fn refusals_and_strays_end_the_stream() {
        let mut s = ShipStream::new("us", 1, 0, 100);
        assert_eq!(
            s.handle(Frame::Ack { through: 1 }),
            Err(LinkError::Unexpected {
                expected: "Resume",
                got: "ack"
            })
        );
        assert!(s.is_closed());
        let mut s = ShipStream::new("us", 1, 0, 100);
        s.handle(Frame::Resume { from: 1 }).unwrap();
        assert_eq!(
            s.handle(Frame::Refuse {
                reason: "no".into()
            }),
            Err(LinkError::Refused("no".into()))
        );
        assert_eq!(s.poll_read(), None);
    }

    #[test]
    fn commits_go_before_the_records_of_the_same_read() {
        let mut s = ShipStream::new("us", 1, 0, 1 << 20);
        s.poll_transmit();
        s.handle(Frame::Resume { from: 1 }).unwrap();
        s.poll_read();
        let c = Commit {
            seq: 2,
            topic_id: 1,
            partition: 0,
            group: "g".into(),
            positions: vec![("us".into(), 4)],
        };
        s.read_done(vec![batch(1, 10)], vec![c], 3);
        assert!(matches!(
            decode(&s.poll_transmit().unwrap()),
            Frame::Commits { through: 3, .. }
        ));
        assert!(matches!(
            decode(&s.poll_transmit().unwrap()),
            Frame::Records { through: 3, .. }
        ));
        // A read that found nothing new changes nothing.
        assert_eq!(s.poll_read(), Some(4));
        s.read_done(vec![], vec![], 3);
        assert_eq!(s.poll_read(), Some(4));
    }
}
