//! `Message::decode` and `decode_batch` must never panic, never claim more bytes than they
//! were given, and re-encode whatever they accept to the same bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use meridian_proto::batch::{Message, decode_batch, encode_batch};

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    if let Ok((message, used)) = Message::decode(&buf) {
        assert!(used <= buf.len());
        let mut again = Vec::new();
        message.encode(&mut again);
        assert_eq!(&again[..], &buf[..used]);
    }
    let count = data.first().map_or(0, |&b| usize::from(b % 8));
    if let Ok(messages) = decode_batch(&buf, count) {
        assert_eq!(encode_batch(&messages), data);
    }
});
