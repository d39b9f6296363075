//! Two regions' mirror cores (`meridian_mirror::link`) driven against each other in one
//! thread through a simulated link, seeded and repeatable. The link delays frames (so
//! frames of different streams and directions overtake each other), duplicates frames,
//! resets streams (losing what was in flight), leaves half-dead streams behind, and
//! restarts either side: a restarted sender is rebuilt from nothing (the origin's log is
//! durable), a restarted receiver from nothing but the destination store's marks. Appends
//! and mark reads answer late, fail and are retried, and may land after the stream that
//! asked for them is gone. The origin logs grow while this happens; then the link heals and
//! must converge: every shipped batch of every origin group held exactly once in the other
//! region, in seq order in each target log group, and every consumer commit merged.
//!
//! A QUIC stream is reliable and ordered, so frames of one stream in one direction are
//! delivered in order or (after a reset) not at all; duplicates are injected on top.
//!
//! Rerun one seed with `MIRROR_SIM_SEED=<n> cargo test -p meridian-mirror --test link_sim`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meridian_mirror::link::Backoff;
use meridian_mirror::link::receiver::{Action, Receiver, StreamId};
use meridian_mirror::link::sender::{Event, ShipStream};
use meridian_proto::mirror::{Commit, Frame, ShippedBatch};
use meridian_proto::origin::Origin;

const REGIONS: [&str; 2] = ["us", "eu"];
const GROUPS: u32 = 3;
const TICK: Duration = Duration::from_millis(10);

/// splitmix64: small, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `per_mille` / 1000.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

#[derive(Clone, Copy, Debug)]
enum Rec {
    Batch {
        topic_id: u32,
        partition: u32,
    },
    Commit {
        topic_id: u32,
        partition: u32,
    },
    /// A batch of a topic the peer does not hold: covered by `through`, never shipped.
    LocalOnly,
}

#[derive(Default)]
struct DestGroup {
    marks: HashMap<(usize, u32), u64>,
    held: Vec<(usize, u32, u64)>,
}

/// A region: its origin logs (durable), its destination store (durable), its cores.
struct Region {
    logs: Vec<Vec<Rec>>,
    dest: BTreeMap<u32, DestGroup>,
    merged: HashSet<(usize, u32, u64)>,
    receiver: Receiver,
    /// Bumped by a receiver restart: answers for an older receiver are dropped.
    epoch: u64,
    slots: Vec<Slot>,
}

struct Slot {
    stream: Option<(StreamId, ShipStream)>,
    reopen_at: Instant,
    backoff: Backoff,
}

fn dest_group(topic_id: u32, partition: u32) -> u32 {
    (topic_id + partition) % 3
}

impl Region {
    fn new(name: &str, start: Instant) -> Self {
        Region {
            logs: vec![Vec::new(); GROUPS as usize],
            dest: BTreeMap::new(),
            merged: HashSet::new(),
            receiver: Receiver::new(name),
            epoch: 0,
            slots: (0..GROUPS)
                .map(|_| Slot {
                    stream: None,
                    reopen_at: start,
                    backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(2)),
                })
                .collect(),
        }
    }

    fn mark(&self, origin: usize, group: u32) -> Option<u64> {
        self.dest
            .values()
            .filter_map(|d| d.marks.get(&(origin, group)).copied())
            .max()
    }

    /// The broker's idempotent append: written only above the target group's mark.
    fn append(&mut self, origin: usize, o: &Origin, b: &ShippedBatch) {
        let d = self
            .dest
            .entry(dest_group(b.topic_id, b.partition))
            .or_default();
        let mark = d.marks.entry((origin, o.group)).or_insert(0);
        if o.seq > *mark {
            *mark = o.seq;
            d.held.push((origin, o.group, o.seq));
        }
    }
}

#[derive(Debug)]
enum Msg {
    Frame(Bytes),
    /// The stream ended (reset, closed, or the other side went away).
    End,
}

struct InFlight {
    at: u64,
    order: u64,
    stream: StreamId,
    to_receiver: bool,
    msg: Msg,
}

/// A stream as the link knows it.
struct Link {
    sender: usize,
    group: u32,
    receiver_epoch: u64,
    sender_alive: bool,
    receiver_alive: bool,
    accepted: bool,
    /// The last delivery time per direction (keeps a direction in order).
    last_at: [u64; 2],
}

