//! The JSON API under `/api/`: what the pages show, for scripts (a session cookie from
//! `POST /login` authenticates; changes stay on the pages, with their confirmations).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::data::{self, Failed};
use crate::{ApiUser, App};

/// The API routes (nested under `/api`).
pub fn routes() -> axum::Router<App> {
    axum::Router::new()
        .route("/regions", get(regions))
        .route("/topics", get(topics))
        .route("/topics/{name}", get(topic))
        .route("/messages", get(messages))
        .route("/groups", get(group))
        .route("/kafka-groups", get(kafka_groups))
        .route("/mqtt", get(mqtt))
        .route("/throughput", get(throughput))
        .route("/mirrors", get(mirrors))
        .route("/audit", get(audit))
        .route("/me", get(me))
}

fn answer<T: serde::Serialize>(r: Result<T, Failed>) -> Response {
    match r {
        Ok(v) => Json(v).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(serde_json::json!({ "error": e.0 })),
        )
            .into_response(),
    }
}

async fn me(ApiUser(s): ApiUser) -> Response {
    Json(serde_json::json!({ "user": s.user, "role": s.role })).into_response()
}

async fn regions(State(app): State<App>, _: ApiUser) -> Response {
    let result = async {
        let mut regions = data::regions(&app.control).await?;
        data::add_broker_reports(&mut regions).await;
        Ok(regions)
    }
    .await;
    answer(result)
}

#[derive(Deserialize, Default)]
struct Search {
    #[serde(default)]
    q: String,
}

async fn topics(State(app): State<App>, _: ApiUser, Query(s): Query<Search>) -> Response {
    answer(data::topics(&app.control, &s.q).await)
}

async fn topic(State(app): State<App>, _: ApiUser, Path(name): Path<String>) -> Response {
    answer(data::topic(&app.control, &name).await)
}

async fn messages(
    State(app): State<App>,
    _: ApiUser,
    Query(q): Query<crate::pages::MessagesQuery>,
) -> Response {
    let result = async {
        let regions: Vec<String> = data::regions(&app.control)
            .await?
            .into_iter()
            .map(|r| r.name)
            .collect();
        crate::pages::read_messages(&app, &q, &regions).await
    }
    .await;
    answer(result)
}

#[derive(Deserialize)]
struct GroupQuery {
    group: String,
    topic: String,
    region: String,
    /// A reset to preview (nothing changes): beginning, end, an offset or a time.
    #[serde(default)]
    preview_reset: String,
}

async fn group(State(app): State<App>, _: ApiUser, Query(q): Query<GroupQuery>) -> Response {
    let result = async {
        let reset = match q.preview_reset.as_str() {
            "" => None,
            t => Some(data::parse_reset(t)?),
        };
        data::group(&app.control, &q.group, &q.topic, &q.region, reset.as_ref()).await
    }
    .await;
    answer(result)
}

async fn kafka_groups(State(app): State<App>, _: ApiUser) -> Response {
    let result = async {
        let regions = data::regions(&app.control).await?;
        Ok(data::kafka_groups(&regions).await)
    }
    .await;
    answer(result)
}

async fn mqtt(State(app): State<App>, _: ApiUser) -> Response {
    let result = async {
        let regions = data::regions(&app.control).await?;
        Ok(data::mqtt_sessions(&regions).await)
    }
    .await;
    answer(result)
}

async fn throughput(State(app): State<App>, _: ApiUser) -> Response {
    Json(app.observer.region_rates()).into_response()
}

async fn mirrors(State(app): State<App>, _: ApiUser) -> Response {
    Json(serde_json::json!({
        "links": app.mirrors.now(),
        "lag_p99_ms": app.mirrors.lag_p99(),
    }))
    .into_response()
}

async fn audit(State(app): State<App>, _: ApiUser) -> Response {
    Json(app.audit.tail(200)).into_response()
}
