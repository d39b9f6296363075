//! `deploy/CONFIG.md`, the configuration reference of the four daemons, is generated from
//! the code so it cannot drift: every configuration-file key from the daemon's own config
//! type (its JSON schema, derived with schemars from the same struct serde reads the file
//! into: the doc comment, the type, the default of `Default`), and every flag from the
//! daemon's `--help` (clap's, from its argument struct). This test fails when the file
//! differs from what the code gives; `MERIDIAN_UPDATE_CONFIG_REFERENCE=1` rewrites it.
//!
//! Units are named by the keys themselves (`_ms` milliseconds, `_s` seconds, `bytes`
//! bytes), the convention every daemon's configuration follows; the column spells them out.

use std::fmt::Write;
use std::path::Path;
use std::process::Command;

use meridian_tests::bin_dir;
use serde_json::Value;

/// One key of a configuration file.
struct Row {
    key: String,
    unit: &'static str,
    kind: String,
    default: String,
    description: String,
}

/// The schema a property's `$ref` names, or the property itself.
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    if let Some(r) = node.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        return &root["$defs"][name];
    }
    for combinator in ["anyOf", "allOf", "oneOf"] {
        if let Some(options) = node.get(combinator).and_then(Value::as_array) {
            let non_null: Vec<&Value> = options
                .iter()
                .filter(|o| o.get("type").and_then(Value::as_str) != Some("null"))
                .collect();
            if non_null.len() == 1 && non_null[0].get("const").is_none() {
                return resolve(root, non_null[0]);
            }
        }
    }
    node
}

/// A property's type as an operator reads it: `integer`, `string`, `bool`, `one of a, b`,
/// `list of string`; `(optional)` when it may be left out with no default value.
fn kind(root: &Value, node: &Value) -> String {
    let optional = match node.get("type") {
        Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
        _ => node
            .get("anyOf")
            .and_then(Value::as_array)
            .is_some_and(|o| o.iter().any(|t| t.get("type") == Some(&"null".into()))),
    };
    let target = resolve(root, node);
    let base = if let Some(values) = target.get("enum").and_then(Value::as_array) {
        format!("one of {}", join(values))
    } else if let Some(options) = target.get("oneOf").and_then(Value::as_array) {
        let consts: Vec<Value> = options
            .iter()
            .filter_map(|o| o.get("const").cloned())
            .collect();
        format!("one of {}", join(&consts))
    } else {
        let t = match target.get("type") {
            Some(Value::Array(types)) => types
                .iter()
                .filter(|t| *t != "null")
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" or "),
            Some(Value::String(t)) => t.clone(),
            _ => "value".to_owned(),
        };
        match t.as_str() {
            "array" => format!("list of {}", kind(root, &target["items"])),
            "boolean" => "bool".to_owned(),
            "integer" => match target.get("minimum").and_then(Value::as_f64) {
                Some(m) if m >= 0.0 => "integer ≥ 0".to_owned(),
                _ => "integer".to_owned(),
            },
            _ => t,
        }
    };
    if optional {
        format!("{base} (optional)")
    } else {
        base
    }
}

