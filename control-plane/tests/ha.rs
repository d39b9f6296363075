//! The control-plane daemon as real processes: three of them on a real etcd elect one
//! leader; kill -9 the leader and another takes over within seconds; writes go to the
//! leader only; the embedded store keeps its regions across a restart.

use std::process::Command;
use std::time::{Duration, Instant};

use meridian_proto::v1;
use meridian_tests::platform::{ControlPlaneProcess as ControlPlane, free_port, start_etcd};

/// Waits until every running process in `cps` names the same leader, other than
/// `not`; returns its id.
async fn agreed_leader(cps: &[&ControlPlane], not: Option<&str>, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let mut leaders = Vec::new();
        for cp in cps {
            leaders.push(cp.status().await.and_then(|s| s.leader_id));
        }
        if let Some(Some(first)) = leaders.first()
            && leaders.iter().all(|l| l.as_deref() == Some(first.as_str()))
            && Some(first.as_str()) != not
        {
            return first.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader within {limit:?}: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_control_planes_on_etcd_fail_over_when_the_leader_is_killed() {
    let etcd = start_etcd();
    let logs = tempfile::tempdir().unwrap();
    let store = format!("etcd:{}", etcd.endpoint);
    let deadline = Instant::now() + Duration::from_secs(30);
    while meridian_control_plane::store::EtcdStore::connect(&etcd.endpoint)
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "etcd did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut cps: Vec<ControlPlane> = (1..=3)
        .map(|i| ControlPlane::start(&format!("cp-{i}"), &store, logs.path(), &[]))
        .collect();
    let leader = agreed_leader(
        &cps.iter().collect::<Vec<_>>(),
        None,
        Duration::from_secs(30),
    )
    .await;
    let li = cps.iter().position(|c| c.id == leader).unwrap();

    // Writes: the leader creates; a follower refuses, naming the leader.
    let created = cps[li]
        .client()
        .await
        .create_region(v1::CreateRegionRequest { name: "eu".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (created.name.as_str(), created.state.as_str()),
        ("eu", "up")
    );
    let follower = (li + 1) % 3;
    let refused = cps[follower]
        .client()
        .await
        .create_region(v1::CreateRegionRequest { name: "us".into() })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(
        refused
            .metadata()
            .get("x-meridian-leader")
            .and_then(|v| v.to_str().ok()),
        Some(cps[li].addr.as_str())
    );
    let dup = cps[li]
        .client()
        .await
        .create_region(v1::CreateRegionRequest { name: "eu".into() })
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    let bad = cps[li]
        .client()
        .await
        .create_region(v1::CreateRegionRequest { name: "e u".into() })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");

    // kill -9 the leader: the other two elect one of themselves once its lease expires.
    cps[li].kill9();
    let killed = Instant::now();
    let others: Vec<&ControlPlane> = cps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, c)| c)
        .collect();
    let new_leader = agreed_leader(&others, Some(&leader), Duration::from_secs(20)).await;
    let takeover = killed.elapsed();
    eprintln!(
        "control-plane leader killed -9: {new_leader} took over after {:.2} s (lease 2 s)",
        takeover.as_secs_f64()
    );
    let ni = cps.iter().position(|c| c.id == new_leader).unwrap();
    cps[ni]
        .client()
        .await
        .create_region(v1::CreateRegionRequest { name: "us".into() })
        .await
        .unwrap();
    let regions: Vec<String> = cps[follower]
        .client()
        .await
        .list_regions(v1::ListRegionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .regions
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(regions, ["eu", "us"]);

    // The killed process returns as a follower.
    cps[li].spawn();
    let all: Vec<&ControlPlane> = cps.iter().collect();
    assert_eq!(
        agreed_leader(&all, None, Duration::from_secs(20)).await,
        new_leader
    );

    // A leader stopped with SIGTERM hands over at once (it revokes its lease).
    cps[ni].terminate();
    let stopped = Instant::now();
    let rest: Vec<&ControlPlane> = cps
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != ni)
        .map(|(_, c)| c)
        .collect();
    agreed_leader(&rest, Some(&new_leader), Duration::from_secs(20)).await;
    eprintln!(
        "SIGTERM hand-over: {:.2} s",
        stopped.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_keeps_regions_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("embedded:{}", tmp.path().join("control.redb").display());
    let mut cp = ControlPlane::start("solo", &store, tmp.path(), &[]);
    agreed_leader(&[&cp], None, Duration::from_secs(20)).await;
    cp.client()
        .await
        .create_region(v1::CreateRegionRequest {
            name: "local".into(),
        })
        .await
        .unwrap();
    cp.terminate();
    cp.spawn();
    agreed_leader(&[&cp], None, Duration::from_secs(20)).await;
    let regions = cp
        .client()
        .await
        .list_regions(v1::ListRegionsRequest {})
        .await
        .unwrap()
        .into_inner()
        .regions;
    assert_eq!(regions.len(), 1);
    assert_eq!(regions[0].name, "local");
}

#[test]
fn a_bad_store_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .args([
            "--store",
            "zookeeper:x",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .args(["--metrics-listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("use embedded:PATH or etcd:"), "{err}");
}
