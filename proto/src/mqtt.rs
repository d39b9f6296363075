//! MQTT 3.1.1 and 5 packets, decoded and encoded by `rumqttc`'s codecs (CRATES.md: the
//! one kept crate with both, server side too) behind one model: MQTT 5's packets
//! ([`packet`]), which hold everything 3.1.1's do. A 3.1.1 connection's packets are
//! raised to it on decode and lowered on encode, so the broker speaks one model.
//!
//! Pure functions over bytes, fuzzed (`fuzz/fuzz_targets/mqtt_packet.rs`): any input is
//! a packet, "need more bytes", or an error — never a panic.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes as v5bytes;
pub use rumqttc::v5::mqttbytes::QoS;
pub use rumqttc::v5::mqttbytes::v5 as packet;

use packet::Packet;

/// The protocol a connection speaks, fixed by its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5 (protocol level 5).
    V5,
}

/// Why bytes are no packet.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The first packet is no CONNECT (MQTT 3.1.4-1: the connection is closed).
    #[error("the first packet must be CONNECT, not packet type {0}")]
    NotConnect(u8),
    /// A CONNECT of a protocol level this broker does not speak (3 is MQTT 3.1).
    #[error("protocol level {0} is not served: use MQTT 3.1.1 (4) or 5")]
    Level(u8),
    /// Larger than the limit, refused before its bytes are buffered.
    #[error("a packet of {size} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Its remaining length.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// Not a packet of the protocol.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

fn malformed(e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Malformed(e.to_string())
}

/// The protocol level of a CONNECT at the start of `buf`: `Ok(None)` until enough bytes
/// are there. CONNECT: type 1 in the first byte's high nibble, the remaining length
/// (1–4 bytes), then the protocol name (a 2-byte length and "MQTT", or "MQIsdp" for
/// 3.1) and the level byte.
pub fn connect_version(buf: &[u8]) -> Result<Option<Version>, DecodeError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first >> 4 != 1 {
        return Err(DecodeError::NotConnect(first >> 4));
    }
    let mut at = 1;
    loop {
        match buf.get(at) {
            None => return Ok(None),
            Some(b) if b & 0x80 != 0 => {
                at += 1;
                if at > 4 {
                    return Err(malformed("the remaining length has more than 4 bytes"));
                }
            }
            Some(_) => break,
        }
    }
    let name = at + 1;
    let (Some(&hi), Some(&lo)) = (buf.get(name), buf.get(name + 1)) else {
        return Ok(None);
    };
    // MQTT lengths are big-endian.
    let len = (usize::from(hi) << 8) | usize::from(lo);
    if len > 6 {
        return Err(malformed("the protocol name is not MQTT"));
    }
    let Some(level) = buf.get(name + 2 + len) else {
        return Ok(None);
    };
    match (&buf[name + 2..name + 2 + len], *level) {
        (b"MQTT", 4) => Ok(Some(Version::V311)),
        (b"MQTT", 5) => Ok(Some(Version::V5)),
        (b"MQTT" | b"MQIsdp", level) => Err(DecodeError::Level(level)),
        _ => Err(malformed("the protocol name is not MQTT")),
    }
}