fn join(values: &[Value]) -> String {
    values
        .iter()
        .map(|v| {
            format!(
                "`{}`",
                v.as_str().map_or_else(|| v.to_string(), str::to_owned)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A doc comment on one line, as a table cell.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn default(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "none".to_owned(),
        Some(Value::Array(a)) if a.is_empty() => "empty".to_owned(),
        Some(Value::String(s)) => format!("`{s:?}`"),
        Some(v) => format!("`{v}`"),
    }
}

/// A key's unit: what its schema says (`x-unit`, for a key whose name does not), else
/// what its name says.
fn unit(property: &Value, key: &str) -> &'static str {
    match property.get("x-unit").and_then(Value::as_str) {
        Some("bytes") => return "bytes",
        Some(other) => panic!("{key}: x-unit {other:?} is not a unit this reference knows"),
        None => {}
    }
    let last = key.rsplit('.').next().unwrap_or(key);
    if last.ends_with("_ms") {
        "milliseconds"
    } else if last.ends_with("_s") {
        "seconds"
    } else if last.contains("bytes") {
        "bytes"
    } else {
        ""
    }
}

/// The keys under `node` (an object schema), sections and arrays of tables walked into.
fn rows(root: &Value, node: &Value, prefix: &str, out: &mut Vec<Row>) {
    let Some(properties) = node.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = node
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let default = |property: &Value, name: &str| {
        if required.contains(&name) {
            "required".to_owned()
        } else {
            default(property.get("default"))
        }
    };
    for (name, property) in properties {
        let key = format!("{prefix}{name}");
        let target = resolve(root, property);
        let description = property
            .get("description")
            .or_else(|| target.get("description"))
            .and_then(Value::as_str)
            .unwrap_or("");
        if target.get("properties").is_some() {
            // A section: its keys, each with its own default.
            rows(root, target, &format!("{key}."), out);
            continue;
        }
        let items = resolve(root, &target["items"]);
        if target.get("type") == Some(&"array".into()) && items.get("properties").is_some() {
            out.push(Row {
                key: format!("[[{key}]]"),
                kind: "list of tables".to_owned(),
                default: default(property, name),
                description: cell(description),
                unit: "",
            });
            rows(root, items, &format!("{key}[]."), out);
            continue;
        }
        out.push(Row {
            unit: unit(property, &key),
            kind: kind(root, property),
            default: default(property, name),
            description: cell(description),
            key,
        });
    }
}

/// One daemon's section of the reference.
fn daemon(out: &mut String, binary: &str, what: &str, schema: schemars::Schema) {
    let root = schema.as_value();
    let help = Command::new(bin_dir().join(binary))
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{binary} --help: {e}"));
    assert!(help.status.success(), "{binary} --help failed");
    let help = String::from_utf8(help.stdout).unwrap();
    writeln!(out, "## {binary}\n\n{what}\n").unwrap();
    writeln!(
        out,
        "### Configuration file\n\n`{binary} --config FILE` (TOML; flags override it; an unknown key is an error).\n"
    )
    .unwrap();
    writeln!(
        out,
        "| key | type | default | unit | meaning |\n| --- | --- | --- | --- | --- |"
    )
    .unwrap();
    let mut all = Vec::new();
    rows(root, root, "", &mut all);
    for r in all {
        writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            r.key, r.kind, r.default, r.unit, r.description
        )
        .unwrap();
    }
    writeln!(
        out,
        "\n### Flags\n\n```text\n$ {binary} --help\n{}```\n",
        help.trim_end().to_owned() + "\n"
    )
    .unwrap();
}

fn reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the code by `tests/tests/config_reference.rs` (the daemons' config types\n\
         and `--help`); do not edit: `MERIDIAN_UPDATE_CONFIG_REFERENCE=1 cargo test -p\n\
         meridian-tests --test config_reference` writes it again. Each daemon reads a TOML file\n\
         (`--config`) whose keys are below, dotted keys being `[sections]`; a flag overrides its\n\
         key. Examples: `deploy/config/`.\n\n",
    );
    daemon(
        &mut out,
        "region-broker",
        "A region's broker: log groups, the gRPC API, the Kafka and MQTT listeners.",
        schemars::schema_for!(meridian_region_broker::config::Config),
    );
    daemon(
        &mut out,
        "control-plane",
        "The control plane: placement, routing, broker leases, region failover.",
        schemars::schema_for!(meridian_control_plane::config::Config),
    );
    daemon(
        &mut out,
        "mirror",
        "A region's mirror: the QUIC links to the other regions.",
        schemars::schema_for!(meridian_mirror::config::Config),
    );
    daemon(
        &mut out,
        "meridian-console",
        "The web console for SREs.",
        schemars::schema_for!(meridian_console::config::Config),
    );
    out.trim_end().to_owned() + "\n"
}

#[test]
fn the_configuration_reference_is_what_the_code_says() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/CONFIG.md");
    let generated = reference();
    for key in [
        "`kafka.tls_client_auth`",
        "`storage.flush`",
        "`[[mqtt.mapping]]`",
        "`replication.peers[].raft`",
        "`[[users]]`",
    ] {
        assert!(generated.contains(key), "{key} is in the reference");
    }
    if std::env::var_os("MERIDIAN_UPDATE_CONFIG_REFERENCE").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "deploy/CONFIG.md is not what the code says: run `MERIDIAN_UPDATE_CONFIG_REFERENCE=1 cargo test -p meridian-tests --test config_reference` and commit it"
    );
}
