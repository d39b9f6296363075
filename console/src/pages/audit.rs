//! The audit log: every change made through the console, newest first.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    path: String,
    lines: Vec<(String, String, String, String, String, String)>,
}

pub(super) async fn audit(State(app): State<App>, me: Me) -> Response {
    let field = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_owned();
    let lines = app
        .audit
        .tail(200)
        .iter()
        .map(|v| {
            let ms = v["time_ms"].as_u64().unwrap_or(0);
            let time = humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
            )
            .to_string();
            (
                time,
                field(v, "user"),
                field(v, "role"),
                field(v, "action"),
                field(v, "target"),
                field(v, "outcome"),
            )
        })
        .collect();
    render(&AuditPage {
        nav: Nav::of(&me, "Audit log"),
        path: app.audit.path().display().to_string(),
        lines,
    })
}
