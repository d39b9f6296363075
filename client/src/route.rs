//! Routing through the control plane: which region's brokers a client should use for a
//! topic. The client names its region, or measures the round trip to each healthy region's
//! brokers and takes the nearest. One call when the client starts (and when a region fails
//! over); never one per message.

use std::time::Duration;

use meridian_proto::v1;
use std::sync::Arc;

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
/// `topic` is served and picks a region: `region` when named (refused, with the reason,
/// when it does not serve now: never silently replaced), else the healthy region with the
/// lowest round trip.
pub async fn route(control: &str, topic: &str, region: Option<&str>) -> Result<Route, ClientError> {
    let answer = ask(control, topic, region.unwrap_or("")).await?;
    refuse_named_down(&answer, topic, region)?;
    pick(&answer, topic, region, None).await
}

/// Refuses a region named explicitly that does not serve now, saying why.
fn refuse_named_down(
    answer: &v1::RouteResponse,
    topic: &str,
    region: Option<&str>,
) -> Result<(), ClientError> {
    let Some(r) = region.and_then(|name| answer.regions.iter().find(|r| r.region == name)) else {
        return Ok(());
    };
    if r.healthy {
        return Ok(());
    }
    Err(ClientError::Usage(format!(
        "region {} does not serve topic {topic:?} now: {}. Name another region, or none for the nearest healthy one",
        r.region,
        if r.why_not.is_empty() {
            "it is down"
        } else {
            &r.why_not
        }
    )))
}

/// Picks from the control plane's answer: `region` when it is healthy, else the healthy
/// region with the lowest round trip; never `avoid` (a region found unreachable).
async fn pick(
    answer: &v1::RouteResponse,
    topic: &str,
    region: Option<&str>,
    avoid: Option<&str>,
) -> Result<Route, ClientError> {
    let healthy: Vec<&v1::RegionRoute> = answer
        .regions
        .iter()
        .filter(|r| r.healthy && Some(r.region.as_str()) != avoid)
        .collect();
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

/// How often a routed client asks the control plane whether its region still serves.
const ROUTE_CHECK: Duration = Duration::from_secs(1);

/// A routed client's route: where it is, and how to find another region.
#[derive(Debug)]
pub(crate) struct Routing {
    control: String,
    topic: String,
    /// The region asked for (None: the nearest).
    preferred: Option<String>,
    /// The region served from now, and the routing epoch it was chosen at.
    current: std::sync::Mutex<(String, u64)>,
    /// Times the client moved to another region.
    moves: std::sync::atomic::AtomicU64,
    /// One move at a time.
    moving: tokio::sync::Mutex<()>,
}

impl Client {
    /// Connects to the brokers of the region [`route`] picks for `topic`, and keeps the
    /// client routed: when the control plane marks its region down (or stops routing to
    /// it), or when every broker of its region refuses connections, the client moves to
    /// the next-nearest healthy region; when the region asked for serves again, it moves
    /// back. Requests that never reached a broker are sent again in the new region; a
    /// produce that may have reached the old one fails (the caller decides). Consumers
    /// reposition by their origin positions ([`crate::Consumer`]).
    pub async fn connect_routed(
        control: &str,
        topic: &str,
        region: Option<&str>,
    ) -> Result<(Client, Route), ClientError> {
        let answer = ask(control, topic, region.unwrap_or("")).await?;
        refuse_named_down(&answer, topic, region)?;
        let route = pick(&answer, topic, region, None).await?;
        let mut client = Client::connect(&route.brokers.join(",")).await?;
        let routing = Arc::new(Routing {
            control: control.to_owned(),
            topic: topic.to_owned(),
            preferred: region.map(str::to_owned),
            current: std::sync::Mutex::new((route.region.clone(), answer.routing_epoch)),
            moves: Default::default(),
            moving: Default::default(),
        });
        client.routing = Some(routing.clone());
        let weak = Arc::downgrade(&routing);
        let watcher = client.clone_unrouted();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(ROUTE_CHECK).await;
                let Some(routing) = weak.upgrade() else {
                    return;
                };
                let _ = watcher.check_route(&routing).await;
            }
        });
        Ok((client, route))
    }

    /// The region a routed client serves from now.
    pub fn region(&self) -> Option<String> {
        self.routing
            .as_ref()
            .map(|r| r.current.lock().expect("routing lock poisoned").0.clone())
    }

    /// How many times a routed client moved to another region (consumers reposition when
    /// it changes).
    pub fn moves(&self) -> u64 {
        self.routing
            .as_ref()
            .map_or(0, |r| r.moves.load(std::sync::atomic::Ordering::SeqCst))
    }

    /// A clone sharing connections but holding no route (the watcher's, so it does not
    /// keep the route alive).
    fn clone_unrouted(&self) -> Client {
        Client {
            region: self.region.clone(),
            routing: None,
        }
    }

    /// Moves a routed client off a region none of whose brokers answers; whether it moved.
    pub(crate) async fn fail_over(&self) -> bool {
        let Some(routing) = &self.routing else {
            return false;
        };
        let _one = routing.moving.lock().await;
        let from = routing
            .current
            .lock()
            .expect("routing lock poisoned")
            .0
            .clone();
        let Ok(answer) = ask(&routing.control, &routing.topic, "").await else {
            return false;
        };
        let Ok(route) = pick(
            &answer,
            &routing.topic,
            routing.preferred.as_deref(),
            Some(&from),
        )
        .await
        else {
            return false;
        };
        self.move_to(routing, route, answer.routing_epoch).await
    }

    /// The watcher's check: moves when the control plane no longer routes to this region,
    /// or back when the region asked for serves again.
    async fn check_route(&self, routing: &Routing) -> Result<(), ClientError> {
        let answer = ask(
            &routing.control,
            &routing.topic,
            routing.preferred.as_deref().unwrap_or(""),
        )
        .await?;
        let (current, epoch) = routing
            .current
            .lock()
            .expect("routing lock poisoned")
            .clone();
        if answer.routing_epoch == epoch {
            return Ok(());
        }
        let healthy = |name: &str| answer.regions.iter().any(|r| r.region == name && r.healthy);
        let wanted_back = routing
            .preferred
            .as_deref()
            .is_some_and(|p| p != current && healthy(p));
        if healthy(&current) && !wanted_back {
            routing.current.lock().expect("routing lock poisoned").1 = answer.routing_epoch;
            return Ok(());
        }
        let _one = routing.moving.lock().await;
        let route = pick(&answer, &routing.topic, routing.preferred.as_deref(), None).await?;
        self.move_to(routing, route, answer.routing_epoch).await;
        Ok(())
    }

    async fn move_to(&self, routing: &Routing, route: Route, epoch: u64) -> bool {
        let from = routing
            .current
            .lock()
            .expect("routing lock poisoned")
            .0
            .clone();
        if route.region == from {
            return false;
        }
        if self.region.switch_to(&route.brokers).await.is_err() {
            return false;
        }
        *routing.current.lock().expect("routing lock poisoned") = (route.region, epoch);
        routing
            .moves
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        true
    }
}

async fn ask(control: &str, topic: &str, region: &str) -> Result<v1::RouteResponse, ClientError> {
    let mut last = ClientError::Usage("no control-plane address given".into());
    for addr in control.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let client = match meridian_region_client::control::control_at(addr).await {
            Ok(c) => c,
            Err(e) => {
                last = e.into();
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
) -> Result<v1::control_plane_client::ControlPlaneClient<meridian_proto::auth::Authed>, ClientError>
{
    Ok(meridian_region_client::control::connect_control(control).await?)
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
