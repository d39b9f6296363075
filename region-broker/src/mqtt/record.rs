//! An MQTT message as a Meridian record, and back: pure functions.
//!
//! The record's key is the MQTT topic name, its value the payload; MQTT 5's user
//! properties are its headers, in order, as a Kafka consumer expects; what else MQTT
//! knows of the message is in headers named `mqtt.*`: `mqtt.qos` (the QoS it was
//! published at), `mqtt.retain` (`1` when it was a retained message), `mqtt.client` (the
//! publishing client, for no-local subscriptions), `mqtt.expiry-at` (ms since the epoch,
//! from the message expiry interval), `mqtt.content-type`, `mqtt.response-topic`,
//! `mqtt.correlation-data` and `mqtt.payload-format`. A record written by another protocol
//! has none of them: it is delivered as a message published at QoS 2, not retained.

use bytes::Bytes;
use meridian_proto::mqtt::QoS;
use meridian_proto::mqtt::packet::{Publish, PublishProperties};

/// Headers of MQTT's own (not user properties).
pub const QOS: &str = "mqtt.qos";
/// Set (`1`) on a retained message.
pub const RETAIN: &str = "mqtt.retain";
/// The publishing client's id.
pub const CLIENT: &str = "mqtt.client";
/// When the message expires, in ms since the epoch.
pub const EXPIRY_AT: &str = "mqtt.expiry-at";
const CONTENT_TYPE: &str = "mqtt.content-type";
const RESPONSE_TOPIC: &str = "mqtt.response-topic";
const CORRELATION_DATA: &str = "mqtt.correlation-data";
const PAYLOAD_FORMAT: &str = "mqtt.payload-format";

/// A message as MQTT knows it, between the log and a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its MQTT topic name.
    pub name: String,
    /// The payload.
    pub payload: Bytes,
    /// The QoS it was published at (the most it is delivered at).
    pub qos: QoS,
    /// Published as retained.
    pub retain: bool,
    /// The publishing MQTT client, if one did.
    pub client: Option<String>,
    /// When it expires (ms since the epoch).
    pub expiry_at: Option<i64>,
    /// MQTT 5 properties carried along (message expiry and alias aside).
    pub content_type: Option<String>,
    /// Response topic.
    pub response_topic: Option<String>,
    /// Correlation data.
    pub correlation_data: Option<Bytes>,
    /// Payload format indicator.
    pub payload_format: Option<u8>,
    /// User properties, in order.
    pub user_properties: Vec<(String, String)>,
}

/// A QoS as its number (0–2).
pub fn qos_number(q: QoS) -> u8 {
    match q {
        QoS::AtMostOnce => 0,
        QoS::AtLeastOnce => 1,
        QoS::ExactlyOnce => 2,
    }
}

/// The lower of two QoS levels.
pub fn min_qos(a: QoS, b: QoS) -> QoS {
    if qos_number(a) <= qos_number(b) { a } else { b }
}

/// The higher of two QoS levels.
pub fn max_qos(a: QoS, b: QoS) -> QoS {
    if qos_number(a) >= qos_number(b) { a } else { b }
}

impl Message {
    /// A PUBLISH's message (topic already resolved from an alias), from `client`, at `now`.
    pub fn of_publish(name: String, p: &Publish, client: &str, now_ms: i64) -> Message {
        let props = p.properties.clone().unwrap_or_default();
        Message {
            name,
            payload: p.payload.clone(),
            qos: p.qos,
            retain: p.retain,
            client: Some(client.to_owned()),
            expiry_at: props
                .message_expiry_interval
                .map(|s| now_ms.saturating_add(i64::from(s) * 1000)),
            content_type: props.content_type,
            response_topic: props.response_topic,
            correlation_data: props.correlation_data,
            payload_format: props.payload_format_indicator,
            user_properties: props.user_properties,
        }
    }

    /// The record's headers (see the module's documentation).
    pub fn headers(&self) -> Vec<(String, Option<Bytes>)> {
        let mut h: Vec<(String, Option<Bytes>)> =
            Vec::with_capacity(4 + self.user_properties.len());
        let text = |s: &str| Some(Bytes::copy_from_slice(s.as_bytes()));
        h.push((QOS.into(), text(&qos_number(self.qos).to_string())));
        if self.retain {
            h.push((RETAIN.into(), text("1")));
        }
        if let Some(c) = &self.client {
            h.push((CLIENT.into(), text(c)));
        }
        if let Some(e) = self.expiry_at {
            h.push((EXPIRY_AT.into(), text(&e.to_string())));
        }
        if let Some(v) = &self.content_type {
            h.push((CONTENT_TYPE.into(), text(v)));
        }
        if let Some(v) = &self.response_topic {
            h.push((RESPONSE_TOPIC.into(), text(v)));
        }
        if let Some(v) = &self.correlation_data {
            h.push((CORRELATION_DATA.into(), Some(v.clone())));
        }
        if let Some(v) = self.payload_format {
            h.push((PAYLOAD_FORMAT.into(), text(&v.to_string())));
        }
        // A user property may not pose as one of MQTT's own (it would change how the
        // message is delivered): those are left out.
        for (k, v) in &self.user_properties {
            if !k.starts_with("mqtt.") {
                h.push((k.clone(), text(v)));
            }
        }
        h
    }

