//! Mirror links between regions, from the mirrors' own Prometheus endpoints (each region's
//! mirror is named to the console with `--mirror REGION=HOST:PORT`), scraped every few
//! seconds: a link `a → b` is up when a's mirror says so, its rate is a's shipped-message
//! counter over time, its lag (p50, p99 over the mirror's last minute) is what b's mirror
//! measured from each batch's append time in a to its apply in b, and batches a shipped
//! that b has not acknowledged are what failing a over would strand until it returns.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::charts::Point;

/// Samples kept (ten minutes at one per 5 s).
const KEPT: usize = 120;

/// One link at one time.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    pub from: String,
    pub to: String,
    /// Whether `from`'s mirror holds the link up (None: its mirror did not answer).
    pub up: Option<bool>,
    pub messages_per_second: Option<f64>,
    pub lag_p50_ms: Option<f64>,
    pub lag_p99_ms: Option<f64>,
    /// Batches `from` shipped that `to` has not acknowledged yet.
    pub unacked_batches: Option<u64>,
    /// Why `to` has not been able to apply what `from` ships for [`STALLED_AFTER_S`] or
    /// more, and for how long (seconds): the link may be up and still deliver nothing.
    pub stalled: Option<(String, f64)>,
}

/// Seconds a stream must fail to apply before its link shows as stalled (retries within
/// them are ordinary: a leader election, a broker restart).
pub const STALLED_AFTER_S: f64 = 10.0;

impl Link {
    /// The link's state in words: up, stalled (with why), down, or no answer.
    pub fn status(&self) -> String {
        match (self.up, &self.stalled) {
            (Some(true), Some((reason, secs))) => format!(
                "stalled for {secs:.0} s: {} cannot apply what {} ships ({})",
                self.to,
                self.from,
                stall_words(reason)
            ),
            (Some(true), None) => "up".into(),
            (Some(false), _) => "down".into(),
            (None, _) => "no answer".into(),
        }
    }
}

/// What a mirror's stall reason (`meridian_mirror_stalled_seconds{reason}`) means.
fn stall_words(reason: &str) -> &'static str {
    match reason {
        "unavailable" => "its brokers do not answer",
        "resource_exhausted" => "its brokers refuse for lack of room: a full disk or a bound",
        "not_found" => "its brokers do not know the topic",
        "refused" => "its brokers refuse the writes: check the mirror's token and the topics",
        _ => "its brokers answer with errors: see the receiving mirror's log",
    }
}

/// The longest stall `samples` (a receiving mirror's metrics) report for streams from
/// `origin`, when it is at least [`STALLED_AFTER_S`].
fn stalled_from(samples: &[Sample], origin: &str) -> Option<(String, f64)> {
    samples
        .iter()
        .filter(|x| {
            x.name == "meridian_mirror_stalled_seconds"
                && x.labels.get("origin").map(String::as_str) == Some(origin)
                && x.value >= STALLED_AFTER_S
        })
        .max_by(|a, b| a.value.total_cmp(&b.value))
        .map(|x| (x.labels.get("reason").cloned().unwrap_or_default(), x.value))
}

/// The mirrors to scrape and what they said.
#[derive(Debug, Default)]
pub struct Mirrors {
    /// Region → its mirror's metrics address.
    sources: Vec<(String, String)>,
    /// (time, links).
    history: Mutex<VecDeque<(i64, Vec<Link>)>>,
    /// Last shipped-message totals per (from, to), with their time, for rates.
    shipped: Mutex<HashMap<(String, String), (i64, f64)>>,
}

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// Parses Prometheus text exposition (comments skipped; unparsable lines ignored).
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        let mut map = BTreeMap::new();
        for pair in labels.split(',').filter(|p| !p.is_empty()) {
            if let Some((k, v)) = pair.split_once('=') {
                map.insert(k.trim().to_owned(), v.trim().trim_matches('"').to_owned());
            }
        }
        out.push(Sample {
            name: name.to_owned(),
            labels: map,
            value,
        });
    }
    out
}

