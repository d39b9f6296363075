use super::*;

const SESSION: u32 = 3_000;

/// A coordinator and a replica that applies only what the coordinator wrote: every
/// decision is checked to be rebuilt from the log.
struct Harness {
    c: Membership,
    replica: Membership,
    partitions: BTreeMap<String, u32>,
}

impl Harness {
    fn new(partitions: u32) -> Harness {
        Harness {
            c: Membership::new(Limits::default()),
            replica: Membership::new(Limits::default()),
            partitions: [("t".to_string(), partitions)].into(),
        }
    }

    fn send(&mut self, hb: Heartbeat, now: u64) -> Result<Answer, GroupError> {
        let d = self.c.heartbeat(hb, &self.partitions, now);
        if let Some(r) = d.write {
            // The replica applies the record as the log holds it: JSON.
            let json = serde_json::to_vec(&r).expect("a record encodes");
            self.replica
                .apply(serde_json::from_slice(&json).expect("a record decodes"));
            self.c.apply(r);
        }
        assert_eq!(
            self.c.groups, self.replica.groups,
            "the log rebuilds the state"
        );
        self.assert_no_partition_twice();
        d.answer
    }

    fn join(&mut self, client: &str, now: u64) -> Answer {
        self.send(
            Heartbeat {
                group: "g".into(),
                client_id: client.into(),
                topics: Some(["t".to_string()].into()),
                session_ms: SESSION,
                ..Heartbeat::default()
            },
            now,
        )
        .unwrap()
    }

    /// A heartbeat saying it owns exactly what it was last given.
    fn beat(&mut self, a: &Answer, now: u64) -> Result<Answer, GroupError> {
        self.send(
            Heartbeat {
                group: "g".into(),
                member_id: a.member_id.clone(),
                member_epoch: a.member_epoch,
                owned: Some(a.assignment.clone()),
                ..Heartbeat::default()
            },
            now,
        )
    }

    fn assert_no_partition_twice(&self) {
        for g in self.c.groups.values() {
            if g.assignor == Assignor::Broadcast {
                continue;
            }
            let mut held = BTreeSet::new();
            for m in g.members.values() {
                for tp in m.assigned.iter().chain(&m.revoking) {
                    assert!(held.insert(tp.clone()), "{tp:?} held twice in {g:?}");
                }
            }
        }
    }
}

fn tp(p: u32) -> TopicPartition {
    ("t".to_string(), p)
}

#[test]
fn two_members_split_the_partitions_and_a_third_gets_its_share_only_once_released() {
    let mut h = Harness::new(6);
    let a = h.join("a", 0);
    assert_eq!(a.assignment.len(), 6, "alone, a has everything");
    let b = h.join("b", 10);
    assert!(b.assignment.is_empty(), "b waits until a gives some up");
    // a hears of the rebalance: it keeps three and stops owning three.
    let a = h.beat(&a, 20).unwrap();
    assert_eq!(a.assignment.len(), 3);
    // b's share is still revoking at a (a has not said it gave them up): nothing yet.
    assert!(h.beat(&b, 30).unwrap().assignment.is_empty());
    // a says it owns only its three now; b gets the rest.
    let a = h.beat(&a, 40).unwrap();
    let b = h.beat(&b, 50).unwrap();
    assert_eq!(b.assignment.len(), 3);
    assert!(a.assignment.is_disjoint(&b.assignment));
    assert!(h.c.get("g").unwrap().is_stable());

    // A third joins: a and b each give up one, and keep the other two.
    let c = h.join("c", 60);
    let a2 = h.beat(&a, 70).unwrap();
    let b2 = h.beat(&b, 80).unwrap();
    assert_eq!((a2.assignment.len(), b2.assignment.len()), (2, 2));
    assert!(
        a2.assignment.is_subset(&a.assignment),
        "a keeps what it keeps"
    );
    assert!(b2.assignment.is_subset(&b.assignment));
    let (a2, b2) = (h.beat(&a2, 90).unwrap(), h.beat(&b2, 95).unwrap());
    let c = h.beat(&c, 100).unwrap();
    assert_eq!(c.assignment.len(), 2);
    let all: BTreeSet<_> = a2
        .assignment
        .iter()
        .chain(&b2.assignment)
        .chain(&c.assignment)
        .cloned()
        .collect();
    assert_eq!(all, (0..6).map(tp).collect());
}

