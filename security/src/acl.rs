//! Access control lists, Kafka's model: a binding allows or denies a principal
//! (`User:alice`, `User:*`) an operation on a resource (a topic, a consumer group, a
//! transactional id, the cluster) named literally or by prefix. Pure: [`authorize`] takes
//! the bindings, the principal and the request and gives the decision, so every protocol
//! (Kafka, MQTT, gRPC) decides the same way.
//!
//! The rules are Kafka's (`AclAuthorizer`): a super user may do anything; a matching deny
//! wins over any allow; Describe is implied by Read, Write, Delete and Alter, and
//! DescribeConfigs by AlterConfigs; `All` matches every operation; with no matching allow,
//! the answer is no (Kafka's `allow.everyone.if.no.acl.found=false`).

use serde::{Deserialize, Serialize};

/// What a binding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Group,
    Cluster,
    TransactionalId,
}

impl ResourceType {
    /// Kafka's number (`ResourceType`).
    pub fn kafka(self) -> i8 {
        match self {
            ResourceType::Topic => 2,
            ResourceType::Group => 3,
            ResourceType::Cluster => 4,
            ResourceType::TransactionalId => 5,
        }
    }

    /// Its name as the CLI spells it (`topic`, `transactional-id`).
    pub fn name(self) -> &'static str {
        match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
            ResourceType::TransactionalId => "transactional-id",
        }
    }

    /// Parses [`ResourceType::name`] (any case, `_` for `-`).
    pub fn parse(name: &str) -> Option<ResourceType> {
        let name = name.to_ascii_lowercase().replace('_', "-");
        [
            ResourceType::Topic,
            ResourceType::Group,
            ResourceType::Cluster,
            ResourceType::TransactionalId,
        ]
        .into_iter()
        .find(|r| r.name() == name)
    }

    pub fn from_kafka(n: i8) -> Option<ResourceType> {
        [
            ResourceType::Topic,
            ResourceType::Group,
            ResourceType::Cluster,
            ResourceType::TransactionalId,
        ]
        .into_iter()
        .find(|r| r.kafka() == n)
    }
}

/// How a binding's resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PatternType {
    /// The name itself (`*`: every name).
    Literal,
    /// Every name starting with it.
    Prefixed,
}

impl PatternType {
    pub fn kafka(self) -> i8 {
        match self {
            PatternType::Literal => 3,
            PatternType::Prefixed => 4,
        }
    }

    /// Parses `literal` or `prefixed` (any case).
    pub fn parse(name: &str) -> Option<PatternType> {
        match name.to_ascii_lowercase().as_str() {
            "literal" => Some(PatternType::Literal),
            "prefixed" => Some(PatternType::Prefixed),
            _ => None,
        }
    }

    pub fn from_kafka(n: i8) -> Option<PatternType> {
        match n {
            3 => Some(PatternType::Literal),
            4 => Some(PatternType::Prefixed),
            _ => None,
        }
    }
}

/// What a principal asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operation {
    All,
    Read,
    Write,
    Create,
    Delete,
    Alter,
    Describe,
    ClusterAction,
    DescribeConfigs,
    AlterConfigs,
    IdempotentWrite,
}

const OPERATIONS: [Operation; 11] = [
    Operation::All,
    Operation::Read,
    Operation::Write,
    Operation::Create,
    Operation::Delete,
    Operation::Alter,
    Operation::Describe,
    Operation::ClusterAction,
    Operation::DescribeConfigs,
    Operation::AlterConfigs,
    Operation::IdempotentWrite,
];

impl Operation {
    /// Kafka's number (`AclOperation`).
    pub fn kafka(self) -> i8 {
        match self {
            Operation::All => 2,
            Operation::Read => 3,
            Operation::Write => 4,
            Operation::Create => 5,
            Operation::Delete => 6,
            Operation::Alter => 7,
            Operation::Describe => 8,
            Operation::ClusterAction => 9,
            Operation::DescribeConfigs => 10,
            Operation::AlterConfigs => 11,
            Operation::IdempotentWrite => 12,
        }
    }

