//! `meridian acl`: the region's ACLs (Kafka's model; the same bindings Kafka's CreateAcls,
//! DescribeAcls and DeleteAcls manage), enforced on every protocol once the brokers'
//! `auth.acls_enabled` is on.

use meridian_proto::v1;

#[derive(Debug, clap::Args)]
pub(crate) struct BindingArgs {
    /// Who: User:NAME, or User:* for everyone.
    #[arg(long)]
    principal: String,
    /// What it may (or, with --deny, may not) do: all, read, write, create, delete, alter,
    /// describe, cluster-action, describe-configs, alter-configs, idempotent-write.
    #[arg(long)]
    operation: String,
    /// On a topic (a name, `*` for every one, or a prefix with --prefixed).
    #[arg(long, group = "resource")]
    topic: Option<String>,
    /// On a consumer group.
    #[arg(long, group = "resource")]
    group: Option<String>,
    /// On a transactional id.
    #[arg(long, group = "resource")]
    transactional_id: Option<String>,
    /// On the cluster (region failover, placement, users, ACLs).
    #[arg(long, group = "resource")]
    cluster: bool,
    /// The name is a prefix.
    #[arg(long)]
    prefixed: bool,
    /// From this client address only (default: any).
    #[arg(long, default_value = "*")]
    host: String,
    /// Deny rather than allow (a deny wins over any allow).
    #[arg(long)]
    deny: bool,
}

impl BindingArgs {
    fn binding(self) -> anyhow::Result<v1::AclBinding> {
        let (resource_type, name) = match (self.topic, self.group, self.transactional_id) {
            (Some(t), _, _) => ("topic", t),
            (_, Some(g), _) => ("group", g),
            (_, _, Some(t)) => ("transactional-id", t),
            _ if self.cluster => ("cluster", meridian_security::acl::CLUSTER.to_owned()),
            _ => anyhow::bail!(
                "name what the ACL is on: --topic, --group, --transactional-id or --cluster"
            ),
        };
        Ok(v1::AclBinding {
            resource_type: resource_type.to_owned(),
            pattern: if self.prefixed { "prefixed" } else { "literal" }.to_owned(),
            name,
            principal: self.principal,
            host: self.host,
            operation: self.operation,
            permission: if self.deny { "deny" } else { "allow" }.to_owned(),
        })
    }
}

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// Add a binding.
    Add(BindingArgs),
    /// Delete a binding (named exactly as it was added).
    Delete(BindingArgs),
    /// List every binding.
    List,
}

pub(crate) async fn run(
    cmd: Command,
    broker: &str,
    control: Option<&str>,
    region: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let client = crate::control::region_client(broker, control, region).await?;
    match cmd {
        Command::Add(b) => {
            client.alter_acl(b.binding()?, false).await?;
            println!("ACL added");
        }
        Command::Delete(b) => {
            client.alter_acl(b.binding()?, true).await?;
            println!("ACL deleted");
        }
        Command::List => {
            let bindings = client.list_acls().await?;
            if json {
                let list: Vec<serde_json::Value> = bindings
                    .iter()
                    .map(|b| {
                        serde_json::json!({
                            "principal": b.principal, "host": b.host,
                            "permission": b.permission, "operation": b.operation,
                            "resource_type": b.resource_type, "pattern": b.pattern,
                            "name": b.name,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::from(list));
                return Ok(());
            }
            println!(
                "{:<20} {:<10} {:<6} {:<17} {:<17} {:<9} NAME",
                "PRINCIPAL", "HOST", "PERMIT", "OPERATION", "RESOURCE", "PATTERN"
            );
            for b in bindings {
                println!(
                    "{:<20} {:<10} {:<6} {:<17} {:<17} {:<9} {}",
                    b.principal,
                    b.host,
                    b.permission,
                    b.operation,
                    b.resource_type,
                    b.pattern,
                    b.name
                );
            }
        }
    }
    Ok(())
}