/// Takes one packet off the front of `buf`: `Ok(None)` until all its bytes are there.
/// A packet over `max` bytes is refused from its fixed header alone.
///
/// Around the codec's known gaps (read in its source): MQTT 5's DISCONNECT without
/// properties (`E0 00`, `E0 01 reason`) and AUTH are parsed here; a frame the codec took
/// off the buffer and then called short is malformed, not "need more".
pub fn decode(
    version: Version,
    buf: &mut BytesMut,
    max: u32,
) -> Result<Option<Packet>, DecodeError> {
    if version == Version::V5 {
        match (buf.first(), buf.get(1)) {
            (Some(0xE0), Some(0)) => {
                let _ = buf.split_to(2);
                return Ok(Some(Packet::Disconnect(packet::Disconnect::new(
                    packet::DisconnectReasonCode::NormalDisconnection,
                ))));
            }
            (Some(0xE0), Some(1)) => {
                let Some(&code) = buf.get(2) else {
                    return Ok(None);
                };
                let _ = buf.split_to(3);
                let reason = packet::DisconnectReasonCode::try_from(code)
                    .map_err(|_| malformed(format!("DISCONNECT reason {code:#x}")))?;
                return Ok(Some(Packet::Disconnect(packet::Disconnect::new(reason))));
            }
            (Some(b), _) if b >> 4 == 15 => {
                return Err(DecodeError::Malformed(
                    "AUTH: this broker offers no enhanced authentication".into(),
                ));
            }
            _ => {}
        }
    }
    let before = buf.len();
    let short = |buf: &BytesMut| {
        if buf.len() < before {
            Err(malformed("the packet ends inside a field"))
        } else {
            Ok(None)
        }
    };
    match version {
        Version::V5 => match Packet::read(buf, Some(max)) {
            Ok(p) => Ok(Some(p)),
            Err(v5bytes::Error::InsufficientBytes(_)) => short(buf),
            Err(v5bytes::Error::PayloadSizeLimitExceeded { pkt_size, max }) => {
                Err(DecodeError::TooLarge {
                    size: pkt_size,
                    max,
                })
            }
            Err(e) => Err(malformed(e)),
        },
        Version::V311 => match v4::Packet::read(buf, max as usize) {
            Ok(p) => Ok(Some(raise(p))),
            Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => short(buf),
            Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
                Err(DecodeError::TooLarge { size, max })
            }
            Err(e) => Err(malformed(e)),
        },
    }
}

