//! The `meridian region` commands against a real control-plane process (embedded store).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meridian_tests::platform::meridian_control as meridian;
use meridian_tests::{binary, free_addr};

#[test]
fn regions_are_created_and_listed_through_the_control_plane() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = free_addr().to_string();
    let mut child = Command::new(binary("control-plane"))
        .args(["--id", "cp-test", "--listen", &addr])
        .args(["--metrics-listen", &free_addr().to_string()])
        .arg("--store")
        .arg(format!(
            "embedded:{}",
            tmp.path().join("control.redb").display()
        ))
        .args(["--leader-lease-ms", "2000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start control-plane");
    // Until it is up and has elected itself, creating answers with an error.
    let deadline = Instant::now() + Duration::from_secs(30);
    let created = loop {
        let (code, out, err) = meridian(&addr, &["region", "create", "eu"]);
        if code == 0 {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "region create kept failing: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(created.contains("created region eu (up)"), "{created}");
    let (code, _, err) = meridian(&addr, &["region", "create", "eu"]);
    assert_eq!(code, 1);
    assert!(err.contains("region \"eu\" already exists"), "{err}");
    let (code, _, err) = meridian(&addr, &["region", "create", "e/u"]);
    assert_eq!(code, 1);
    assert!(err.contains("invalid region"), "{err}");
    let list = || {
        let (code, out, err) = meridian(&addr, &["--json", "region", "list"]);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert_eq!(
        list(),
        serde_json::json!([{"name": "eu", "state": "up", "reason": "", "by_operator": false}])
    );
    // An operator fails the region over and restores it.
    let (code, out, err) = meridian(&addr, &["region", "fail", "eu"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("region eu is down"), "{out}");
    assert_eq!(
        list(),
        serde_json::json!([{"name": "eu", "state": "down", "reason": "failed over by an operator", "by_operator": true}])
    );
    let (code, out, err) = meridian(&addr, &["region", "restore", "eu"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("region eu is up"), "{out}");
    let (code, _, err) = meridian(&addr, &["region", "fail", "mars"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown region \"mars\""), "{err}");
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(
        child.wait().unwrap().success(),
        "control-plane exits cleanly on SIGTERM"
    );
    let (code, _, err) = meridian(&addr, &["region", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot connect to the control plane"), "{err}");
}
