//! Who may call what on the broker's gRPC API, by the caller's principal
//! (`meridian_daemon::listener::authenticate`; no tokens file: anyone may call anything):
//!
//! - the mirror's calls (mirrored appends, mirror marks, merged positions, local reads)
//!   only from this region's mirror (`Mirror:REGION`): a forged origin cannot be written
//!   into the region by anyone else;
//! - transaction markers only from the region's brokers (`Broker:REGION`);
//! - replica and master changes from the control plane, the console, the region's
//!   brokers, and users the ACLs allow `Alter` on the cluster;
//! - everything else from users as the region's ACLs decide (when on; Kafka's operations
//!   on topics and the cluster), the platform's own daemons always.

use meridian_daemon::listener::authenticate::Caller;
use meridian_daemon::listener::grpc::ConnectionInfo;
use meridian_security::acl::{CLUSTER, Operation, ResourceType};
use meridian_security::tokens::Principal;
use tonic::{Request, Status};

use super::GrpcService;

impl GrpcService {
    /// Refuses unless the caller is this region's mirror.
    pub(super) fn mirror_only<T>(&self, request: &Request<T>, what: &str) -> Result<(), Status> {
        let region = &self.broker.config().region;
        let mirror = Principal::Mirror(region.clone());
        Caller::of(request).require(|p| *p == mirror, what, &mirror.to_string())
    }

    /// Refuses unless the caller is one of this region's brokers.
    pub(super) fn broker_only<T>(&self, request: &Request<T>, what: &str) -> Result<(), Status> {
        let region = &self.broker.config().region;
        let broker = Principal::Broker(region.clone());
        Caller::of(request).require(|p| *p == broker, what, &broker.to_string())
    }

    /// Refuses unless the caller may do `operation` on the resource: the platform's own
    /// daemons (not a mirror, which does only a mirror's calls) always, users and
    /// anonymous callers as the ACLs decide (refusals audited).
    pub(super) async fn user_may<T>(
        &self,
        request: &Request<T>,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Result<(), Status> {
        // Borrowed, and nothing built while the ACLs are off: this runs on every produce
        // and fetch.
        let acls_on = self.broker.config().auth.acls_enabled;
        let user = match request.extensions().get::<Caller>() {
            None | Some(Caller::Unchecked) => return Ok(()),
            Some(Caller::Known(Principal::Mirror(r))) => {
                return Err(Status::permission_denied(format!(
                    "Mirror:{r} may only make a mirror's calls, not {operation:?} on {resource_type:?} {name:?}"
                )));
            }
            _ if !acls_on => return Ok(()),
            Some(Caller::Known(Principal::User(n))) => format!("User:{n}"),
            Some(Caller::Anonymous) => "User:ANONYMOUS".to_owned(),
            Some(Caller::Known(_)) => return Ok(()),
        };
        let host = request
            .extensions()
            .get::<ConnectionInfo>()
            .map(|i| i.remote.ip().to_string())
            .unwrap_or_default();
        let who = crate::broker::acls::Principal {
            name: &user,
            host: &host,
        };
        if self
            .broker
            .authorize(who, operation, resource_type, name)
            .await
        {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{user} may not {operation:?} {resource_type:?} {name:?}: no ACL allows it (`meridian acl` or Kafka's CreateAcls grants it)"
            )))
        }
    }

    /// Refuses replica and master changes to all but the control plane, the console, the
    /// region's brokers and users allowed `Alter` on the cluster.
    pub(super) async fn operator_only<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let region = &self.broker.config().region;
        match Caller::of(request) {
            Caller::Known(Principal::ControlPlane | Principal::Console) => Ok(()),
            Caller::Known(Principal::Broker(r)) if r == *region => Ok(()),
            Caller::Known(Principal::Broker(_) | Principal::Mirror(_)) => {
                Caller::of(request).require(|_| false, "change log groups", "operators")
            }
            _ => {
                self.user_may(request, Operation::Alter, ResourceType::Cluster, CLUSTER)
                    .await
            }
        }
    }
}
