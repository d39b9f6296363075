//! `record::parse` reads whatever a disk hands back after a crash: it must never panic,
//! must accept only bytes whose checksum matches, and a record it accepts must re-encode
//! to the same bytes; a batch's prefixes (producer, origin) split without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meridian_proto::record::{self, Parsed};

fuzz_target!(|data: &[u8]| {
    if let Parsed::Record(h) = record::parse(data) {
        let len = h.len as usize;
        assert!(len <= data.len() && len >= record::HEADER_LEN);
        let mut again = Vec::new();
        record::encode(&mut again, &h, &data[record::HEADER_LEN..len]);
        // Reserved bytes are not part of the header struct; everything else must match.
        assert_eq!(&again[12..], &data[12..len]);
        if h.kind == record::RecordKind::Batch {
            let payload = bytes::Bytes::copy_from_slice(&data[record::HEADER_LEN..len]);
            if let Ok(split) = record::split_batch(h.flags, &payload) {
                assert!(split.batch.len() <= payload.len());
                assert_eq!(
                    split.producer.is_some(),
                    h.flags & record::FLAG_PRODUCER != 0
                );
                if h.flags & record::FLAG_CONTROL != 0 {
                    let _ = record::TxnMarker::decode(&split.batch);
                }
            }
        }
    }
    let _ = record::decode_offset_commit(&bytes::Bytes::copy_from_slice(data));
});
