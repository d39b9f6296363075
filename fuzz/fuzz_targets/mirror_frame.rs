//! `Frame::decode` (the mirror link, bytes from another region) and `Origin::split` (a
//! mirrored record's prefix) must never panic, never take more bytes than they were given,
//! and re-encode what they accept to the same bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use meridian_proto::mirror::Frame;
use meridian_proto::origin::Origin;

fuzz_target!(|data: &[u8]| {
    let buf = Bytes::copy_from_slice(data);
    if let Ok(Some((frame, used))) = Frame::decode(&buf) {
        assert!(used <= buf.len());
        let mut again = Vec::new();
        frame.encode(&mut again);
        assert_eq!(&again[..], &buf[..used]);
    }
    if let Ok((origin, rest)) = Origin::split(&buf) {
        let mut again = Vec::new();
        origin.encode(&mut again);
        again.extend_from_slice(&rest);
        assert_eq!(&again[..], data);
    }
});
