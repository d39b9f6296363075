//! The control plane's gRPC API (`meridian.v1.ControlPlane`). Every process answers reads;
//! writes are the leader's, and a follower refuses them naming the leader (the
//! `x-meridian-leader` header clients follow, as with brokers).

use std::sync::Arc;
use std::time::Duration;

use meridian_proto::v1::{self, control_plane_server};
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use crate::election::Leader;
use crate::metadata::{self, Region, RegionState, keys};
use crate::state;
use crate::store::{Store, StoreError};
use crate::topics;

/// The response header naming the leader's address on a `FailedPrecondition`.
pub const LEADER_HEADER: &str = "x-meridian-leader";

/// Serves the API over a store.
pub struct ControlService {
    store: Arc<dyn Store>,
    me: Leader,
    leader: watch::Receiver<Option<Leader>>,
    store_name: String,
    broker_lease: Duration,
    /// Topic changes, one at a time.
    topic_writes: tokio::sync::Mutex<()>,
    /// Users who may change the platform (`User:NAME`; empty: every user).
    pub(crate) admins: Vec<String>,
}

/// How long `CreateTopic` and `AlterTopic` wait for the brokers to open the topic's groups.
const TOPIC_READY_WAIT: Duration = Duration::from_secs(20);
/// The longest a `WatchRegion` long poll waits.
const WATCH_WAIT_MAX: Duration = Duration::from_secs(30);

impl ControlService {
    /// The tonic service.
    pub fn server(
        store: Arc<dyn Store>,
        me: Leader,
        leader: watch::Receiver<Option<Leader>>,
        store_name: String,
        broker_lease: Duration,
        admins: Vec<String>,
    ) -> control_plane_server::ControlPlaneServer<ControlService> {
        control_plane_server::ControlPlaneServer::new(ControlService {
            store,
            me,
            leader,
            store_name,
            broker_lease,
            topic_writes: tokio::sync::Mutex::new(()),
            admins,
        })
    }