/// Why a mirror's metrics could not be read.
#[derive(Debug, thiserror::Error)]
enum ScrapeError {
    /// Connecting, asking or reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The mirror did not answer in time.
    #[error("{0}: no answer within 2 s")]
    Timeout(String),
}

async fn scrape(addr: &str) -> Result<String, ScrapeError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        Ok::<String, ScrapeError>(
            body.split_once("\r\n\r\n")
                .map_or(body.clone(), |(_, b)| b.to_owned()),
        )
    };
    tokio::time::timeout(Duration::from_secs(2), fetch)
        .await
        .map_err(|_| ScrapeError::Timeout(addr.to_owned()))?
}

impl Mirrors {
    /// Mirrors to watch: `REGION=HOST:PORT` each.
    pub fn new(specs: &[String]) -> anyhow::Result<Mirrors> {
        let mut sources = Vec::new();
        for s in specs {
            let (region, addr) = s.split_once('=').ok_or_else(|| {
                anyhow::anyhow!(
                    "mirror {s:?}: write REGION=HOST:PORT (the mirror's metrics address)"
                )
            })?;
            sources.push((region.trim().to_owned(), addr.trim().to_owned()));
        }
        Ok(Mirrors {
            sources,
            ..Mirrors::default()
        })
    }

    /// Whether any mirror is watched.
    pub fn configured(&self) -> bool {
        !self.sources.is_empty()
    }

    /// Scrapes every mirror once and records the links.
    pub async fn sample(&self, now_ms: i64) {
        let mut scraped: BTreeMap<String, Option<Vec<Sample>>> = BTreeMap::new();
        for (region, addr) in &self.sources {
            let samples = match scrape(addr).await {
                Ok(text) => Some(parse(&text)),
                Err(e) => {
                    tracing::debug!(region, error = %e, "mirror metrics unavailable");
                    None
                }
            };
            scraped.insert(region.clone(), samples);
        }
        let regions: Vec<&String> = scraped.keys().collect();
        let mut links = Vec::new();
        let mut shipped = self.shipped.lock().expect("shipped lock poisoned");
        for from in &regions {
            for to in &regions {
                if from == to {
                    continue;
                }
                let out = scraped[*from].as_ref();
                let inn = scraped[*to].as_ref();
                let of = |samples: Option<&Vec<Sample>>, name: &str, key: &str, value: &str| {
                    samples.map(|s| {
                        s.iter()
                            .filter(|x| {
                                x.name == name
                                    && x.labels.get(key).map(String::as_str) == Some(value)
                            })
                            .cloned()
                            .collect::<Vec<_>>()
                    })
                };
                let up = of(out, "meridian_mirror_link_up", "peer", to)
                    .map(|s| s.iter().any(|x| x.value > 0.0));
                let total = of(out, "meridian_mirror_shipped_messages_total", "peer", to)
                    .map(|s| s.iter().map(|x| x.value).sum::<f64>());
                let rate = total.and_then(|t| {
                    let key = ((*from).clone(), (*to).clone());
                    let before = shipped.insert(key, (now_ms, t));
                    before.and_then(|(t0, v0)| {
                        (now_ms > t0 && t >= v0).then(|| (t - v0) / ((now_ms - t0) as f64 / 1000.0))
                    })
                });
                let unacked = out.map(|s| {
                    let seq = |name: &str| -> HashMap<String, f64> {
                        s.iter()
                            .filter(|x| x.name == name && x.labels.get("peer") == Some(*to))
                            .map(|x| (x.labels.get("group").cloned().unwrap_or_default(), x.value))
                            .collect()
                    };
                    let (sent, acked) = (
                        seq("meridian_mirror_shipped_seq"),
                        seq("meridian_mirror_acked_seq"),
                    );
                    sent.iter()
                        .map(|(g, s)| (s - acked.get(g).copied().unwrap_or(0.0)).max(0.0) as u64)
                        .sum()
                });
                let lag = |q: &str| {
                    inn.and_then(|s| {
                        s.iter()
                            .filter(|x| {
                                x.name == "meridian_mirror_lag_seconds"
                                    && x.labels.get("origin") == Some(*from)
                                    && x.labels.get("quantile").map(String::as_str) == Some(q)
                            })
                            .map(|x| x.value * 1000.0)
                            .filter(|v| v.is_finite())
                            .reduce(f64::max)
                    })
                };
                links.push(Link {
                    from: (*from).clone(),
                    to: (*to).clone(),
                    up,
                    messages_per_second: rate,
                    lag_p50_ms: lag("0.5"),
                    lag_p99_ms: lag("0.99"),
                    unacked_batches: unacked,
                    stalled: inn.and_then(|s| stalled_from(s, from)),
                });
            }
        }
        drop(shipped);
        let mut h = self.history.lock().expect("history lock poisoned");
        if h.len() == KEPT {
            h.pop_front();
        }
        h.push_back((now_ms, links));
    }