    /// A record's message, delivered under `name`: the `mqtt.*` headers read back, the
    /// others user properties (a header that is not UTF-8, or null, is left out: MQTT's
    /// user properties are strings).
    pub fn of_record(
        name: String,
        value: Option<Bytes>,
        headers: &[(String, Option<Bytes>)],
    ) -> Message {
        let mut m = Message {
            name,
            payload: value.unwrap_or_default(),
            qos: QoS::ExactlyOnce,
            retain: false,
            client: None,
            expiry_at: None,
            content_type: None,
            response_topic: None,
            correlation_data: None,
            payload_format: None,
            user_properties: Vec::new(),
        };
        for (k, v) in headers {
            // MQTT's strings and binary data are at most 65535 bytes: longer headers (a
            // Kafka producer's) are not delivered.
            if k.len() > usize::from(u16::MAX)
                || v.as_ref().is_some_and(|v| v.len() > usize::from(u16::MAX))
            {
                continue;
            }
            let text = v.as_ref().and_then(|v| std::str::from_utf8(v).ok());
            match (k.as_str(), text) {
                (QOS, Some("0")) => m.qos = QoS::AtMostOnce,
                (QOS, Some("1")) => m.qos = QoS::AtLeastOnce,
                (QOS, _) => m.qos = QoS::ExactlyOnce,
                (RETAIN, t) => m.retain = t == Some("1"),
                (CLIENT, t) => m.client = t.map(str::to_owned),
                (EXPIRY_AT, t) => m.expiry_at = t.and_then(|t| t.parse().ok()),
                (CONTENT_TYPE, t) => m.content_type = t.map(str::to_owned),
                (RESPONSE_TOPIC, t) => m.response_topic = t.map(str::to_owned),
                (CORRELATION_DATA, _) => m.correlation_data = v.clone(),
                (PAYLOAD_FORMAT, t) => m.payload_format = t.and_then(|t| t.parse().ok()),
                (_, Some(t)) => m.user_properties.push((k.clone(), t.to_owned())),
                (_, None) => {}
            }
        }
        m
    }

    /// Whether it expired by `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expiry_at.is_some_and(|e| e <= now_ms)
    }

    /// The PUBLISH delivering it at `qos` with `retain` set as given, at `now_ms` (the
    /// message expiry interval is what is left of it); packet id 0 (set by the
    /// session's window for QoS 1 and 2).
    pub fn publish(
        &self,
        qos: QoS,
        retain: bool,
        subscription_ids: Vec<usize>,
        now_ms: i64,
    ) -> Publish {
        let properties = PublishProperties {
            payload_format_indicator: self.payload_format,
            message_expiry_interval: self
                .expiry_at
                .map(|e| ((e - now_ms).max(1000) / 1000).min(i64::from(u32::MAX)) as u32),
            topic_alias: None,
            response_topic: self.response_topic.clone(),
            correlation_data: self.correlation_data.clone(),
            user_properties: self.user_properties.clone(),
            subscription_identifiers: subscription_ids,
            content_type: self.content_type.clone(),
        };
        let empty = properties == PublishProperties::default();
        Publish {
            dup: false,
            qos,
            retain,
            topic: Bytes::copy_from_slice(self.name.as_bytes()),
            pkid: 0,
            payload: self.payload.clone(),
            properties: (!empty).then_some(properties),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publish_round_trips_through_a_record() {
        let mut p = Publish::new("s/r1", QoS::AtLeastOnce, "21.5", None);
        p.retain = true;
        p.properties = Some(PublishProperties {
            message_expiry_interval: Some(60),
            content_type: Some("text/plain".into()),
            response_topic: Some("replies/x".into()),
            correlation_data: Some(Bytes::from_static(b"\x00\x01")),
            user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            payload_format_indicator: Some(1),
            ..Default::default()
        });
        let m = Message::of_publish("s/r1".into(), &p, "dev-1", 1_000_000);
        let back = Message::of_record("s/r1".into(), Some(m.payload.clone()), &m.headers());
        assert_eq!(back, m);
        assert_eq!(m.expiry_at, Some(1_060_000));
        assert!(!m.expired(1_059_999) && m.expired(1_060_000));
        let out = back.publish(QoS::AtLeastOnce, false, vec![4], 1_030_000);
        let props = out.properties.unwrap();
        assert_eq!(props.message_expiry_interval, Some(30));
        assert_eq!(props.user_properties.len(), 2);
        assert_eq!(props.subscription_identifiers, vec![4]);
        assert_eq!(&out.topic[..], b"s/r1");
    }

    #[test]
    fn a_record_from_elsewhere_is_qos2_with_its_headers_as_user_properties() {
        let headers = vec![
            ("trace".to_owned(), Some(Bytes::from_static(b"t1"))),
            ("bin".to_owned(), Some(Bytes::from_static(b"\xff"))),
            ("null".to_owned(), None),
        ];
        let m = Message::of_record("orders".into(), None, &headers);
        assert_eq!(m.qos, QoS::ExactlyOnce);
        assert!(!m.retain && m.payload.is_empty());
        assert_eq!(
            m.user_properties,
            vec![("trace".to_owned(), "t1".to_owned())]
        );
        assert!(
            m.publish(QoS::AtMostOnce, false, vec![], 0)
                .properties
                .is_some()
        );
        let plain = Message::of_record("o".into(), None, &[]);
        assert!(
            plain
                .publish(QoS::AtMostOnce, false, vec![], 0)
                .properties
                .is_none()
        );
    }
}
