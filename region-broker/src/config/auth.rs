//! The `[auth]` section: users' credentials, ACLs, and who may call the gRPC API.

use std::path::PathBuf;

use serde::Deserialize;

/// The `[auth]` section: where the region keeps its users' credentials.
#[derive(Debug, Clone, Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// The state topic of the users' SASL credentials (key `MECHANISM:user`), read whole
    /// by every broker; in a managed region it spans every region.
    pub credentials_topic: String,
    /// Users kept at most; setting one more is refused.
    pub users_max: usize,
    /// Whether requests are authorized by the region's ACLs (Kafka's, `meridian acl`):
    /// when on, what no ACL allows is refused (deny by default), on every protocol.
    pub acls_enabled: bool,
    /// Principals (`User:NAME`) allowed everything, ACLs or not (Kafka's `super.users`).
    pub super_users: Vec<String>,
    /// The state topic of the ACLs, read whole by every broker.
    pub acls_topic: String,
    /// ACLs kept at most; adding one more is refused.
    pub acls_max: usize,
    /// The state topic of the client quotas (Kafka's produce and fetch byte rates per
    /// user and client id), read whole by every broker.
    pub quotas_topic: String,
    /// Entities with quotas kept at most; setting one more is refused.
    pub quotas_max: usize,
    /// The API tokens the gRPC API accepts (`meridian token create`; its owner's only):
    /// with it, every call is authenticated and internal calls (mirrored appends, replica
    /// and master changes) are taken only from the principals they are for.
    pub tokens_file: Option<PathBuf>,
    /// With `tokens_file`: whether calls without a token are still served (as anonymous,
    /// never for internal calls). Off: refused `UNAUTHENTICATED`.
    pub grpc_allow_anonymous: bool,
    /// This broker's own token (a file of its owner's only holding `Broker:REGION`'s), sent
    /// with its calls to the control plane and to other brokers.
    pub token_file: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            tokens_file: None,
            grpc_allow_anonymous: false,
            token_file: None,
            credentials_topic: "meridian-credentials".to_owned(),
            users_max: 10_000,
            acls_enabled: false,
            super_users: Vec::new(),
            acls_topic: "meridian-acls".to_owned(),
            acls_max: 100_000,
            quotas_topic: "meridian-quotas".to_owned(),
            quotas_max: 10_000,
        }
    }
}
