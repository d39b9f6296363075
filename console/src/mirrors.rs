//! Mirror links between regions over time, from the mirrors' own Prometheus endpoints (each
//! region's mirror is named to the console with `--mirror REGION=HOST:PORT`), scraped every
//! few seconds: each link's state as `meridian_proto::mirror_links` reads it, its rate as
//! the shipped-message counter over time, and its p99 lag kept for the chart.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

pub use meridian_proto::mirror_links::Link;
use meridian_proto::mirror_links::{Sample, parse, scrape, shipped_total};

use crate::charts::Point;

/// Samples kept (ten minutes at one per 5 s).
const KEPT: usize = 120;

/// A mirror's scrapes: (time in ms, its samples), oldest first.
type Scrapes = VecDeque<(i64, Vec<Sample>)>;

/// How far back a link's lag looks.
const LAG_WINDOW_MS: i64 = 60_000;

/// The mirrors to scrape and what they said.
#[derive(Debug, Default)]
pub struct Mirrors {
    /// Region → its mirror's metrics address.
    sources: Vec<(String, String)>,
    /// (time, links).
    history: Mutex<VecDeque<(i64, Vec<Link>)>>,
    /// Last shipped-message totals per (from, to), with their time, for rates.
    shipped: Mutex<HashMap<(String, String), (i64, f64)>>,
    /// Each region's mirror's samples at its scrapes of the last [`LAG_WINDOW_MS`]: a
    /// link's lag is over what was applied since the oldest (a histogram's buckets only
    /// grow), as the mirror's own summary once kept a minute.
    earlier: Mutex<BTreeMap<String, Scrapes>>,
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
        let mut earlier = self.earlier.lock().expect("earlier scrapes lock poisoned");
        let mut shipped = self.shipped.lock().expect("shipped lock poisoned");
        for from in &regions {
            for to in &regions {
                if from == to {
                    continue;
                }
                let out = scraped[*from].as_deref();
                let before = earlier
                    .get(*to)
                    .and_then(|kept| kept.front())
                    .map(|(_, samples)| samples.as_slice());
                let mut link = Link::observe(from, to, out, scraped[*to].as_deref(), before);
                link.messages_per_second = out.and_then(|s| {
                    let total = shipped_total(s, to);
                    let key = ((*from).clone(), (*to).clone());
                    let before = shipped.insert(key, (now_ms, total));
                    before.and_then(|(t0, v0)| {
                        (now_ms > t0 && total >= v0)
                            .then(|| (total - v0) / ((now_ms - t0) as f64 / 1000.0))
                    })
                });
                links.push(link);
            }
        }
        drop(shipped);
        for (region, samples) in &scraped {
            if let Some(samples) = samples {
                let kept = earlier.entry(region.clone()).or_default();
                kept.push_back((now_ms, samples.clone()));
                while kept
                    .front()
                    .is_some_and(|(t, _)| *t < now_ms - LAG_WINDOW_MS)
                {
                    kept.pop_front();
                }
            }
        }
        drop(earlier);
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
    fn mirrors_are_named_region_equals_address() {
        assert!(
            Mirrors::new(&["a=127.0.0.1:1".into()])
                .unwrap()
                .configured()
        );
        assert!(Mirrors::new(&["nonsense".into()]).is_err());
    }
}
