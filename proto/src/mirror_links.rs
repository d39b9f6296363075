//! A mirror link's state as the mirrors' own Prometheus endpoints report it, for the
//! console's mirrors page and `meridian mirror status`: a link `a → b` is up when a's
//! mirror says so, its lag (p50, p99 between two scrapes, from the histogram's buckets) is
//! what b's mirror measured from each batch's append time in a to its apply in b, batches a shipped that b
//! has not acknowledged are what failing a over would strand, and it is stalled when b's
//! mirror reports that what a ships has failed to apply for [`STALLED_AFTER_S`] or more.
//! Pure but for [`scrape`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;

/// One link at one time.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    /// The origin region.
    pub from: String,
    /// The receiving region.
    pub to: String,
    /// Whether `from`'s mirror holds the link up (None: its mirror did not answer).
    pub up: Option<bool>,
    /// Messages shipped per second (measured by the caller between two scrapes).
    pub messages_per_second: Option<f64>,
    /// Lag from the append in `from` to the apply in `to`, p50 and p99, ms.
    pub lag_p50_ms: Option<f64>,
    /// See `lag_p50_ms`.
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

/// The samples named `name` whose label `key` is `value`.
fn matching<'a>(
    samples: &'a [Sample],
    name: &'a str,
    key: &'a str,
    value: &'a str,
) -> impl Iterator<Item = &'a Sample> + 'a {
    samples
        .iter()
        .filter(move |x| x.name == name && x.labels.get(key).map(String::as_str) == Some(value))
}

impl Link {
    /// The link `from → to` from `out` (`from`'s mirror's samples) and `inn` (`to`'s);
    /// `None` for a mirror that did not answer. Its lag is over what `to`'s mirror applied
    /// since `inn_before` (its samples at an earlier scrape; none: since it started): the
    /// lag is a histogram, whose buckets only grow. Its rate is left to the caller
    /// ([`shipped_total`] at two times).
    pub fn observe(
        from: &str,
        to: &str,
        out: Option<&[Sample]>,
        inn: Option<&[Sample]>,
        inn_before: Option<&[Sample]>,
    ) -> Link {
        let up =
            out.map(|s| matching(s, "meridian_mirror_link_up", "peer", to).any(|x| x.value > 0.0));
        let unacked = out.map(|s| {
            let seq = |name: &str| -> HashMap<String, f64> {
                // A group's main stream and a topic's own stream of it (label `topic`).
                matching(s, name, "peer", to)
                    .map(|x| {
                        let label = |l: &str| x.labels.get(l).cloned().unwrap_or_default();
                        (format!("{}/{}", label("group"), label("topic")), x.value)
                    })
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
        let lag = inn.map(|now| {
            let buckets = |s: &[Sample]| buckets(s, "meridian_mirror_lag_seconds", "origin", from);
            let now = buckets(now);
            let Some(before) = inn_before.map(buckets) else {
                return now;
            };
            let since: Vec<(f64, f64)> = now
                .iter()
                .map(|&(le, count)| {
                    let then = before
                        .iter()
                        .find(|(b, _)| *b == le)
                        .map_or(0.0, |(_, c)| *c);
                    (le, count - then)
                })
                .collect();
            // A bucket that went down: the mirror restarted between the scrapes (its
            // counts started again); what it counted since its start is the recent part.
            if since.iter().any(|&(_, d)| d < 0.0) {
                now
            } else {
                since
            }
        });
        let lag_ms = |q: f64| {
            lag.as_deref()
                .and_then(|b| quantile(b, q))
                .map(|secs| secs * 1000.0)
        };
        Link {
            from: from.to_owned(),
            to: to.to_owned(),
            up,
            messages_per_second: None,
            lag_p50_ms: lag_ms(0.5),
            lag_p99_ms: lag_ms(0.99),
            unacked_batches: unacked,
            stalled: inn.and_then(|s| stalled_from(s, from)),
        }
    }
}

/// The cumulative buckets `(upper bound, count)` of histogram `name` over its series whose
/// label `key` is `value` (summed), in increasing bound, `+Inf` last.
fn buckets(samples: &[Sample], name: &str, key: &str, value: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut out: Vec<(f64, f64)> = Vec::new();
    for x in matching(samples, &bucket, key, value) {
        let Some(le) = x.labels.get("le").and_then(|le| le.parse::<f64>().ok()) else {
            continue;
        };
        match out.iter_mut().find(|(b, _)| *b == le) {
            Some((_, count)) => *count += x.value,
            None => out.push((le, x.value)),
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The `q` quantile of cumulative `buckets` as Prometheus's `histogram_quantile` estimates
/// it (linear within the bucket it falls in; the last finite bound when it falls in
/// `+Inf`); `None` when they hold nothing.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(below.0);
            }
            let share = if count > below.1 {
                (rank - below.1) / (count - below.1)
            } else {
                1.0
            };
            return Some(below.0 + (le - below.0) * share);
        }
        below = (le, count);
    }
    Some(below.0)
}

/// Messages `from`'s mirror (its samples `out`) has shipped to `to` in all.
pub fn shipped_total(out: &[Sample], to: &str) -> f64 {
    matching(out, "meridian_mirror_shipped_messages_total", "peer", to)
        .map(|x| x.value)
        .sum()
}

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
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
pub enum ScrapeError {
    /// Connecting, asking or reading failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The mirror did not answer in time.
    #[error("{0}: no answer within 2 s")]
    Timeout(String),
}

/// A mirror's `/metrics` text, from its metrics address `HOST:PORT` (2 s at most).
pub async fn scrape(addr: &str) -> Result<String, ScrapeError> {
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
    }

    #[test]
    fn lag_quantiles_come_from_the_buckets_added_since_the_last_scrape() {
        let scrape = |small: u32, large: u32| {
            parse(&format!(
                "meridian_mirror_lag_seconds_bucket{{origin=\"a\",le=\"0.01\"}} {small}\n\
                 meridian_mirror_lag_seconds_bucket{{origin=\"a\",le=\"1\"}} {}\n\
                 meridian_mirror_lag_seconds_bucket{{origin=\"a\",le=\"+Inf\"}} {}\n",
                small + large,
                small + large
            ))
        };
        let (before, now) = (scrape(100, 0), scrape(100, 10));
        let link = Link::observe("a", "b", None, Some(&now), Some(&before));
        // Only the 10 slow ones since the last scrape: between 0.01 and 1 s.
        let p50 = link.lag_p50_ms.unwrap();
        assert!((10.0..=1000.0).contains(&p50) && p50 > 400.0, "{p50}");
        // Since the start, mostly fast ones.
        let all = Link::observe("a", "b", None, Some(&now), None);
        assert!(all.lag_p50_ms.unwrap() <= 10.0, "{all:?}");
        assert_eq!(
            Link::observe("a", "b", None, Some(&before), Some(&before)).lag_p99_ms,
            None
        );
        // The mirror restarted between the scrapes: its counts since then are the lag.
        let restarted = Link::observe("a", "b", None, Some(&scrape(0, 10)), Some(&now));
        assert!(restarted.lag_p50_ms.unwrap() > 400.0, "{restarted:?}");
        assert_eq!(quantile(&[(1.0, 0.0), (f64::INFINITY, 0.0)], 0.5), None);
        assert_eq!(
            quantile(&[(1.0, 0.0), (f64::INFINITY, 4.0)], 0.5),
            Some(1.0)
        );
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
