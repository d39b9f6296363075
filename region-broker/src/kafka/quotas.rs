//! Client quotas over Kafka: DescribeClientQuotas and AlterClientQuotas on the region's
//! quotas (`broker::quotas`), and the throttle a Produce or Fetch earns: its response says
//! it (`throttle_time_ms`) and is held back that long, so a client that pipelines requests
//! (librdkafka does not wait out a throttle time by itself) gets its acknowledgements at
//! its rate; an unanswered (acks=0) produce mutes the connection instead: nothing more is
//! read from it for that long.

use std::sync::Mutex;
use std::time::Duration;

use kafka_protocol::messages::{
    AlterClientQuotasRequest, AlterClientQuotasResponse, DescribeClientQuotasRequest,
    DescribeClientQuotasResponse, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::StrBytes;
use meridian_proto::kafka::kafka_protocol;

use crate::broker::quotas::QuotaError;
use crate::broker::quotas::rules::{Entity, Kind, Name};

use super::{Kafka, code};

/// When a connection may read its next request.
#[derive(Debug, Default)]
pub(super) struct Mute(Mutex<Option<tokio::time::Instant>>);

impl Mute {
    /// Waits until the connection may read again.
    pub(super) async fn wait(&self) {
        let until = *self.0.lock().expect("mute lock poisoned");
        if let Some(until) = until {
            tokio::time::sleep_until(until).await;
        }
    }

    fn extend(&self, by: Duration) {
        if by.is_zero() {
            return;
        }
        let until = tokio::time::Instant::now() + by;
        let mut at = self.0.lock().expect("mute lock poisoned");
        *at = Some(at.map_or(until, |a| a.max(until)));
    }
}

/// The bytes a produce request carries (what its quota meters).
pub(super) fn produced_bytes(request: &RequestKind) -> u64 {
    match request {
        RequestKind::Produce(r) => r
            .topic_data
            .iter()
            .flat_map(|t| &t.partition_data)
            .map(|p| p.records.as_ref().map_or(0, |b| b.len() as u64))
            .sum(),
        _ => 0,
    }
}

/// Meters a Produce's or Fetch's bytes against the client's quota: sets the response's
/// throttle time, and returns how long to hold the response back.
pub(super) fn throttle(
    kafka: &Kafka,
    principal: &str,
    client_id: &str,
    produced: u64,
    response: &mut ResponseKind,
) -> Duration {
    let user = principal.strip_prefix("User:").unwrap_or(principal);
    let (kind, bytes, slot) = match response {
        ResponseKind::Produce(out) => (Kind::Produce, produced, &mut out.throttle_time_ms),
        ResponseKind::Fetch(out) => {
            let bytes = out
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| p.records.as_ref().map_or(0, |b| b.len() as u64))
                .sum();
            (Kind::Fetch, bytes, &mut out.throttle_time_ms)
        }
        _ => return Duration::ZERO,
    };
    let t = kafka.broker.throttle(kind, user, client_id, bytes);
    *slot = (*slot).max(t.as_millis().min(i32::MAX as u128) as i32);
    t
}

/// Meters an unanswered (acks=0) produce's bytes: the connection is muted all the same.
pub(super) fn throttle_unanswered(
    kafka: &Kafka,
    principal: &str,
    client_id: &str,
    produced: u64,
    mute: &Mute,
) {
    let user = principal.strip_prefix("User:").unwrap_or(principal);
    mute.extend(
        kafka
            .broker
            .throttle(Kind::Produce, user, client_id, produced),
    );
}

fn entity_of(components: impl Iterator<Item = (String, Option<String>)>) -> Result<Entity, String> {
    let mut e = Entity {
        user: None,
        client_id: None,
    };
    for (kind, name) in components {
        let name = match name {
            None => Name::Default,
            Some(n) => {
                Entity::check_name(&n)?;
                Name::Named(n)
            }
        };
        let slot = match kind.as_str() {
            "user" => &mut e.user,
            "client-id" => &mut e.client_id,
            other => {
                return Err(format!(
                    "entity type {other:?} is not supported: quotas are set per user and client-id"
                ));
            }
        };
        if slot.replace(name).is_some() {
            return Err(format!("entity type {kind} is named twice"));
        }
    }
    if e.user.is_none() && e.client_id.is_none() {
        return Err("an entity names a user, a client-id or both".into());
    }
    Ok(e)
}

