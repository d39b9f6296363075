//! The control plane's gRPC API (`meridian.v1.ControlPlane`). Every process answers reads;
//! writes are the leader's, and a follower refuses them naming the leader (the
//! `x-meridian-leader` header clients follow, as with brokers).

use std::sync::Arc;

use meridian_proto::v1::{self, control_plane_server};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::election::Leader;
use crate::metadata::{self, Region, RegionState, keys};
use crate::store::{Store, StoreError};

/// The response header naming the leader's address on a `FailedPrecondition`.
pub const LEADER_HEADER: &str = "x-meridian-leader";

/// Serves the API over a store.
pub struct ControlService {
    store: Arc<dyn Store>,
    me: Leader,
    leader: watch::Receiver<Option<Leader>>,
    store_name: String,
}

impl ControlService {
    /// The tonic service.
    pub fn server(
        store: Arc<dyn Store>,
        me: Leader,
        leader: watch::Receiver<Option<Leader>>,
        store_name: String,
    ) -> control_plane_server::ControlPlaneServer<ControlService> {
        control_plane_server::ControlPlaneServer::new(ControlService {
            store,
            me,
            leader,
            store_name,
        })
    }

    fn require_leader(&self) -> Result<(), Status> {
        match &*self.leader.borrow() {
            Some(l) if l.id == self.me.id => Ok(()),
            Some(l) => {
                let mut status = Status::failed_precondition(format!(
                    "this control plane ({}) does not lead; {} at {} does: retry there",
                    self.me.id, l.id, l.addr
                ));
                if let Ok(v) = l.addr.parse() {
                    status.metadata_mut().insert(LEADER_HEADER, v);
                }
                Err(status)
            }
            None => Err(Status::unavailable(
                "no control-plane leader is elected yet: retry shortly",
            )),
        }
    }
}

fn store_status(e: StoreError) -> Status {
    Status::unavailable(e.to_string())
}

fn region_info(r: &Region) -> v1::RegionInfo {
    v1::RegionInfo {
        name: r.name.clone(),
        state: match r.state {
            RegionState::Up => "up",
            RegionState::Down => "down",
        }
        .into(),
    }
}

#[tonic::async_trait]
impl control_plane_server::ControlPlane for ControlService {
    async fn status(
        &self,
        _: Request<v1::ControlStatusRequest>,
    ) -> Result<Response<v1::ControlStatusResponse>, Status> {
        let leader = self.leader.borrow().clone();
        Ok(Response::new(v1::ControlStatusResponse {
            id: self.me.id.clone(),
            leader_id: leader.as_ref().map(|l| l.id.clone()),
            leader_addr: leader.map(|l| l.addr),
            store: self.store_name.clone(),
        }))
    }

    async fn create_region(
        &self,
        request: Request<v1::CreateRegionRequest>,
    ) -> Result<Response<v1::RegionInfo>, Status> {
        let name = request.into_inner().name;
        metadata::validate_name("region", &name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.require_leader()?;
        let region = Region {
            name: name.clone(),
            state: RegionState::Up,
        };
        let value = serde_json::to_vec(&region).map_err(|e| Status::internal(e.to_string()))?;
        match self
            .store
            .compare_and_swap(&keys::region(&name), None, value, None)
            .await
            .map_err(store_status)?
        {
            Ok(_) => {
                tracing::info!(region = %name, "region created");
                Ok(Response::new(region_info(&region)))
            }
            Err(_) => Err(Status::already_exists(format!(
                "region {name:?} already exists"
            ))),
        }
    }

    async fn list_regions(
        &self,
        _: Request<v1::ListRegionsRequest>,
    ) -> Result<Response<v1::ListRegionsResponse>, Status> {
        let mut regions = Vec::new();
        for kv in self.store.list(keys::REGIONS).await.map_err(store_status)? {
            let region: Region = serde_json::from_slice(&kv.value).map_err(|e| {
                Status::internal(format!("stored region {} does not parse: {e}", kv.key))
            })?;
            regions.push(region_info(&region));
        }
        Ok(Response::new(v1::ListRegionsResponse { regions }))
    }
}
