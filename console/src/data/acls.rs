//! Every region's ACL bindings, for the ACLs page.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One ACL binding as the ACL page lists it, and as its forms give one to add or delete.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct AclRow {
    pub region: String,
    pub principal: String,
    #[serde(default = "any_host")]
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

fn any_host() -> String {
    "*".to_owned()
}

impl AclRow {
    /// What an audit line and a notice call it.
    pub fn describe(&self) -> String {
        format!(
            "{} {} {} on {} {} {:?} from {} in {}",
            self.permission,
            self.principal,
            self.operation,
            self.pattern,
            self.resource_type,
            self.name,
            self.host,
            self.region
        )
    }
}

/// Adds (or, with `delete`, deletes) a binding in its region's ACL topic, through the
/// region's live brokers in turn until one answers: a broker that refuses (a binding that
/// does not parse, a principal that may not) is the answer; one that cannot be reached
/// is passed over.
pub async fn alter_acl(regions: &[Region], change: &AclRow, delete: bool) -> Result<(), Failed> {
    let Some(region) = regions.iter().find(|r| r.name == change.region) else {
        return Err(Failed(format!("no region {:?}", change.region)));
    };
    let binding = v1::AclBinding {
        resource_type: change.resource_type.trim().to_owned(),
        pattern: change.pattern.trim().to_owned(),
        name: change.name.trim().to_owned(),
        principal: change.principal.trim().to_owned(),
        host: change.host.trim().to_owned(),
        operation: change.operation.trim().to_owned(),
        permission: change.permission.trim().to_owned(),
    };
    let mut why = format!("region {} has no live broker", region.name);
    for b in region.brokers.iter().filter(|b| b.live) {
        let channel = match connect_channel(&b.grpc).await {
            Ok(c) => c,
            Err(e) => {
                why = format!("broker {}: {e}", b.id);
                continue;
            }
        };
        let request = v1::AlterAclRequest {
            binding: Some(binding.clone()),
            delete,
        };
        match v1::broker_client::BrokerClient::new(channel)
            .alter_acl(request)
            .await
        {
            Ok(_) => return Ok(()),
            Err(s) if s.code() == tonic::Code::Unavailable => {
                why = format!("broker {}: {}", b.id, s.message());
            }
            Err(s) => return Err(Failed(s.message().to_owned())),
        }
    }
    Err(Failed(why))
}