    /// Waits until, in every region of `topic`, each of its log groups has a leader and
    /// every live broker has applied a view at least as new as the topic's records.
    async fn wait_ready(&self, topic: &metadata::Topic) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + TOPIC_READY_WAIT;
        let version = self
            .store
            .get(&keys::topic(&topic.name))
            .await
            .map_err(store_status)?
            .map_or(0, |kv| kv.version);
        loop {
            let mut waiting = None;
            // A region the topic left: its brokers must have dropped it (stopped taking its
            // writes) before the change is done.
            for r in topic.regions.iter().chain(&topic.left) {
                let region = state::region(&*self.store, r).await?;
                let groups = match topic.regions.contains(r) {
                    true => region.partition_groups(topic).unwrap_or_default(),
                    false => Vec::new(),
                };
                if let Some(g) = groups.iter().find(|g| region.leader(**g).is_none()) {
                    waiting = Some(format!("log group {g} of region {r} has no leader yet"));
                    break;
                }
                if let Some(b) = region
                    .brokers
                    .values()
                    .find(|b| b.applied_version < version)
                {
                    waiting = Some(format!(
                        "broker {} of region {r} has not applied the change yet",
                        b.id
                    ));
                    break;
                }
            }
            let Some(why) = waiting else {
                return Ok(());
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "topic {:?} is stored, but after {} s {why}: check the region's brokers (meridian broker list)",
                    topic.name,
                    TOPIC_READY_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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
        reason: r
            .down
            .as_ref()
            .map(|d| d.reason.clone())
            .unwrap_or_default(),
        by_operator: r.down.as_ref().is_some_and(|d| d.by_operator),
    }
}

impl ControlService {
    /// Marks a region down by an operator, or up; answers with its record.
    async fn set_down(
        &self,
        name: &str,
        down: Option<metadata::Down>,
    ) -> Result<v1::RegionInfo, Status> {
        self.require_leader()?;
        if state::region(&*self.store, name).await?.record.is_none() {
            return Err(Status::not_found(format!(
                "unknown region {name:?}: list regions with meridian region list"
            )));
        }
        state::set_region_down(&*self.store, name, down).await?;
        let region = state::region(&*self.store, name).await?;
        Ok(region_info(
            region
                .record
                .as_ref()
                .expect("checked above; regions are not deleted here"),
        ))
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
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn create_region(
        &self,
        request: Request<v1::CreateRegionRequest>,
    ) -> Result<Response<v1::RegionInfo>, Status> {
        self.admin(
            &request,
            &format!("create region {}", request.get_ref().name),
        )?;
        let name = request.into_inner().name;
        metadata::validate_name("region", &name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.require_leader()?;
        if !state::create_region(&*self.store, &name).await? {
            return Err(Status::already_exists(format!(
                "region {name:?} already exists"
            )));
        }
        Ok(Response::new(region_info(&Region {
            name,
            state: RegionState::Up,
            down: None,
        })))
    }

    async fn fail_region(
        &self,
        request: Request<v1::RegionNameRequest>,
    ) -> Result<Response<v1::RegionInfo>, Status> {
        self.admin(
            &request,
            &format!("fail region {} over", request.get_ref().name),
        )?;
        let name = request.into_inner().name;
        let down = metadata::Down {
            by_operator: true,
            reason: "failed over by an operator".into(),
            since_ms: metadata::now_ms(),
        };
        Ok(Response::new(self.set_down(&name, Some(down)).await?))
    }

    async fn restore_region(
        &self,
        request: Request<v1::RegionNameRequest>,
    ) -> Result<Response<v1::RegionInfo>, Status> {
        self.admin(
            &request,
            &format!("restore region {}", request.get_ref().name),
        )?;
        let name = request.into_inner().name;
        Ok(Response::new(self.set_down(&name, None).await?))
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

    async fn delete_region(
        &self,
        request: Request<v1::DeleteRegionRequest>,
    ) -> Result<Response<v1::DeleteRegionResponse>, Status> {
        self.admin(
            &request,
            &format!("delete region {}", request.get_ref().name),
        )?;
        let name = request.into_inner().name;
        self.require_leader()?;
        let _one_at_a_time = self.topic_writes.lock().await;
        let region = state::region(&*self.store, &name).await?;
        if region.record.is_none() {
            return Err(Status::not_found(format!(
                "unknown region {name:?}: list regions with meridian region list"
            )));
        }
        let spanning: Vec<String> = state::topics(&*self.store)
            .await?
            .topics
            .into_values()
            .filter(|(t, _)| t.regions.contains(&name))
            .map(|(t, _)| t.name)
            .collect();
        if !spanning.is_empty() {
            return Err(Status::failed_precondition(format!(
                "region {name} still holds topics {}: delete them first",
                spanning.join(", ")
            )));
        }
        if !region.brokers.is_empty() {
            return Err(Status::failed_precondition(format!(
                "region {name} has {} registered broker(s): stop them first",
                region.brokers.len()
            )));
        }
        for kv in self
            .store
            .list(&keys::groups(&name))
            .await
            .map_err(store_status)?
        {
            self.store.delete(&kv.key).await.map_err(store_status)?;
        }
        self.store
            .delete(&keys::region(&name))
            .await
            .map_err(store_status)?;
        tracing::info!(region = %name, "region deleted");
        Ok(Response::new(v1::DeleteRegionResponse {}))
    }

    async fn register_broker(
        &self,
        request: Request<v1::RegisterBrokerRequest>,
    ) -> Result<Response<v1::RegisterBrokerResponse>, Status> {
        let region = request
            .get_ref()
            .broker
            .as_ref()
            .map(|b| b.region.clone())
            .unwrap_or_default();
        self.broker_of(&request, &region)?;
        let b = request
            .into_inner()
            .broker
            .ok_or_else(|| Status::invalid_argument("the request names no broker"))?;
        metadata::validate_name("region", &b.region)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if self
            .store
            .get(&keys::region(&b.region))
            .await
            .map_err(store_status)?
            .is_none()
        {
            return Err(Status::not_found(format!(
                "unknown region {:?}: create it first (meridian region create {0})",
                b.region
            )));
        }
        if meridian_proto::names::host_port(&b.grpc).is_none()
            || meridian_proto::names::host_port(&b.raft).is_none()
        {
            return Err(Status::invalid_argument(format!(
                "broker {} gives addresses {:?} and {:?}: both must be HOST:PORT",
                b.id, b.grpc, b.raft
            )));
        }
        let lease = self
            .store
            .grant_lease(self.broker_lease)
            .await
            .map_err(store_status)?;
        let record = metadata::Broker {
            id: b.id,
            region: b.region.clone(),
            grpc: b.grpc,
            raft: b.raft,
            kafka: b.kafka,
            version: b.version,
            leading: Default::default(),
            applied_version: 0,
        };
        self.store
            .put(
                &keys::broker(&b.region, b.id),
                serde_json::to_vec(&record).map_err(|e| Status::internal(e.to_string()))?,
                Some(lease),
            )
            .await
            .map_err(store_status)?;
        tracing::info!(region = %b.region, broker = b.id, grpc = %record.grpc, "broker registered");
        metrics::counter!("meridian_control_broker_registrations_total").increment(1);
        Ok(Response::new(v1::RegisterBrokerResponse {
            lease,
            ttl_ms: self.broker_lease.as_millis() as u64,
        }))
    }

    async fn claim_mirror_link(
        &self,
        request: Request<v1::ClaimMirrorLinkRequest>,
    ) -> Result<Response<v1::ClaimMirrorLinkResponse>, Status> {
        self.mirror_of(&request, &request.get_ref().from)?;
        let r = request.into_inner();
        for (field, name) in [("from", &r.from), ("to", &r.to)] {
            metadata::validate_name("region", name)
                .map_err(|e| Status::invalid_argument(format!("{field}: {e}")))?;
        }
        if r.holder.is_empty() {
            return Err(Status::invalid_argument("the claim names no holder"));
        }
        if !(1000..=60_000).contains(&r.ttl_ms) {
            return Err(Status::invalid_argument(format!(
                "ttl_ms = {}: must be 1000 to 60000",
                r.ttl_ms
            )));
        }
        let key = keys::mirror_link(&r.from, &r.to);
        loop {
            if let Some(kv) = self.store.get(&key).await.map_err(store_status)? {
                let held: metadata::MirrorLink = state::decode(&kv)?;
                if held.holder != r.holder {
                    return Ok(Response::new(v1::ClaimMirrorLinkResponse {
                        granted: false,
                        holder: held.holder,
                    }));
                }
                match self.store.keep_alive(held.lease).await {
                    Ok(()) => {
                        return Ok(Response::new(v1::ClaimMirrorLinkResponse {
                            granted: true,
                            holder: held.holder,
                        }));
                    }
                    // Expired between the read and the renewal: its key goes with it.
                    Err(StoreError::LeaseNotFound(_)) => {
                        let _ = self.store.delete(&key).await;
                        continue;
                    }
                    Err(e) => return Err(store_status(e)),
                }
            }
            let lease = self
                .store
                .grant_lease(Duration::from_millis(u64::from(r.ttl_ms)))
                .await
                .map_err(store_status)?;
            let record = metadata::MirrorLink {
                holder: r.holder.clone(),
                lease,
            };
            let value = serde_json::to_vec(&record).expect("metadata records serialize");
            match self
                .store
                .compare_and_swap(&key, None, value, Some(lease))
                .await
                .map_err(store_status)?
            {
                Ok(_) => {
                    tracing::info!(from = %r.from, to = %r.to, holder = %r.holder, "mirror link claimed");
                    return Ok(Response::new(v1::ClaimMirrorLinkResponse {
                        granted: true,
                        holder: r.holder,
                    }));
                }
                Err(_) => {
                    let _ = self.store.revoke_lease(lease).await;
                }
            }
        }
    }

    async fn deregister_broker(
        &self,
        request: Request<v1::DeregisterBrokerRequest>,
    ) -> Result<Response<v1::DeregisterBrokerResponse>, Status> {
        self.broker_of(&request, &request.get_ref().region)?;
        let r = request.into_inner();
        match self.store.revoke_lease(r.lease).await {
            Ok(()) | Err(StoreError::LeaseNotFound(_)) => {}
            Err(e) => return Err(store_status(e)),
        }
        tracing::info!(region = %r.region, broker = r.id, "broker deregistered (clean stop)");
        Ok(Response::new(v1::DeregisterBrokerResponse {}))
    }

    async fn broker_heartbeat(
        &self,
        request: Request<v1::BrokerHeartbeatRequest>,
    ) -> Result<Response<v1::BrokerHeartbeatResponse>, Status> {
        self.broker_of(&request, &request.get_ref().region)?;
        let r = request.into_inner();
        match self.store.keep_alive(r.lease).await {
            Ok(()) => {}
            Err(StoreError::LeaseNotFound(_)) => {
                return Err(Status::not_found(format!(
                    "broker {} of region {}: its lease expired; register again",
                    r.id, r.region
                )));
            }
            Err(e) => return Err(store_status(e)),
        }
        let key = keys::broker(&r.region, r.id);
        let Some(kv) = self.store.get(&key).await.map_err(store_status)? else {
            return Err(Status::not_found(format!(
                "broker {} of region {} is not registered; register again",
                r.id, r.region
            )));
        };
        let mut record: metadata::Broker = state::decode(&kv)?;
        let leading = r.leading.iter().map(|l| (l.group, l.epoch)).collect();
        if record.leading != leading || record.applied_version != r.applied_version {
            record.leading = leading;
            record.applied_version = r.applied_version;
            let value = serde_json::to_vec(&record).map_err(|e| Status::internal(e.to_string()))?;
            // Only while the record is the one of this lease: a broker that re-registered
            // meanwhile owns the key.
            let _ = self
                .store
                .compare_and_swap(&key, Some(kv.version), value, Some(r.lease))
                .await
                .map_err(store_status)?;
        }
        Ok(Response::new(v1::BrokerHeartbeatResponse {}))
    }

    async fn list_brokers(
        &self,
        request: Request<v1::ListBrokersRequest>,
    ) -> Result<Response<v1::ListBrokersResponse>, Status> {
        let region = request.into_inner().region;
        let prefix = if region.is_empty() {
            keys::BROKERS.to_owned()
        } else {
            keys::brokers(&region)
        };
        let mut brokers = Vec::new();
        for kv in self.store.list(&prefix).await.map_err(store_status)? {
            let b: metadata::Broker = state::decode(&kv)?;
            brokers.push(state::endpoint(&b));
        }
        Ok(Response::new(v1::ListBrokersResponse { brokers }))
    }

    async fn watch_region(
        &self,
        request: Request<v1::WatchRegionRequest>,
    ) -> Result<Response<v1::RegionView>, Status> {
        let r = request.into_inner();
        let wait = Duration::from_millis(u64::from(r.wait_ms)).min(WATCH_WAIT_MAX);
        let deadline = tokio::time::Instant::now() + wait;
        // Watch first, then read: a change between the two is seen by the watch. A caller
        // that will not wait (a mirror polling the views) needs no watch.
        let mut changes = if wait.is_zero() {
            None
        } else {
            Some(self.store.watch("/meridian/").await.map_err(store_status)?)
        };
        loop {
            let region = state::region(&*self.store, &r.region).await?;
            if region.record.is_none() {
                return Err(Status::not_found(format!(
                    "unknown region {:?}: create it first (meridian region create {0})",
                    r.region
                )));
            }
            let topics = state::topics(&*self.store).await?;
            let mut view = state::view(&region, &topics);
            state::add_takeover(&*self.store, &mut view, &region, &topics).await?;
            let Some(changes) = changes.as_mut().filter(|_| view.hash == r.known_hash) else {
                return Ok(Response::new(view));
            };
            if tokio::time::Instant::now() >= deadline {
                return Ok(Response::new(view));
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Ok(Some(_)) => {
                    // Take every change already queued before reading again.
                    while changes.try_recv().is_ok() {}
                }
                Ok(None) => return Err(Status::unavailable("the metadata store went away")),
                Err(_) => {}
            }
        }
    }

    async fn create_topic(
        &self,
        request: Request<v1::ControlCreateTopicRequest>,
    ) -> Result<Response<v1::TopicDescription>, Status> {
        let name = request
            .get_ref()
            .spec
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_default();
        self.admin(&request, &format!("create topic {name}"))?;
        let spec = request
            .into_inner()
            .spec
            .ok_or_else(|| Status::invalid_argument("the request has no topic spec"))?;
        self.require_leader()?;
        let topic = {
            let _one_at_a_time = self.topic_writes.lock().await;
            topics::create(&*self.store, &spec).await?
        };
        metrics::counter!("meridian_control_topics_created_total").increment(1);
        self.wait_ready(&topic).await?;
        Ok(Response::new(
            topics::describe_topic(&*self.store, &topic).await?,
        ))
    }

    async fn list_topics(
        &self,
        _: Request<v1::ControlListTopicsRequest>,
    ) -> Result<Response<v1::ControlListTopicsResponse>, Status> {
        let mut out = Vec::new();
        for (topic, _) in state::topics(&*self.store).await?.topics.values() {
            out.push(topics::describe_topic(&*self.store, topic).await?);
        }
        Ok(Response::new(v1::ControlListTopicsResponse { topics: out }))
    }

    async fn describe_topic(
        &self,
        request: Request<v1::TopicNameRequest>,
    ) -> Result<Response<v1::TopicDescription>, Status> {
        Ok(Response::new(
            topics::describe(&*self.store, &request.into_inner().name).await?,
        ))
    }

    async fn alter_topic(
        &self,
        request: Request<v1::AlterTopicRequest>,
    ) -> Result<Response<v1::TopicDescription>, Status> {
        self.admin(&request, &format!("alter topic {}", request.get_ref().name))?;
        let mut request = request.into_inner();
        self.require_leader()?;
        let _one_at_a_time = self.topic_writes.lock().await;
        if let Some(home) = request.home.take() {
            let (current, _) = topics::load(&*self.store, &request.name).await?;
            if current.home.as_deref() != Some(home.as_str()) || current.home_closed {
                // Fence the old home first: no broker takes writes once all applied this.
                let closed = topics::move_home(&*self.store, &request.name, &home, false).await?;
                self.wait_ready(&closed).await?;
                let opened = topics::move_home(&*self.store, &request.name, &home, true).await?;
                self.wait_ready(&opened).await?;
            }
        }
        let topic = topics::alter(&*self.store, &request).await?;
        self.wait_ready(&topic).await?;
        Ok(Response::new(
            topics::describe_topic(&*self.store, &topic).await?,
        ))
    }

    async fn delete_topic(
        &self,
        request: Request<v1::TopicNameRequest>,
    ) -> Result<Response<v1::ControlDeleteTopicResponse>, Status> {
        self.admin(
            &request,
            &format!("delete topic {}", request.get_ref().name),
        )?;
        let name = request.into_inner().name;
        self.require_leader()?;
        let _one_at_a_time = self.topic_writes.lock().await;
        topics::delete(&*self.store, &name).await?;
        metrics::counter!("meridian_control_topics_deleted_total").increment(1);
        Ok(Response::new(v1::ControlDeleteTopicResponse {}))
    }

    async fn list_log_groups(
        &self,
        request: Request<v1::ListLogGroupsRequest>,
    ) -> Result<Response<v1::ListLogGroupsResponse>, Status> {
        let wanted = request.into_inner().region;
        let mut groups = Vec::new();
        for name in state::regions(&*self.store).await?.keys() {
            if !wanted.is_empty() && *name != wanted {
                continue;
            }
            let region = state::region(&*self.store, name).await?;
            groups.extend(
                region
                    .groups
                    .values()
                    .map(|(g, _)| region.group_placement(g)),
            );
        }
        Ok(Response::new(v1::ListLogGroupsResponse { groups }))
    }

    async fn move_replica(
        &self,
        request: Request<v1::MoveReplicaRequest>,
    ) -> Result<Response<v1::LogGroupPlacement>, Status> {
        let r = request.get_ref().clone();
        self.admin(
            &request,
            &format!(
                "move log group {} of {} from broker {} to {}",
                r.group, r.region, r.from, r.to
            ),
        )?;
        self.require_leader()?;
        let moved = crate::reconcile::move_replica(&*self.store, &r.region, r.group, r.from, r.to)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .map_err(Status::invalid_argument)?;
        let region = state::region(&*self.store, &r.region).await?;
        Ok(Response::new(region.group_placement(&moved)))
    }

    async fn route(
        &self,
        request: Request<v1::RouteRequest>,
    ) -> Result<Response<v1::RouteResponse>, Status> {
        let r = request.into_inner();
        let regions: Vec<String> = if r.topic.is_empty() {
            state::regions(&*self.store).await?.into_keys().collect()
        } else {
            match state::topics(&*self.store).await?.topics.get(&r.topic) {
                Some((t, _)) => t.regions.clone(),
                None => {
                    return Err(Status::not_found(format!(
                        "unknown topic {:?}: create it first (meridian topic create {0})",
                        r.topic
                    )));
                }
            }
        };
        if !r.region.is_empty() && !regions.contains(&r.region) {
            return Err(Status::invalid_argument(format!(
                "topic {:?} does not span region {:?}; it spans {}",
                r.topic,
                r.region,
                regions.join(", ")
            )));
        }
        let mut routes = Vec::new();
        for name in &regions {
            let region = state::region(&*self.store, name).await?;
            routes.push(v1::RegionRoute {
                region: name.clone(),
                healthy: region.healthy(),
                why_not: region.why_not_healthy().unwrap_or_default(),
                brokers: region.brokers.values().map(state::endpoint).collect(),
            });
        }
        // The named region first when it is healthy; the client measures the others.
        routes.sort_by_key(|x| (!x.healthy, x.region != r.region));
        let routing_epoch = match self
            .store
            .get(keys::ROUTING_EPOCH)
            .await
            .map_err(store_status)?
        {
            Some(kv) => state::decode(&kv)?,
            None => 0,
        };
        Ok(Response::new(v1::RouteResponse {
            regions: routes,
            routing_epoch,
        }))
    }
}
