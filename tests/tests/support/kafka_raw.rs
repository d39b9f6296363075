//! A raw Kafka connection for the tests that speak the protocol directly (the codecs are
//! `kafka-protocol`'s client side): shared by the test files that include it.

use std::io::Write;

/// One request on a raw Kafka connection (the codecs are `kafka-protocol`'s); the response
/// body after its header.
pub(crate) fn kafka_call<R: kafka_protocol::protocol::Encodable>(
    stream: &mut std::net::TcpStream,
    key: kafka_protocol::messages::ApiKey,
    version: i16,
    request: &R,
) -> bytes::Bytes {
    use bytes::{Buf, BufMut};
    use kafka_protocol::messages::{RequestHeader, ResponseHeader};
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
    use std::io::Read;
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = 7;
    header.client_id = Some(StrBytes::from_static_str("raw-test"));
    let mut body = bytes::BytesMut::new();
    header
        .encode(&mut body, key.request_header_version(version))
        .unwrap();
    request.encode(&mut body, version).unwrap();
    let mut frame = bytes::BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).unwrap();
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).unwrap();
    let mut answer = vec![0u8; (&len[..]).get_i32() as usize];
    stream.read_exact(&mut answer).unwrap();
    let mut answer = bytes::Bytes::from(answer);
    let header = ResponseHeader::decode(&mut answer, key.response_header_version(version)).unwrap();
    assert_eq!(header.correlation_id, 7);
    answer
}
