//! The pages that change where writes go: a region marked down or up (failover, with its
//! cost confirmed first) and a strictly ordered topic's home moved.

#[allow(clippy::wildcard_imports)]
use super::*;

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "none".into()
    } else {
        list.join(", ")
    }
}

pub(super) async fn confirm_region(
    State(app): State<App>,
    me: Me,
    Path((name, action)): Path<(String, String)>,
) -> Response {
    let cost = match data::failover_cost(&app.control, &name).await {
        Ok(c) => c,
        Err(e) => return failed(e),
    };
    let (heading, lines, button) = match action.as_str() {
        "fail" => (
            format!("Fail region {name} over"),
            vec![
                format!(
                    "Clients routed to {name} move to the nearest healthy region ({}); consumers resume there from their portable positions.",
                    names(&cost.others)
                ),
                format!(
                    "Messages written in {name} and not yet mirrored stay there until it is restored (topics it takes writes for: {}).",
                    names(&cost.topics)
                ),
                format!(
                    "Strictly ordered topics homed in {name} stop taking writes until their home moves: {}.",
                    names(&cost.homed)
                ),
                format!(
                    "Topics that live only in {name} become unavailable: {}.",
                    names(&cost.only_here)
                ),
                format!("{name} stays down until an operator restores it."),
            ]
            .into_iter()
            .chain(app.mirrors.now().iter().filter(|l| l.from == name).map(|l| {
                format!(
                    "Link {} → {}: {}; {} batches shipped and not yet acknowledged (they reach {} only after {name} returns); lag p99 {}.",
                    l.from,
                    l.to,
                    match l.up {
                        None => "its mirror does not answer".to_owned(),
                        _ => l.status(),
                    },
                    l.unacked_batches.map_or("an unknown number of".to_owned(), |n| n.to_string()),
                    l.to,
                    l.lag_p99_ms.map_or("unknown".to_owned(), |v| format!("{v:.0} ms")),
                )
            }))
            .collect(),
            format!("Fail {name} over"),
        ),
        "restore" => (
            format!("Restore region {name}"),
            vec![
                format!(
                    "Routing sends {name}'s clients back to it once its log groups have leaders."
                ),
                format!(
                    "Its mirrors bring it what the other regions took meanwhile; until they catch up, readers there may not see the newest messages."
                ),
            ],
            format!("Restore {name}"),
        ),
        other => {
            return (
                StatusCode::NOT_FOUND,
                error_page("No such action", &format!("{other}: say fail or restore")),
            )
                .into_response();
        }
    };
    render(&Confirm {
        nav: Nav::of(&me, &heading),
        heading,
        cost: lines,
        action: format!("/regions/{}/{action}", url_encode(&name)),
        button,
        back: "/".into(),
    })
}

#[derive(Deserialize)]
pub(super) struct ConfirmForm {
    #[serde(default)]
    pub(super) csrf: String,
    #[serde(default)]
    confirm: String,
}

impl ConfirmForm {
    /// The operator ticked “I understand”.
    pub(super) fn confirmed(&self) -> bool {
        self.confirm == "yes"
    }
}

pub(super) async fn change_region(
    State(app): State<App>,
    me: Me,
    Path((name, action)): Path<(String, String)>,
    Form(f): Form<ConfirmForm>,
) -> Response {
    let what = format!("{action} region");
    if let Err(r) = me.permit(&app, &f.csrf, Role::Operator, &what, &name) {
        return r.into_response();
    }
    let fail = match action.as_str() {
        "fail" => true,
        "restore" => false,
        other => {
            return (
                StatusCode::NOT_FOUND,
                error_page("No such action", &format!("{other}: say fail or restore")),
            )
                .into_response();
        }
    };
    if f.confirm != "yes" {
        app.audit
            .record(&me.session, &what, &name, "refused: not confirmed");
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            error_page("Not done", "Tick “I understand” to confirm."),
        )
            .into_response();
    }
    let outcome = data::set_region(&app.control, &name, fail).await.map(|()| {
        let done = if fail { "failed over" } else { "restored" };
        Done::notice("/", &format!("Region {name} {done}."))
    });
    audited(&app, &me, &what, &name, outcome)
}

// ---- a strictly ordered topic's home ----

#[derive(Deserialize)]
pub(super) struct HomeQuery {
    #[serde(default)]
    to: String,
}

pub(super) async fn confirm_home(
    State(app): State<App>,
    me: Me,
    Path(name): Path<String>,
    Query(q): Query<HomeQuery>,
) -> Response {
    let d = match data::topic(&app.control, &name).await {
        Ok(d) => d,
        Err(e) => return failed(e),
    };
    let Some(from) = d.topic.home.clone() else {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            error_page(
                "Not strictly ordered",
                &format!("{name} is ordered per partition: it has no home to move"),
            ),
        )
            .into_response();
    };
    let to = q.to.trim().to_owned();
    let lag = app
        .mirrors
        .now()
        .into_iter()
        .find(|l| l.from == from && l.to == to);
    let cost = vec![
        format!(
            "{from} stops taking writes for {name} first (its brokers confirm), then {to} opens: producers of {name} get refusals until they reach {to}."
        ),
        match lag {
            Some(l) => format!(
                "Messages written in {from} and not yet in {to} arrive there with the mirror: link {from} → {to} is {}, lag p99 {}, {} batches shipped and not yet acknowledged.",
                l.status(),
                show(&l.lag_p99_ms, " ms"),
                l.unacked_batches
                    .map_or("an unknown number of".to_owned(), |n| n.to_string()),
            ),
            None => format!(
                "Messages written in {from} and not yet in {to} arrive there with the mirror (no mirror metrics are configured to say how many)."
            ),
        },
    ];
    render(&Confirm {
        nav: Nav::of(&me, "Move a home"),
        heading: format!("Move {name}'s home from {from} to {to}"),
        cost,
        action: format!("/topics/{}/home?to={}", url_encode(&name), url_encode(&to)),
        button: format!("Move the home to {to}"),
        back: format!("/topics/{}", url_encode(&name)),
    })
}

pub(super) async fn move_home(
    State(app): State<App>,
    me: Me,
    Path(name): Path<String>,
    Query(q): Query<HomeQuery>,
    Form(f): Form<ConfirmForm>,
) -> Response {
    let target = format!("{name} to {}", q.to);
    if let Err(r) = me.permit(&app, &f.csrf, Role::Operator, "move home", &target) {
        return r.into_response();
    }
    if f.confirm != "yes" {
        app.audit
            .record(&me.session, "move home", &target, "refused: not confirmed");
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            error_page("Not done", "Tick “I understand” to confirm."),
        )
            .into_response();
    }
    let outcome = data::move_home(&app.control, &name, q.to.trim())
        .await
        .map(|()| {
            Done::notice(
                &format!("/topics/{}", url_encode(&name)),
                &format!("{name}'s home is now {}.", q.to.trim()),
            )
        });
    audited(&app, &me, "move home", &target, outcome)
}
