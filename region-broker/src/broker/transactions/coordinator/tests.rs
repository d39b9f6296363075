//! The coordinator's decisions: requests in, records and answers out, every record applied
//! as the log would (and replayed into a fresh coordinator, as a follower or a restart does).

use super::*;

fn limits() -> Limits {
    Limits {
        transactions_max: 3,
        participants_max: 4,
        timeout_max_ms: 60_000,
        check_back_attempts: 3,
        check_back_backoff_ms: 100,
        check_back_backoff_max_ms: 250,
        default_outcome: Outcome::Abort,
        ended_kept_ms: 10_000,
    }
}

fn part(topic: &str, partition: u32) -> Participant {
    Participant {
        topic: topic.into(),
        partition,
    }
}

/// A coordinator and the log it wrote, applying each decision's record as the shell does.
struct Log {
    c: Coordinator,
    records: Vec<TxnRecord>,
    actions: Vec<Action>,
}

impl Log {
    fn new() -> Log {
        Log {
            c: Coordinator::new(limits()),
            records: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// Writes a record as the shell stores it (JSON) and applies what is read back.
    fn write(&mut self, record: TxnRecord) {
        let stored = serde_json::to_vec(&record).expect("a record serializes");
        let record: TxnRecord = serde_json::from_slice(&stored).expect("and reads back");
        self.records.push(record.clone());
        self.actions.extend(self.c.apply(record));
    }

    fn ask(&mut self, request: Request, now: Ms) -> Result<Answer, TxnError> {
        let d = self.c.decide(request, now)?;
        if let Some(r) = d.write {
            self.write(r);
        }
        d.answer
    }

    fn init(&mut self, id: &str, group: Option<&str>, now: Ms) -> (ProducerId, Epoch) {
        match self.ask(
            Request::Init {
                id: id.into(),
                timeout_ms: 1_000,
                producer_group: group.map(str::to_owned),
                fresh_producer_id: 7_000 + self.records.len() as i64,
            },
            now,
        ) {
            Ok(Answer::Producer { producer_id, epoch }) => (producer_id, epoch),
            other => panic!("init {id}: {other:?}"),
        }
    }

    fn add(&mut self, id: &str, p: (ProducerId, Epoch), parts: &[Participant], now: Ms) {
        self.ask(
            Request::Add {
                id: id.into(),
                producer_id: p.0,
                epoch: p.1,
                participants: parts.to_vec(),
            },
            now,
        )
        .unwrap();
    }

    fn end(
        &mut self,
        id: &str,
        p: Option<(ProducerId, Epoch)>,
        outcome: Outcome,
        now: Ms,
    ) -> Result<Answer, TxnError> {
        self.ask(
            Request::End {
                id: id.into(),
                producer: p,
                outcome,
            },
            now,
        )
    }

    /// Carries out the markers asked for, as the shell does once every participant holds
    /// them.
    fn finish_markers(&mut self, now: Ms) {
        for a in std::mem::take(&mut self.actions) {
            if let Action::WriteMarkers { txn, .. } = a {
                let r = self
                    .c
                    .markers_written(&txn.id, txn.producer_id, txn.epoch, now)
                    .expect("the prepared transaction completes");
                self.write(r);
            }
        }
    }

    fn add_offsets(&mut self, id: &str, p: (ProducerId, Epoch), group: &str, now: Ms) {
        self.ask(
            Request::AddOffsets {
                id: id.into(),
                producer_id: p.0,
                epoch: p.1,
                group: group.into(),
            },
            now,
        )
        .unwrap();
    }

    fn phase(&self, id: &str) -> Phase {
        self.c.get(id).expect("known").phase
    }

    /// A follower's (or a restarted leader's) coordinator: the same log replayed.
    fn replayed(&self) -> Coordinator {
        let mut c = Coordinator::new(limits());
        for r in &self.records {
            c.apply(r.clone());
        }
        c
    }
}

#[test]
fn commit_writes_markers_then_completes_and_a_retry_is_done() {
    let mut log = Log::new();
    let p = log.init("pay", None, 0);
    assert_eq!(p.1, 0);
    log.add("pay", p, &[part("orders", 0), part("audit", 2)], 10);
    assert_eq!(log.phase("pay"), Phase::Ongoing);
    log.end("pay", Some(p), Outcome::Commit, 20).unwrap();
    assert_eq!(log.phase("pay"), Phase::PrepareCommit);
    // The leader is told to write commit markers into both participants.
    let markers: Vec<_> = log
        .actions
        .iter()
        .map(|a| match a {
            Action::WriteMarkers { txn, outcome } => (txn.participants.len(), *outcome),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(markers, [(2, Outcome::Commit)]);
    // Until they are written, the same end is retried; the other outcome is refused.
    assert!(matches!(
        log.end("pay", Some(p), Outcome::Commit, 21),
        Err(TxnError::Concurrent { .. })
    ));
    log.finish_markers(30);
    assert_eq!(log.phase("pay"), Phase::CompleteCommit);
    assert_eq!(
        log.end("pay", Some(p), Outcome::Commit, 40),
        Ok(Answer::Done)
    );
    let refused = log.end("pay", Some(p), Outcome::Abort, 41).unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("a rollback after the transaction was committed is refused"),
        "{refused}"
    );
    assert_eq!(log.replayed().get("pay"), log.c.get("pay"));
}

#[test]
fn a_commit_after_a_rollback_is_refused_and_native_ends_need_only_the_id() {
    let mut log = Log::new();
    let p = log.init("orders-svc-1", Some("orders-svc"), 0);
    log.add("orders-svc-1", p, &[part("orders", 1)], 1);
    log.end("orders-svc-1", None, Outcome::Abort, 2).unwrap();
    log.finish_markers(3);
    assert_eq!(log.phase("orders-svc-1"), Phase::CompleteAbort);
    assert_eq!(
        log.end("orders-svc-1", None, Outcome::Abort, 4),
        Ok(Answer::Done)
    );
    let refused = log
        .end("orders-svc-1", None, Outcome::Commit, 5)
        .unwrap_err();
    assert!(matches!(
        refused,
        TxnError::InvalidState {
            phase: Phase::CompleteAbort,
            ..
        }
    ));
    assert!(
        refused
            .to_string()
            .contains("a commit after the transaction was rolled back is refused")
    );
    // Nothing open: ending is refused, not invented.
    let mut fresh = Log::new();
    let q = fresh.init("t", None, 0);
    assert!(matches!(
        fresh.end("t", Some(q), Outcome::Commit, 1),
        Err(TxnError::InvalidState {
            phase: Phase::Empty,
            ..
        })
    ));
    assert!(matches!(
        fresh.end("nobody", None, Outcome::Commit, 1),
        Err(TxnError::Unknown { .. })
    ));
}

#[test]
fn a_new_producer_fences_the_old_and_aborts_what_it_left_open() {
    let mut log = Log::new();
    let old = log.init("etl", None, 0);
    log.add("etl", old, &[part("out", 0)], 1);
    // The same transactional id starts again while the old transaction is open: the old
    // one is aborted (epoch bumped) and the new producer told to retry.
    let retry = log.ask(
        Request::Init {
            id: "etl".into(),
            timeout_ms: 1_000,
            producer_group: None,
            fresh_producer_id: 99,
        },
        2,
    );
    assert!(
        matches!(retry, Err(TxnError::Concurrent { .. })),
        "{retry:?}"
    );
    assert_eq!(log.phase("etl"), Phase::PrepareAbort);
    log.finish_markers(3);
    let new = log.init("etl", None, 4);
    assert_eq!(new.0, old.0, "the same producer id");
    assert!(
        new.1 > old.1 + 1,
        "a newer epoch than the abort's: {new:?} after {old:?}"
    );
    // The old producer is fenced everywhere.
    let fenced = log
        .ask(
            Request::Add {
                id: "etl".into(),
                producer_id: old.0,
                epoch: old.1,
                participants: vec![part("out", 1)],
            },
            5,
        )
        .unwrap_err();
    assert!(matches!(fenced, TxnError::Fenced { .. }), "{fenced}");
    assert!(matches!(
        log.end("etl", Some(old), Outcome::Commit, 6),
        Err(TxnError::Fenced { .. })
    ));
    assert!(matches!(
        log.end("etl", Some((old.0 + 1, new.1)), Outcome::Commit, 6),
        Err(TxnError::WrongProducer { .. })
    ));
}

#[test]
fn a_kafka_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let mut log = Log::new();
    let p = log.init("slow", None, 0);
    log.add("slow", p, &[part("t", 0)], 100);
    assert!(log.c.due(1_099, |_| None).is_empty(), "not yet");
    let due = log.c.due(1_100, |_| None);
    let [Action::Write(abort)] = due.as_slice() else {
        panic!("{due:?}")
    };
    log.write(abort.clone());
    let txn = log.c.get("slow").unwrap();
    assert_eq!(
        (txn.phase, txn.decided_by),
        (Phase::PrepareAbort, Some(DecidedBy::Timeout))
    );
    assert_eq!(txn.epoch, p.1 + 1);
    log.finish_markers(1_200);
    assert!(matches!(
        log.end("slow", Some(p), Outcome::Commit, 1_300),
        Err(TxnError::Fenced { .. })
    ));
}

#[test]
fn an_in_doubt_native_transaction_is_checked_back_then_decided_by_the_answer() {
    let mut log = Log::new();
    let p = log.init("svc-a", Some("svc"), 0);
    log.add("svc-a", p, &[part("orders", 0)], 0);
    // Timeout 1 s: the group is asked, the attempt recorded first.
    let due = log.c.due(1_000, |_| None);
    assert!(
        matches!(due.as_slice(), [Action::Write(_), Action::CheckBack { group, .. }] if group == "svc"),
        "{due:?}"
    );
    log.write(match &due[0] {
        Action::Write(r) => r.clone(),
        _ => unreachable!(),
    });
    assert_eq!(log.c.get("svc-a").unwrap().check_backs, 1);
    assert!(
        log.c.due(1_050, |_| None).is_empty(),
        "the next attempt waits for its backoff"
    );
    // "I don't know it": nothing decided; the next attempt comes after the backoff.
    assert_eq!(
        log.c.checked_back("svc-a", (p.0, p.1, 1), None, 1_010),
        None
    );
    // A producer of the group says commit.
    let r = log
        .c
        .checked_back("svc-a", (p.0, p.1, 1), Some(Outcome::Commit), 1_020)
        .unwrap();
    log.write(r);
    let txn = log.c.get("svc-a").unwrap();
    assert_eq!(
        (txn.phase, txn.decided_by),
        (Phase::PrepareCommit, Some(DecidedBy::CheckBack))
    );
    // A late answer for it changes nothing, nor does one about it once the next
    // transaction (same producer and epoch) is open.
    let late = |log: &Log, now| {
        log.c
            .checked_back("svc-a", (p.0, p.1, 1), Some(Outcome::Abort), now)
    };
    assert_eq!(late(&log, 1_030), None);
    log.finish_markers(1_040);
    log.add("svc-a", p, &[part("orders", 1)], 1_050);
    assert_eq!(log.c.get("svc-a").unwrap().number, 2);
    assert_eq!(late(&log, 1_060), None);
}

#[test]
fn unanswered_check_backs_end_in_the_default_outcome_recorded_as_such() {
    let mut log = Log::new();
    let p = log.init("svc-b", Some("svc"), 0);
    log.add("svc-b", p, &[part("orders", 0)], 0);
    let mut asked = Vec::new();
    let mut now = 1_000;
    loop {
        let due = log.c.due(now, |_| None);
        for a in due {
            match a {
                Action::Write(r) => log.write(r),
                Action::CheckBack { .. } => asked.push(now),
                other => panic!("{other:?}"),
            }
        }
        if log.phase("svc-b") != Phase::Ongoing {
            break;
        }
        now += 10;
        assert!(now < 10_000, "never decided");
    }
    // Three attempts, backoff 100 then 200 then capped at 250.
    assert_eq!(asked, [1_000, 1_100, 1_300]);
    let txn = log.c.get("svc-b").unwrap();
    assert_eq!(
        (txn.phase, txn.decided_by),
        (Phase::PrepareAbort, Some(DecidedBy::Default))
    );
    assert_eq!(now, 1_550);
    assert_eq!(log.replayed().get("svc-b"), log.c.get("svc-b"));
}

/// A topic's own default outcome decides for its partitions: a transaction on topics that
/// all commit by default commits; one topic that rolls back (its own, or the broker's where
/// it sets none) rolls the transaction back.
#[test]
fn the_participants_topics_choose_the_default_outcome() {
    let decided = |topics: &[&str]| {
        let mut log = Log::new();
        let p = log.init("svc-t", Some("svc"), 0);
        let parts: Vec<Participant> = topics.iter().map(|t| part(t, 0)).collect();
        log.add("svc-t", p, &parts, 0);
        let defaults = |topic: &str| match topic {
            "ledger" | "audit" => Some(Outcome::Commit),
            "orders" => Some(Outcome::Abort),
            _ => None,
        };
        let mut now = 1_000;
        while log.phase("svc-t") == Phase::Ongoing {
            for a in log.c.due(now, defaults) {
                if let Action::Write(r) = a {
                    log.write(r);
                }
            }
            now += 10;
            assert!(now < 10_000, "never decided");
        }
        log.phase("svc-t")
    };
    assert_eq!(decided(&["ledger", "audit"]), Phase::PrepareCommit);
    assert_eq!(decided(&["ledger", "orders"]), Phase::PrepareAbort);
    // "misc" sets none: the broker's (abort in these limits) applies to it.
    assert_eq!(decided(&["ledger", "misc"]), Phase::PrepareAbort);
}

#[test]
fn a_new_leader_resumes_the_markers_of_what_was_prepared() {
    let mut log = Log::new();
    let a = log.init("a", None, 0);
    let b = log.init("b", None, 0);
    log.add("a", a, &[part("t", 0)], 1);
    log.add("b", b, &[part("t", 1)], 1);
    log.end("a", Some(a), Outcome::Commit, 2).unwrap();
    log.end("b", Some(b), Outcome::Abort, 2).unwrap();
    log.finish_markers(3);
    log.add("a", a, &[part("t", 2)], 4);
    log.end("a", Some(a), Outcome::Abort, 5).unwrap();
    // The leader dies before writing a's markers: a follower replays the log.
    let follower = log.replayed();
    let pending = follower.pending_markers();
    assert_eq!(pending.len(), 1, "{pending:?}");
    let Action::WriteMarkers { txn, outcome } = &pending[0] else {
        panic!()
    };
    assert_eq!((txn.id.as_str(), *outcome), ("a", Outcome::Abort));
    assert_eq!(
        txn.participants,
        BTreeSet::from([part("t", 2)]),
        "only this transaction's"
    );
    // Markers written by a stale request (another epoch) complete nothing.
    assert_eq!(follower.markers_written("a", a.0, a.1 + 1, 6), None);
    assert!(follower.markers_written("a", a.0, a.1, 6).is_some());
}

#[test]
fn bounds_are_refused_with_nothing_written() {
    let mut log = Log::new();
    let p = log.init("big", None, 0);
    let many: Vec<Participant> = (0..5).map(|i| part("t", i)).collect();
    let written = log.records.len();
    let refused = log
        .ask(
            Request::Add {
                id: "big".into(),
                producer_id: p.0,
                epoch: p.1,
                participants: many,
            },
            1,
        )
        .unwrap_err();
    assert!(matches!(
        refused,
        TxnError::TooManyParticipants {
            count: 5,
            max: 4,
            ..
        }
    ));
    assert_eq!(log.records.len(), written, "nothing half applied");
    assert_eq!(log.phase("big"), Phase::Empty);
    for bad in [0, 60_001] {
        assert!(matches!(
            log.c.decide(
                Request::Init {
                    id: "x".into(),
                    timeout_ms: bad,
                    producer_group: None,
                    fresh_producer_id: 1,
                },
                1
            ),
            Err(TxnError::InvalidTimeout { .. })
        ));
    }
    log.init("two", None, 1);
    log.init("three", None, 1);
    assert!(matches!(
        log.c.decide(
            Request::Init {
                id: "four".into(),
                timeout_ms: 1_000,
                producer_group: None,
                fresh_producer_id: 1,
            },
            1
        ),
        Err(TxnError::TooManyTransactions { max: 3 })
    ));
    // Ended ids are forgotten after `ended_kept_ms`, making room.
    let due = log.c.due(10_001, |_| None);
    assert_eq!(due.len(), 3, "{due:?}");
    for a in due {
        let Action::Write(r) = a else { panic!() };
        log.write(r);
    }
    assert!(log.c.list().is_empty());
    log.init("four", None, 10_002);
}

#[test]
fn a_first_batch_is_verified_against_the_partitions_added_and_nothing_is_written() {
    let mut log = Log::new();
    let p = log.init("t", None, 0);
    let verify = |partition: Participant, producer: (ProducerId, Epoch)| Request::Verify {
        id: "t".into(),
        producer_id: producer.0,
        epoch: producer.1,
        participant: partition,
    };
    // No transaction open yet: nothing is in it.
    assert!(matches!(
        log.ask(verify(part("a", 0), p), 1),
        Err(TxnError::InvalidState { .. })
    ));
    log.add("t", p, &[part("a", 0)], 2);
    let written = log.records.len();
    assert_eq!(log.ask(verify(part("a", 0), p), 3), Ok(Answer::Done));
    assert!(matches!(
        log.ask(verify(part("a", 1), p), 4),
        Err(TxnError::InvalidState { .. })
    ));
    // An older epoch is fenced, an unknown id has no producer.
    assert!(matches!(
        log.ask(verify(part("a", 0), (p.0, p.1 - 1)), 5),
        Err(TxnError::Fenced { .. })
    ));
    let mut unknown = verify(part("a", 0), p);
    if let Request::Verify { id, .. } = &mut unknown {
        *id = "nobody".into();
    }
    assert!(matches!(log.ask(unknown, 6), Err(TxnError::Unknown { .. })));
    assert_eq!(log.records.len(), written, "verifying writes nothing");
    // Once ended, a late batch's partition is no longer in an open transaction.
    log.end("t", Some(p), Outcome::Commit, 7).unwrap();
    assert!(matches!(
        log.ask(verify(part("a", 0), p), 8),
        Err(TxnError::InvalidState { .. })
    ));
}

#[test]
fn adding_what_is_already_added_writes_nothing() {
    let mut log = Log::new();
    let p = log.init("t", None, 0);
    log.add("t", p, &[part("a", 0)], 1);
    let written = log.records.len();
    log.add("t", p, &[part("a", 0)], 2);
    assert_eq!(log.records.len(), written);
    log.add_offsets("t", p, "readers", 3);
    assert_eq!(log.records.len(), written + 1);
    assert!(log.c.get("t").unwrap().offset_groups.contains("readers"));
}

#[test]
fn offsets_committed_in_a_transaction_need_their_group_and_keep_the_last_per_partition() {
    let mut log = Log::new();
    let p = log.init("t", None, 0);
    log.add("t", p, &[part("out", 0)], 1);
    let commit = |group: &str, offset| Request::CommitOffsets {
        id: "t".into(),
        producer_id: p.0,
        epoch: p.1,
        group: group.into(),
        offsets: vec![(part("in", 2), offset)],
    };
    let refused = log.ask(commit("readers", 5), 2).unwrap_err();
    assert!(
        matches!(refused, TxnError::InvalidState { .. }),
        "{refused}"
    );
    log.add_offsets("t", p, "readers", 3);
    log.ask(commit("readers", 5), 4).unwrap();
    log.ask(commit("readers", 9), 5).unwrap();
    let offsets = &log.c.get("t").unwrap().offsets;
    assert_eq!(
        offsets,
        &[PendingOffset {
            group: "readers".into(),
            partition: part("in", 2),
            offset: 9
        }]
    );
    // They go with the commit's markers, and the next transaction starts without them.
    log.end("t", Some(p), Outcome::Commit, 6).unwrap();
    let Some(Action::WriteMarkers { txn, .. }) = log.actions.last() else {
        panic!("no markers to write: {:?}", log.actions);
    };
    assert_eq!(txn.offsets.len(), 1);
    log.finish_markers(7);
    log.add("t", p, &[part("out", 0)], 8);
    assert!(log.c.get("t").unwrap().offsets.is_empty());
    assert_eq!(log.replayed().get("t"), log.c.get("t"));
}

#[derive(Debug, Clone)]
enum Step {
    Init(usize),
    Add(usize, u32, bool),
    End(usize, bool, bool),
    Markers,
    Tick(i64),
    Answer(usize, Option<bool>),
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    prop_oneof![
        (0..3usize).prop_map(Step::Init),
        (0..3usize, 0..6u32, any::<bool>()).prop_map(|(i, p, s)| Step::Add(i, p, s)),
        (0..3usize, any::<bool>(), any::<bool>()).prop_map(|(i, c, s)| Step::End(i, c, s)),
        Just(Step::Markers),
        (1..2_000i64).prop_map(Step::Tick),
        (0..3usize, proptest::option::of(any::<bool>())).prop_map(|(i, a)| Step::Answer(i, a)),
    ]
}

proptest::proptest! {
    /// Whatever producers, clocks and check-back answers do: a replica replaying the log has
    /// the leader's state; a decided outcome never turns into the other; bounds hold.
    #[test]
    fn decisions_replay_the_same_and_outcomes_never_flip(steps in proptest::collection::vec(step(), 1..80)) {
        let ids = ["a", "b", "c"];
        let mut log = Log::new();
        let mut now = 0;
        // The producer each id's last Init returned (stale ones are used too).
        let mut producers: HashMap<usize, (ProducerId, Epoch)> = HashMap::new();
        let mut decided: HashMap<(String, ProducerId, Epoch, u64), Outcome> = HashMap::new();
        for s in steps {
            match s {
                Step::Init(i) => {
                    if let Ok(Answer::Producer { producer_id, epoch }) = log.ask(
                        Request::Init {
                            id: ids[i].into(),
                            timeout_ms: 500,
                            producer_group: (i == 2).then(|| "g".to_owned()),
                            fresh_producer_id: 100 + now,
                        },
                        now,
                    ) {
                        producers.insert(i, (producer_id, epoch));
                    }
                }
                Step::Add(i, p, stale) => {
                    if let Some(&(pid, epoch)) = producers.get(&i) {
                        let epoch = if stale { epoch.saturating_sub(1) } else { epoch };
                        let _ = log.ask(
                            Request::Add {
                                id: ids[i].into(),
                                producer_id: pid,
                                epoch,
                                participants: vec![part("t", p)],
                            },
                            now,
                        );
                    }
                }
                Step::End(i, commit, by_id) => {
                    let producer = if by_id { None } else { producers.get(&i).copied() };
                    let outcome = if commit { Outcome::Commit } else { Outcome::Abort };
                    let _ = log.end(ids[i], producer, outcome, now);
                }
                Step::Markers => log.finish_markers(now),
                Step::Tick(dt) => {
                    now += dt;
                    for a in log.c.due(now, |_| None) {
                        if let Action::Write(r) = a {
                            log.write(r);
                        }
                    }
                }
                Step::Answer(i, answer) => {
                    if let Some(txn) = log.c.get(ids[i]).cloned() {
                        let outcome = answer.map(|c| if c { Outcome::Commit } else { Outcome::Abort });
                        if let Some(r) = log.c.checked_back(ids[i], (txn.producer_id, txn.epoch, txn.number), outcome, now) {
                            log.write(r);
                        }
                    }
                }
            }
            for txn in log.c.list() {
                proptest::prop_assert!(txn.participants.len() <= limits().participants_max);
                if let Some(outcome) = txn.phase.outcome() {
                    let key = (txn.id.clone(), txn.producer_id, txn.epoch, txn.number);
                    let first = *decided.entry(key).or_insert(outcome);
                    proptest::prop_assert_eq!(first, outcome, "{:?} flipped", txn);
                }
            }
            proptest::prop_assert!(log.c.list().len() <= limits().transactions_max);
        }
        let replayed = log.replayed();
        proptest::prop_assert_eq!(replayed.list(), log.c.list());
    }
}