#[test]
fn a_revoking_partition_may_be_committed_until_given_up_and_then_not() {
    let mut h = Harness::new(2);
    let a = h.join("a", 0);
    let _b = h.join("b", 1);
    let a2 = h.beat(&a, 2).unwrap();
    let gone = a
        .assignment
        .difference(&a2.assignment)
        .next()
        .unwrap()
        .clone();
    h.c.check_commit("g", &a.member_id, a2.member_epoch, &gone)
        .expect("a may still commit what it is giving up");
    h.beat(&a2, 3).unwrap();
    let e =
        h.c.check_commit("g", &a.member_id, a2.member_epoch, &gone)
            .unwrap_err();
    assert!(matches!(e, GroupError::NotAssigned { .. }), "{e}");
}

#[test]
fn a_silent_member_is_removed_its_partitions_move_and_its_commits_are_refused() {
    let mut h = Harness::new(4);
    let a = h.join("a", 0);
    let b = h.join("b", 0);
    let a = h.beat(&a, 10).unwrap();
    let a = h.beat(&a, 11).unwrap();
    let b = h.beat(&b, 12).unwrap();
    assert_eq!((a.assignment.len(), b.assignment.len()), (2, 2));
    // a goes quiet (SIGSTOP); b keeps beating.
    let mut now = 12;
    let mut b = b;
    while now < 12 + u64::from(SESSION) + 1_000 {
        now += 500;
        b = h.beat(&b, now).unwrap();
        for r in h.c.expire(now) {
            h.c.apply(r.clone());
            h.replica.apply(r);
        }
    }
    b = h.beat(&b, now + 1).unwrap();
    assert_eq!(b.assignment.len(), 4, "b has a's partitions");
    for p in a.assignment.iter() {
        let e =
            h.c.check_commit("g", &a.member_id, a.member_epoch, p)
                .unwrap_err();
        assert!(matches!(e, GroupError::UnknownMember { .. }), "{e}");
    }
    let e = h.beat(&a, now + 2).unwrap_err();
    assert!(matches!(e, GroupError::UnknownMember { .. }), "{e}");
}

#[test]
fn a_member_leaving_hands_its_partitions_on_and_the_last_deletes_the_group() {
    let mut h = Harness::new(3);
    let a = h.join("a", 0);
    let b = h.join("b", 0);
    let a = h.beat(&a, 1).unwrap();
    let a = h.beat(&a, 2).unwrap();
    let b = h.beat(&b, 3).unwrap();
    let left = h
        .send(
            Heartbeat {
                group: "g".into(),
                member_id: a.member_id.clone(),
                member_epoch: -1,
                ..Heartbeat::default()
            },
            4,
        )
        .unwrap();
    assert_eq!(left.member_epoch, -1);
    assert_eq!(h.beat(&b, 5).unwrap().assignment.len(), 3);
    h.send(
        Heartbeat {
            group: "g".into(),
            member_id: b.member_id.clone(),
            member_epoch: -1,
            ..Heartbeat::default()
        },
        6,
    )
    .unwrap();
    assert!(h.c.get("g").is_none());
}

