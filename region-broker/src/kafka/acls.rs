//! Kafka's ACL APIs (CreateAcls, DescribeAcls, DeleteAcls, versions 1-3) over the region's
//! ACLs (`broker::acls`), which `meridian acl` manages too. Filters follow Kafka's
//! numbering: 1 is ANY, 2 is MATCH (pattern type) — `meridian_security::acl::Filter`.

use std::collections::BTreeMap;
use std::sync::Arc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::protocol::StrBytes;
use meridian_proto::kafka::kafka_protocol;
use meridian_security::acl::{Binding, Filter, Operation, PatternType, Permission, ResourceType};

use crate::broker::Broker;

use super::code;

const INVALID_REQUEST: i16 = 42;

/// A filter's fields as Kafka numbers them (1: ANY), or why they make no filter.
#[allow(clippy::too_many_arguments)]
fn filter(
    resource_type: i8,
    name: Option<&StrBytes>,
    pattern: i8,
    principal: Option<&StrBytes>,
    host: Option<&StrBytes>,
    operation: i8,
    permission: i8,
) -> Result<Filter, String> {
    let any = |n: i8| n == 1;
    Ok(Filter {
        resource_type: if any(resource_type) {
            None
        } else {
            Some(ResourceType::from_kafka(resource_type).ok_or("unknown resource type")?)
        },
        name: name.map(|n| n.to_string()),
        pattern: match pattern {
            1 => None,
            2 => Some(None),
            p => Some(Some(
                PatternType::from_kafka(p).ok_or("unknown pattern type")?,
            )),
        },
        principal: principal.map(|p| p.to_string()),
        host: host.map(|h| h.to_string()),
        operation: if any(operation) {
            None
        } else {
            Some(Operation::from_kafka(operation).ok_or("unknown operation")?)
        },
        permission: if any(permission) {
            None
        } else {
            Some(Permission::from_kafka(permission).ok_or("unknown permission")?)
        },
    })
}

pub(super) async fn create(
    broker: &Arc<Broker>,
    who: &str,
    request: CreateAclsRequest,
) -> CreateAclsResponse {
    let mut out = CreateAclsResponse::default();
    for c in request.creations {
        let binding = (|| {
            Some(Binding {
                resource_type: ResourceType::from_kafka(c.resource_type)?,
                pattern: PatternType::from_kafka(c.resource_pattern_type)?,
                name: c.resource_name.to_string(),
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: Operation::from_kafka(c.operation)?,
                permission: Permission::from_kafka(c.permission_type)?,
            })
        })();
        let mut r = AclCreationResult::default();
        match binding {
            None => {
                r.error_code = INVALID_REQUEST;
                r.error_message = Some(StrBytes::from_static_str(
                    "an unknown resource type, pattern type, operation or permission",
                ));
            }
            Some(b) => {
                if let Err(e) = broker.change_acl(who, &b, true).await {
                    r.error_code = if e.contains("not read") {
                        code::REQUEST_TIMED_OUT
                    } else {
                        INVALID_REQUEST
                    };
                    r.error_message = Some(StrBytes::from_string(e));
                }
            }
        }
        out.results.push(r);
    }
    out
}

pub(super) async fn describe(broker: &Arc<Broker>, r: DescribeAclsRequest) -> DescribeAclsResponse {
    let mut out = DescribeAclsResponse::default();
    let f = match filter(
        r.resource_type_filter,
        r.resource_name_filter.as_ref(),
        r.pattern_type_filter,
        r.principal_filter.as_ref(),
        r.host_filter.as_ref(),
        r.operation,
        r.permission_type,
    ) {
        Ok(f) => f,
        Err(e) => {
            out.error_code = INVALID_REQUEST;
            out.error_message = Some(StrBytes::from_string(e));
            return out;
        }
    };
    let acls = match broker.acls().await {
        Ok(a) => a,
        Err(e) => {
            out.error_code = code::REQUEST_TIMED_OUT;
            out.error_message = Some(StrBytes::from_string(e));
            return out;
        }
    };
    let mut by_resource: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for b in acls.list(&f) {
        let mut d = AclDescription::default();
        d.principal = StrBytes::from_string(b.principal);
        d.host = StrBytes::from_string(b.host);
        d.operation = b.operation.kafka();
        d.permission_type = b.permission.kafka();
        by_resource
            .entry((b.resource_type.kafka(), b.name, b.pattern.kafka()))
            .or_default()
            .push(d);
    }
    out.resources = by_resource
        .into_iter()
        .map(|((t, name, p), acls)| {
            let mut r = DescribeAclsResource::default();
            r.resource_type = t;
            r.resource_name = StrBytes::from_string(name);
            r.pattern_type = p;
            r.acls = acls;
            r
        })
        .collect();
    out
}

pub(super) async fn delete(
    broker: &Arc<Broker>,
    who: &str,
    request: DeleteAclsRequest,
) -> DeleteAclsResponse {
    let mut out = DeleteAclsResponse::default();
    for f in request.filters {
        let mut result = DeleteAclsFilterResult::default();
        let parsed = filter(
            f.resource_type_filter,
            f.resource_name_filter.as_ref(),
            f.pattern_type_filter,
            f.principal_filter.as_ref(),
            f.host_filter.as_ref(),
            f.operation,
            f.permission_type,
        );
        let filter = match parsed {
            Ok(f) => f,
            Err(e) => {
                result.error_code = INVALID_REQUEST;
                result.error_message = Some(StrBytes::from_string(e));
                out.filter_results.push(result);
                continue;
            }
        };
        let matching = match broker.acls().await {
            Ok(a) => a.list(&filter),
            Err(e) => {
                result.error_code = code::REQUEST_TIMED_OUT;
                result.error_message = Some(StrBytes::from_string(e));
                out.filter_results.push(result);
                continue;
            }
        };
        for b in matching {
            let mut m = DeleteAclsMatchingAcl::default();
            if let Err(e) = broker.change_acl(who, &b, false).await {
                m.error_code = code::REQUEST_TIMED_OUT;
                m.error_message = Some(StrBytes::from_string(e));
            }
            m.resource_type = b.resource_type.kafka();
            m.resource_name = StrBytes::from_string(b.name);
            m.pattern_type = b.pattern.kafka();
            m.principal = StrBytes::from_string(b.principal);
            m.host = StrBytes::from_string(b.host);
            m.operation = b.operation.kafka();
            m.permission_type = b.permission.kafka();
            result.matching_acls.push(m);
        }
        out.filter_results.push(result);
    }
    out
}
