//! Mirror links: each link's state, rate and lag, and the lag chart.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Template)]
#[template(path = "mirrors.html")]
struct MirrorsPage {
    nav: Nav,
    configured: bool,
    links: Vec<LinkRow>,
    chart: String,
}

/// A link as the page shows it.
struct LinkRow {
    name: String,
    /// Up and delivering, down, or no answer (None); `status` says which, and why.
    up: Option<bool>,
    status: String,
    rate: String,
    p50: String,
    p99: String,
    unacked: String,
}

pub(super) async fn mirrors(State(app): State<App>, me: Me) -> Response {
    let links = app
        .mirrors
        .now()
        .into_iter()
        .map(|l| LinkRow {
            name: format!("{} → {}", l.from, l.to),
            up: l.up.filter(|_| l.stalled.is_none()),
            status: l.status(),
            rate: show(&l.messages_per_second, ""),
            p50: show(&l.lag_p50_ms, " ms"),
            p99: show(&l.lag_p99_ms, " ms"),
            unacked: l
                .unacked_batches
                .map_or("–".to_owned(), |n| format!("{n} batches")),
        })
        .collect();
    render(&MirrorsPage {
        nav: Nav::of(&me, "Mirror links"),
        configured: app.mirrors.configured(),
        links,
        chart: crate::charts::svg(&app.mirrors.lag_p99(), " ms"),
    })
}
