//! The packet-id state machines of one MQTT session, without I/O: what the broker has sent
//! at QoS 1 and 2 and awaits acknowledgements for ([`Outbound`]), and what it received at
//! QoS 1 and 2 and has not finished acknowledging ([`Inbound`]). Each takes packets and
//! answers with what to do; the connection (`connection.rs`) does it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use meridian_proto::mqtt::QoS;
use meridian_proto::mqtt::packet::Publish;

/// Where a message sent at QoS 1 or 2 is in its handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sent {
    /// QoS 1, awaiting PUBACK; QoS 2, awaiting PUBREC. The PUBLISH, to resend.
    Published(Box<Publish>),
    /// QoS 2: PUBREC received, PUBREL sent, awaiting PUBCOMP.
    Released,
}

/// Messages sent to the client at QoS 1 and 2 and not yet acknowledged, at most `window`
/// (the client's receive maximum): MQTT's flow control. Kept across connections of a
/// session, so a resumed session resends them (MQTT 4.4).
#[derive(Debug)]
pub struct Outbound {
    window: usize,
    next: u16,
    in_flight: BTreeMap<u16, Sent>,
}

/// What an acknowledgement from the client asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// Done: the slot is free.
    Done,
    /// A PUBREC: send PUBREL for it.
    Release(u16),
    /// An id not in flight (or in the wrong state): ignored, or, for a PUBREL-less
    /// PUBCOMP, answered as MQTT 5 says (packet identifier not found).
    Unknown,
}

impl Outbound {
    /// With room for `window` messages in flight (at least one).
    pub fn new(window: u16) -> Outbound {
        Outbound {
            window: usize::from(window.max(1)),
            next: 1,
            in_flight: BTreeMap::new(),
        }
    }

    /// A new connection of the session: its client's receive maximum.
    pub fn set_window(&mut self, window: u16) {
        self.window = usize::from(window.max(1));
    }

    /// Whether one more QoS 1 or 2 message may be sent now.
    pub fn has_room(&self) -> bool {
        self.in_flight.len() < self.window
    }

    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Gives `publish` (QoS 1 or 2) a free packet id and records it in flight; `None`
    /// when the window is full.
    pub fn send(&mut self, mut publish: Publish) -> Option<Publish> {
        if !self.has_room() || publish.qos == QoS::AtMostOnce {
            return None;
        }
        // The window is below 65535, so a free id exists.
        while self.next == 0 || self.in_flight.contains_key(&self.next) {
            self.next = self.next.wrapping_add(1);
        }
        publish.pkid = self.next;
        self.next = self.next.wrapping_add(1);
        self.in_flight
            .insert(publish.pkid, Sent::Published(Box::new(publish.clone())));
        Some(publish)
    }

    /// A PUBACK (QoS 1).
    pub fn puback(&mut self, pkid: u16) -> AckOutcome {
        match self.in_flight.get(&pkid) {
            Some(Sent::Published(p)) if p.qos == QoS::AtLeastOnce => {
                self.in_flight.remove(&pkid);
                AckOutcome::Done
            }
            _ => AckOutcome::Unknown,
        }
    }

    /// A PUBREC (QoS 2): answered with PUBREL, also when it repeats. A PUBREC with an
    /// error reason (MQTT 5) ends the exchange.
    pub fn pubrec(&mut self, pkid: u16, failed: bool) -> AckOutcome {
        match self.in_flight.get(&pkid) {
            Some(Sent::Published(p)) if p.qos == QoS::ExactlyOnce => {
                if failed {
                    self.in_flight.remove(&pkid);
                    return AckOutcome::Done;
                }
                self.in_flight.insert(pkid, Sent::Released);
                AckOutcome::Release(pkid)
            }
            Some(Sent::Released) => AckOutcome::Release(pkid),
            _ => AckOutcome::Unknown,
        }
    }

    /// A PUBCOMP (QoS 2).
    pub fn pubcomp(&mut self, pkid: u16) -> AckOutcome {
        match self.in_flight.get(&pkid) {
            Some(Sent::Released) => {
                self.in_flight.remove(&pkid);
                AckOutcome::Done
            }
            _ => AckOutcome::Unknown,
        }
    }

    /// What a resumed session sends again, in order: each unacknowledged PUBLISH with its
    /// DUP flag set, and PUBREL for each released one (MQTT 4.4).
    pub fn resend(&self) -> Vec<Resend> {
        self.in_flight
            .iter()
            .map(|(&pkid, s)| match s {
                Sent::Published(p) => {
                    let mut p = p.clone();
                    p.dup = true;
                    Resend::Publish(p)
                }
                Sent::Released => Resend::Release(pkid),
            })
            .collect()
    }
}

/// A packet a resumed session sends again.
#[derive(Debug, PartialEq, Eq)]
pub enum Resend {
    /// A PUBLISH with DUP set.
    Publish(Box<Publish>),
    /// A PUBREL.
    Release(u16),
}

