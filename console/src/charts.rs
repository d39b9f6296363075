//! Throughput over time: every few seconds the console adds up each region's log ends
//! (the latest offset of every partition of every topic it serves) and keeps the last ten
//! minutes; the difference between samples is the region's append rate. Drawn as inline
//! SVG (no script, no library) and served as JSON at `/api/throughput`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(5);
/// Samples kept (ten minutes).
const KEPT: usize = 120;

/// One value of a series at one time.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub time_ms: i64,
    pub value: f64,
}

/// The samples taken so far.
#[derive(Debug, Default)]
pub struct Throughput {
    /// (time, region → messages held).
    samples: Mutex<VecDeque<(i64, BTreeMap<String, u64>)>>,
}

impl Throughput {
    /// Adds a sample.
    pub fn add(&self, time_ms: i64, held: BTreeMap<String, u64>) {
        let mut s = self.samples.lock().expect("samples lock poisoned");
        if s.len() == KEPT {
            s.pop_front();
        }
        s.push_back((time_ms, held));
    }

    /// Each region's rate between consecutive samples.
    pub fn rates(&self) -> BTreeMap<String, Vec<Point>> {
        let s = self.samples.lock().expect("samples lock poisoned");
        let mut out: BTreeMap<String, Vec<Point>> = BTreeMap::new();
        for pair in s.iter().collect::<Vec<_>>().windows(2) {
            let ((t0, a), (t1, b)) = (pair[0], pair[1]);
            let secs = ((t1 - t0) as f64 / 1000.0).max(0.001);
            for (region, now) in b {
                // A region missing from the earlier sample (or a topic deleted in between)
                // has no rate for that step.
                if let Some(before) = a.get(region).filter(|before| **before <= *now) {
                    out.entry(region.clone()).or_default().push(Point {
                        time_ms: *t1,
                        value: (now - before) as f64 / secs,
                    });
                }
            }
        }
        out
    }
}

/// Samples forever: each region's total of latest offsets over every topic.
pub async fn sample(app: crate::App) {
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        match held(&app.control).await {
            Ok(held) => app.throughput.add(now, held),
            Err(e) => tracing::debug!(error = %e, "throughput sample skipped"),
        }
        tokio::time::sleep(EVERY).await;
    }
}

async fn held(control: &str) -> Result<BTreeMap<String, u64>, crate::data::Failed> {
    let mut out = BTreeMap::new();
    for region in crate::data::regions(control).await? {
        if !region.up {
            continue;
        }
        let brokers: Vec<String> = region
            .brokers
            .iter()
            .filter(|b| b.live)
            .map(|b| b.grpc.clone())
            .collect();
        if brokers.is_empty() {
            continue;
        }
        let Ok(client) = meridian_client::Client::connect(&brokers.join(",")).await else {
            continue;
        };
        let Ok(topics) = client.list_topics().await else {
            continue;
        };
        let total = topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.latest_offset)
            .sum();
        out.insert(region.name, total);
    }
    Ok(out)
}

/// Series as an SVG line chart, one line per series, values labelled with `unit`.
pub fn svg(rates: &BTreeMap<String, Vec<Point>>, unit: &str) -> String {
    const W: f64 = 720.0;
    const H: f64 = 180.0;
    const PAD: f64 = 36.0;
    const COLORS: [&str; 6] = [
        "#1f6feb", "#d9480f", "#2b8a3e", "#862e9c", "#c92a2a", "#5c940d",
    ];
    let points: Vec<&Point> = rates.values().flatten().collect();
    if points.is_empty() {
        return "<p class=\"muted chart-empty\">No samples yet (one every 5 s).</p>".into();
    }
    let t0 = points.iter().map(|p| p.time_ms).min().unwrap_or(0);
    let t1 = points
        .iter()
        .map(|p| p.time_ms)
        .max()
        .unwrap_or(0)
        .max(t0 + 1);
    let top = points.iter().map(|p| p.value).fold(1.0_f64, f64::max) * 1.1;
    let x = |t: i64| PAD + (t - t0) as f64 / (t1 - t0) as f64 * (W - 2.0 * PAD);
    let y = |v: f64| H - PAD + 10.0 - v / top * (H - PAD - 10.0);
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" class=\"chart\">"
    );
    // The time axis: where the samples start and end (UTC).
    let clock = |t: i64| {
        let at = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + Duration::from_millis(t.max(0) as u64),
        )
        .to_string();
        at.get(11..19).unwrap_or_default().to_owned()
    };
    out += &format!(
        "<text class=\"axis\" x=\"{PAD}\" y=\"{ty}\" font-size=\"10\">{} UTC</text><text class=\"axis\" x=\"{r}\" y=\"{ty}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
        clock(t0),
        clock(t1),
        r = W - PAD,
        ty = H - PAD + 22.0
    );
    out += &format!(
        "<line x1=\"{PAD}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/><text x=\"4\" y=\"14\" font-size=\"11\">{top:.0}{unit}</text><text x=\"4\" y=\"{b}\" font-size=\"11\">0</text>",
        b = H - PAD + 10.0,
        r = W - PAD
    );
    for (i, (region, pts)) in rates.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let line: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.time_ms), y(p.value)))
            .collect();
        out += &format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            line.join(" ")
        );
        // The latest value as a dot (a series of one sample has no line).
        if let Some(p) = pts.last() {
            out += &format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                x(p.time_ms),
                y(p.value)
            );
        }
        out += &format!(
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{color}\">{} {:.0}{unit}</text>",
            PAD + 170.0 * i as f64,
            H - 2.0,
            escape(region),
            pts.last().map_or(0.0, |p| p.value)
        );
    }
    out + "</svg>"
}

/// Escapes text for HTML/SVG.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_consecutive_samples() {
        let t = Throughput::default();
        t.add(0, BTreeMap::from([("a".to_owned(), 100)]));
        t.add(
            5000,
            BTreeMap::from([("a".to_owned(), 600), ("b".to_owned(), 10)]),
        );
        t.add(
            10_000,
            BTreeMap::from([("a".to_owned(), 600), ("b".to_owned(), 60)]),
        );
        let r = t.rates();
        let a: Vec<f64> = r["a"].iter().map(|p| p.value).collect();
        assert_eq!(a, [100.0, 0.0]);
        let b: Vec<f64> = r["b"].iter().map(|p| p.value).collect();
        assert_eq!(b, [10.0]);
        let chart = svg(&r, "/s");
        assert!(chart.starts_with("<svg") && chart.contains("polyline") && chart.contains(">a "));
        assert!(svg(&BTreeMap::new(), "/s").contains("No samples"));
    }
}