    pub fn from_kafka(n: i8) -> Option<Operation> {
        OPERATIONS.into_iter().find(|o| o.kafka() == n)
    }

    /// Its name as the CLI spells it (`read`, `describe-configs`).
    pub fn name(self) -> String {
        let mut out = String::new();
        for (i, c) in format!("{self:?}").chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    /// Parses a name as the CLI takes it (`read`, `describe-configs`, ...).
    pub fn parse(name: &str) -> Option<Operation> {
        let name = name.replace(['-', '_'], "").to_ascii_lowercase();
        OPERATIONS
            .into_iter()
            .find(|o| format!("{o:?}").to_ascii_lowercase() == name)
    }

    /// Whether a binding for `self` covers a request for `asked`.
    fn covers(self, asked: Operation) -> bool {
        use Operation::*;
        self == All
            || self == asked
            || (asked == Describe && matches!(self, Read | Write | Delete | Alter))
            || (asked == DescribeConfigs && self == AlterConfigs)
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    Deny,
    Allow,
}

impl Permission {
    pub fn kafka(self) -> i8 {
        match self {
            Permission::Deny => 2,
            Permission::Allow => 3,
        }
    }

    /// Parses `allow` or `deny` (any case).
    pub fn parse(name: &str) -> Option<Permission> {
        match name.to_ascii_lowercase().as_str() {
            "allow" => Some(Permission::Allow),
            "deny" => Some(Permission::Deny),
            _ => None,
        }
    }

    pub fn from_kafka(n: i8) -> Option<Permission> {
        match n {
            2 => Some(Permission::Deny),
            3 => Some(Permission::Allow),
            _ => None,
        }
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Binding {
    pub resource_type: ResourceType,
    pub pattern: PatternType,
    /// The resource's name, or its prefix; `*` (literal) is every name. The cluster's
    /// name is `kafka-cluster`, as Kafka's.
    pub name: String,
    /// `User:NAME`, or `User:*` for everyone.
    pub principal: String,
    /// `*`, or the client's address.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// The cluster resource's name.
pub const CLUSTER: &str = "kafka-cluster";

/// Why a binding is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BindingError {
    #[error("the principal {0:?} is not User:NAME")]
    Principal(String),
    #[error("an empty resource name")]
    EmptyName,
    #[error("the cluster resource is named {CLUSTER:?}, literally, not {0:?}")]
    ClusterName(String),
}

impl Binding {
    /// Refuses a binding that could never match as written.
    pub fn check(&self) -> Result<(), BindingError> {
        match self.principal.strip_prefix("User:") {
            Some(n) if !n.is_empty() => {}
            _ => return Err(BindingError::Principal(self.principal.clone())),
        }
        if self.name.is_empty() {
            return Err(BindingError::EmptyName);
        }
        if self.resource_type == ResourceType::Cluster
            && (self.name != CLUSTER || self.pattern != PatternType::Literal)
        {
            return Err(BindingError::ClusterName(self.name.clone()));
        }
        Ok(())
    }

    fn matches_resource(&self, resource_type: ResourceType, name: &str) -> bool {
        self.resource_type == resource_type
            && match self.pattern {
                PatternType::Literal => self.name == "*" || self.name == name,
                PatternType::Prefixed => name.starts_with(&self.name),
            }
    }

    fn matches_principal(&self, principal: &str, host: &str) -> bool {
        (self.principal == "User:*" || self.principal == principal)
            && (self.host == "*" || self.host == host)
    }
}

/// A request to authorize.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `User:NAME` (`User:ANONYMOUS` when the client did not authenticate).
    pub principal: &'a str,
    pub host: &'a str,
    pub operation: Operation,
    pub resource_type: ResourceType,
    pub name: &'a str,
}

/// The decision, with the binding that made it (none: no allow matched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// ACLs are off: everything is allowed.
    Unchecked,
    /// A super user.
    Super,
    Allowed(Binding),
    Denied(Binding),
    /// No binding allows it.
    NoAllow,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(
            self,
            Decision::Unchecked | Decision::Super | Decision::Allowed(_)
        )
    }
}

/// Decides `request` against `bindings`; `super_users` (`User:NAME`) may do anything.
pub fn authorize<'b>(
    bindings: impl IntoIterator<Item = &'b Binding>,
    super_users: &[String],
    request: &Request<'_>,
) -> Decision {
    if super_users.iter().any(|s| s == request.principal) {
        return Decision::Super;
    }
    let mut allowed = None;
    for b in bindings {
        if !b.matches_resource(request.resource_type, request.name)
            || !b.matches_principal(request.principal, request.host)
        {
            continue;
        }
        match b.permission {
            // Deny wins; Describe is not denied by a deny of what implies it.
            Permission::Deny
                if b.operation == Operation::All || b.operation == request.operation =>
            {
                return Decision::Denied(b.clone());
            }
            Permission::Deny => {}
            Permission::Allow if allowed.is_none() && b.operation.covers(request.operation) => {
                allowed = Some(b.clone());
            }
            Permission::Allow => {}
        }
    }
    match allowed {
        Some(b) => Decision::Allowed(b),
        None => Decision::NoAllow,
    }
}