/// Why an inbound PUBLISH is refused by the protocol (the connection is then closed with
/// this MQTT 5 reason).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum InboundError {
    /// More QoS 1 and 2 PUBLISHes unacknowledged than the receive maximum granted.
    #[error("more than {0} QoS 1 and 2 messages unacknowledged (the receive maximum)")]
    ReceiveMaximum(u16),
    /// Topic alias 0, above the maximum granted, or unknown with an empty topic.
    #[error("topic alias {0} is not valid here (0, above the maximum granted, or never set)")]
    TopicAlias(u16),
    /// A QoS 1 or 2 PUBLISH with packet id 0.
    #[error("a QoS 1 or 2 PUBLISH needs a packet id other than 0")]
    PacketIdZero,
}

/// What to do with an inbound QoS 2 PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub enum Qos2 {
    /// New: store it, then answer PUBREC.
    Store,
    /// Its id is already received and awaits PUBREL: stored before, answer PUBREC only.
    Duplicate,
}

/// What the client has sent at QoS 1 and 2 that is not acknowledged yet, and its topic
/// aliases. QoS 2 ids awaiting PUBREL are kept across connections of a session (so a
/// resent PUBLISH is not stored twice); the rest is per connection.
#[derive(Debug, Default)]
pub struct Inbound {
    /// QoS 2 ids received, stored (or being stored), awaiting PUBREL.
    awaiting_release: BTreeSet<u16>,
    /// QoS 1 ids whose PUBACK is not sent yet, and QoS 2 ids whose PUBCOMP is not sent
    /// yet: counted against the receive maximum.
    unacknowledged: usize,
    aliases: HashMap<u16, String>,
}

impl Inbound {
    /// A new connection of the session: aliases and counts start over.
    pub fn reconnect(&mut self) {
        self.aliases.clear();
        self.unacknowledged = self.awaiting_release.len();
    }

    /// Resolves a PUBLISH's topic alias (MQTT 5): sets it when the topic is given, reads
    /// it when the topic is empty. `max` is the topic alias maximum granted.
    pub fn topic(
        &mut self,
        topic: String,
        alias: Option<u16>,
        max: u16,
    ) -> Result<String, InboundError> {
        match alias {
            None => Ok(topic),
            Some(a) if a == 0 || a > max => Err(InboundError::TopicAlias(a)),
            Some(a) if topic.is_empty() => self
                .aliases
                .get(&a)
                .cloned()
                .ok_or(InboundError::TopicAlias(a)),
            Some(a) => {
                self.aliases.insert(a, topic.clone());
                Ok(topic)
            }
        }
    }

    /// A QoS 1 or 2 PUBLISH arrives: counted against `receive_maximum`; for QoS 2, whether
    /// it is new.
    pub fn publish(
        &mut self,
        qos: QoS,
        pkid: u16,
        receive_maximum: u16,
    ) -> Result<Option<Qos2>, InboundError> {
        if qos == QoS::AtMostOnce {
            return Ok(None);
        }
        if pkid == 0 {
            return Err(InboundError::PacketIdZero);
        }
        if qos == QoS::ExactlyOnce && self.awaiting_release.contains(&pkid) {
            return Ok(Some(Qos2::Duplicate));
        }
        if self.unacknowledged >= usize::from(receive_maximum) {
            return Err(InboundError::ReceiveMaximum(receive_maximum));
        }
        self.unacknowledged += 1;
        if qos == QoS::ExactlyOnce {
            self.awaiting_release.insert(pkid);
            return Ok(Some(Qos2::Store));
        }
        Ok(None)
    }

    /// The PUBACK of a QoS 1 PUBLISH was sent (or it failed and was answered).
    pub fn acknowledged(&mut self) {
        self.unacknowledged = self.unacknowledged.saturating_sub(1);
    }

    /// Storing a QoS 2 PUBLISH failed: its id is free again (the client may resend it).
    pub fn failed(&mut self, pkid: u16) {
        if self.awaiting_release.remove(&pkid) {
            self.acknowledged();
        }
    }