    /// The links as last sampled.
    pub fn now(&self) -> Vec<Link> {
        self.history
            .lock()
            .expect("history lock poisoned")
            .back()
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    }

    /// Each link's p99 lag over time, in ms.
    pub fn lag_p99(&self) -> BTreeMap<String, Vec<Point>> {
        let h = self.history.lock().expect("history lock poisoned");
        let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        for (t, links) in h.iter() {
            for l in links {
                if let Some(v) = l.lag_p99_ms {
                    out.entry(format!("{} → {}", l.from, l.to))
                        .or_default()
                        .push(Point {
                            time_ms: *t,
                            value: v,
                        });
                }
            }
        }
        out
    }
}

/// Samples every mirror forever.
pub async fn sample(app: crate::App) {
    if !app.mirrors.configured() {
        return;
    }
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        app.mirrors.sample(now).await;
        tokio::time::sleep(crate::charts::EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_parsed() {
        let text = "# TYPE x counter\nmeridian_mirror_link_up{peer=\"b\"} 1\nplain 2.5\nmeridian_mirror_lag_seconds{origin=\"a\",quantile=\"0.99\"} 0.25\nbroken line\n";
        let s = parse(text);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].labels["peer"], "b");
        assert_eq!(s[1].name, "plain");
        assert_eq!(s[2].value, 0.25);
        assert_eq!(s[2].labels["quantile"], "0.99");
        assert!(
            Mirrors::new(&["a=127.0.0.1:1".into()])
                .unwrap()
                .configured()
        );
        assert!(Mirrors::new(&["nonsense".into()]).is_err());
    }

    #[test]
    fn a_link_up_whose_receiver_cannot_apply_is_stalled_with_why() {
        let receiver = parse(concat!(
            "meridian_mirror_stalled_seconds{origin=\"a\",group=\"1\",reason=\"unavailable\"} 34\n",
            "meridian_mirror_stalled_seconds{origin=\"a\",group=\"2\",reason=\"not_found\"} 3\n",
            "meridian_mirror_stalled_seconds{origin=\"c\",group=\"1\",reason=\"refused\"} 0\n",
        ));
        let link = |up, stalled| Link {
            from: "a".into(),
            to: "b".into(),
            up,
            messages_per_second: None,
            lag_p50_ms: None,
            lag_p99_ms: None,
            unacked_batches: None,
            stalled,
        };
        let stalled = stalled_from(&receiver, "a");
        assert_eq!(stalled, Some(("unavailable".into(), 34.0)));
        assert_eq!(stalled_from(&receiver, "c"), None, "applying again");
        let status = link(Some(true), stalled.clone()).status();
        assert!(
            status.starts_with("stalled for 34 s: b cannot apply"),
            "{status}"
        );
        assert!(status.contains("do not answer"), "{status}");
        assert_eq!(link(Some(true), None).status(), "up");
        assert_eq!(link(Some(false), stalled).status(), "down");
    }
}