/// A filter over bindings (Kafka's DescribeAcls and DeleteAcls): `None` fields match
/// anything; a pattern of `Match` matches every binding that would match the name.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub resource_type: Option<ResourceType>,
    /// `None`: any name.
    pub name: Option<String>,
    /// `None`: any pattern; `Some(None)`: Kafka's MATCH (literal equal, `*`, or a prefix of
    /// the name).
    pub pattern: Option<Option<PatternType>>,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

impl Filter {
    pub fn matches(&self, b: &Binding) -> bool {
        let name_ok = match (&self.name, self.pattern) {
            (None, _) => true,
            (Some(n), None) => *n == b.name,
            (Some(n), Some(Some(p))) => p == b.pattern && *n == b.name,
            (Some(n), Some(None)) => match b.pattern {
                PatternType::Literal => b.name == *n || b.name == "*",
                PatternType::Prefixed => n.starts_with(&b.name),
            },
        };
        let pattern_ok = match self.pattern {
            Some(Some(p)) => p == b.pattern,
            _ => true,
        };
        name_ok
            && pattern_ok
            && self.resource_type.is_none_or(|r| r == b.resource_type)
            && self.principal.as_ref().is_none_or(|p| *p == b.principal)
            && self.host.as_ref().is_none_or(|h| *h == b.host)
            && self.operation.is_none_or(|o| o == b.operation)
            && self.permission.is_none_or(|p| p == b.permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(
        resource_type: ResourceType,
        pattern: PatternType,
        name: &str,
        principal: &str,
        operation: Operation,
        permission: Permission,
    ) -> Binding {
        Binding {
            resource_type,
            pattern,
            name: name.into(),
            principal: principal.into(),
            host: "*".into(),
            operation,
            permission,
        }
    }

    fn ask<'a>(principal: &'a str, operation: Operation, name: &'a str) -> Request<'a> {
        Request {
            principal,
            host: "127.0.0.1",
            operation,
            resource_type: Topic,
            name,
        }
    }

    use Operation::*;
    use PatternType::*;
    use Permission::*;
    use ResourceType::*;

    #[test]
    fn nothing_is_allowed_without_a_binding_except_to_super_users() {
        let none: Vec<Binding> = Vec::new();
        assert_eq!(
            authorize(&none, &[], &ask("User:alice", Read, "t")),
            Decision::NoAllow
        );
        let supers = ["User:admin".to_owned()];
        assert!(authorize(&none, &supers, &ask("User:admin", Delete, "t")).allowed());
    }

    #[test]
    fn literal_prefixed_and_wildcard_names_match_as_kafka_does() {
        let acls = vec![
            bind(Topic, Literal, "orders", "User:alice", Write, Allow),
            bind(Topic, Prefixed, "logs-", "User:bob", Read, Allow),
            bind(Topic, Literal, "*", "User:carol", Describe, Allow),
        ];
        assert!(authorize(&acls, &[], &ask("User:alice", Write, "orders")).allowed());
        assert!(!authorize(&acls, &[], &ask("User:alice", Write, "orders2")).allowed());
        assert!(!authorize(&acls, &[], &ask("User:alice", Read, "orders")).allowed());
        assert!(authorize(&acls, &[], &ask("User:bob", Read, "logs-a")).allowed());
        assert!(!authorize(&acls, &[], &ask("User:bob", Read, "logs")).allowed());
        assert!(authorize(&acls, &[], &ask("User:carol", Describe, "anything")).allowed());
        // A topic binding says nothing of a group of the same name.
        let group = Request {
            resource_type: Group,
            ..ask("User:alice", Write, "orders")
        };
        assert!(!authorize(&acls, &[], &group).allowed());
    }

    #[test]
    fn deny_wins_and_describe_is_implied() {
        let acls = vec![
            bind(Topic, Literal, "*", "User:*", All, Allow),
            bind(Topic, Literal, "secret", "User:eve", Read, Deny),
        ];
        assert!(authorize(&acls, &[], &ask("User:eve", Write, "secret")).allowed());
        assert!(matches!(
            authorize(&acls, &[], &ask("User:eve", Read, "secret")),
            Decision::Denied(_)
        ));
        assert!(authorize(&acls, &[], &ask("User:eve", Read, "public")).allowed());
        let acls = vec![bind(Topic, Literal, "t", "User:a", Write, Allow)];
        assert!(authorize(&acls, &[], &ask("User:a", Describe, "t")).allowed());
        assert!(!authorize(&acls, &[], &ask("User:a", Delete, "t")).allowed());
        let acls = vec![bind(Topic, Literal, "t", "User:a", AlterConfigs, Allow)];
        assert!(authorize(&acls, &[], &ask("User:a", DescribeConfigs, "t")).allowed());
        // A host other than the client's does not match.
        let mut only_there = bind(Topic, Literal, "t", "User:a", Read, Allow);
        only_there.host = "10.0.0.9".into();
        assert!(!authorize(&[only_there], &[], &ask("User:a", Read, "t")).allowed());
    }

    #[test]
    fn bad_bindings_are_refused_and_filters_match_as_describe_acls() {
        let mut b = bind(Topic, Literal, "t", "alice", Read, Allow);
        assert!(b.check().is_err());
        b.principal = "User:alice".into();
        b.check().unwrap();
        let c = bind(Cluster, Literal, "c", "User:a", Alter, Allow);
        assert!(c.check().is_err());
        let all = [
            bind(Topic, Literal, "orders", "User:a", Read, Allow),
            bind(Topic, Prefixed, "ord", "User:b", Read, Allow),
            bind(Topic, Literal, "*", "User:c", Read, Allow),
            bind(Group, Literal, "orders", "User:a", Read, Allow),
        ];
        let count = |f: &Filter| all.iter().filter(|b| f.matches(b)).count();
        assert_eq!(count(&Filter::default()), 4);
        let exact = Filter {
            resource_type: Some(Topic),
            name: Some("orders".into()),
            pattern: Some(Some(Literal)),
            ..Default::default()
        };
        assert_eq!(count(&exact), 1);
        let matching = Filter {
            resource_type: Some(Topic),
            name: Some("orders".into()),
            pattern: Some(None),
            ..Default::default()
        };
        assert_eq!(count(&matching), 3);
        assert_eq!(Operation::parse("describe-configs"), Some(DescribeConfigs));
        assert_eq!(Operation::from_kafka(4), Some(Write));
    }
}
