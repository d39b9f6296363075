//! Crate dependencies point one way. Reads the workspace's packages with `cargo metadata`
//! and checks each one's `meridian-*` normal dependencies (not dev or build dependencies)
//! against the table below: protocol adapters → broker core → log group → replication →
//! storage inside `region-broker`, `proto` at the bottom, the internal region client on
//! `proto` only and the SDK on it (the mirror's internal RPCs are the region client's, never
//! the SDK's), neither the mirror nor the broker on the SDK, the tools and daemons (cli, console, mirror) never on a daemon
//! they talk to, and nothing but the tests and the benchmarks on a daemon or tool crate.
//! A package missing from the table fails too: a new crate states its place here.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Crates only the tests and the benchmarks may depend on: daemons and tools, each reached
/// over the network, never linked.
const TOP: &[&str] = &[
    "meridian-region-broker",
    "meridian-control-plane",
    "meridian-console",
    "meridian-mirror",
    "meridian-cli",
];

/// Packages that may depend on anything in the workspace.
const ANY: &[&str] = &["meridian-tests", "meridian-bench"];

/// The rule every other package follows: the `meridian-*` crates it may depend on, and the
/// rule in words.
const ALLOWED: &[(&str, &[&str], &str)] = &[
    (
        "meridian-proto",
        &[],
        "proto (wire types and generated code) depends on no meridian crate",
    ),
    (
        "meridian-storage",
        &["meridian-proto"],
        "storage, the bottom of the broker's layers, depends on proto only",
    ),
    (
        "meridian-client",
        &["meridian-proto", "meridian-region-client"],
        "the client SDK builds on proto and the region client's leader-following core",
    ),
    (
        "meridian-region-client",
        &["meridian-proto"],
        "the internal region client depends on proto only",
    ),
    (
        "meridian-security",
        &[],
        "the shared security pieces (passwords, certificates, SCRAM, TLS) depend on no meridian crate",
    ),
    (
        "meridian-daemon",
        &["meridian-proto", "meridian-security"],
        "the daemons' shared plumbing (logs, stop signals, listeners, who calls them and how they call others) depends on the wire crate (how a call carries its token) and the shared security pieces (API tokens, TLS) only",
    ),
    (
        "meridian-region-broker",
        &[
            "meridian-proto",
            "meridian-storage",
            "meridian-region-client",
            "meridian-daemon",
            "meridian-security",
        ],
        "the region broker (adapters → core → log group → replication → storage) builds on storage, proto, the region client, the daemon plumbing and the shared security pieces (SCRAM, TLS identities), never on the SDK: what its adapters serve from other brokers (the MQTT listener's writes and reads, the Kafka listener's forwarded requests) goes through the core's `…_anywhere` calls and the region client",
    ),
    (
        "meridian-control-plane",
        &["meridian-proto", "meridian-daemon", "meridian-security"],
        "the control plane reaches brokers over gRPC: proto, the daemon plumbing and the shared security pieces (who may call it)",
    ),
    (
        "meridian-mirror",
        &[
            "meridian-proto",
            "meridian-region-client",
            "meridian-daemon",
            "meridian-security",
        ],
        "the mirror reaches brokers and the control plane through the internal region client (never the SDK): proto, the region client, the daemon plumbing and security",
    ),
    (
        "meridian-console",
        &[
            "meridian-proto",
            "meridian-client",
            "meridian-daemon",
            "meridian-security",
        ],
        "the console reaches the platform through the SDK: proto, client, the daemon plumbing and security",
    ),
    (
        "meridian-cli",
        &["meridian-proto", "meridian-client", "meridian-security"],
        "the meridian command reaches the platform through the SDK: proto, client and security",
    ),
];

/// A package's `meridian-*` normal dependencies, by package.
type Graph = BTreeMap<String, Vec<String>>;

/// Every broken rule, one line each: the package, the forbidden dependency, the rule.
fn violations(graph: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for (package, deps) in graph {
        if ANY.contains(&package.as_str()) {
            continue;
        }
        let Some((_, allowed, rule)) = ALLOWED.iter().find(|(p, _, _)| p == package) else {
            out.push(format!(
                "{package} is not in tests/tests/layers.rs's table: add it with the meridian crates it may depend on"
            ));
            continue;
        };
        for dep in deps {
            if TOP.contains(&dep.as_str()) {
                out.push(format!(
                    "{package} depends on {dep}, which is forbidden: nothing but the tests and the benchmarks depends on the region broker, control plane, console, mirror or cli"
                ));
            } else if !allowed.contains(&dep.as_str()) {
                out.push(format!(
                    "{package} depends on {dep}, which is forbidden: {rule}"
                ));
            }
        }
    }
    out
}

/// The workspace's packages and their `meridian-*` normal dependencies, from `cargo
/// metadata`.
fn workspace() -> Graph {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace")
        .join("Cargo.toml");
    let output = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let mut graph = Graph::new();
    for package in metadata["packages"].as_array().expect("a package list") {
        let name = package["name"].as_str().expect("a package name").to_owned();
        let mut deps: Vec<String> = package["dependencies"]
            .as_array()
            .expect("a dependency list")
            .iter()
            .filter(|d| d["kind"].is_null())
            .filter_map(|d| d["name"].as_str())
            .filter(|d| d.starts_with("meridian-"))
            .map(str::to_owned)
            .collect();
        deps.sort();
        deps.dedup();
        graph.insert(name, deps);
    }
    graph
}

#[test]
fn crate_dependencies_point_one_way() {
    let graph = workspace();
    for known in ["meridian-proto", "meridian-region-broker", "meridian-cli"] {
        assert!(
            graph.contains_key(known),
            "cargo metadata did not list {known}: {graph:?}"
        );
    }
    let broken = violations(&graph);
    assert!(
        broken.is_empty(),
        "crate dependencies break the layering:\n{}",
        broken.join("\n")
    );
}

#[test]
fn a_broken_rule_names_the_package_the_dependency_and_the_rule() {
    let graph: Graph = [
        ("meridian-proto", vec![]),
        (
            "meridian-storage",
            vec!["meridian-proto", "meridian-client"],
        ),
        ("meridian-cli", vec!["meridian-console", "meridian-client"]),
        ("meridian-tests", vec!["meridian-region-broker"]),
        ("meridian-new", vec![]),
    ]
    .into_iter()
    .map(|(p, d)| (p.to_owned(), d.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(
        violations(&graph),
        vec![
            "meridian-cli depends on meridian-console, which is forbidden: nothing but the tests and the benchmarks depends on the region broker, control plane, console, mirror or cli".to_owned(),
            "meridian-new is not in tests/tests/layers.rs's table: add it with the meridian crates it may depend on".to_owned(),
            "meridian-storage depends on meridian-client, which is forbidden: storage, the bottom of the broker's layers, depends on proto only".to_owned(),
        ]
    );
}
