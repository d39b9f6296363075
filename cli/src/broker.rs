//! `meridian broker list`: the brokers registered with the control plane (live: their
//! lease holds), with the log groups each hosts and leads.

use clap::Subcommand;
use meridian_proto::v1;

use crate::control;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Live brokers (of `--region`, or every region) and the log groups they hold and lead.
    List,
}

pub(crate) async fn run(
    cmd: Command,
    control: &str,
    region: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let Command::List = cmd;
    let region = region.unwrap_or("").to_owned();
    let request = v1::ListBrokersRequest {
        region: region.clone(),
    };
    let brokers = control::read(control, "listing brokers", |mut c| async move {
        c.list_brokers(request).await
    })
    .await?
    .brokers;
    let groups = control::read(control, "listing log groups", |mut c| async move {
        c.list_log_groups(v1::ListLogGroupsRequest { region }).await
    })
    .await?
    .groups;
    let held = |b: &v1::BrokerEndpoint| -> (Vec<u32>, Vec<u32>) {
        let mine = groups
            .iter()
            .filter(|g| g.region == b.region && g.replicas.contains(&b.id));
        let hosts = mine.clone().map(|g| g.id).collect();
        let leads = mine
            .filter(|g| g.leader == Some(b.id))
            .map(|g| g.id)
            .collect();
        (hosts, leads)
    };
    if json {
        let v: Vec<serde_json::Value> = brokers
            .iter()
            .map(|b| {
                let (hosts, leads) = held(b);
                serde_json::json!({
                    "region": b.region, "id": b.id, "grpc": b.grpc, "raft": b.raft,
                    "live": b.live, "log_groups": hosts, "leads": leads,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        println!(
            "{:<16} {:>4} {:<22} {:<22} {:<20} LEADS",
            "REGION", "ID", "GRPC", "RAFT", "LOG GROUPS"
        );
        for b in &brokers {
            let (hosts, leads) = held(b);
            println!(
                "{:<16} {:>4} {:<22} {:<22} {:<20} {}",
                b.region,
                b.id,
                b.grpc,
                b.raft,
                list(&hosts),
                list(&leads)
            );
        }
    }
    Ok(())
}

fn list(ids: &[u32]) -> String {
    if ids.is_empty() {
        return "-".into();
    }
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}