#[derive(Debug, PartialEq)]
enum Pending {
    Read {
        region: usize,
        group: u32,
        stream: StreamId,
        from: u64,
    },
    Mark {
        region: usize,
        epoch: u64,
        stream: StreamId,
        mark: Option<u64>,
    },
    Apply {
        region: usize,
        epoch: u64,
        stream: StreamId,
        origin: usize,
        work: Work,
    },
}

#[derive(Debug, PartialEq)]
enum Work {
    /// A run of batches of one stream, in order: applied as a target broker does, the
    /// leading batches in the first one's log group per call, the rest in later calls.
    Append(Vec<(Origin, ShippedBatch)>),
    Merge(Commit),
}

struct Sim {
    rng: Rng,
    start: Instant,
    now: u64,
    regions: Vec<Region>,
    links: HashMap<StreamId, Link>,
    in_flight: Vec<InFlight>,
    pending: Vec<(u64, Pending)>,
    next_stream: StreamId,
    order: u64,
    faults: bool,
    stats: BTreeMap<&'static str, u64>,
}

fn region_index(name: &str) -> usize {
    REGIONS
        .iter()
        .position(|r| *r == name)
        .expect("a known region")
}

impl Sim {
    fn new(seed: u64) -> Self {
        let start = Instant::now();
        Sim {
            rng: Rng(seed),
            start,
            now: 0,
            regions: REGIONS.iter().map(|r| Region::new(r, start)).collect(),
            links: HashMap::new(),
            in_flight: Vec::new(),
            pending: Vec::new(),
            next_stream: 1,
            order: 0,
            faults: true,
            stats: BTreeMap::new(),
        }
    }