    /// A PUBREL: the id is released; whether it was known (PUBCOMP's reason in MQTT 5).
    pub fn release(&mut self, pkid: u16) -> bool {
        let known = self.awaiting_release.remove(&pkid);
        if known {
            self.acknowledged();
        }
        known
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(qos: QoS) -> Publish {
        Publish::new("a/b", qos, "x", None)
    }

    #[test]
    fn the_window_bounds_what_is_in_flight_and_ids_are_never_reused_while_in_flight() {
        let mut o = Outbound::new(2);
        let a = o.send(publish(QoS::AtLeastOnce)).unwrap();
        let b = o.send(publish(QoS::ExactlyOnce)).unwrap();
        assert_ne!(a.pkid, b.pkid);
        assert!(
            o.send(publish(QoS::AtLeastOnce)).is_none(),
            "the window is full"
        );
        assert_eq!(o.puback(b.pkid), AckOutcome::Unknown, "a PUBACK for QoS 2");
        assert_eq!(o.puback(a.pkid), AckOutcome::Done);
        assert_eq!(o.puback(a.pkid), AckOutcome::Unknown, "twice");
        assert_eq!(
            o.pubcomp(b.pkid),
            AckOutcome::Unknown,
            "PUBCOMP before PUBREC"
        );
        assert_eq!(o.pubrec(b.pkid, false), AckOutcome::Release(b.pkid));
        assert_eq!(
            o.pubrec(b.pkid, false),
            AckOutcome::Release(b.pkid),
            "repeated"
        );
        assert_eq!(o.resend(), vec![Resend::Release(b.pkid)]);
        assert_eq!(o.pubcomp(b.pkid), AckOutcome::Done);
        assert!(o.is_empty());
        // Ids wrap past 65535 and skip 0 and ids in flight.
        let mut o = Outbound::new(10);
        o.next = u16::MAX;
        let x = o.send(publish(QoS::AtLeastOnce)).unwrap();
        let y = o.send(publish(QoS::AtLeastOnce)).unwrap();
        assert_eq!((x.pkid, y.pkid), (u16::MAX, 1));
        o.next = u16::MAX;
        assert_eq!(o.send(publish(QoS::AtLeastOnce)).unwrap().pkid, 2);
    }

    #[test]
    fn a_resumed_session_resends_with_dup_in_order() {
        let mut o = Outbound::new(5);
        let a = o.send(publish(QoS::AtLeastOnce)).unwrap();
        let b = o.send(publish(QoS::ExactlyOnce)).unwrap();
        o.pubrec(b.pkid, false);
        let c = o.send(publish(QoS::ExactlyOnce)).unwrap();
        let again = o.resend();
        assert_eq!(again.len(), 3);
        assert!(matches!(&again[0], Resend::Publish(p) if p.dup && p.pkid == a.pkid));
        assert_eq!(again[1], Resend::Release(b.pkid));
        assert!(matches!(&again[2], Resend::Publish(p) if p.dup && p.pkid == c.pkid));
        assert_eq!(
            o.pubrec(c.pkid, true),
            AckOutcome::Done,
            "a failed PUBREC ends it"
        );
    }

    #[test]
    fn qos2_is_stored_once_until_released_and_the_receive_maximum_holds() {
        let mut i = Inbound::default();
        assert_eq!(i.publish(QoS::ExactlyOnce, 7, 2), Ok(Some(Qos2::Store)));
        assert_eq!(i.publish(QoS::ExactlyOnce, 7, 2), Ok(Some(Qos2::Duplicate)));
        assert_eq!(i.publish(QoS::AtLeastOnce, 8, 2), Ok(None));
        assert_eq!(
            i.publish(QoS::AtLeastOnce, 9, 2),
            Err(InboundError::ReceiveMaximum(2))
        );
        assert_eq!(
            i.publish(QoS::AtMostOnce, 0, 2),
            Ok(None),
            "QoS 0 is not counted"
        );
        i.acknowledged();
        assert!(i.release(7));
        assert!(!i.release(7), "released twice");
        assert_eq!(
            i.publish(QoS::ExactlyOnce, 7, 2),
            Ok(Some(Qos2::Store)),
            "reused"
        );
        assert_eq!(
            i.publish(QoS::AtLeastOnce, 0, 2),
            Err(InboundError::PacketIdZero)
        );
        // Across a reconnect the QoS 2 id still awaits release.
        i.reconnect();
        assert_eq!(i.publish(QoS::ExactlyOnce, 7, 2), Ok(Some(Qos2::Duplicate)));
        i.failed(7);
        assert_eq!(i.publish(QoS::ExactlyOnce, 7, 2), Ok(Some(Qos2::Store)));
    }

    #[test]
    fn topic_aliases_are_set_read_and_bounded() {
        let mut i = Inbound::default();
        assert_eq!(i.topic("a/b".into(), Some(3), 5), Ok("a/b".into()));
        assert_eq!(i.topic(String::new(), Some(3), 5), Ok("a/b".into()));
        assert_eq!(
            i.topic(String::new(), Some(4), 5),
            Err(InboundError::TopicAlias(4))
        );
        assert_eq!(
            i.topic("x".into(), Some(6), 5),
            Err(InboundError::TopicAlias(6))
        );
        assert_eq!(
            i.topic("x".into(), Some(0), 5),
            Err(InboundError::TopicAlias(0))
        );
        i.reconnect();
        assert_eq!(
            i.topic(String::new(), Some(3), 5),
            Err(InboundError::TopicAlias(3))
        );
    }
}