/// Appends `packet` to `out` in `version`'s encoding (nothing on an error). A packet
/// 3.1.1 has no form for (a server's DISCONNECT, AUTH) writes nothing: the caller then
/// closes the connection.
pub fn encode(version: Version, packet: &Packet, out: &mut BytesMut) -> Result<(), String> {
    let before = out.len();
    let written = match version {
        Version::V5 => match packet {
            Packet::Disconnect(d) => {
                encode_disconnect(d, out);
                Ok(())
            }
            Packet::ConnAck(a) => {
                // The codec cannot write 3.1.1's return codes in MQTT 5 (it panics): their
                // MQTT 5 reasons.
                let mut a = a.clone();
                a.code = match a.code {
                    packet::ConnectReturnCode::RefusedProtocolVersion => {
                        packet::ConnectReturnCode::UnsupportedProtocolVersion
                    }
                    packet::ConnectReturnCode::BadClientId => {
                        packet::ConnectReturnCode::ClientIdentifierNotValid
                    }
                    packet::ConnectReturnCode::ServiceUnavailable => {
                        packet::ConnectReturnCode::ServerUnavailable
                    }
                    c => c,
                };
                Packet::ConnAck(a)
                    .write(out, None)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            p => p.write(out, None).map(drop).map_err(|e| e.to_string()),
        },
        Version::V311 => match lower(packet) {
            Some(p) => p
                .write(out, usize::MAX)
                .map(drop)
                .map_err(|e| e.to_string()),
            None => Ok(()),
        },
    };
    if written.is_err() {
        out.truncate(before);
    }
    written
}

/// A server's MQTT 5 DISCONNECT: its reason and, if any, its reason string (the codec's
/// own encoder miscounts both).
fn encode_disconnect(d: &packet::Disconnect, out: &mut BytesMut) {
    use bytes::BufMut;
    let reason = d
        .properties
        .as_ref()
        .and_then(|p| p.reason_string.as_deref())
        .map(|r| &r.as_bytes()[..r.len().min(1024)])
        .unwrap_or_default();
    let props_len = if reason.is_empty() {
        0
    } else {
        3 + reason.len()
    };
    let remaining = 1 + varint_len(props_len) + props_len;
    out.put_u8(0xE0);
    put_varint(out, remaining);
    out.put_u8(d.reason_code as u8);
    put_varint(out, props_len);
    if !reason.is_empty() {
        out.put_u8(0x1F);
        out.put_u16(reason.len() as u16);
        out.put_slice(reason);
    }
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn put_varint(out: &mut BytesMut, mut n: usize) {
    use bytes::BufMut;
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if n == 0 {
            break;
        }
    }
}

fn qos_up(q: rumqttc::mqttbytes::QoS) -> QoS {
    match q {
        rumqttc::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

fn qos_down(q: QoS) -> rumqttc::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::mqttbytes::QoS::ExactlyOnce,
    }
}

/// A 3.1.1 packet in MQTT 5's model (no properties, success reasons).
fn raise(p: v4::Packet) -> Packet {
    use packet::*;
    match p {
        v4::Packet::Connect(c) => Packet::Connect(
            Connect {
                keep_alive: c.keep_alive,
                client_id: c.client_id,
                clean_start: c.clean_session,
                properties: None,
            },
            c.last_will.map(|w| LastWill {
                topic: Bytes::from(w.topic.into_bytes()),
                message: w.message,
                qos: qos_up(w.qos),
                retain: w.retain,
                properties: None,
            }),
            c.login.map(|l| Login {
                username: l.username,
                password: l.password,
            }),
        ),
        v4::Packet::ConnAck(a) => Packet::ConnAck(ConnAck {
            session_present: a.session_present,
            code: ConnectReturnCode::Success,
            properties: None,
        }),
        v4::Packet::Publish(p) => Packet::Publish(Publish {
            dup: p.dup,
            qos: qos_up(p.qos),
            retain: p.retain,
            topic: Bytes::from(p.topic.into_bytes()),
            pkid: p.pkid,
            payload: p.payload,
            properties: None,
        }),
        v4::Packet::PubAck(a) => Packet::PubAck(PubAck::new(a.pkid, None)),
        v4::Packet::PubRec(a) => Packet::PubRec(PubRec::new(a.pkid, None)),
        v4::Packet::PubRel(a) => Packet::PubRel(PubRel::new(a.pkid, None)),
        v4::Packet::PubComp(a) => Packet::PubComp(PubComp::new(a.pkid, None)),
        v4::Packet::Subscribe(s) => Packet::Subscribe(Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| Filter {
                    path: f.path,
                    qos: qos_up(f.qos),
                    nolocal: false,
                    preserve_retain: false,
                    retain_forward_rule: RetainForwardRule::OnEverySubscribe,
                })
                .collect(),
            properties: None,
        }),
        v4::Packet::SubAck(a) => Packet::SubAck(SubAck {
            pkid: a.pkid,
            return_codes: Vec::new(),
            properties: None,
        }),
        v4::Packet::Unsubscribe(u) => Packet::Unsubscribe(Unsubscribe {
            pkid: u.pkid,
            filters: u.topics,
            properties: None,
        }),
        v4::Packet::UnsubAck(a) => Packet::UnsubAck(UnsubAck {
            pkid: a.pkid,
            reasons: Vec::new(),
            properties: None,
        }),
        v4::Packet::PingReq => Packet::PingReq(PingReq),
        v4::Packet::PingResp => Packet::PingResp(PingResp),
        v4::Packet::Disconnect => {
            Packet::Disconnect(Disconnect::new(DisconnectReasonCode::NormalDisconnection))
        }
    }
}