    fn clock(&self) -> Instant {
        self.start + TICK * self.now as u32
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn delay(&mut self) -> u64 {
        if self.faults {
            1 + self.rng.below(15)
        } else {
            1 + self.rng.below(3)
        }
    }

    fn send(&mut self, stream: StreamId, to_receiver: bool, msg: Msg) {
        let delay = self.delay();
        let dup = matches!(msg, Msg::Frame(_)) && self.faults && self.rng.chance(20);
        let Some(link) = self.links.get_mut(&stream) else {
            return;
        };
        let dir = usize::from(to_receiver);
        let at = (self.now + delay).max(link.last_at[dir]);
        link.last_at[dir] = at;
        self.order += 1;
        if let (true, Msg::Frame(b)) = (dup, &msg) {
            self.in_flight.push(InFlight {
                at,
                order: self.order,
                stream,
                to_receiver,
                msg: Msg::Frame(b.clone()),
            });
            self.order += 1;
            self.count("duplicated frames");
        }
        self.in_flight.push(InFlight {
            at,
            order: self.order,
            stream,
            to_receiver,
            msg,
        });
    }

    /// Lets the sender side of every stream write and read as its core allows.
    fn pump_senders(&mut self) {
        let now = self.clock();
        for (r, name) in REGIONS.iter().enumerate() {
            for g in 0..GROUPS {
                let slot = &mut self.regions[r].slots[g as usize];
                if slot.stream.is_none() && now >= slot.reopen_at {
                    let id = self.next_stream;
                    self.next_stream += 1;
                    slot.stream = Some((id, ShipStream::new(name, g, 0, 600)));
                    let peer = 1 - r;
                    self.links.insert(
                        id,
                        Link {
                            sender: r,
                            group: g,
                            receiver_epoch: self.regions[peer].epoch,
                            sender_alive: true,
                            receiver_alive: true,
                            accepted: false,
                            last_at: [0, 0],
                        },
                    );
                    self.count("streams opened");
                }
                let mut out = Vec::new();
                let mut read = None;
                let slot = &mut self.regions[r].slots[g as usize];
                if let Some((id, s)) = &mut slot.stream {
                    while let Some(t) = s.poll_transmit() {
                        out.push((*id, t.bytes));
                    }
                    if let Some(from) = s.poll_read() {
                        read = Some((*id, from));
                    }
                }
                for (id, bytes) in out {
                    self.send(id, true, Msg::Frame(Bytes::from(bytes)));
                }
                if let Some((stream, from)) = read {
                    let at = self.now + 1 + self.rng.below(4);
                    self.pending.push((
                        at,
                        Pending::Read {
                            region: r,
                            group: g,
                            stream,
                            from,
                        },
                    ));
                }
            }
        }
    }

    /// Carries out what region `r`'s receiver asks.
    fn pump_receiver(&mut self, r: usize) {
        while let Some(action) = self.regions[r].receiver.poll_action() {
            let epoch = self.regions[r].epoch;
            let late = self.now + 1 + self.rng.below(if self.faults { 8 } else { 2 });
            match action {
                Action::Send { stream, frame } => {
                    let mut buf = Vec::new();
                    frame.encode(&mut buf);
                    self.send(stream, false, Msg::Frame(Bytes::from(buf)));
                }
                Action::ReadMark {
                    stream,
                    origin,
                    group,
                    ..
                } => {
                    // Read now, answered later: a stale (lower) mark only means resends.
                    let mark = self.regions[r].mark(region_index(&origin), group);
                    self.pending.push((
                        late,
                        Pending::Mark {
                            region: r,
                            epoch,
                            stream,
                            mark,
                        },
                    ));
                }
                Action::Append { stream, batches } => {
                    let o = region_index(&batches[0].0.region);
                    self.pending.push((
                        late,
                        Pending::Apply {
                            region: r,
                            epoch,
                            stream,
                            origin: o,
                            work: Work::Append(batches),
                        },
                    ));
                }
                Action::Merge {
                    stream,
                    origin,
                    commit,
                } => {
                    let o = region_index(&origin);
                    self.pending.push((
                        late,
                        Pending::Apply {
                            region: r,
                            epoch,
                            stream,
                            origin: o,
                            work: Work::Merge(commit),
                        },
                    ));
                }
                // The simulated frames are far below the read-ahead bound: never paused.
                Action::Pause { .. } | Action::Resume { .. } => {
                    self.count("streams paused or resumed");
                }
                Action::Close { stream, .. } => {
                    self.count("streams closed by the receiver");
                    if let Some(l) = self.links.get_mut(&stream) {
                        l.receiver_alive = false;
                    }
                    self.send(stream, false, Msg::End);
                }
            }
        }
    }

    fn sender_failed(&mut self, stream: StreamId) {
        let Some(link) = self.links.get_mut(&stream) else {
            return;
        };
        link.sender_alive = false;
        let (r, g) = (link.sender, link.group);
        let now = self.clock();
        let slot = &mut self.regions[r].slots[g as usize];
        if slot.stream.as_ref().is_some_and(|(id, _)| *id == stream) {
            slot.stream = None;
            slot.reopen_at = slot.backoff.failed(now);
        }
        // QUIC resets the stream: the receiver learns it ended.
        self.send(stream, true, Msg::End);
    }

    fn deliver(&mut self, m: InFlight) {
        let Some(link) = self.links.get_mut(&m.stream) else {
            return;
        };
        if m.to_receiver {
            let peer = 1 - link.sender;
            if !link.receiver_alive || link.receiver_epoch != self.regions[peer].epoch {
                return;
            }
            let first = !link.accepted;
            link.accepted = true;
            let rx = &mut self.regions[peer].receiver;
            if first {
                rx.accept(m.stream);
            }
            match m.msg {
                Msg::Frame(b) => {
                    let (frame, _) = Frame::decode(&b).expect("a frame").expect("whole");
                    rx.handle(m.stream, frame, b.len(), |_| true);
                }
                Msg::End => {
                    link.receiver_alive = false;
                    rx.ended(m.stream);
                }
            }
            self.pump_receiver(peer);
        } else {
            if !link.sender_alive {
                return;
            }
            let (r, g) = (link.sender, link.group);
            let slot = &mut self.regions[r].slots[g as usize];
            let Some((id, s)) = &mut slot.stream else {
                return;
            };
            if *id != m.stream {
                return;
            }
            let result = match m.msg {
                Msg::Frame(b) => {
                    let (frame, _) = Frame::decode(&b).expect("a frame").expect("whole");
                    s.handle(frame)
                }
                Msg::End => Err(s.ended()),
            };
            match result {
                Ok(Event::Resumed { .. }) => slot.backoff.reset(),
                Ok(Event::Acked { .. }) => {}
                Err(_) => {
                    self.count("streams failed at the sender");
                    self.sender_failed(m.stream);
                }
            }
        }
    }

    fn run_pending(&mut self, p: Pending) {
        match p {
            Pending::Read {
                region,
                group,
                stream,
                from,
            } => {
                // 0: from the first record retained (this log keeps all, from 1).
                let from = from.max(1);
                let fail = self.faults && self.rng.chance(30);
                let take = 1 + self.rng.below(5);
                let log = &self.regions[region].logs[group as usize];
                let last = (log.len() as u64).min(from + take - 1);
                let (mut batches, mut commits) = (Vec::new(), Vec::new());
                for seq in from..=last {
                    match log[seq as usize - 1] {
                        Rec::Batch {
                            topic_id,
                            partition,
                        } => batches.push(ShippedBatch {
                            seq,
                            topic_id,
                            partition,
                            count: 1,
                            append_time_ms: seq as i64,
                            payload: Bytes::from(vec![seq as u8; 100]),
                            txn: None,
                        }),
                        Rec::Commit {
                            topic_id,
                            partition,
                        } => commits.push(Commit {
                            seq,
                            topic_id,
                            partition,
                            group: "g".into(),
                            positions: vec![(REGIONS[region].into(), seq)],
                        }),
                        Rec::LocalOnly => {}
                    }
                }
                let slot = &mut self.regions[region].slots[group as usize];
                let Some((id, s)) = &mut slot.stream else {
                    return;
                };
                if *id != stream {
                    return;
                }
                if fail {
                    s.read_failed();
                } else {
                    s.read_done(batches, commits, last.max(from - 1));
                }
            }
            Pending::Mark {
                region,
                epoch,
                stream,
                mark,
            } => {
                if self.regions[region].epoch == epoch {
                    self.regions[region].receiver.mark(stream, mark);
                    self.pump_receiver(region);
                }
            }
            Pending::Apply {
                region,
                epoch,
                stream,
                origin,
                work,
            } => {
                if self.faults && self.rng.chance(50) {
                    // The append failed: the shell retries it.
                    self.count("append retries");
                    let at = self.now + 2;
                    self.pending.push((
                        at,
                        Pending::Apply {
                            region,
                            epoch,
                            stream,
                            origin,
                            work,
                        },
                    ));
                    return;
                }
                match work {
                    Work::Append(mut batches) => {
                        let group = dest_group(batches[0].1.topic_id, batches[0].1.partition);
                        let run = batches
                            .iter()
                            .take_while(|(_, b)| dest_group(b.topic_id, b.partition) == group)
                            .count();
                        // With faults, raft may have committed only a prefix of the run
                        // when the call fails.
                        let (held, failed) = if self.faults && self.rng.chance(20) {
                            (self.rng.below(run as u64 + 1) as usize, true)
                        } else {
                            (run, false)
                        };
                        for (o, b) in batches.drain(..held) {
                            self.regions[region].append(origin, &o, &b);
                        }
                        if failed {
                            self.count("runs failed after a prefix");
                        }
                        if !batches.is_empty() {
                            // The shell sends the rest (again).
                            self.count("runs continued");
                            let at = self.now + 1;
                            self.pending.push((
                                at,
                                Pending::Apply {
                                    region,
                                    epoch,
                                    stream,
                                    origin,
                                    work: Work::Append(batches),
                                },
                            ));
                            return;
                        }
                    }
                    Work::Merge(c) => {
                        self.regions[region]
                            .merged
                            .insert((origin, c.topic_id, c.seq));
                    }
                }
                let reg = &mut self.regions[region];
                if reg.epoch == epoch {
                    reg.receiver.done(stream);
                    self.pump_receiver(region);
                }
            }
        }
    }

    fn inject(&mut self) {
        // The origin logs grow.
        if self.rng.chance(300) {
            let r = self.rng.below(2) as usize;
            let g = self.rng.below(u64::from(GROUPS)) as usize;
            let (topic_id, partition) = (self.rng.below(4) as u32, self.rng.below(3) as u32);
            let rec = match self.rng.below(10) {
                0 => Rec::Commit {
                    topic_id,
                    partition,
                },
                1 => Rec::LocalOnly,
                _ => Rec::Batch {
                    topic_id,
                    partition,
                },
            };
            self.regions[r].logs[g].push(rec);
        }
        // A stream resets: what it had in flight is lost, both ends learn it ended.
        if self.rng.chance(15) {
            let mut live: Vec<StreamId> = self
                .links
                .iter()
                .filter(|(_, l)| l.sender_alive || l.receiver_alive)
                .map(|(id, _)| *id)
                .collect();
            live.sort_unstable();
            if !live.is_empty() {
                let id = live[self.rng.below(live.len() as u64) as usize];
                self.count("stream resets");
                self.in_flight.retain(|m| m.stream != id);
                let l = &self.links[&id];
                let peer = 1 - l.sender;
                if l.receiver_alive && l.accepted && l.receiver_epoch == self.regions[peer].epoch {
                    self.regions[peer].receiver.ended(id);
                    self.pump_receiver(peer);
                }
                self.links.get_mut(&id).expect("live").receiver_alive = false;
                if self.links[&id].sender_alive {
                    self.sender_failed(id);
                }
                self.in_flight.retain(|m| m.stream != id);
            }
        }
        // A sender restarts: its streams are forgotten without the receiver hearing of
        // it (half-dead streams stay until replaced); what they had in flight still lands.
        if self.rng.chance(4) {
            let r = self.rng.below(2) as usize;
            self.count("sender restarts");
            let now = self.clock();
            for slot in &mut self.regions[r].slots {
                if let Some((id, _)) = slot.stream.take()
                    && let Some(l) = self.links.get_mut(&id)
                {
                    l.sender_alive = false;
                }
                slot.reopen_at = now;
            }
        }
        // A receiver restarts: rebuilt from the destination store alone; its streams die
        // (their senders learn it); appends under way may or may not land.
        if self.rng.chance(4) {
            let r = self.rng.below(2) as usize;
            self.count("receiver restarts");
            self.regions[r].epoch += 1;
            self.regions[r].receiver = Receiver::new(REGIONS[r]);
            let mut dead: Vec<StreamId> = self
                .links
                .iter()
                .filter(|(_, l)| 1 - l.sender == r && l.receiver_alive)
                .map(|(id, _)| *id)
                .collect();
            dead.sort_unstable();
            for id in dead {
                self.links.get_mut(&id).expect("listed").receiver_alive = false;
                self.in_flight
                    .retain(|m| !(m.stream == id && m.to_receiver));
                self.send(id, false, Msg::End);
            }
            let rng = &mut self.rng;
            self.pending.retain(|(_, p)| match p {
                Pending::Apply { region, .. } if *region == r => rng.chance(500),
                _ => true,
            });
        }
    }

    fn step(&mut self) {
        self.now += 1;
        if self.faults {
            self.inject();
        }
        self.pump_senders();
        let now = self.now;
        let mut due: Vec<(u64, Pending)> = Vec::new();
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].0 <= now {
                due.push(self.pending.remove(i));
            } else {
                i += 1;
            }
        }
        // Same-tick order is shuffled, but deterministic.
        for j in (1..due.len()).rev() {
            let k = self.rng.below(j as u64 + 1) as usize;
            due.swap(j, k);
        }
        for (_, p) in due {
            self.run_pending(p);
        }
        let mut ready: Vec<InFlight> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].at <= now {
                ready.push(self.in_flight.remove(i));
            } else {
                i += 1;
            }
        }
        ready.sort_by_key(|m| (m.at, m.order));
        for m in ready {
            self.deliver(m);
        }
        self.pump_senders();
    }

    /// Nothing is held twice, out of order per target group, or that was never shipped;
    /// when `complete`, also everything shipped is held and every commit merged. `Err`
    /// says what is not (yet).
    fn check(&self, complete: bool) -> Result<(), String> {
        for (s, origin) in self.regions.iter().enumerate() {
            let target = &self.regions[1 - s];
            for g in 0..GROUPS {
                let log = &origin.logs[g as usize];
                let want: BTreeSet<u64> = (1..=log.len() as u64)
                    .filter(|seq| matches!(log[*seq as usize - 1], Rec::Batch { .. }))
                    .collect();
                let mut got = BTreeSet::new();
                for (dg, d) in &target.dest {
                    let seqs: Vec<u64> = d
                        .held
                        .iter()
                        .filter(|(o, og, _)| *o == s && *og == g)
                        .map(|(_, _, seq)| *seq)
                        .collect();
                    if !seqs.windows(2).all(|w| w[0] < w[1]) {
                        return Err(format!(
                            "{} group {g} out of order in target group {dg}: {seqs:?}",
                            REGIONS[s]
                        ));
                    }
                    for seq in seqs {
                        if !got.insert(seq) {
                            return Err(format!("{} group {g} seq {seq} held twice", REGIONS[s]));
                        }
                    }
                }
                if !got.is_subset(&want) || (complete && got != want) {
                    let lost: Vec<_> = want.difference(&got).collect();
                    let extra: Vec<_> = got.difference(&want).collect();
                    return Err(format!(
                        "{} group {g}: missing {lost:?}, unexpected {extra:?}",
                        REGIONS[s]
                    ));
                }
                for seq in 1..=log.len() as u64 {
                    if !complete {
                        break;
                    }
                    if let Rec::Commit { topic_id, .. } = log[seq as usize - 1]
                        && !target.merged.contains(&(s, topic_id, seq))
                    {
                        return Err(format!("{} group {g} commit {seq} not merged", REGIONS[s]));
                    }
                }
            }
        }
        Ok(())
    }

    /// Lost batches: held in no target group although a later seq of the same origin is
    /// held in the same target group (a gap that a resend would take for a duplicate).
    fn gaps(&self) -> Option<String> {
        for (s, origin) in self.regions.iter().enumerate() {
            let target = &self.regions[1 - s];
            for g in 0..GROUPS {
                let log = &origin.logs[g as usize];
                for (dg, d) in &target.dest {
                    let Some(mark) = d.marks.get(&(s, g)) else {
                        continue;
                    };
                    for seq in 1..=*mark {
                        if let Rec::Batch {
                            topic_id,
                            partition,
                        } = log[seq as usize - 1]
                            && dest_group(topic_id, partition) == *dg
                            && !d.held.contains(&(s, g, seq))
                        {
                            return Some(format!(
                                "{} group {g} seq {seq} lost: target group {dg} holds up to {mark} without it",
                                REGIONS[s]
                            ));
                        }
                    }
                }
            }
        }
        None
    }
}

