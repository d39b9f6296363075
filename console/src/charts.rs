//! Charts of series over time (rates, lags: the observer's and the mirrors' samples), drawn
//! as inline SVG: no script, no library.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// How often a sample is taken.
pub const EVERY: Duration = Duration::from_secs(5);

/// One value of a series at one time.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub time_ms: i64,
    pub value: f64,
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
    fn a_chart_draws_each_series_with_its_name() {
        let point = |time_ms, value| Point { time_ms, value };
        let r = BTreeMap::from([
            ("a".to_owned(), vec![point(5000, 100.0), point(10_000, 0.0)]),
            ("b".to_owned(), vec![point(10_000, 10.0)]),
        ]);
        let chart = svg(&r, "/s");
        assert!(chart.starts_with("<svg") && chart.contains("polyline") && chart.contains(">a "));
        assert!(svg(&BTreeMap::new(), "/s").contains("No samples"));
    }
}
