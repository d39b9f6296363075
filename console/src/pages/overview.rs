//! The overview (regions, health summary, produce rate, links) and the brokers page.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    nav: Nav,
    regions: Vec<data::Region>,
    topics: usize,
    notice: String,
    chart: String,
    /// Each mirror link at a glance: (name, up and delivering, status, lag p99).
    links: Vec<(String, bool, String, String)>,
    /// What is wrong, each with the page that fixes it.
    findings: Vec<crate::observer::Finding>,
}

pub(super) async fn overview(State(app): State<App>, me: Me, Query(n): Query<Notice>) -> Response {
    let regions = match data::regions_seen(&app).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let topics = data::topics(&app.control, "").await.map_or(0, |t| t.len());
    let links: Vec<(String, bool, String, String)> = app
        .mirrors
        .now()
        .into_iter()
        .map(|l| {
            (
                format!("{} → {}", l.from, l.to),
                l.up == Some(true) && l.stalled.is_none(),
                l.status(),
                show(&l.lag_p99_ms, " ms"),
            )
        })
        .collect();
    let glance: Vec<(String, bool, String)> = links
        .iter()
        .map(|(name, ok, status, _)| (name.clone(), *ok, status.clone()))
        .collect();
    render(&Overview {
        nav: Nav::of(&me, "Overview"),
        findings: app.observer.findings(&regions, &glance, data::now_ms()),
        regions,
        topics,
        notice: n.notice,
        chart: crate::charts::svg(&app.observer.region_rates(), "/s"),
        links,
    })
}

#[derive(Template)]
#[template(path = "brokers.html")]
struct Brokers {
    nav: Nav,
    regions: Vec<data::Region>,
    notice: String,
    chart: String,
    bytes_chart: String,
}

pub(super) async fn brokers(State(app): State<App>, me: Me, Query(n): Query<Notice>) -> Response {
    match data::regions_seen(&app).await {
        Ok(mut regions) => {
            data::add_broker_reports(&mut regions).await;
            render(&Brokers {
                nav: Nav::of(&me, "Brokers"),
                regions,
                notice: n.notice,
                chart: crate::charts::svg(&app.observer.broker_rates(), "/s"),
                bytes_chart: crate::charts::svg(&app.observer.broker_byte_rates(), " B/s"),
            })
        }
        Err(e) => failed(e),
    }
}
