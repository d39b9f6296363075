//! Every region's ACL bindings, for the ACLs page.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One ACL binding as the ACL page lists it.
#[derive(Debug, Clone, Serialize)]
pub struct AclRow {
    pub region: String,
    pub principal: String,
    pub host: String,
    pub permission: String,
    pub operation: String,
    pub resource_type: String,
    pub pattern: String,
    pub name: String,
}

/// Every region's ACLs, as one live broker of each lists them (they live in the region's
/// ACL topic, the same at every broker), and the regions that could not be read, why.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AclsView {
    pub bindings: Vec<AclRow>,
    pub unread: Vec<String>,
}

/// Every region's ACLs: each region's live brokers are asked in turn until one answers.
pub async fn acls(regions: &[Region]) -> AclsView {
    let mut view = AclsView::default();
    for region in regions {
        let mut why = "no live broker".to_owned();
        let mut answered = None;
        for b in region.brokers.iter().filter(|b| b.live) {
            let answer = match connect_channel(&b.grpc).await {
                Ok(channel) => v1::broker_client::BrokerClient::new(channel)
                    .list_acls(v1::ListAclsRequest {})
                    .await
                    .map_err(|s| s.message().to_owned()),
                Err(e) => Err(e),
            };
            match answer {
                Ok(a) => {
                    answered = Some(a.into_inner().bindings);
                    break;
                }
                Err(e) => why = format!("broker {}: {e}", b.id),
            }
        }
        let Some(bindings) = answered else {
            view.unread.push(format!("{} ({why})", region.name));
            continue;
        };
        view.bindings.extend(bindings.into_iter().map(|b| AclRow {
            region: region.name.clone(),
            principal: b.principal,
            host: b.host,
            permission: b.permission,
            operation: b.operation,
            resource_type: b.resource_type,
            pattern: b.pattern,
            name: b.name,
        }));
    }
    view
}
