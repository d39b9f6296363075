//! Consumer groups as first-class objects: every group (Kafka and native, with members or
//! only committed offsets) with its state, members, topics and lag in each region, sortable
//! and paged; and a group's own page with its lag over time and per partition in every
//! region.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::observer::GroupInRegion;
use std::collections::BTreeMap;

/// Rows a page of the groups list shows.
const PAGE_ROWS: usize = 50;

/// A consumer group as the list shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct GroupRow {
    pub name: String,
    /// Where a coordinator holds it: "Stable in x: 2 members".
    pub states: Vec<String>,
    pub topics: Vec<String>,
    /// Its lag in each region it committed in.
    pub lags: Vec<(String, u64)>,
    pub total_lag: u64,
}

/// Every group the reports (committed offsets) or the coordinators (members) know, by
/// name.
pub(super) fn group_rows(
    committed: &BTreeMap<String, BTreeMap<String, GroupInRegion>>,
    coordinated: &[data::KafkaGroup],
) -> Vec<GroupRow> {
    let mut rows: BTreeMap<String, GroupRow> = BTreeMap::new();
    for (name, regions) in committed {
        let row = rows.entry(name.clone()).or_insert_with(|| GroupRow {
            name: name.clone(),
            ..GroupRow::default()
        });
        for (region, g) in regions {
            row.lags.push((region.clone(), g.lag));
            row.total_lag += g.lag;
            row.topics.extend(g.topics.iter().cloned());
        }
    }
    for g in coordinated {
        let row = rows.entry(g.name.clone()).or_insert_with(|| GroupRow {
            name: g.name.clone(),
            ..GroupRow::default()
        });
        row.states.push(format!(
            "{} in {}: {} member{}",
            g.state,
            g.region,
            g.members.len(),
            if g.members.len() == 1 { "" } else { "s" }
        ));
        row.topics.extend(g.topics.iter().cloned());
    }
    rows.into_values()
        .map(|mut r| {
            r.topics.sort();
            r.topics.dedup();
            r
        })
        .collect()
}

#[derive(Template)]
#[template(path = "groups.html")]
pub(super) struct Groups {
    pub(super) nav: Nav,
    pub(super) rows: Vec<GroupRow>,
    pub(super) sort: String,
    pub(super) page: usize,
    pub(super) pages: usize,
    pub(super) regions: Vec<String>,
    pub(super) group: String,
    pub(super) topic: String,
    pub(super) region: String,
    pub(super) partitions: Vec<data::GroupPartition>,
    pub(super) preview: bool,
    pub(super) applied: bool,
    pub(super) to: String,
    pub(super) notice: String,
    pub(super) error: String,
}

/// The list, sorted (`lag`: most behind first; else by name) and cut to page `page`
/// (from 1); also how many pages there are.
pub(super) fn page_of(mut rows: Vec<GroupRow>, sort: &str, page: usize) -> (Vec<GroupRow>, usize) {
    if sort == "lag" {
        rows.sort_by(|a, b| b.total_lag.cmp(&a.total_lag).then(a.name.cmp(&b.name)));
    }
    let pages = rows.len().div_ceil(PAGE_ROWS).max(1);
    let page = page.clamp(1, pages);
    let rows = rows
        .into_iter()
        .skip((page - 1) * PAGE_ROWS)
        .take(PAGE_ROWS)
        .collect();
    (rows, pages)
}

/// Every group, for the list.
pub(super) async fn all_groups(app: &crate::Console, regions: &[data::Region]) -> Vec<GroupRow> {
    group_rows(&app.observer.groups(), &data::kafka_groups(regions).await)
}

#[derive(Template)]
#[template(path = "group.html")]
struct GroupPage {
    nav: Nav,
    name: String,
    states: Vec<String>,
    /// Members at coordinators: (region, member id, client id, assignment lines).
    members: Vec<(String, String, String, Vec<String>)>,
    /// Each region's partitions: (topic, partition, committed, latest, lag).
    regions: Vec<(String, u64, Vec<crate::observer::PartitionLag>)>,
    chart: String,
}

