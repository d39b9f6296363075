//! Routing through the control plane: which region's brokers a client should use for a
//! topic. The client names its region, or measures the round trip to each healthy region's
//! brokers and takes the nearest. One call when the client starts (and when a region fails
//! over); never one per message.

use std::time::Duration;

use meridian_proto::v1::{self, control_plane_client::ControlPlaneClient};
use tokio::time::Instant;

use crate::{Client, ClientError};

/// The region a client was routed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The region.
    pub region: String,
    /// Its live brokers' gRPC addresses.
    pub brokers: Vec<String>,
    /// The measured round trip, when the region was chosen by measuring.
    pub rtt: Option<Duration>,
}

/// How long one round-trip probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes per broker (the fastest counts).
const PROBES: usize = 3;

/// Asks the control plane (`control`: one or more comma-separated `HOST:PORT`) where
/// `topic` is served and picks a region: `region` when it is healthy, else the healthy
/// region with the lowest round trip.
pub async fn route(control: &str, topic: &str, region: Option<&str>) -> Result<Route, ClientError> {
    let answer = ask(control, topic, region.unwrap_or("")).await?;
    let healthy: Vec<&v1::RegionRoute> = answer.regions.iter().filter(|r| r.healthy).collect();
    if let Some(name) = region
        && let Some(r) = healthy.iter().find(|r| r.region == name)
    {
        return Ok(Route {
            region: r.region.clone(),
            brokers: r.brokers.iter().map(|b| b.grpc.clone()).collect(),
            rtt: None,
        });
    }
    let mut best: Option<Route> = None;
    for r in healthy {
        let Some(rtt) = measure(r).await else {
            continue;
        };
        if best.as_ref().is_none_or(|b| b.rtt.is_some_and(|x| rtt < x)) {
            best = Some(Route {
                region: r.region.clone(),
                brokers: r.brokers.iter().map(|b| b.grpc.clone()).collect(),
                rtt: Some(rtt),
            });
        }
    }
    best.ok_or_else(|| {
        ClientError::Usage(format!(
            "no healthy region serves topic {topic:?}{}: check meridian region list",
            region
                .map(|r| format!(" (region {r} is down or has no live broker)"))
                .unwrap_or_default()
        ))
    })
}

impl Client {
    /// Connects to the brokers of the region [`route`] picks for `topic`.
    pub async fn connect_routed(
        control: &str,
        topic: &str,
        region: Option<&str>,
    ) -> Result<(Client, Route), ClientError> {
        let route = route(control, topic, region).await?;
        let client = Client::connect(&route.brokers.join(",")).await?;
        Ok((client, route))
    }
}

async fn ask(control: &str, topic: &str, region: &str) -> Result<v1::RouteResponse, ClientError> {
    let mut last = ClientError::Usage("no control-plane address given".into());
    for addr in control.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let client = match control_at(addr).await {
            Ok(c) => c,
            Err(e) => {
                last = e;
                continue;
            }
        };
        match client
            .clone()
            .route(v1::RouteRequest {
                topic: topic.to_owned(),
                region: region.to_owned(),
            })
            .await
        {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if s.code() == tonic::Code::Unavailable => last = s.into(),
            Err(s) => return Err(s.into()),
        }
    }
    Err(last)
}

/// A client of the first control-plane process of `control` (one or more comma-separated
/// `HOST:PORT`) that accepts a connection. Any process answers reads.
pub async fn connect_control(
    control: &str,
) -> Result<ControlPlaneClient<tonic::transport::Channel>, ClientError> {
    let mut last = ClientError::Usage("no control-plane address given".into());
    for addr in control.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match control_at(addr).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn control_at(
    addr: &str,
) -> Result<ControlPlaneClient<tonic::transport::Channel>, ClientError> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ClientError::Usage(format!("bad control-plane address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(2));
    let channel = endpoint.connect().await.map_err(|e| ClientError::Connect {
        addr: addr.to_owned(),
        reason: crate::error::source_chain(&e),
    })?;
    Ok(ControlPlaneClient::new(channel))
}

/// The fastest TCP connect to any of the region's brokers: a handshake is one round trip.
async fn measure(region: &v1::RegionRoute) -> Option<Duration> {
    let mut best: Option<Duration> = None;
    for b in region.brokers.iter().take(3) {
        for _ in 0..PROBES {
            let start = Instant::now();
            if let Ok(Ok(_)) =
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&b.grpc)).await
            {
                let rtt = start.elapsed();
                best = Some(best.map_or(rtt, |x| x.min(rtt)));
            }
        }
    }
    best
}
