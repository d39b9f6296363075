//! What an MQTT client sends, decoded as the broker's MQTT listener decodes it: the
//! CONNECT's protocol level, then packets of MQTT 3.1.1 and of MQTT 5, one after another
//! off one buffer. Any bytes give packets, "need more" or an error, never a panic.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use meridian_proto::mqtt::{Version, connect_version, decode};

fuzz_target!(|data: &[u8]| {
    let _ = connect_version(data);
    for version in [Version::V311, Version::V5] {
        let mut buf = BytesMut::from(data);
        while let Ok(Some(_)) = decode(version, &mut buf, 1 << 16) {}
    }
});