/// Runs one seed: faults while the logs grow, then a healed link until it converges.
fn run(seed: u64) -> Result<BTreeMap<&'static str, u64>, String> {
    let mut sim = Sim::new(seed);
    for _ in 0..600 {
        sim.step();
        // Nothing may be lost, held twice or out of order, even mid-run.
        if let Some(e) = sim.gaps() {
            return Err(format!("at tick {}: {e}", sim.now));
        }
        sim.check(false)
            .map_err(|e| format!("at tick {}: {e}", sim.now))?;
    }
    sim.faults = false;
    let mut last = Ok(());
    for _ in 0..4000 {
        sim.step();
        last = sim.check(true);
        if last.is_ok() {
            break;
        }
    }
    last.map_err(|e| format!("not converged after healing: {e}"))?;
    Ok(sim.stats)
}

#[test]
fn two_regions_converge_through_a_faulty_link() {
    let seeds: Vec<u64> = match std::env::var("MIRROR_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("MIRROR_SIM_SEED is a number")],
        Err(_) => (0..300).collect(),
    };
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    for seed in seeds {
        match run(seed) {
            Ok(stats) => {
                for (k, v) in stats {
                    *totals.entry(k).or_default() += v;
                }
            }
            Err(e) => panic!("seed {seed}: {e} (rerun with MIRROR_SIM_SEED={seed})"),
        }
    }
    println!("{totals:?}");
    // The faults did happen (a simulation that injects nothing proves nothing).
    for what in [
        "stream resets",
        "sender restarts",
        "receiver restarts",
        "duplicated frames",
        "streams closed by the receiver",
        "append retries",
    ] {
        assert!(totals.get(what).copied().unwrap_or(0) > 0, "no {what}");
    }
}

#[test]
fn the_same_seed_runs_the_same() {
    assert_eq!(run(7), run(7));
}
