//! The layers of region-broker depend only downwards: protocol adapters (`grpc`, `kafka`, `mqtt`) →
//! broker core (`broker`) → log group (`log_group`) → replication (`replication`) →
//! configuration (`config`) → storage (`storage`). These tests read every source file's
//! `crate::…` and `super::…` paths (imports, qualified uses, doc links) and fail, naming
//! file and line, where a module refers to a module of a higher layer.

use std::path::{Path, PathBuf};

/// Each top-level module's layer: a module may refer to its own layer and those below.
const LAYERS: &[(&str, u8)] = &[
    ("storage", 0),
    ("config", 1),
    ("replication", 2),
    ("log_group", 3),
    ("broker", 4),
    ("grpc", 5),
    ("kafka", 5),
    ("mqtt", 5),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

/// The module path of a source file under `src/` (`broker/mirror.rs` → `[broker,
/// mirror]`); `None` for files outside the library's module tree (binaries).
fn module_path(relative: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    let file = parts.pop()?;
    let stem = file.strip_suffix(".rs")?;
    if stem != "lib" && stem != "mod" {
        parts.push(stem.to_owned());
    }
    Some(parts)
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The top-level modules a line refers to through `crate::` or `super::` paths, resolved
/// from `module` (the file's module path). A `{…}` group after the prefix counts each of
/// its paths.
fn referenced_modules(module: &[String], line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < line.len() {
        let rest = &line[i..];
        let starts = (rest.starts_with("crate::") || rest.starts_with("super::"))
            && (i == 0 || !is_ident(bytes[i - 1] as char));
        if !starts {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let mut j = i;
        let mut base = Some(Vec::new());
        if line[j..].starts_with("crate::") {
            j += "crate::".len();
        } else {
            let mut path = module.to_vec();
            while line[j..].starts_with("super::") {
                j += "super::".len();
                // Above the crate root: not a path this test understands.
                if path.pop().is_none() {
                    base = None;
                }
            }
            base = base.map(|_| path);
        }
        let Some(base) = base else {
            i = j;
            continue;
        };
        let first_segments: Vec<&str> = if line[j..].starts_with('{') {
            group_items(&line[j + 1..])
                .into_iter()
                .map(|p| p.trim().split(|c: char| !is_ident(c)).next().unwrap_or(""))
                .collect()
        } else {
            vec![line[j..].split(|c: char| !is_ident(c)).next().unwrap_or("")]
        };
        for segment in first_segments {
            let top = base.first().map_or(segment, String::as_str);
            if !top.is_empty() {
                out.push(top.to_owned());
            }
        }
        i = j;
    }
    out
}

/// The top-level items of a `{…}` group whose opening brace is just before `text`: split
/// at commas outside nested groups, up to the matching closing brace (`a::{b, c}, d}` →
/// `a::{b, c}`, `d`).
fn group_items(text: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&text[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// A file's statements as the scan reads them, each with its first line's number: a
/// line, or, where a `{…}` group opens and does not close on its line (a `use` rustfmt
/// spread over several lines), that line joined with the following ones up to the
/// closing brace.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let mut joined = line.to_owned();
        let opens_group = line.contains("::{");
        let open = |s: &str| s.matches('{').count() as i64 - s.matches('}').count() as i64;
        let mut depth = open(line);
        while opens_group && depth > 0 {
            let Some((_, next)) = lines.next() else {
                break;
            };
            joined.push(' ');
            joined.push_str(next.trim());
            depth += open(next);
        }
        out.push((n, joined));
    }
    out
}

/// Every reference in `files` (path relative to `src/`, text) from a module to a module
/// of a higher layer, as `file:line: <module> (layer n) refers to <module> (layer m)`.
fn violations(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (path, text) in files {
        let Some(module) = module_path(path) else {
            continue;
        };
        let Some(own) = module.first().and_then(|m| Some((m, layer(m)?))) else {
            continue;
        };
        for (n, line) in logical_lines(text) {
            for target in referenced_modules(&module, &line) {
                if let Some(l) = layer(&target)
                    && l > own.1
                {
                    out.push(format!(
                        "src/{}:{}: {} (layer {}) refers to {target} (layer {l}): {}",
                        path.display(),
                        n + 1,
                        own.0,
                        own.1,
                        line.trim()
                    ));
                }
            }
        }
    }
    out
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    for entry in std::fs::read_dir(dir).expect("reading the source directory") {
        let path = entry.expect("reading a directory entry").path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("reading a source file");
            let relative = path.strip_prefix(root).expect("under src").to_path_buf();
            out.push((relative, text));
        }
    }
}

#[test]
fn no_module_refers_to_a_higher_layer() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    assert!(
        files.iter().any(|(p, _)| p == Path::new("broker.rs")),
        "the scan found the sources"
    );
    let found = violations(&files);
    assert!(
        found.is_empty(),
        "lower layers refer to higher ones:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_reference_upwards_is_found_with_its_file_and_line() {
    let file = |path: &str, text: &str| (PathBuf::from(path), text.to_owned());
    let files = vec![
        file(
            "replication/raft.rs",
            "use super::pull;\n//! ok\n        replication: crate::broker::Strategy,\n",
        ),
        file(
            "broker.rs",
            "use crate::{log_group::Acks, kafka::groups};\n",
        ),
        file("log_group.rs", "use crate::replication::raft::Command;\n"),
        file("storage/group.rs", "use super::super::config::Config;\n"),
        file("grpc.rs", "use crate::kafka::groups::Coordinator;\n"),
        file("bin/region-broker.rs", "use crate::kafka::serve;\n"),
        file("broker/mirror.rs", "use super::{Broker, Topic};\n"),
        // A group rustfmt spreads over lines, with a nested group before the offender.
        file(
            "log_group.rs",
            "use crate::{\n    replication::{raft, pull},\n    config::Config,\n    broker::Broker,\n};\n",
        ),
        file(
            "kafka.rs",
            "mod tests { use super::super::broker::Broker; }\n",
        ),
    ];
    let found = violations(&files);
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with(
        "src/replication/raft.rs:3: replication (layer 2) refers to broker (layer 4)"
    ));
    assert!(found[1].starts_with("src/broker.rs:1: broker (layer 4) refers to kafka (layer 5)"));
    assert!(
        found[2]
            .starts_with("src/storage/group.rs:1: storage (layer 0) refers to config (layer 1)")
    );
    assert!(found[3].starts_with(
        "src/log_group.rs:1: log_group (layer 3) refers to broker (layer 4): use crate::{ replication::{raft, pull}, config::Config, broker::Broker, };"
    ));
}
