//! Inbound PUBLISHes: checked (topic, alias, receive maximum, retained limits), written
//! as records through the broker's producer, and answered (PUBACK, PUBREC) once written,
//! in the order they came.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use meridian_proto::mqtt::packet::*;
use meridian_proto::mqtt::{QoS, Version};

use meridian_security::acl::Operation;

use super::Mqtt;
use super::connection::{Close, Connection, now_ms};
use super::record::Message;
use super::session::Qos2;
use super::sessions::SessionState;
use super::topics::{self, TopicError};

/// What a stored PUBLISH is answered with once its record is acknowledged.
pub(super) enum Stored {
    Qos0,
    Qos1(u16),
    Qos2(u16),
}

pub(super) type StoreResult = (Stored, Result<(), String>);

impl Connection {
    /// An inbound PUBLISH: checked, then stored; answered when stored.
    pub(super) async fn publish(
        &mut self,
        p: Publish,
        state: &mut SessionState,
    ) -> Result<(), Close> {
        metrics::counter!("meridian_mqtt_publishes_received_total").increment(1);
        let alias = p.properties.as_ref().and_then(|pr| pr.topic_alias);
        let topic = String::from_utf8(p.topic.to_vec()).map_err(|_| {
            Close::protocol(
                DisconnectReasonCode::MalformedPacket,
                "a topic name is not UTF-8",
            )
        })?;
        let name = state
            .inbound
            .topic(topic, alias, self.mqtt.config.topic_alias_max)
            .map_err(|e| Close::protocol(DisconnectReasonCode::TopicAliasInvalid, e.to_string()))?;
        let refusal = match topics::validate_name(&name) {
            Err(TopicError::Wildcard(_)) | Err(TopicError::Malformed(_)) => {
                return Err(Close::protocol(
                    DisconnectReasonCode::TopicNameInvalid,
                    format!("the topic name {name:?} holds a wildcard or NUL, or is empty"),
                ));
            }
            Err(e) => Some(e.to_string()),
            Ok(()) => match self.mqtt.topics.topic_of(&name) {
                Err(e) => Some(e.to_string()),
                Ok(t) => match self.mqtt.refuse_topic(t) {
                    Some(why) => Some(why),
                    None if self.mqtt.broker.config().auth.acls_enabled
                        && !self.may(Operation::Write, vec![t.to_owned()]).await =>
                    {
                        Some(format!(
                            "not authorized: {} may not write to topic {t:?}",
                            self.principal
                        ))
                    }
                    None => None,
                },
            },
        };
        let qos2 = match state
            .inbound
            .publish(p.qos, p.pkid, self.mqtt.config.receive_maximum)
        {
            Ok(q) => q,
            Err(e) => {
                let reason = match e {
                    super::session::InboundError::ReceiveMaximum(_) => {
                        DisconnectReasonCode::ReceiveMaximumExceeded
                    }
                    _ => DisconnectReasonCode::ProtocolError,
                };
                return Err(Close::protocol(reason, e.to_string()));
            }
        };
        if qos2 == Some(Qos2::Duplicate) {
            // Stored before: answered again, not stored again (while the first is still
            // being stored, its answer is the answer).
            if !self.storing.contains(&p.pkid) {
                self.send(&Packet::PubRec(PubRec::new(p.pkid, None)));
            }
            return Ok(());
        }
        if qos2 == Some(Qos2::Store) {
            self.storing.insert(p.pkid);
        }
        let stored = match p.qos {
            QoS::AtMostOnce => Stored::Qos0,
            QoS::AtLeastOnce => Stored::Qos1(p.pkid),
            QoS::ExactlyOnce => Stored::Qos2(p.pkid),
        };
        if let Some(why) = refusal {
            // Refused: MQTT 5 says why in the acknowledgement (a QoS 0 PUBLISH has none:
            // dropped, counted); 3.1.1 has no way to, so the connection is closed and
            // nothing is acknowledged that was not stored.
            metrics::counter!("meridian_mqtt_publishes_refused_total").increment(1);
            return match (self.version, p.qos) {
                (Version::V5, QoS::AtMostOnce) => {
                    tracing::debug!(client = %self.client_id, why, "a QoS 0 PUBLISH was refused");
                    Ok(())
                }
                (Version::V5, _) => {
                    self.stores
                        .push_back(Box::pin(std::future::ready((stored, Err(why)))));
                    Ok(())
                }
                (Version::V311, _) => {
                    Err(Close::protocol(DisconnectReasonCode::TopicNameInvalid, why))
                }
            };
        }
        let message = Message::of_publish(name, &p, &self.client_id, now_ms());
        let retained_refusal = if !message.retain {
            None
        } else if !self.mqtt.retained.read.known().await {
            // Its copy could not be written (the topic is made at a region's first start)
            // nor checked against the limit.
            Some(format!(
                "this broker has not read the region's retained messages yet (topic {}); publish again shortly",
                self.mqtt.config.retained_topic
            ))
        } else if !message.payload.is_empty() && !self.mqtt.retained.has_room_for(&message.name) {
            Some(format!(
                "this broker holds its most retained messages ({}): mqtt.retained_max",
                self.mqtt.config.retained_max
            ))
        } else {
            None
        };
        if let Some(why) = retained_refusal {
            if self.version == Version::V311 {
                return Err(Close::protocol(DisconnectReasonCode::QuotaExceeded, why));
            }
            self.stores
                .push_back(Box::pin(std::future::ready((stored, Err(why)))));
            return Ok(());
        }
        let write = self.mqtt.store(message).await;
        self.stores
            .push_back(Box::pin(async move { (stored, write.await) }));
        Ok(())
    }