pub(super) async fn group_page(
    State(app): State<App>,
    me: Me,
    Path(name): Path<String>,
) -> Response {
    let listed = match data::regions_seen(&app).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let coordinated: Vec<data::KafkaGroup> = data::kafka_groups(&listed)
        .await
        .into_iter()
        .filter(|g| g.name == name)
        .collect();
    let committed = app.observer.groups().remove(&name).unwrap_or_default();
    if committed.is_empty() && coordinated.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            error_page(
                "No such consumer group",
                &format!(
                    "No region holds a commit of group {name:?} and no coordinator has it: see the consumer groups page (new commits show within 5 s)"
                ),
            ),
        )
            .into_response();
    }
    let states = group_rows(&BTreeMap::new(), &coordinated)
        .into_iter()
        .flat_map(|r| r.states)
        .collect();
    let members = coordinated
        .iter()
        .flat_map(|g| {
            g.members.iter().map(|(id, client, assigned)| {
                (
                    g.region.clone(),
                    id.clone(),
                    client.clone(),
                    assigned.clone(),
                )
            })
        })
        .collect();
    render(&GroupPage {
        nav: Nav::of(&me, &format!("Consumer group {name}")),
        states,
        members,
        regions: committed
            .into_iter()
            .map(|(region, g)| (region, g.lag, g.partitions))
            .collect(),
        chart: crate::charts::svg(&app.observer.lag_history(&name), ""),
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_with_commits_or_members_are_listed_once_with_their_lag() {
        let mut committed: BTreeMap<String, BTreeMap<String, GroupInRegion>> = BTreeMap::new();
        for (group, region, lag) in [("billing", "x", 5), ("billing", "y", 7), ("audit", "x", 0)] {
            committed.entry(group.into()).or_default().insert(
                region.into(),
                GroupInRegion {
                    topics: ["orders".to_owned()].into(),
                    lag,
                    partitions: Vec::new(),
                },
            );
        }
        let coordinated = vec![data::KafkaGroup {
            region: "x".into(),
            name: "billing".into(),
            state: "Stable".into(),
            protocol: "range".into(),
            coordinator: 1,
            members: vec![("m1".into(), "c1".into(), Vec::new())],
            topics: vec!["payments".into()],
        }];
        let rows = group_rows(&committed, &coordinated);
        assert_eq!(rows.len(), 2);
        let billing = &rows[1];
        assert_eq!(billing.total_lag, 12);
        assert_eq!(billing.topics, ["orders", "payments"]);
        assert_eq!(billing.states, ["Stable in x: 1 member"]);
        let (sorted, pages) = page_of(rows, "lag", 1);
        assert_eq!((sorted[0].name.as_str(), pages), ("billing", 1));
        let many: Vec<GroupRow> = (0..120)
            .map(|i| GroupRow {
                name: format!("g{i:03}"),
                ..GroupRow::default()
            })
            .collect();
        let (third, pages) = page_of(many, "name", 9);
        assert_eq!(
            (third.len(), pages, third[0].name.as_str()),
            (20, 3, "g100")
        );
    }
}

#[derive(Deserialize, Default)]
pub(super) struct GroupQuery {
    /// `lag` (most behind first) or `name`.
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: usize,
    #[serde(default)]
    group: String,
    #[serde(default)]
    topic: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    notice: String,
}

pub(super) async fn groups(
    State(app): State<App>,
    me: Me,
    Query(q): Query<GroupQuery>,
) -> Response {
    let listed = match data::regions_seen(&app).await {
        Ok(r) => r,
        Err(e) => return failed(e),
    };
    let (rows, pages) = page_of(all_groups(&app, &listed).await, &q.sort, q.page.max(1));
    let regions: Vec<String> = listed.into_iter().map(|r| r.name).collect();
    let region = if q.region.is_empty() {
        regions.first().cloned().unwrap_or_default()
    } else {
        q.region.clone()
    };
    let (partitions, error) = if q.group.is_empty() || q.topic.is_empty() {
        (Vec::new(), String::new())
    } else {
        match data::group(&app.control, &q.group, &q.topic, &region, None).await {
            Ok(p) => (p, String::new()),
            Err(e) => (Vec::new(), e.0),
        }
    };
    render(&Groups {
        nav: Nav::of(&me, "Consumer groups"),
        rows,
        sort: q.sort,
        page: q.page.max(1),
        pages,
        regions,
        group: q.group,
        topic: q.topic,
        region,
        partitions,
        preview: false,
        applied: false,
        to: String::new(),
        notice: q.notice,
        error,
    })
}

#[derive(Deserialize)]
pub(super) struct ResetForm {
    #[serde(default)]
    csrf: String,
    group: String,
    topic: String,
    region: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    dry_run: String,
}

pub(super) async fn reset_group(
    State(app): State<App>,
    me: Me,
    Form(f): Form<ResetForm>,
) -> Response {
    let target = format!("{} on {} in {}", f.group, f.topic, f.region);
    let dry_run = f.dry_run == "yes";
    let action = if dry_run {
        "preview group reset"
    } else {
        "reset group"
    };
    if let Err(r) = me.permit(&app, &f.csrf, Role::Operator, action, &target) {
        return r.into_response();
    }
    let outcome = match data::parse_reset(&f.to) {
        Ok(to) if dry_run => {
            data::group(&app.control, &f.group, &f.topic, &f.region, Some(&to)).await
        }
        Ok(to) => match data::reset_group(&app.control, &f.group, &f.topic, &f.region, &to).await {
            // Show where the group stands now.
            Ok(_) => data::group(&app.control, &f.group, &f.topic, &f.region, None).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let (partitions, error, notice) = match outcome {
        Ok(p) => {
            if !dry_run {
                app.audit
                    .record(&me.session, action, &target, &format!("ok: to {}", f.to));
            }
            let notice = if dry_run {
                "Preview: nothing changed yet. Untick “preview only” and reset again to apply."
                    .to_owned()
            } else {
                format!("Reset {} to {}.", f.group, f.to)
            };
            (p, String::new(), notice)
        }
        Err(e) => {
            app.audit
                .record(&me.session, action, &target, &format!("failed: {e}"));
            (Vec::new(), e.0, String::new())
        }
    };
    let listed = data::regions_seen(&app).await.unwrap_or_default();
    let (rows, pages) = page_of(all_groups(&app, &listed).await, "", 1);
    render(&Groups {
        nav: Nav::of(&me, "Consumer groups"),
        rows,
        sort: String::new(),
        page: 1,
        pages,
        regions: listed.into_iter().map(|r| r.name).collect(),
        group: f.group,
        topic: f.topic,
        region: f.region,
        preview: dry_run,
        applied: !dry_run,
        partitions,
        to: f.to,
        notice,
        error,
    })
}
