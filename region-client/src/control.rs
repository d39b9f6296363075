//! The control plane's processes: a connection to the first that answers, and writes run on
//! its leader.

use std::time::Duration;

use meridian_proto::auth::Authed as Channel;
use meridian_proto::v1::control_plane_client::ControlPlaneClient;

use crate::{LEADER_HEADER, RegionError, source_chain};

/// Tries a write takes on a moving leader.
const LEADER_TRIES: usize = 3;
/// The wait while no control-plane leader is elected.
const ELECTION_WAIT: Duration = Duration::from_secs(1);

/// Runs a control-plane write on its leader: on `client` first, then on the leader a
/// follower's refusal names (`x-meridian-leader`), waiting a second while no leader is
/// elected; three tries. Errors are the control plane's own (connection failures become
/// `Unavailable`).
pub async fn on_control_leader<T, F, Fut>(
    mut client: ControlPlaneClient<Channel>,
    control: &str,
    mut call: F,
) -> Result<T, tonic::Status>
where
    F: FnMut(ControlPlaneClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let reconnect = |addrs: String| async move {
        connect_control(&addrs)
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))
    };
    for _ in 0..LEADER_TRIES {
        match call(client.clone()).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                match s
                    .metadata()
                    .get(LEADER_HEADER)
                    .and_then(|v| v.to_str().ok())
                {
                    Some(leader) => client = reconnect(leader.to_owned()).await?,
                    None => return Err(s),
                }
            }
            Err(s) if s.code() == tonic::Code::Unavailable => {
                // No leader yet (an election is under way): wait a little.
                tokio::time::sleep(ELECTION_WAIT).await;
                client = reconnect(control.to_owned()).await?;
            }
            Err(s) => return Err(s),
        }
    }
    Err(tonic::Status::unavailable(
        "the control-plane leader kept moving; retry",
    ))
}

/// A client of the first control-plane process of `control` (one or more comma-separated
/// `HOST:PORT`) that accepts a connection. Any process answers reads.
pub async fn connect_control(control: &str) -> Result<ControlPlaneClient<Channel>, RegionError> {
    let mut last = RegionError::NoAddress("control-plane");
    for addr in control.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match control_at(addr).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// A client of the control-plane process at `addr`.
pub async fn control_at(addr: &str) -> Result<ControlPlaneClient<Channel>, RegionError> {
    let endpoint = crate::endpoint(addr)?.connect_timeout(Duration::from_secs(2));
    let channel =
        meridian_proto::auth::connect(endpoint)
            .await
            .map_err(|e| RegionError::Connect {
                addr: addr.to_owned(),
                reason: source_chain(&e),
            })?;
    Ok(ControlPlaneClient::new(channel))
}