    /// A PUBLISH's record is acknowledged (or refused): answer it.
    pub(super) fn stored(
        &mut self,
        state: &mut SessionState,
        stored: Stored,
        result: Result<(), String>,
    ) -> Result<(), Close> {
        let failed = result.err();
        if let Some(why) = &failed {
            metrics::counter!("meridian_mqtt_publishes_refused_total").increment(1);
            tracing::debug!(client = %self.client_id, why, "an MQTT PUBLISH was not stored");
        }
        if let Stored::Qos2(pkid) = stored {
            self.storing.remove(&pkid);
            if failed.is_some() {
                state.inbound.failed(pkid);
            }
        }
        if let Some(why) = failed.clone().filter(|_| self.version == Version::V311) {
            // 3.1.1's acknowledgements carry no reason: one sent now would tell the client
            // its message was stored. The connection is closed unanswered instead, and the
            // client sends the message again when it reconnects.
            return Err(Close::protocol(
                DisconnectReasonCode::ImplementationSpecificError,
                why,
            ));
        }
        // MQTT 5: the refusal's reason, unless the client asked for none.
        let reason_string = failed.as_ref().filter(|_| self.problem_info).cloned();
        match stored {
            Stored::Qos0 => {}
            Stored::Qos1(pkid) => {
                state.inbound.acknowledged();
                let mut ack = PubAck::new(pkid, None);
                if failed.is_some() {
                    ack.reason = PubAckReason::ImplementationSpecificError;
                    ack.properties = reason_string.map(|r| PubAckProperties {
                        reason_string: Some(r),
                        user_properties: Vec::new(),
                    });
                }
                self.send(&Packet::PubAck(ack));
            }
            Stored::Qos2(pkid) => {
                let mut rec = PubRec::new(pkid, None);
                if failed.is_some() {
                    rec.reason = PubRecReason::ImplementationSpecificError;
                    rec.properties = reason_string.map(|r| PubRecProperties {
                        reason_string: Some(r),
                        user_properties: Vec::new(),
                    });
                }
                self.send(&Packet::PubRec(rec));
            }
        }
        Ok(())
    }
}

impl Mqtt {
    /// Writes a message as a record of its topic (and, when retained, of the retained
    /// topic): the future of its acknowledgement.
    pub(super) async fn store(
        &self,
        message: Message,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> {
        let topic = match self.topics.topic_of(&message.name) {
            Ok(t) => t.to_owned(),
            Err(e) => return Box::pin(std::future::ready(Err(e.to_string()))),
        };
        let key = Bytes::copy_from_slice(message.name.as_bytes());
        let now = now_ms();
        let record = meridian_proto::batch::Message {
            key: Some(key.clone()),
            value: Some(message.payload.clone()),
            headers: message.headers(),
            timestamp_ms: now,
        };
        let sent = self.producer.send(&topic, record);
        let retained = message.retain.then(|| {
            let record = meridian_proto::batch::Message {
                key: Some(key),
                value: Some(message.payload.clone()),
                headers: message
                    .headers()
                    .into_iter()
                    .filter(|(_, v)| v.is_some())
                    .collect(),
                timestamp_ms: now,
            };
            self.producer.send(&self.config.retained_topic, record)
        });
        Box::pin(async move {
            stored(sent).await?;
            if let Some(r) = retained {
                stored(r)
                    .await
                    .map_err(|e| format!("the retained copy: {e}"))?;
            }
            Ok(())
        })
    }
}

/// What a queued write came to: stored, or why not.
pub(super) async fn stored(
    sent: Result<
        tokio::sync::oneshot::Receiver<crate::broker::region_producer::Stored>,
        crate::broker::BrokerError,
    >,
) -> Result<(), String> {
    match sent {
        Err(e) => Err(e.to_string()),
        Ok(reply) => match reply.await {
            Ok(stored) => stored.map(drop),
            Err(_) => Err("the broker's producer stopped".to_owned()),
        },
    }
}
