//! What a Kafka client sends, decoded as the broker's Kafka listener decodes it: a request
//! frame (header and body), a produce's record batches, and a group member's assignment.
//! Any bytes give a request or an error, never a panic or an abort.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use meridian_proto::kafka::{decode_assignment, decode_records, decode_request};

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(Bytes::copy_from_slice(data));
    let _ = decode_records(Some(Bytes::copy_from_slice(data)));
    let _ = decode_assignment(data);
});
