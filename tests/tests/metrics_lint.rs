//! The daemons' metrics as Prometheus reads them: every metric the code emits has its
//! `# HELP` (`meridian_daemon::metrics_help::CATALOG`), and each daemon's `/metrics` —
//! control plane, brokers and mirrors of two linked regions after messages crossed —
//! passes `promtool check metrics` (Prometheus's own exposition-format lint), with latencies
//! as histograms, `meridian_build_info` naming the build, and the series an SRE alerts on
//! (a partition's end offset, a consumer group's lag, leaderless and under-replicated
//! groups, the disk).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use meridian_client::{ProducerConfig, Record};

/// Every metric name the workspace's code emits (`counter!`, `gauge!`, `histogram!` with a
/// literal name).
fn emitted() -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = BTreeSet::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.')
                    && !["target", "third_party", "fuzz"].contains(&name.as_str())
                {
                    dirs.push(path);
                }
                continue;
            }
            if !name.ends_with(".rs") || name == "metrics_lint.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for macro_ in ["counter!(", "gauge!(", "histogram!("] {
                for (at, _) in text.match_indices(macro_) {
                    let rest = text[at + macro_.len()..].trim_start();
                    if let Some(literal) = rest.strip_prefix('"') {
                        let end = literal.find('"').unwrap();
                        names.insert(literal[..end].to_owned());
                    }
                }
            }
        }
    }
    names
}

#[test]
fn every_metric_the_code_emits_has_its_help() {
    let described: BTreeSet<&str> = meridian_daemon::metrics_help::CATALOG
        .iter()
        .map(|(name, _)| *name)
        .collect();
    let emitted = emitted();
    assert!(emitted.len() > 100, "found only {emitted:?}");
    let missing: Vec<&String> = emitted
        .iter()
        .filter(|n| !described.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "no HELP in metrics_help.rs for {missing:?}"
    );
    for (name, help) in meridian_daemon::metrics_help::CATALOG {
        assert!(!help.is_empty() && !help.contains('\n'), "{name}: {help:?}");
    }
}

/// `promtool check metrics` of `addr`'s `/metrics`: its findings (empty: none).
async fn lint(what: &str, addr: SocketAddr) -> String {
    let page = meridian_tests::http_get(addr, "/metrics").await.unwrap();
    let body = page
        .split_once("\r\n\r\n")
        .map_or(page.as_str(), |(_, b)| b)
        .to_owned();
    assert!(
        body.contains("meridian_build_info{"),
        "{what}: no build_info:\n{body}"
    );
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool: the test script installs prometheus");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && findings.trim().is_empty() {
        String::new()
    } else {
        format!("{what} ({addr}): {findings}")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_daemons_metrics_pass_promtool() {
    let tmp = tempfile::tempdir().unwrap();
    let regions = meridian_tests::mirror::TwoRegions::start(tmp.path(), &[], &[]).await;
    regions.create_topic("linted", 1).await;
    let (mx, my) = regions.link(tmp.path(), &[]);
    let (x, y) = (regions.x.client().await, regions.y.client().await);
    let producer = x.producer(ProducerConfig::default());
    for i in 0..20 {
        producer
            .send(Record::new("linted", format!("m{i}")))
            .await
            .await
            .unwrap();
    }
    meridian_tests::wait_until_held(&y, "linted", 20, Duration::from_secs(60)).await;
    // A latency the receiving mirror measured, as a histogram.
    let page = meridian_tests::http_get(my.metrics, "/metrics")
        .await
        .unwrap();
    assert!(
        page.contains("meridian_mirror_lag_seconds_bucket{origin=\"x\",le=\"0.001\"}"),
        "{page}"
    );
    assert!(
        page.contains("meridian_build_info{daemon=\"mirror\""),
        "{page}"
    );

    // The series an SRE alerts on: a partition's end, a group's lag, the disk, no group
    // without a leader (the broker samples them every 5 s).
    x.commit_offset("billing", "linted", 0, 12).await.unwrap();
    let broker_x = regions.x.brokers[0].metrics;
    let wanted = [
        (
            "meridian_partition_end_offset{",
            &["topic=\"linted\"", "partition=\"0\""][..],
            20.0,
        ),
        (
            "meridian_consumer_lag_messages{",
            &["group=\"billing\"", "topic=\"linted\"", "partition=\"0\""][..],
            8.0,
        ),
        ("meridian_log_groups_leaderless ", &[][..], 0.0),
        ("meridian_log_groups_under_replicated ", &[][..], 0.0),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = meridian_tests::http_get(broker_x, "/metrics")
            .await
            .unwrap();
        let value = |prefix: &str, labels: &[&str]| {
            page.lines()
                .find(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        let missing: Vec<_> = wanted
            .iter()
            .filter(|(prefix, labels, v)| value(prefix, labels) != Some(*v))
            .collect();
        if missing.is_empty() && value("meridian_disk_free_bytes ", &[]).is_some_and(|v| v > 0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not {missing:?} in broker x's metrics:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let control: SocketAddr = regions.control.metrics.parse().unwrap();
    let mut findings = vec![lint("control plane", control).await];
    for (what, addr) in [
        ("broker x/1", regions.x.brokers[0].metrics),
        ("broker y/1", regions.y.brokers[0].metrics),
        ("mirror x", mx.metrics),
        ("mirror y", my.metrics),
    ] {
        findings.push(lint(what, addr).await);
    }
    findings.retain(|f| !f.is_empty());
    assert!(findings.is_empty(), "{}", findings.join("\n"));
}