fn components(e: &Entity) -> Vec<(&'static str, Option<String>)> {
    let name = |n: &Name| match n {
        Name::Default => None,
        Name::Named(s) => Some(s.clone()),
    };
    let mut out = Vec::new();
    if let Some(u) = &e.user {
        out.push(("user", name(u)));
    }
    if let Some(c) = &e.client_id {
        out.push(("client-id", name(c)));
    }
    out
}

/// AlterClientQuotas: each entry's entity gets its ops (set a rate, or remove it).
pub(super) async fn alter(kafka: &Kafka, r: AlterClientQuotasRequest) -> AlterClientQuotasResponse {
    use kafka_protocol::messages::alter_client_quotas_response::{EntityData, EntryData};
    let mut out = AlterClientQuotasResponse::default();
    for entry in r.entries {
        let mut answer = EntryData::default();
        answer.entity = entry
            .entity
            .iter()
            .map(|c| {
                let mut d = EntityData::default();
                d.entity_type = c.entity_type.clone();
                d.entity_name = c.entity_name.clone();
                d
            })
            .collect();
        let entity = entity_of(entry.entity.iter().map(|c| {
            (
                c.entity_type.to_string(),
                c.entity_name.as_ref().map(|n| n.to_string()),
            )
        }));
        let result = match entity {
            Err(e) => Err((code::INVALID_REQUEST, e)),
            Ok(entity) => {
                let ops = entry
                    .ops
                    .iter()
                    .map(|o| (o.key.to_string(), (!o.remove).then_some(o.value)))
                    .collect();
                kafka
                    .broker
                    .alter_quotas(entity, ops, r.validate_only)
                    .await
                    .map_err(|e| {
                        let c = match e {
                            QuotaError::Invalid(_) => code::INVALID_REQUEST,
                            QuotaError::Full(_) => code::POLICY_VIOLATION,
                            QuotaError::Unavailable(_) => code::REQUEST_TIMED_OUT,
                        };
                        (c, e.to_string())
                    })
            }
        };
        if let Err((c, message)) = result {
            answer.error_code = c;
            answer.error_message = Some(StrBytes::from_string(message));
        }
        out.entries.push(answer);
    }
    out
}

/// DescribeClientQuotas: the entities matching every component filter (exactly their
/// components with `strict`), with their quotas.
pub(super) async fn describe(
    kafka: &Kafka,
    r: DescribeClientQuotasRequest,
) -> DescribeClientQuotasResponse {
    use kafka_protocol::messages::describe_client_quotas_response::{
        EntityData, EntryData, ValueData,
    };
    let mut out = DescribeClientQuotasResponse::default();
    let never_set = kafka
        .broker
        .topic(&kafka.broker.config().auth.quotas_topic)
        .is_err();
    // No quota was ever set (the topic is made by the first): there are none, and
    // nothing to wait for.
    let quotas = if never_set {
        Vec::new()
    } else {
        match kafka.broker.quotas().await {
            Ok(q) => q.list(),
            Err(e) => {
                out.error_code = code::REQUEST_TIMED_OUT;
                out.error_message = Some(StrBytes::from_string(e));
                return out;
            }
        }
    };
    let mut entries = Vec::new();
    for (entity, values) in quotas {
        let parts = components(&entity);
        let matches = r.components.iter().all(|f| {
            let part = parts.iter().find(|(k, _)| **k == *f.entity_type);
            match (f.match_type, part) {
                // Exact: named so (or the default, when the filter names none).
                (0, Some((_, name))) => name.as_deref() == f._match.as_deref(),
                // The default.
                (1, Some((_, name))) => name.is_none(),
                // Any name given (not the default).
                (2, Some((_, name))) => name.is_some(),
                _ => false,
            }
        });
        if !matches || (r.strict && parts.len() != r.components.len()) {
            continue;
        }
        let mut e = EntryData::default();
        e.entity = parts
            .into_iter()
            .map(|(k, name)| {
                let mut d = EntityData::default();
                d.entity_type = StrBytes::from_static_str(k);
                d.entity_name = name.map(StrBytes::from_string);
                d
            })
            .collect();
        e.values = values
            .into_iter()
            .map(|(k, v)| {
                let mut d = ValueData::default();
                d.key = StrBytes::from_string(k);
                d.value = v;
                d
            })
            .collect();
        entries.push(e);
    }
    out.entries = Some(entries);
    out
}
