//! The ACL calls of the broker's API (`AlterAcl`, `ListAcls`): bindings as `meridian acl`
//! spells them, to and from `meridian_security::acl::Binding`.

use meridian_daemon::listener::authenticate::Caller;
use meridian_proto::v1;
use meridian_security::acl::{
    Binding, CLUSTER, Filter, Operation, PatternType, Permission, ResourceType,
};
use tonic::{Request, Response, Status};

use super::GrpcService;

/// A wire binding as the ACLs keep it; an unset pattern is literal, an unset host `*`, an
/// unset permission `allow`.
pub(super) fn from_wire(b: v1::AclBinding) -> Result<Binding, Status> {
    let bad = |what: &str, value: &str, choices: &str| {
        Status::invalid_argument(format!("{what} {value:?}: use {choices}"))
    };
    let or = |value: &str, default: &'static str| {
        if value.is_empty() {
            default.to_owned()
        } else {
            value.to_owned()
        }
    };
    let binding = Binding {
        resource_type: ResourceType::parse(&b.resource_type).ok_or_else(|| {
            bad(
                "resource type",
                &b.resource_type,
                "topic, group, cluster or transactional-id",
            )
        })?,
        pattern: PatternType::parse(&or(&b.pattern, "literal"))
            .ok_or_else(|| bad("pattern", &b.pattern, "literal or prefixed"))?,
        name: b.name,
        principal: b.principal,
        host: or(&b.host, "*"),
        operation: Operation::parse(&b.operation).ok_or_else(|| {
            bad(
                "operation",
                &b.operation,
                "all, read, write, create, delete, alter, describe, cluster-action, describe-configs, alter-configs or idempotent-write",
            )
        })?,
        permission: Permission::parse(&or(&b.permission, "allow"))
            .ok_or_else(|| bad("permission", &b.permission, "allow or deny"))?,
    };
    binding
        .check()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(binding)
}

/// A kept binding as the wire spells it.
pub(super) fn to_wire(b: &Binding) -> v1::AclBinding {
    v1::AclBinding {
        resource_type: b.resource_type.name().to_owned(),
        pattern: format!("{:?}", b.pattern).to_ascii_lowercase(),
        name: b.name.clone(),
        principal: b.principal.clone(),
        host: b.host.clone(),
        operation: b.operation.name(),
        permission: format!("{:?}", b.permission).to_ascii_lowercase(),
    }
}

impl GrpcService {
    pub(super) async fn alter_acl_call(
        &self,
        request: Request<v1::AlterAclRequest>,
    ) -> Result<Response<v1::AlterAclResponse>, Status> {
        self.user_may(&request, Operation::Alter, ResourceType::Cluster, CLUSTER)
            .await?;
        let who = Caller::of(&request)
            .principal()
            .map_or_else(|| "an unchecked caller".to_owned(), ToString::to_string);
        let r = request.into_inner();
        let binding = from_wire(
            r.binding
                .ok_or_else(|| Status::invalid_argument("the request names no binding"))?,
        )?;
        self.broker
            .change_acl(&who, &binding, !r.delete)
            .await
            .map_err(|e| {
                if e.contains("acls_max") {
                    Status::resource_exhausted(e)
                } else {
                    Status::unavailable(e)
                }
            })?;
        Ok(Response::new(v1::AlterAclResponse {}))
    }

    pub(super) async fn list_acls_call(
        &self,
        request: Request<v1::ListAclsRequest>,
    ) -> Result<Response<v1::ListAclsResponse>, Status> {
        self.user_may(
            &request,
            Operation::Describe,
            ResourceType::Cluster,
            CLUSTER,
        )
        .await?;
        let acls = self.broker.acls().await.map_err(Status::unavailable)?;
        let bindings = acls.list(&Filter::default()).iter().map(to_wire).collect();
        Ok(Response::new(v1::ListAclsResponse { bindings }))
    }
}
