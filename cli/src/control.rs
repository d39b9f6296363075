//! Talking to the control plane: where it is (`--control`, `MERIDIAN_CONTROL`, the file
//! `meridian up` writes), connecting to the first process that answers, and sending writes
//! to the leader (a follower's refusal names it in `x-meridian-leader`).

use anyhow::bail;
use meridian_proto::auth::Authed as Channel;
use meridian_proto::v1::control_plane_client::ControlPlaneClient;

/// The default control-plane address of a local deployment.
pub(crate) const DEFAULT_CONTROL: &str = "127.0.0.1:7300";

/// The control plane named by the flag (or `MERIDIAN_CONTROL`), else by the endpoints file.
pub(crate) fn resolve(flag: Option<&str>) -> Option<String> {
    if let Some(c) = flag {
        return Some(c.to_owned());
    }
    crate::endpoint::recorded("control")
}

/// A client of the first control-plane process in `addrs` (comma-separated) that answers.
pub(crate) async fn connect(addrs: &str) -> anyhow::Result<ControlPlaneClient<Channel>> {
    use meridian_client::ClientError;
    match meridian_client::connect_control(addrs).await {
        Ok(c) => Ok(c),
        Err(ClientError::Connect { addr, reason }) => bail!(
            "cannot connect to the control plane at {addr}: {reason} (is it running? pass --control HOST:PORT)"
        ),
        Err(ClientError::Usage(why)) if addrs.trim().is_empty() => {
            bail!("no control-plane address given: pass --control HOST:PORT ({why})")
        }
        Err(e) => bail!("the control plane at {addrs}: {e}"),
    }
}

/// Runs a write on the leader: the first answering process, then the leader it names.
pub(crate) async fn on_leader<T, F, Fut>(addrs: &str, what: &str, call: F) -> anyhow::Result<T>
where
    F: FnMut(ControlPlaneClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let client = connect(addrs).await?;
    meridian_client::on_control_leader(client, addrs, call)
        .await
        .map_err(|s| anyhow::anyhow!("{what}: {}", s.message()))
}

/// Runs a read on any process.
pub(crate) async fn read<T, F, Fut>(addrs: &str, what: &str, call: F) -> anyhow::Result<T>
where
    F: FnOnce(ControlPlaneClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let client = connect(addrs).await?;
    call(client)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow::anyhow!("{what}: {}", s.message()))
}

/// A client of `broker`, or, through the control plane when one is known, of `region`'s
/// live brokers (what the commands about one region's brokers talk to).
pub(crate) async fn region_client(
    broker: &str,
    control: Option<&str>,
    region: Option<&str>,
) -> anyhow::Result<meridian_client::Client> {
    let brokers = match control {
        Some(c) => region_brokers(c, region).await?,
        None => broker.to_owned(),
    };
    use anyhow::Context;
    meridian_client::Client::connect(&brokers)
        .await
        .with_context(|| format!("connecting to {brokers}"))
}

/// The gRPC addresses of the live brokers of `region` (which may be omitted when there is
/// only one region), comma-separated.
pub(crate) async fn region_brokers(addrs: &str, region: Option<&str>) -> anyhow::Result<String> {
    let request = meridian_proto::v1::ListBrokersRequest {
        region: region.unwrap_or("").to_owned(),
    };
    let brokers = read(addrs, "listing brokers", |mut c| async move {
        c.list_brokers(request).await
    })
    .await?
    .brokers;
    let mut regions: Vec<&str> = brokers.iter().map(|b| b.region.as_str()).collect();
    regions.dedup();
    if regions.len() > 1 {
        bail!(
            "the platform has several regions ({}): pass --region",
            regions.join(", ")
        );
    }
    if brokers.is_empty() {
        bail!(
            "no live broker{}: check meridian broker list",
            region
                .map(|r| format!(" in region {r}"))
                .unwrap_or_default()
        );
    }
    Ok(brokers
        .iter()
        .map(|b| b.grpc.clone())
        .collect::<Vec<_>>()
        .join(","))
}