/// A server's packet in 3.1.1's form: reasons become 3.1.1's return codes, properties
/// are dropped; `None` for what 3.1.1 has no packet for.
fn lower(p: &Packet) -> Option<v4::Packet> {
    use packet::*;
    Some(match p {
        Packet::ConnAck(a) => v4::Packet::ConnAck(v4::ConnAck {
            session_present: a.session_present,
            code: match a.code {
                ConnectReturnCode::Success => v4::ConnectReturnCode::Success,
                ConnectReturnCode::UnsupportedProtocolVersion
                | ConnectReturnCode::RefusedProtocolVersion => {
                    v4::ConnectReturnCode::RefusedProtocolVersion
                }
                ConnectReturnCode::ClientIdentifierNotValid | ConnectReturnCode::BadClientId => {
                    v4::ConnectReturnCode::BadClientId
                }
                ConnectReturnCode::BadUserNamePassword => {
                    v4::ConnectReturnCode::BadUserNamePassword
                }
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::Banned => {
                    v4::ConnectReturnCode::NotAuthorized
                }
                _ => v4::ConnectReturnCode::ServiceUnavailable,
            },
        }),
        Packet::Publish(p) => v4::Packet::Publish(v4::Publish {
            dup: p.dup,
            qos: qos_down(p.qos),
            retain: p.retain,
            topic: String::from_utf8_lossy(&p.topic).into_owned(),
            pkid: p.pkid,
            payload: p.payload.clone(),
        }),
        Packet::PubAck(a) => v4::Packet::PubAck(v4::PubAck { pkid: a.pkid }),
        Packet::PubRec(a) => v4::Packet::PubRec(v4::PubRec { pkid: a.pkid }),
        Packet::PubRel(a) => v4::Packet::PubRel(v4::PubRel { pkid: a.pkid }),
        Packet::PubComp(a) => v4::Packet::PubComp(v4::PubComp { pkid: a.pkid }),
        Packet::SubAck(a) => v4::Packet::SubAck(v4::SubAck {
            pkid: a.pkid,
            return_codes: a
                .return_codes
                .iter()
                .map(|c| match c {
                    SubscribeReasonCode::Success(q) => {
                        v4::SubscribeReasonCode::Success(qos_down(*q))
                    }
                    _ => v4::SubscribeReasonCode::Failure,
                })
                .collect(),
        }),
        Packet::UnsubAck(a) => v4::Packet::UnsubAck(v4::UnsubAck { pkid: a.pkid }),
        Packet::PingResp(_) => v4::Packet::PingResp,
        Packet::PingReq(_) => v4::Packet::PingReq,
        Packet::Connect(..)
        | Packet::Subscribe(_)
        | Packet::Unsubscribe(_)
        | Packet::Disconnect(_)
        | Packet::Auth(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use packet::*;

    fn connect_bytes(level: u8) -> BytesMut {
        // CONNECT, "MQTT", level, clean, keep-alive 60, client id "c".
        let mut b = BytesMut::from(&[0x10u8, 0, 0, 4, b'M', b'Q', b'T', b'T', level, 2, 0, 60][..]);
        if level == 5 {
            b.extend_from_slice(&[0]);
        }
        b.extend_from_slice(&[0, 1, b'c']);
        b[1] = (b.len() - 2) as u8;
        b
    }

    #[test]
    fn the_connect_names_the_version_and_both_decode_to_one_model() {
        for (level, version) in [(4, Version::V311), (5, Version::V5)] {
            let mut b = connect_bytes(level);
            for n in 0..b.len().min(9) {
                assert!(connect_version(&b[..n]).unwrap().is_none(), "{n}");
            }
            assert_eq!(connect_version(&b).unwrap(), Some(version));
            let mut half = BytesMut::from(&b[..5]);
            assert!(decode(version, &mut half, 1024).unwrap().is_none());
            match decode(version, &mut b, 1024).unwrap() {
                Some(Packet::Connect(c, None, None)) => {
                    assert_eq!(
                        (c.client_id.as_str(), c.keep_alive, c.clean_start),
                        ("c", 60, true)
                    );
                }
                other => panic!("{other:?}"),
            }
            assert!(b.is_empty());
        }
        assert!(matches!(
            connect_version(&connect_bytes(3)),
            Err(DecodeError::Level(3))
        ));
        assert!(matches!(
            connect_version(&[0x30, 0]),
            Err(DecodeError::NotConnect(3))
        ));
    }

    #[test]
    fn a_packet_over_the_limit_is_refused_from_its_header() {
        // PUBLISH with a remaining length of 2 MiB, nothing more sent.
        let mut b = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x80, 0x01][..]);
        for v in [Version::V311, Version::V5] {
            assert!(matches!(
                decode(v, &mut b.clone(), 1 << 20),
                Err(DecodeError::TooLarge { .. })
            ));
        }
        b.clear();
    }

    #[test]
    fn mqtt5_disconnects_and_short_frames_are_read_right() {
        let mut b = BytesMut::from(&[0xE0u8, 0, 0xE0, 1, 0x04, 0xE0, 2, 0x8E, 0][..]);
        for want in [
            DisconnectReasonCode::NormalDisconnection,
            DisconnectReasonCode::DisconnectWithWillMessage,
            DisconnectReasonCode::SessionTakenOver,
        ] {
            match decode(Version::V5, &mut b, 1024).unwrap() {
                Some(Packet::Disconnect(d)) => assert_eq!(d.reason_code, want),
                other => panic!("{other:?}"),
            }
        }
        // A PUBLISH whose frame ends where its properties' length should be.
        let mut b = BytesMut::from(&[0x30u8, 3, 0, 1, b'a'][..]);
        assert!(matches!(
            decode(Version::V5, &mut b, 1024),
            Err(DecodeError::Malformed(_))
        ));
        let mut b = BytesMut::from(&[0xF0u8, 0][..]);
        assert!(decode(Version::V5, &mut b, 1024).is_err(), "AUTH");
        // Written with its reason string, and read back.
        let mut out = BytesMut::new();
        let d = Disconnect {
            reason_code: DisconnectReasonCode::KeepAliveTimeout,
            properties: Some(DisconnectProperties {
                session_expiry_interval: None,
                reason_string: Some("idle".into()),
                user_properties: Vec::new(),
                server_reference: None,
            }),
        };
        encode(Version::V5, &Packet::Disconnect(d.clone()), &mut out).unwrap();
        assert_eq!(
            &out[..],
            &[0xE0, 9, 0x8D, 7, 0x1F, 0, 4, b'i', b'd', b'l', b'e']
        );
        assert_eq!(
            decode(Version::V5, &mut out, 1024).unwrap(),
            Some(Packet::Disconnect(d))
        );
        // 3.1.1 return codes in an MQTT 5 CONNACK are written as MQTT 5 reasons.
        let refuse = Packet::ConnAck(ConnAck {
            session_present: false,
            code: ConnectReturnCode::BadClientId,
            properties: None,
        });
        encode(Version::V5, &refuse, &mut out).unwrap();
        assert_eq!(out[3], 0x85);
    }

    #[test]
    fn a_server_packet_is_lowered_for_3_1_1() {
        let mut out = BytesMut::new();
        let ack = Packet::SubAck(SubAck {
            pkid: 7,
            return_codes: vec![
                SubscribeReasonCode::Success(QoS::AtLeastOnce),
                SubscribeReasonCode::TopicFilterInvalid,
            ],
            properties: None,
        });
        encode(Version::V311, &ack, &mut out).unwrap();
        assert_eq!(&out[..], &[0x90, 4, 0, 7, 1, 0x80]);
        out.clear();
        let mut p = Publish::new("a/b", QoS::AtLeastOnce, "hi", None);
        p.pkid = 3;
        let p = Packet::Publish(p);
        encode(Version::V311, &p, &mut out).unwrap();
        let back = v4::Packet::read(&mut out, 1024).unwrap();
        assert!(
            matches!(back, v4::Packet::Publish(p) if p.topic == "a/b" && &p.payload[..] == b"hi")
        );
        out.clear();
        let d = Packet::Disconnect(Disconnect::new(DisconnectReasonCode::SessionTakenOver));
        encode(Version::V311, &d, &mut out).unwrap();
        assert!(out.is_empty());
    }
}
