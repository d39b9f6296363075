//! `meridian version`: this CLI's version, and the versions the platform's control plane
//! and live brokers run (as they report them), so a mixed deployment shows.

use meridian_proto::v1;

use crate::control;

pub(crate) async fn run(control: &str, region: Option<&str>, json: bool) -> anyhow::Result<()> {
    let cli = env!("CARGO_PKG_VERSION");
    let status = control::read(
        control,
        "asking the control plane its version",
        |mut c| async move { c.status(v1::ControlStatusRequest {}).await },
    )
    .await;
    let brokers = match &status {
        Ok(_) => {
            let request = v1::ListBrokersRequest {
                region: region.unwrap_or("").to_owned(),
            };
            control::read(control, "listing brokers", |mut c| async move {
                c.list_brokers(request).await
            })
            .await
            .map(|r| r.brokers)
        }
        Err(_) => Ok(Vec::new()),
    };
    let shown = |v: &str| {
        if v.is_empty() {
            "unknown (a build from before versions were reported)".to_owned()
        } else {
            v.to_owned()
        }
    };
    if json {
        let value = serde_json::json!({
            "cli": cli,
            "control_plane": status.as_ref().ok().map(|s| serde_json::json!({"id": s.id, "version": s.version})),
            "control_plane_error": status.as_ref().err().map(|e| format!("{e:#}")),
            "brokers": brokers.as_ref().map(|bs| bs.iter().map(|b| serde_json::json!({
                "region": b.region, "id": b.id, "grpc": b.grpc, "version": b.version,
            })).collect::<Vec<_>>()).unwrap_or_default(),
        });
        println!("{value}");
        return Ok(());
    }
    println!("meridian (this CLI)  {cli}");
    match &status {
        Ok(s) => println!(
            "control plane {:<6} {} at {control}",
            s.id,
            shown(&s.version)
        ),
        Err(e) => println!("control plane        not reached at {control}: {e:#}"),
    }
    match brokers {
        Ok(brokers) => {
            for b in brokers {
                println!(
                    "broker {:<13} {} at {}",
                    format!("{}/{}", b.region, b.id),
                    shown(&b.version),
                    b.grpc
                );
            }
        }
        Err(e) => println!("brokers              not listed: {e:#}"),
    }
    Ok(())
}
