//! Log-group actions from the brokers page, each behind a confirmation that states its
//! cost: a raft group's leadership moved to another voter (its preferred replica, or the
//! one named), a raft replica moved to another live broker (the control plane carries it
//! out), a master-slave group failed over to its most caught-up slave.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Deserialize, Default)]
pub(super) struct ToQuery {
    /// The voter to move a raft group's leadership to (empty: its preferred replica), or
    /// the broker a replica moves to.
    #[serde(default)]
    to: String,
    /// The broker whose replica moves.
    #[serde(default)]
    from: String,
}

fn parse_to(to: &str) -> Result<Option<u32>, Failed> {
    match to.trim() {
        "" => Ok(None),
        t => t
            .parse()
            .map(Some)
            .map_err(|_| Failed(format!("to: {t:?} is not a broker id"))),
    }
}

pub(super) async fn confirm_group_action(
    State(app): State<App>,
    me: Me,
    Path((region, group, action)): Path<(String, u32, String)>,
    Query(q): Query<ToQuery>,
) -> Response {
    let regions = match data::regions_seen(&app).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let Some(g) = regions
        .iter()
        .find(|r| r.name == region)
        .and_then(|r| r.groups.iter().find(|g| g.id == group))
    else {
        return failed(Failed(format!(
            "region {region} has no log group {group}: see the brokers page"
        )));
    };
    let to = match parse_to(&q.to) {
        Ok(t) => t,
        Err(e) => return failed(e),
    };
    let topics = data::topics_on_group(&app.control, &region, group)
        .await
        .unwrap_or_default();
    let topics = if topics.is_empty() {
        "none".to_owned()
    } else {
        topics.join(", ")
    };
    let leader = g
        .leader
        .map_or("no broker (it has no leader now)".to_owned(), |l| {
            format!("broker {l}")
        });
    let (heading, cost, button) = match action.as_str() {
        "elect" if g.strategy != "master-slave" => {
            let target = to.map_or(
                format!(
                    "its preferred replica (broker {})",
                    g.replicas.first().copied().unwrap_or_default()
                ),
                |t| format!("broker {t}"),
            );
            (
                format!("Move the leadership of log group {group} in {region}"),
                vec![
                    format!("Leadership moves from {leader} to {target}, which must be in sync (else nothing changes and the page says why)."),
                    format!("Writes to its partitions pause for the election, usually well under a second; producers and consumers find the new leader by themselves. Topics on it: {topics}."),
                    "Nothing committed is lost: raft elects only a replica holding every committed record.".to_owned(),
                ],
                format!("Move leader of group {group}"),
            )
        }
        "move" if g.strategy != "master-slave" => {
            let (Ok(Some(from)), Some(to)) = (parse_to(&q.from), to) else {
                return failed(Failed(
                    "a replica move names the broker it leaves (from) and the one it goes to (to)"
                        .to_owned(),
                ));
            };
            (
                format!("Move log group {group}'s replica in {region} from broker {from} to broker {to}"),
                vec![
                    format!("Broker {to} gets a new replica and copies the group's whole log before broker {from}'s replica leaves: one replica's worth of disk writes and network. Topics on it: {topics}."),
                    "Writes and reads go on meanwhile; the group's leader changes only if it is the replica leaving.".to_owned(),
                    "The control plane carries the move out (the brokers page lists both brokers until it completes) and keeps the group where you put it: its balancing moves other groups' replicas, never this one's.".to_owned(),
                ],
                format!("Move the replica to broker {to}"),
            )
        }
        "failover" if g.strategy == "master-slave" => (
            format!("Fail log group {group} in {region} over"),
            vec![
                format!("The most caught-up slave becomes master with a new epoch; the current master ({leader}) is fenced and can commit nothing more."),
                format!("Writes to its partitions pause until clients learn the new master. Topics on it: {topics}."),
                "Writes the old master acknowledged with acks=leader that no slave copied are lost; with acks=all nothing acknowledged is. If too many slaves do not answer to be sure one holds everything, nothing is changed.".to_owned(),
            ],
            format!("Fail over group {group}"),
        ),
        other => {
            return (
                StatusCode::NOT_FOUND,
                error_page(
                    "No such action",
                    &format!(
                        "{other}: a raft group's leadership (elect) or a replica (move) is moved, a master-slave group is failed over (failover); group {group} is {}",
                        g.strategy
                    ),
                ),
            )
                .into_response();
        }
    };
    render(&Confirm {
        nav: Nav::of(&me, &heading),
        heading,
        cost,
        action: format!(
            "/log-groups/{}/{group}/{action}?to={}&from={}",
            url_encode(&region),
            to.map_or(String::new(), |t| t.to_string()),
            url_encode(q.from.trim())
        ),
        button,
        back: format!("/brokers#group-{}-{group}", url_encode(&region)),
    })
}

pub(super) async fn group_action(
    State(app): State<App>,
    me: Me,
    Path((region, group, action)): Path<(String, u32, String)>,
    Query(q): Query<ToQuery>,
    Form(f): Form<regions::ConfirmForm>,
) -> Response {
    let what = format!("{action} log group");
    let target = format!("{group} in {region}");
    if let Err(r) = me.permit(&app, &f.csrf, Role::Operator, &what, &target) {
        return r.into_response();
    }
    if !f.confirmed() {
        app.audit
            .record(&me.session, &what, &target, "refused: not confirmed");
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            error_page("Not done", "Tick “I understand” to confirm."),
        )
            .into_response();
    }
    let outcome = match (action.as_str(), parse_to(&q.to)) {
        (_, Err(e)) => Err(e),
        ("elect", Ok(to)) => data::move_leader(&app, &region, group, to).await,
        ("failover", Ok(_)) => data::failover_group(&app, &region, group).await,
        ("move", Ok(Some(to))) => match parse_to(&q.from) {
            Ok(Some(from)) => data::move_replica(&app, &region, group, from, to).await,
            _ => Err(Failed("from: the broker whose replica moves".to_owned())),
        },
        (other, _) => Err(Failed(format!(
            "{other}: say elect, move (with from and to) or failover"
        ))),
    };
    let outcome = outcome.map(|done| Done::notice("/brokers", &done));
    audited(&app, &me, &what, &target, outcome)
}
