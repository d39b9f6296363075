//! Native consumer groups with membership, across real processes: `meridian consume
//! --group` members split a topic's partitions, a member joining takes its share with
//! nothing lost or read twice, and a member paused past its session (SIGSTOP) loses its
//! partitions to another, reads nothing of theirs when it wakes, and its old membership's
//! commits are refused. A broadcast group gives every member everything, each from its
//! instance's own position, kept while the instance idles and then forgotten.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meridian_proto::v1;
use meridian_tests::{BrokerProcess, Region, binary, meridian};

const PARTITIONS: u32 = 6;

/// A `meridian consume` member of `group` writing what it reads to `dir/name`.
fn member(
    region: &[BrokerProcess],
    group: &str,
    dir: &Path,
    name: &str,
    idle_exit_ms: u64,
) -> Child {
    member_with(region, group, dir, name, idle_exit_ms, &[])
}

/// [`member`] with more `meridian consume` arguments.
fn member_with(
    region: &[BrokerProcess],
    group: &str,
    dir: &Path,
    name: &str,
    idle_exit_ms: u64,
    extra: &[&str],
) -> Child {
    Command::new(binary("meridian"))
        .args([
            "--broker",
            &meridian_tests::bootstrap(region),
            "consume",
            "work",
        ])
        .args(["--group", group, "--from", "beginning"])
        .args(["--session-timeout-ms", "3000"])
        .args(["--idle-exit-ms", &idle_exit_ms.to_string()])
        .args(extra)
        .stdout(std::fs::File::create(dir.join(name)).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{name}.err"))).unwrap())
        .stdin(Stdio::null())
        .spawn()
        .expect("start meridian consume")
}

/// Waits for a member to exit by itself (its idle exit), at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("a member did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Produces `values` to "work" (no key: spread over the partitions).
fn produce(region: &[BrokerProcess], values: std::ops::Range<u32>) {
    let lines: String = values.map(|i| format!("m{i}\n")).collect();
    let (code, _, err) = meridian(region[0].addr, &["produce", "work"], Some(&lines));
    assert_eq!(code, 0, "{err}");
}

/// Every line a member printed.
fn lines(dir: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(dir.join(name))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Asserts that the members' outputs together hold `m0..m{n}` exactly once each.
fn assert_exactly_once(outputs: &[Vec<String>], n: u32) {
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for out in outputs {
        for l in out {
            *count.entry(l.as_str()).or_default() += 1;
        }
    }
    let duplicates: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
    let expected: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|v| !count.contains_key(v.as_str()))
        .collect();
    assert!(
        duplicates.is_empty() && missing.is_empty() && count.len() == n as usize,
        "{} read twice ({:?}…), {} missing ({:?}…), {} distinct of {n}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)],
        missing.len(),
        &missing[..missing.len().min(5)],
        count.len()
    );
}

/// The native group `group` as the broker coordinating it lists it, and that broker.
async fn described(
    region: &[BrokerProcess],
    group: &str,
) -> Option<(usize, v1::ConsumerGroupInfo)> {
    for (i, b) in region.iter().enumerate() {
        let Ok(mut raw) =
            v1::broker_client::BrokerClient::connect(format!("http://{}", b.addr)).await
        else {
            continue;
        };
        let Ok(listed) = raw
            .list_consumer_groups(v1::ListConsumerGroupsRequest {})
            .await
        else {
            continue;
        };
        if let Some(g) = listed
            .into_inner()
            .groups
            .into_iter()
            .find(|g| g.name == group && g.protocol_type == "meridian")
        {
            return Some((i, g));
        }
    }
    None
}

/// Waits until `group` is stable with `members` members, each owning some partitions.
async fn wait_stable(
    region: &[BrokerProcess],
    group: &str,
    members: usize,
) -> (usize, v1::ConsumerGroupInfo) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((i, g)) = described(region, group).await
            && g.state == "Stable"
            && g.members.len() == members
            && g.members.iter().all(|m| !m.assignment.is_empty())
        {
            return (i, g);
        }
        assert!(
            Instant::now() < deadline,
            "group {group} not stable with {members} members: {:?}",
            described(region, group).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_the_partitions_and_a_third_joining_loses_and_repeats_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let region = Region::start(tmp.path(), 3, &[]).await.unwrap();
    let client = region.client().await;
    client.create_topic("work", PARTITIONS).await.unwrap();
    produce(&region.brokers, 0..600);

    let mut a = member(&region.brokers, "g", tmp.path(), "a", 5_000);
    let mut b = member(&region.brokers, "g", tmp.path(), "b", 5_000);
    let (_, g) = wait_stable(&region.brokers, "g", 2).await;
    let shares: Vec<usize> = g
        .members
        .iter()
        .map(|m| m.assignment.iter().map(|t| t.partitions.len()).sum())
        .collect();
    assert_eq!(shares, [3, 3], "two members split six partitions: {g:?}");

    // More messages while a third member joins: each keeps some partitions, gives one up.
    produce(&region.brokers, 600..1_200);
    let mut c = member(&region.brokers, "g", tmp.path(), "c", 5_000);
    let (_, g) = wait_stable(&region.brokers, "g", 3).await;
    let shares: Vec<usize> = g
        .members
        .iter()
        .map(|m| m.assignment.iter().map(|t| t.partitions.len()).sum())
        .collect();
    assert_eq!(shares, [2, 2, 2], "{g:?}");
    produce(&region.brokers, 1_200..1_800);

    for (name, child) in [("a", &mut a), ("b", &mut b), ("c", &mut c)] {
        let status = wait_exit(child, Duration::from_secs(60));
        assert!(
            status.success(),
            "member {name}: {}",
            std::fs::read_to_string(tmp.path().join(format!("{name}.err"))).unwrap()
        );
    }
    let outputs: Vec<Vec<String>> = ["a", "b", "c"]
        .iter()
        .map(|n| lines(tmp.path(), n))
        .collect();
    assert!(
        outputs.iter().all(|o| !o.is_empty()),
        "every member read some: {:?}",
        outputs.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_exactly_once(&outputs, 1_800);
    // Everyone left: the group is gone from its coordinator.
    assert!(described(&region.brokers, "g").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_paused_past_its_session_loses_its_partitions_and_cannot_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let region = Region::start(tmp.path(), 3, &[]).await.unwrap();
    let client = region.client().await;
    client.create_topic("work", PARTITIONS).await.unwrap();
    paused_member_loses_its_partitions(&region.brokers, tmp.path()).await;
}

/// A strictly ordered topic (one home region, a managed region) the same way: a
/// partition's consumer is its group member holding it, under the lease its heartbeats
/// keep; a paused one loses it to another that continues in order, and neither reads nor
/// commits once woken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_an_ordered_topic_a_paused_consumer_loses_its_lease_to_one_that_continues_in_order() {
    use meridian_tests::platform::{ControlPlaneProcess, ManagedRegion, meridian_control};
    let tmp = tempfile::tempdir().unwrap();
    let cp = ControlPlaneProcess::embedded(tmp.path(), &["--region", "a"]).await;
    let region = ManagedRegion::start(tmp.path(), "a", 3, &cp.addr, &[])
        .await
        .unwrap();
    let partitions = PARTITIONS.to_string();
    let args = [
        "topic",
        "create",
        "work",
        "--partitions",
        &partitions,
        "--replicas",
        "3",
        "--ordering",
        "strict",
        "--home",
        "a",
    ];
    let (code, _, err) = meridian_control(&cp.addr, &args);
    assert_eq!(code, 0, "{err}");
    let client = region.client().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.describe_topic("work").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the ordered topic never reached the region"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    paused_member_loses_its_partitions(&region.brokers, tmp.path()).await;
}

/// 300 messages read by a first member; it is paused past its session; a successor gets
/// every partition and reads 300 more; the paused member's old membership commits
/// nothing; woken, it joins again and the two share 300 more: each of the 900 read once,
/// each partition in order.
async fn paused_member_loses_its_partitions(region: &[BrokerProcess], dir: &Path) {
    produce(region, 0..300);

    // The first member reads everything and commits it.
    let mut zombie = member(region, "z", dir, "zombie", 60_000);
    let (_, g) = wait_stable(region, "z", 1).await;
    let old = g.members[0].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines(dir, "zombie").len() < 300 {
        assert!(
            Instant::now() < deadline,
            "the first member did not read all"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Paused (SIGSTOP) past its 3 s session: a successor gets every partition.
    let pid = zombie.id() as i32;
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut successor = member(region, "z", dir, "successor", 6_000);
    let deadline = Instant::now() + Duration::from_secs(30);
    let coordinator = loop {
        let (coordinator, g) = wait_stable(region, "z", 1).await;
        if g.members[0].member_id != old.member_id {
            break coordinator;
        }
        assert!(
            Instant::now() < deadline,
            "the paused member kept its partitions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    produce(region, 300..600);
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines(dir, "successor").len() < 300 {
        assert!(Instant::now() < deadline, "the successor did not read on");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The old membership's commit is refused, whichever partition it names.
    let mut raw =
        v1::broker_client::BrokerClient::connect(format!("http://{}", region[coordinator].addr))
            .await
            .unwrap();
    for t in &old.assignment {
        for &p in &t.partitions {
            let refused = raw
                .commit_offset(v1::CommitOffsetRequest {
                    group: "z".into(),
                    topic: t.topic.clone(),
                    partition: p,
                    offset: 0,
                    member_id: old.member_id.clone(),
                    member_epoch: 1,
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), tonic::Code::NotFound, "{refused:?}");
            assert!(refused.message().contains("join again"), "{refused:?}");
        }
    }

    // The zombie wakes: it finds its lease gone, reads nothing the successor read, joins
    // again and shares what comes next.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_stable(region, "z", 2).await;
    produce(region, 600..900);
    let status = wait_exit(&mut successor, Duration::from_secs(60));
    assert!(status.success());
    unsafe { libc::kill(pid, libc::SIGTERM) };
    zombie.wait().unwrap();
    let outputs = [lines(dir, "zombie"), lines(dir, "successor")];
    assert_exactly_once(&outputs, 900);
    // In order per partition: the CLI puts message i of each run of 300 on partition
    // (i + 1) mod 6, so each member read each residue class in increasing order.
    for out in &outputs {
        let mut last: BTreeMap<u32, u32> = BTreeMap::new();
        for v in out {
            let i: u32 = v[1..].parse().unwrap();
            let p = (i + 1) % PARTITIONS;
            if let Some(&before) = last.get(&p) {
                assert!(i > before, "partition {p}: m{i} read after m{before}");
            }
            last.insert(p, i);
        }
    }
    let err = std::fs::read_to_string(dir.join("zombie.err")).unwrap();
    assert!(err.contains("membership lost"), "{err}");
}

/// `meridian consume work --group g` until idle: the values it printed.
fn consume_all(region: &Region, group: &str) -> Vec<String> {
    let (code, out, err) = meridian(
        region.brokers[0].addr,
        &[
            "consume",
            "work",
            "--group",
            group,
            "--from",
            "beginning",
            "--idle-exit-ms",
            "1500",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    out.lines().map(str::to_owned).collect()
}

/// `meridian group ARGS`: its stdout, asserting success.
fn group_cli(region: &Region, args: &[&str]) -> String {
    let mut all = vec!["group"];
    all.extend_from_slice(args);
    let (code, out, err) = meridian(region.brokers[0].addr, &all, None);
    assert_eq!(code, 0, "meridian {all:?}: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_reset_target_makes_the_group_read_from_there() {
    let tmp = tempfile::tempdir().unwrap();
    let region = Region::start(tmp.path(), 3, &[]).await.unwrap();
    let client = region.client().await;
    client.create_topic("work", 2).await.unwrap();
    produce(&region.brokers, 0..10);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let between = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    tokio::time::sleep(Duration::from_millis(50)).await;
    produce(&region.brokers, 10..16);
    assert_eq!(consume_all(&region, "g").len(), 16);
    assert!(
        consume_all(&region, "g").is_empty(),
        "the group resumes at its end"
    );
    let described = group_cli(&region, &["describe", "g"]);
    assert!(described.contains("no active members"), "{described}");
    assert!(
        described.contains("work/0") && described.contains("work/1"),
        "{described}"
    );

    // A dry run changes nothing.
    let out = group_cli(
        &region,
        &[
            "reset",
            "g",
            "--topic",
            "work",
            "--to",
            "beginning",
            "--dry-run",
        ],
    );
    assert!(out.contains("dry run: nothing changed"), "{out}");
    assert!(consume_all(&region, "g").is_empty());

    // Back to the beginning: everything again (a reset clears what the group had seen).
    group_cli(
        &region,
        &["reset", "g", "--topic", "work", "--to", "beginning"],
    );
    let mut again = consume_all(&region, "g");
    again.sort();
    let mut all: Vec<String> = (0..16).map(|i| format!("m{i}")).collect();
    all.sort();
    assert_eq!(again, all);

    // To the end: nothing until new messages come.
    group_cli(&region, &["reset", "g", "--topic", "work", "--to", "0"]);
    group_cli(&region, &["reset", "g", "--topic", "work", "--to", "end"]);
    assert!(consume_all(&region, "g").is_empty());
    produce(&region.brokers, 16..19);
    assert_eq!(consume_all(&region, "g").len(), 3);

    // To an offset: each partition from there.
    let latest: u64 = client
        .describe_topic("work")
        .await
        .unwrap()
        .partitions
        .iter()
        .map(|p| p.latest_offset.min(2))
        .sum();
    group_cli(&region, &["reset", "g", "--topic", "work", "--to", "2"]);
    assert_eq!(consume_all(&region, "g").len() as u64, 19 - latest);

    // To a time: the messages appended from then on.
    group_cli(
        &region,
        &["reset", "g", "--topic", "work", "--to", &between],
    );
    let mut from_then = consume_all(&region, "g");
    from_then.sort();
    let mut expected: Vec<String> = (10..19).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(from_then, expected);

    // Refused while the group has a member; listed with it.
    let mut m = member(&region.brokers, "g", tmp.path(), "m", 20_000);
    wait_stable(&region.brokers, "g", 1).await;
    let listed = group_cli(&region, &["list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("g ") && l.contains("meridian")),
        "{listed}"
    );
    let (code, _, err) = meridian(
        region.brokers[0].addr,
        &[
            "group",
            "reset",
            "g",
            "--topic",
            "work",
            "--to",
            "beginning",
        ],
        None,
    );
    assert_eq!(code, 1);
    assert!(err.contains("active member"), "{err}");
    let (code, _, err) = meridian(region.brokers[0].addr, &["group", "delete", "g"], None);
    assert_eq!(code, 1);
    assert!(err.contains("active member"), "{err}");
    m.kill().unwrap();
    m.wait().unwrap();

    // Deleted once its member's session lapsed: the group starts over from the beginning.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, err) = meridian(region.brokers[0].addr, &["group", "delete", "g"], None);
        if code == 0 {
            assert!(out.contains("deleted group g"), "{out}");
            break;
        }
        assert!(Instant::now() < deadline, "group g not deleted: {err}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(consume_all(&region, "g").len(), 19);
}

/// A group that read part of a topic with `consume --max` in one region resumes in the
/// other region after exactly what it printed: `--max` commits the origin positions of
/// what it printed (it used to seek and commit without them), which ship with the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_moved_to_another_region_after_max_reads_the_rest_once() {
    let tmp = tempfile::tempdir().unwrap();
    let regions = meridian_tests::mirror::TwoRegions::start(tmp.path(), &[], &[]).await;
    regions.create_topic("moved", 2).await;
    let _mirrors = regions.link(tmp.path(), &[]);
    let (x, y) = (regions.x.brokers[0].addr, regions.y.brokers[0].addr);
    let lines: String = (0..100).map(|i| format!("m{i}\n")).collect();
    let (code, _, err) = meridian(x, &["produce", "moved"], Some(&lines));
    assert_eq!(code, 0, "{err}");
    let cy = regions.y.client().await;
    meridian_tests::wait_until_held(&cy, "moved", 100, Duration::from_secs(30)).await;

    let (code, out, err) = meridian(
        x,
        &[
            "consume",
            "moved",
            "--group",
            "mover",
            "--from",
            "beginning",
            "--max",
            "30",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let first: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(first.len(), 30);
    // The group's commits reach y (as origin positions, resolved to y's offsets there).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut at = 0;
        for p in 0..2 {
            at += cy
                .committed_offset("mover", "moved", p)
                .await
                .unwrap()
                .unwrap_or(0);
        }
        if at == 30 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "y resolves the group's commits to {at} of 30"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out, err) = meridian(
        y,
        &[
            "consume",
            "moved",
            "--group",
            "mover",
            "--from",
            "beginning",
            "--idle-exit-ms",
            "2000",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let rest: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_exactly_once(&[first, rest], 100);
}

/// A broadcast member with instance `name` (its idle positions kept 10 s).
fn broadcast_member(region: &[BrokerProcess], dir: &Path, name: &str, out: &str) -> Child {
    member_with(
        region,
        "everyone",
        dir,
        out,
        3_000,
        &[
            "--assignor",
            "broadcast",
            "--instance",
            name,
            "--instance-idle-ms",
            "10000",
        ],
    )
}

/// Waits for members to exit cleanly.
fn all_exit(dir: &Path, members: &mut [(&str, Child)]) {
    for (name, child) in members {
        let status = wait_exit(child, Duration::from_secs(60));
        assert!(
            status.success(),
            "member {name}: {}",
            std::fs::read_to_string(dir.join(format!("{name}.err"))).unwrap()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_gives_three_members_everything_once_each_and_keeps_idle_places_a_while() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let region = Region::start(dir, 3, &[]).await.unwrap();
    let client = region.client().await;
    client.create_topic("work", PARTITIONS).await.unwrap();
    produce(&region.brokers, 0..300);

    let mut members: Vec<(&str, Child)> = ["i1", "i2", "i3"]
        .into_iter()
        .map(|i| (i, broadcast_member(&region.brokers, dir, i, i)))
        .collect();
    let (_, g) = wait_stable(&region.brokers, "everyone", 3).await;
    for m in &g.members {
        let n: usize = m.assignment.iter().map(|t| t.partitions.len()).sum();
        assert_eq!(
            n, PARTITIONS as usize,
            "every member has every partition: {g:?}"
        );
    }
    // More while they read.
    produce(&region.brokers, 300..600);
    all_exit(dir, &mut members);
    for i in ["i1", "i2", "i3"] {
        assert_exactly_once(&[lines(dir, i)], 600);
    }

    // They left; the group keeps their instances' places.
    let (_, g) = described(&region.brokers, "everyone")
        .await
        .expect("a broadcast group outlives its members");
    assert!(g.members.is_empty(), "{g:?}");
    assert_eq!(g.idle_instances, ["i1", "i2", "i3"]);

    // i1 comes back, then i2: each reads only what it missed (its own position, not
    // moved by the other's), though it asks for the beginning.
    produce(&region.brokers, 600..700);
    let expected: Vec<String> = (600..700).map(|i| format!("m{i}")).collect();
    for (i, out) in [("i1", "i1-again"), ("i2", "i2-again")] {
        let mut again = vec![(out, broadcast_member(&region.brokers, dir, i, out))];
        all_exit(dir, &mut again);
        let mut got = lines(dir, out);
        got.sort_by_key(|m| m[1..].parse::<u32>().unwrap());
        assert_eq!(got, expected, "{i} resumes at its own position");
    }

    // Idle past 10 s, every instance is forgotten (positions deleted), and then the group.
    let deadline = Instant::now() + Duration::from_secs(30);
    while described(&region.brokers, "everyone").await.is_some() {
        assert!(
            Instant::now() < deadline,
            "the idle instances were never forgotten"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut fresh = vec![(
        "i2-fresh",
        broadcast_member(&region.brokers, dir, "i2", "i2-fresh"),
    )];
    all_exit(dir, &mut fresh);
    assert_exactly_once(&[lines(dir, "i2-fresh")], 700);
}