#[test]
fn bad_joins_and_epochs_are_refused() {
    let mut h = Harness::new(1);
    let join = |session_ms, assignor: &str, topics: &[&str]| Heartbeat {
        group: "g".into(),
        client_id: "x".into(),
        topics: Some(topics.iter().map(|t| t.to_string()).collect()),
        session_ms,
        assignor: assignor.into(),
        ..Heartbeat::default()
    };
    for (hb, says) in [
        (join(10, "", &["t"]), "session timeout"),
        (join(SESSION, "fastest", &["t"]), "unknown assignor"),
        (join(SESSION, "", &[]), "at least one topic"),
    ] {
        let e = h.send(hb, 0).unwrap_err();
        assert!(e.to_string().contains(says), "{e}");
    }
    let a = h.join("a", 0);
    let e = h
        .beat(
            &Answer {
                member_epoch: a.member_epoch + 5,
                ..a.clone()
            },
            1,
        )
        .unwrap_err();
    assert!(matches!(e, GroupError::FencedEpoch { .. }), "{e}");
    let mut full = Membership::new(Limits {
        groups_max: 1,
        ..Limits::default()
    });
    let d = full.heartbeat(join(SESSION, "", &["t"]), &h.partitions, 0);
    full.apply(d.write.unwrap());
    let mut other = join(SESSION, "", &["t"]);
    other.group = "h".into();
    let d = full.heartbeat(other, &h.partitions, 0);
    assert!(matches!(d.answer, Err(GroupError::Full(_))));
    assert!(d.write.is_none());
}

#[test]
fn more_partitions_rebalance_the_group() {
    let mut h = Harness::new(2);
    let a = h.join("a", 0);
    assert_eq!(a.assignment.len(), 2);
    h.partitions.insert("t".into(), 4);
    let a = h.beat(&a, 1).unwrap();
    assert_eq!(a.assignment.len(), 4);
}

#[test]
fn a_member_may_choose_its_id_and_a_heartbeat_at_epoch_0_joins_again() {
    let mut h = Harness::new(2);
    let chosen = |epoch| Heartbeat {
        group: "g".into(),
        member_id: "chosen-by-client".into(),
        member_epoch: epoch,
        client_id: "k".into(),
        topics: Some(["t".to_string()].into()),
        owned: Some(BTreeSet::new()),
        session_ms: SESSION,
        ..Heartbeat::default()
    };
    let a = h.send(chosen(0), 0).unwrap();
    assert_eq!(a.member_id, "chosen-by-client");
    assert!(a.member_epoch > 0, "a joined member's epoch is never 0");
    assert_eq!(a.assignment.len(), 2);
    // Joining again (a restarted client) starts over, still one member.
    let again = h.send(chosen(0), 1).unwrap();
    assert_eq!(again.member_id, "chosen-by-client");
    assert_eq!(h.c.get("g").unwrap().members.len(), 1);
}

#[test]
fn a_heartbeat_sent_before_a_revocation_does_not_give_the_partition_up() {
    let mut h = Harness::new(2);
    let a = h.join("a", 0);
    assert_eq!(a.assignment.len(), 2);
    let b = h.join("b", 1);
    // A beat of a's from before it heard of b (its old epoch), saying it owns nothing yet
    // (it had not taken its partitions up): that is not giving anything up.
    let stale = h
        .send(
            Heartbeat {
                group: "g".into(),
                member_id: a.member_id.clone(),
                member_epoch: a.member_epoch,
                owned: Some(BTreeSet::new()),
                ..Heartbeat::default()
            },
            2,
        )
        .unwrap();
    assert_eq!(stale.assignment.len(), 1, "a keeps one, gives one up");
    assert!(
        h.beat(&b, 3).unwrap().assignment.is_empty(),
        "b gets nothing while a may still be reading it"
    );
    // At its new epoch, owning only what it keeps: now b gets the other.
    h.beat(&stale, 4).unwrap();
    assert_eq!(h.beat(&b, 5).unwrap().assignment.len(), 1);
}

/// A broadcast member's join.
fn broadcast_join(instance: &str) -> Heartbeat {
    Heartbeat {
        group: "g".into(),
        client_id: instance.into(),
        topics: Some(["t".to_string()].into()),
        session_ms: SESSION,
        assignor: "broadcast".into(),
        instance_id: instance.into(),
        instance_idle_ms: 10_000,
        ..Heartbeat::default()
    }
}

