//! A log group's actions from the brokers page: the topics it holds (for the cost
//! confirmation), a raft group's leadership or replica moved, a master-slave group failed
//! over.

use std::time::Duration;

use meridian_proto::v1;

use super::{Failed, brokers_of, control, on_leader};

/// The topics with a partition on log group `group` of `region`.
pub async fn topics_on_group(addrs: &str, region: &str, group: u32) -> Result<Vec<String>, Failed> {
    let mut c = control(addrs).await?;
    let listed = c
        .list_topics(v1::ControlListTopicsRequest {})
        .await
        .map_err(|s| Failed::of("listing topics", s.message()))?
        .into_inner()
        .topics;
    Ok(listed
        .into_iter()
        .filter(|t| {
            t.placements
                .iter()
                .any(|p| p.region == region && p.partition_groups.contains(&group))
        })
        .filter_map(|t| t.spec.map(|s| s.name))
        .collect())
}

/// Moves log group `group`'s replica in `region` from broker `from` to `to` (the control
/// plane carries it out: `to` joins and catches up, then `from` leaves).
pub async fn move_replica(
    app: &crate::Console,
    region: &str,
    group: u32,
    from: u32,
    to: u32,
) -> Result<String, Failed> {
    let request = v1::MoveReplicaRequest {
        region: region.to_owned(),
        group,
        from,
        to,
    };
    let placed = on_leader(
        &app.control,
        &format!("moving log group {group}'s replica in {region} from broker {from} to {to}"),
        |mut c| {
            let r = request.clone();
            async move { c.move_replica(r).await }
        },
    )
    .await?;
    Ok(format!(
        "Log group {group} of {region} is moving its replica from broker {from} to broker {to}: broker {to} joins and catches up, then broker {from} leaves (replicas now {:?}).",
        placed.replicas
    ))
}

/// Moves a raft log group's leadership to voter `to` (`None`: its preferred replica);
/// what happened, in words.
pub async fn move_leader(
    app: &crate::Console,
    region: &str,
    group: u32,
    to: Option<u32>,
) -> Result<String, Failed> {
    let client = brokers_of(app, region).await?;
    let answer = client
        .transfer_leadership(group, to, Duration::from_secs(10))
        .await
        .map_err(|e| {
            Failed::of(
                &format!("moving the leadership of log group {group} in {region}"),
                e,
            )
        })?;
    Ok(if answer.moved {
        format!(
            "Log group {group} of {region} is now led by broker {}.",
            answer.leader
        )
    } else {
        format!(
            "Log group {group} of {region} was led by broker {} already: nothing changed.",
            answer.leader
        )
    })
}

/// Fails a master-slave log group over to its most caught-up slave; what happened, in
/// words.
pub async fn failover_group(
    app: &crate::Console,
    region: &str,
    group: u32,
) -> Result<String, Failed> {
    let client = brokers_of(app, region).await?;
    let report = client
        .failover_log_group(group, false)
        .await
        .map_err(|e| Failed::of(&format!("failing log group {group} in {region} over"), e))?;
    Ok(format!(
        "Log group {group} of {region} failed over: broker {} is master at epoch {} (was {}).",
        report.new_master,
        report.epoch,
        report
            .old_master
            .map_or("unknown".to_owned(), |m| format!("broker {m}"))
    ))
}
