//! The region's access control lists: a state topic (`auth.acls_topic`, key a binding as
//! JSON, value `1`, empty to delete) every broker reads whole and follows, spanning every
//! region when managed, as the credentials do. [`Broker::authorize`] decides with
//! `meridian_security::acl::authorize` (pure) when `auth.acls_enabled` is on — deny by
//! default then — and writes every refusal to the audit log (target `audit`) and
//! `meridian_authorization_denied_total`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use meridian_security::acl::{self, Binding, Decision, Filter, Operation, ResourceType};

use super::Broker;
use super::state_topic;

/// Every binding, as read from the ACL topic.
#[derive(Debug)]
pub struct Acls {
    bindings: RwLock<BTreeSet<Binding>>,
    read: state_topic::Read,
    started: AtomicBool,
    writer: state_topic::Writer,
}

impl Acls {
    pub(super) fn new() -> Acls {
        Acls {
            bindings: RwLock::new(BTreeSet::new()),
            read: state_topic::Read::new(),
            started: AtomicBool::new(false),
            writer: state_topic::Writer::default(),
        }
    }

    /// The bindings `filter` matches.
    /// How many bindings there are.
    pub fn len(&self) -> usize {
        self.bindings.read().expect("acl lock poisoned").len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn list(&self, filter: &Filter) -> Vec<Binding> {
        self.bindings
            .read()
            .expect("acl lock poisoned")
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    }

    fn apply(&self, key: &str, value: Option<&[u8]>, max: usize) {
        let Ok(binding) = serde_json::from_str::<Binding>(key) else {
            tracing::warn!(key, "an ACL record whose key is not a binding; skipped");
            return;
        };
        let mut bindings = self.bindings.write().expect("acl lock poisoned");
        if value.is_some_and(|v| !v.is_empty()) {
            if bindings.len() >= max && !bindings.contains(&binding) {
                metrics::counter!("meridian_acls_dropped_total").increment(1);
                return;
            }
            bindings.insert(binding);
        } else {
            bindings.remove(&binding);
        }
        metrics::gauge!("meridian_acls").set(bindings.len() as f64);
    }
}

/// Who asks, as the adapters know it.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    /// `User:NAME`; `User:ANONYMOUS` when the client did not authenticate.
    pub name: &'a str,
    /// The client's address.
    pub host: &'a str,
}

impl Broker {
    /// Starts reading the ACL topic (once).
    pub fn start_acls(self: &Arc<Self>) {
        if self.acls.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let broker = self.clone();
        tokio::spawn(async move {
            let topic = broker.config().auth.acls_topic.clone();
            let max = broker.config().auth.acls_max;
            let this = broker.clone();
            state_topic::follow(
                broker.clone(),
                topic,
                "auth.acls_topic",
                move |key, m| this.acls.apply(&key, m.value.as_deref(), max),
                &broker.acls.read,
            )
            .await
        });
    }

    /// The ACLs, once their topic has been read (at most 15 s after start).
    pub async fn acls(self: &Arc<Self>) -> Result<&Acls, String> {
        self.start_acls();
        if self.acls.read.known().await {
            Ok(&self.acls)
        } else {
            Err(format!(
                "the ACL topic {:?} is not read yet: the region's brokers may still be starting",
                self.config().auth.acls_topic
            ))
        }
    }

    /// Whether `who` may do `operation` on the resource: always when `auth.acls_enabled` is
    /// off; else by the bindings (none read yet: no). A refusal is audited.
    pub async fn authorize(
        self: &Arc<Self>,
        who: Principal<'_>,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        let decision = self.decide(&who, operation, resource_type, name).await;
        if !decision.allowed() {
            metrics::counter!("meridian_authorization_denied_total").increment(1);
            tracing::warn!(
                target: "audit",
                principal = who.name,
                host = who.host,
                operation = ?operation,
                resource = ?resource_type,
                name,
                by = ?decision,
                "refused"
            );
        }
        decision.allowed()
    }

    /// [`Broker::authorize`] without the audit: for filtering what a listing shows (as
    /// Kafka hides the topics a principal may not describe from a Metadata of every
    /// topic without logging each), never for refusing a request.
    pub async fn may_see(
        self: &Arc<Self>,
        who: Principal<'_>,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        self.decide(&who, Operation::Describe, resource_type, name)
            .await
            .allowed()
    }

    async fn decide(
        self: &Arc<Self>,
        who: &Principal<'_>,
        operation: Operation,
        resource_type: ResourceType,
        name: &str,
    ) -> Decision {
        let auth = &self.config().auth;
        if !auth.acls_enabled {
            return Decision::Unchecked;
        }
        let request = acl::Request {
            principal: who.name,
            host: who.host,
            operation,
            resource_type,
            name,
        };
        match self.acls().await {
            Ok(acls) => acl::authorize(
                acls.bindings.read().expect("acl lock poisoned").iter(),
                &auth.super_users,
                &request,
            ),
            Err(e) => {
                tracing::warn!(error = %e, "ACLs not read: refusing");
                Decision::NoAllow
            }
        }
    }

    /// Adds (`add`) or removes bindings, written to the ACL topic before this returns;
    /// audited.
    pub async fn change_acl(
        self: &Arc<Self>,
        who: &str,
        binding: &Binding,
        add: bool,
    ) -> Result<(), String> {
        binding.check().map_err(|e| e.to_string())?;
        let acls = self.acls().await?;
        let max = self.config().auth.acls_max;
        if add && acls.len() >= max {
            return Err(format!(
                "the region keeps at most {max} ACLs (auth.acls_max): delete some first"
            ));
        }
        let key = serde_json::to_string(binding).expect("a binding serializes");
        let value = if add { b"1".to_vec() } else { Vec::new() };
        acls.writer
            .write(self, &self.config().auth.acls_topic, &key, value.clone())
            .await?;
        acls.apply(&key, Some(&value), max);
        tracing::info!(target: "audit", principal = who, ?binding, add, "ACL changed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_security::acl::{PatternType, Permission};

    #[test]
    fn records_add_and_remove_bindings_within_the_bound() {
        let acls = Acls::new();
        let b = |name: &str| Binding {
            resource_type: ResourceType::Topic,
            pattern: PatternType::Literal,
            name: name.into(),
            principal: "User:a".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Allow,
        };
        let key = |name: &str| serde_json::to_string(&b(name)).unwrap();
        acls.apply(&key("x"), Some(b"1"), 2);
        acls.apply(&key("y"), Some(b"1"), 2);
        acls.apply(&key("z"), Some(b"1"), 2);
        assert_eq!(acls.list(&Filter::default()).len(), 2, "the bound holds");
        acls.apply(&key("x"), Some(b""), 2);
        assert_eq!(acls.list(&Filter::default()), vec![b("y")]);
        acls.apply("not a binding", Some(b"1"), 2);
        assert_eq!(acls.list(&Filter::default()).len(), 1);
    }
}
