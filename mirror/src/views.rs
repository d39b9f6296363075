//! What a mirror knows of the platform, refreshed from the control plane: its own region's
//! brokers and log groups (what it ships, and where it appends), and which topics each peer
//! region holds (a topic is shipped to a region only if it spans it). The last good answer
//! is kept while the control plane is unreachable: mirroring does not stop with it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::auth::Authed as Channel;
use meridian_proto::v1;
use meridian_proto::v1::control_plane_client::ControlPlaneClient;
use meridian_region_client::{RegionClient, RegionError};
use tokio::sync::watch;

/// One refresh's answer.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Each known region's view (this mirror's and its peers').
    pub views: HashMap<String, v1::RegionView>,
    /// A client of this region's brokers, once one answered.
    pub client: Option<RegionClient>,
    /// This mirror's region.
    pub own: String,
}

impl Snapshot {
    /// The log groups of `region`.
    pub fn groups(&self, region: &str) -> Vec<u32> {
        self.views
            .get(region)
            .map(|v| v.groups.iter().map(|g| g.id).collect())
            .unwrap_or_default()
    }

    /// Ids of the topics `region` holds; `None` until its view is known.
    pub fn topics(&self, region: &str) -> Option<HashSet<u32>> {
        self.views
            .get(region)
            .map(|v| v.topics.iter().map(|t| t.id).collect())
    }

    /// Ids of the topics that joined `region` after their creation (each is mirrored there
    /// on streams of its own).
    pub fn joined_later(&self, region: &str) -> HashSet<u32> {
        self.views
            .get(region)
            .map(|v| {
                v.topics
                    .iter()
                    .filter(|t| t.joined_later)
                    .map(|t| t.id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The log groups of `region` holding topic `topic` alone (0: those shared by topics).
    pub fn groups_of(&self, region: &str, topic: u32) -> HashSet<u32> {
        self.views
            .get(region)
            .map(|v| {
                v.groups
                    .iter()
                    .filter(|g| g.topic == topic)
                    .map(|g| g.id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The log groups of `region` its partitions of topic `id` are in — or were in, for a
    /// topic removed from it (what it took still ships).
    pub fn topic_groups(&self, region: &str, id: u32) -> HashSet<u32> {
        self.views
            .get(region)
            .and_then(|v| v.topics.iter().chain(&v.left).find(|t| t.id == id))
            .map(|t| t.groups.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Ids of deleted topics, as `region`'s view lists them.
    pub fn retired(&self, region: &str) -> HashSet<u32> {
        self.views
            .get(region)
            .map(|v| v.retired.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// A connection to the control plane kept across calls: made on first use, dropped after a
/// failed call so the next one reconnects (possibly to another process).
#[derive(Debug)]
pub struct Control {
    addrs: String,
    client: Option<ControlPlaneClient<Channel>>,
}

impl Control {
    /// Not connected yet; `addrs` comma separated.
    pub fn new(addrs: &str) -> Control {
        Control {
            addrs: addrs.to_owned(),
            client: None,
        }
    }

    /// Runs `call` on the connection, connecting first when there is none.
    pub async fn call<T, F, Fut>(&mut self, call: F) -> Result<T, RegionError>
    where
        F: FnOnce(ControlPlaneClient<Channel>) -> Fut,
        Fut: Future<Output = Result<T, RegionError>>,
    {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let c = meridian_region_client::control::connect_control(&self.addrs).await?;
                self.client = Some(c.clone());
                c
            }
        };
        let result = call(client).await;
        if result.is_err() {
            self.client = None;
        }
        result
    }
}

/// Refreshes the snapshot every `every` until the sender side is dropped; the receiver it
/// returns always holds the latest.
pub fn watch_views(
    control: String,
    own: String,
    peers: Vec<String>,
    every: Duration,
) -> watch::Receiver<Arc<Snapshot>> {
    let (tx, rx) = watch::channel(Arc::new(Snapshot {
        own: own.clone(),
        ..Snapshot::default()
    }));
    tokio::spawn(async move {
        let mut brokers: Vec<String> = Vec::new();
        let mut link = Control::new(&control);
        loop {
            let mut next = (**tx.borrow()).clone();
            match fetch(&mut link, &own, &peers).await {
                Ok(views) => {
                    let live: Vec<String> = views
                        .get(&own)
                        .map(|v| {
                            v.brokers
                                .iter()
                                .filter(|b| b.live)
                                .map(|b| b.grpc.clone())
                                .collect()
                        })
                        .unwrap_or_default();
                    if (live != brokers || next.client.is_none()) && !live.is_empty() {
                        match RegionClient::connect(&live.join(",")).await {
                            Ok(c) => {
                                next.client = Some(c);
                                brokers = live;
                            }
                            Err(e) => {
                                tracing::warn!(region = %own, error = %e, "no broker of this region answers")
                            }
                        }
                    }
                    next.views = views;
                    metrics::gauge!("meridian_mirror_control_reachable").set(1.0);
                }
                Err(e) => {
                    metrics::gauge!("meridian_mirror_control_reachable").set(0.0);
                    tracing::warn!(control = %control, error = %e, "control plane unreachable; mirroring on with the last view");
                }
            }
            if tx.send(Arc::new(next)).is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
    rx
}

async fn fetch(
    control: &mut Control,
    own: &str,
    peers: &[String],
) -> Result<HashMap<String, v1::RegionView>, RegionError> {
    let regions: Vec<String> = std::iter::once(own.to_owned())
        .chain(peers.iter().cloned())
        .collect();
    control
        .call(|mut client| async move {
            let mut views = HashMap::new();
            for region in regions {
                let view = client
                    .watch_region(v1::WatchRegionRequest {
                        region: region.clone(),
                        known_hash: 0,
                        wait_ms: 0,
                    })
                    .await?
                    .into_inner();
                views.insert(region, view);
            }
            Ok(views)
        })
        .await
}
