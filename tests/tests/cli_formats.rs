//! The CLI's message formats, as kcat and rpk users reach for them: keys and headers taken
//! from each input line (a key delimiter, `--header`, JSON lines from a file), kcat-style
//! `--format` output, `--from -N` (the last N of each partition), `--exit-at-end`, and
//! `consume --json | produce --input json` copying messages unchanged — null values and
//! repeated headers included.

use meridian_tests::{BrokerProcess, meridian};

/// Runs the CLI against broker `b`; it must succeed: its standard output.
fn succeeds(b: std::net::SocketAddr, args: &[&str], stdin: Option<&str>) -> String {
    let (code, out, err) = meridian(b, args, stdin);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_go_in_and_out_in_the_formats_kcat_users_know() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(&tmp.path().join("b1"), &[])
        .await
        .unwrap();
    let client = broker.client().await;
    client.create_topic("fmt", 2).await.unwrap();
    client.create_topic("copy", 2).await.unwrap();
    let b = broker.addr;

    // Keys from each line, a header on every message, a partition each.
    for p in ["0", "1"] {
        let input = format!("k1:{p}-a\nk2:{p}-b:with colon\nno-key-{p}\n");
        succeeds(
            b,
            &[
                "produce",
                "fmt",
                "--partition",
                p,
                "--key-delimiter",
                ":",
                "--header",
                "src=cli",
            ],
            Some(&input),
        );
    }
    // JSON lines from a file: a null value, a repeated header with a null value.
    let file = tmp.path().join("lines.json");
    std::fs::write(
        &file,
        "{\"key\": \"t\", \"value\": null, \"partition\": 0, \"headers\": [[\"h\", \"1\"], [\"h\", null]]}\n",
    )
    .unwrap();
    let path = file.display().to_string();
    succeeds(
        b,
        &["produce", "fmt", "--input", "json", "--file", &path],
        None,
    );
    let (code, _, err) = meridian(b, &["produce", "fmt", "--input", "json", "not json"], None);
    assert_eq!(code, 1);
    assert!(
        err.contains("input line 1 is not a message object"),
        "{err}"
    );

    // kcat's format, everything to the end and no further.
    let out = succeeds(
        b,
        &[
            "consume",
            "fmt",
            "--from",
            "beginning",
            "--exit-at-end",
            "--format",
            "%p:%o %k=%v [%h] %S\\n",
        ],
        None,
    );
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "0:0 k1=0-a [src=cli] 3",
            "0:1 k2=0-b:with colon [src=cli] 14",
            "0:2 =no-key-0 [src=cli] 8",
            "0:3 t= [h=1,h] -1",
            "1:0 k1=1-a [src=cli] 3",
            "1:1 k2=1-b:with colon [src=cli] 14",
            "1:2 =no-key-1 [src=cli] 8",
        ],
        "{out}"
    );
    let (code, _, err) = meridian(b, &["consume", "fmt", "--format", "%x"], None);
    assert_eq!(code, 1);
    assert!(err.contains("%x is not a format token"), "{err}");

    // The last two of each partition.
    let out = succeeds(
        b,
        &[
            "consume",
            "fmt",
            "--from",
            "-2",
            "--exit-at-end",
            "--format",
            "%p:%o\\n",
        ],
        None,
    );
    let mut last: Vec<&str> = out.lines().collect();
    last.sort_unstable();
    assert_eq!(last, ["0:2", "0:3", "1:1", "1:2"], "{out}");
    let (code, _, err) = meridian(b, &["consume", "fmt", "--from", "-0"], None);
    assert_eq!(code, 1);
    assert!(err.contains("-N reads the last N messages"), "{err}");

    // A copy through JSON lines is the same messages.
    let json = succeeds(
        b,
        &[
            "--json",
            "consume",
            "fmt",
            "--from",
            "beginning",
            "--exit-at-end",
        ],
        None,
    );
    succeeds(b, &["produce", "copy", "--input", "json"], Some(&json));
    let copied = succeeds(
        b,
        &[
            "--json",
            "consume",
            "copy",
            "--from",
            "beginning",
            "--exit-at-end",
        ],
        None,
    );
    let parts = |text: &str| {
        let mut out: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!(
                    "{} {} {} {}",
                    v["partition"], v["key"], v["value"], v["headers"]
                )
            })
            .collect();
        out.sort();
        out
    };
    assert_eq!(parts(&copied), parts(&json));
    assert!(
        parts(&copied).contains(&r#"0 "t" null [["h","1"],["h",null]]"#.to_owned()),
        "{copied}"
    );
}
