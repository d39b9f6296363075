//! Debian's mosquitto clients as the MQTT tests drive them: a `mosquitto_sub` read line
//! by line once subscribed, and `mosquitto_pub` sending lines.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::run;

/// A running `mosquitto_sub` (`-d`: its SUBACK is seen; `-v`: "topic payload" lines).
pub struct Sub {
    pub child: Child,
    pub lines: std::sync::mpsc::Receiver<String>,
    /// What it printed before its SUBACK: a resumed session's messages may come first.
    pub early: Vec<String>,
}

/// `mosquitto_sub`, line-buffered (its output is a pipe here, which stdio would
/// otherwise hold until it exits).
pub fn mosquitto_sub() -> Command {
    let mut cmd = Command::new("stdbuf");
    cmd.args(["-oL", "mosquitto_sub"]);
    cmd
}

/// Starts `cmd` (a [`mosquitto_sub`] with `-d -v`) and waits for its SUBACK (or its end:
/// with `-C`, a resumed session's messages may all come before it).
pub fn subscribed(mut cmd: Command) -> Sub {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs (scripts/test.sh installs mosquitto-clients)");
    let out = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut early = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains("received SUBACK") => break,
            Ok(l) => early.push(l),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("mosquitto_sub saw no SUBACK in 30 s: {e}"),
        }
    }
    Sub {
        child,
        lines,
        early,
    }
}

/// `mosquitto_sub` at MQTT port `port` reading `count` messages of `filter`, subscribed;
/// its messages are read by [`finish`].
pub fn subscriber(port: &str, version: &str, qos: u8, filter: &str, count: usize) -> Sub {
    let mut cmd = mosquitto_sub();
    cmd.args(["-h", "127.0.0.1", "-p", port, "-V", version])
        .args(["-q", &qos.to_string(), "-t", filter, "-v", "-d"])
        .args(["-C", &count.to_string(), "-W", "60"]);
    subscribed(cmd)
}

/// Its messages, once it ended: (topic, payload), the debug lines left out.
pub fn finish(sub: Sub) -> Vec<(String, String)> {
    let out = sub.child.wait_with_output().unwrap();
    // The reader thread ends at the output's end, with the process.
    let lines: Vec<String> = sub.early.into_iter().chain(sub.lines.iter()).collect();
    assert!(
        out.status.success(),
        "mosquitto_sub failed: {}; it printed {} lines, the CONNACK: {:?}",
        String::from_utf8_lossy(&out.stderr),
        lines.len(),
        lines.iter().find(|l| l.contains("CONNACK"))
    );
    lines
        .into_iter()
        .filter(|l| !l.starts_with("Client ") && !l.starts_with("Subscribed (mid"))
        .map(|l| {
            let (t, p) = l.split_once(' ').unwrap_or((&l, ""));
            (t.to_owned(), p.to_owned())
        })
        .collect()
}

/// `mosquitto_pub` at MQTT port `port` sending each line of `lines` as one message to
/// `topic`.
pub fn publish(port: &str, version: &str, qos: u8, topic: &str, lines: &str, extra: &[&str]) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", port, "-V", version])
        .args(["-q", &qos.to_string(), "-t", topic, "-l"])
        .args(extra);
    let (code, out, err) = run(cmd, Some(lines.as_bytes()));
    assert_eq!(code, 0, "mosquitto_pub: {out} {err}");
}