#[test]
fn broadcast_gives_every_member_every_partition_and_keeps_each_instances_place() {
    let mut h = Harness::new(3);
    let all: BTreeSet<_> = (0..3).map(tp).collect();
    let a = h.send(broadcast_join("a"), 0).unwrap();
    let b = h.send(broadcast_join("b"), 1).unwrap();
    let c = h.send(broadcast_join("c"), 2).unwrap();
    for m in [&a, &b, &c] {
        assert_eq!(h.beat(m, 3).unwrap().assignment, all, "{m:?}");
        h.c.check_commit("g", &m.member_id, m.member_epoch, &tp(1))
            .expect("each commits its own place");
    }
    assert!(h.c.get("g").unwrap().is_stable());
    assert_eq!(
        h.c.offsets_owner("g", &b.member_id).as_deref(),
        Some("g/b"),
        "a broadcast member commits under its instance"
    );

    // Everyone leaves: the group outlives them, remembering their instances.
    for m in [&a, &b, &c] {
        let mut leave = broadcast_join("");
        leave.member_id = m.member_id.clone();
        leave.member_epoch = -1;
        h.send(leave, 100).unwrap();
    }
    let g = h.c.get("g").expect("the group outlives its members");
    assert!(g.members.is_empty());
    assert_eq!(g.instances.len(), 3);
    assert!(h.c.idle_instances(5_000).is_empty(), "not idle long enough");

    // b comes back within the idle time: its instance is in use again.
    let b2 = h.send(broadcast_join("b"), 6_000).unwrap();
    assert_eq!(h.beat(&b2, 6_001).unwrap().assignment, all);
    let idle: Vec<_> =
        h.c.idle_instances(10_101)
            .into_iter()
            .map(|(_, i, _)| i)
            .collect();
    assert_eq!(idle, ["a", "c"], "idle past 10 s, b not");
    for i in idle {
        let r = h.c.forget_instance("g", &i).expect("idle");
        h.replica.apply(r.clone());
        h.c.apply(r);
    }
    assert!(h.c.forget_instance("g", "b").is_none(), "b has a member");
    assert_eq!(h.c.get("g").unwrap().instances.len(), 1);
    // b leaves and idles out: the group ends.
    let mut leave = broadcast_join("");
    leave.member_id = b2.member_id.clone();
    leave.member_epoch = -1;
    h.send(leave, 20_000).unwrap();
    let r = h.c.forget_instance("g", "b").expect("idle");
    assert!(matches!(r, GroupRecord::Delete { .. }), "{r:?}");
}

#[test]
fn a_broadcast_instance_joining_again_fences_the_member_it_was() {
    let mut h = Harness::new(2);
    let old = h.send(broadcast_join("a"), 0).unwrap();
    let new = h.send(broadcast_join("a"), 1).unwrap();
    assert_ne!(old.member_id, new.member_id);
    let e = h.beat(&old, 2).unwrap_err();
    assert!(matches!(e, GroupError::UnknownMember { .. }), "{e}");
    let e =
        h.c.check_commit("g", &old.member_id, old.member_epoch, &tp(0))
            .unwrap_err();
    assert!(matches!(e, GroupError::UnknownMember { .. }), "{e}");
    assert_eq!(h.c.get("g").unwrap().members.len(), 1);
}

#[test]
fn a_broadcast_group_needs_instances_and_stays_broadcast() {
    let mut h = Harness::new(2);
    let e = h.send(broadcast_join(""), 0).unwrap_err();
    assert!(matches!(e, GroupError::Invalid(_)), "{e}");
    let mut bad = broadcast_join("a");
    bad.instance_idle_ms = 10;
    assert!(matches!(h.send(bad, 0), Err(GroupError::Invalid(_))));
    h.send(broadcast_join("a"), 0).unwrap();
    let mut sticky = broadcast_join("b");
    sticky.assignor = "sticky".into();
    let e = h.send(sticky, 1).unwrap_err();
    assert!(e.to_string().contains("broadcast"), "{e}");
    // And a plain group refuses a broadcast member.
    let mut plain = broadcast_join("");
    plain.group = "p".into();
    plain.assignor = "range".into();
    h.send(plain, 2).unwrap();
    let mut into_plain = broadcast_join("d");
    into_plain.group = "p".into();
    let e = h.send(into_plain, 3).unwrap_err();
    assert!(matches!(e, GroupError::Invalid(_)), "{e}");
}
