//! The one partitioner: the partition a keyed message goes to when its producer names none.
//!
//! It is Apache Kafka's, the reference every Kafka client can match: the Java client's
//! default (`BuiltInPartitioner.partitionForKey`) puts a key on
//! `toPositive(murmur2(key)) % partitions`. The Rust SDK, and the `meridian` command through
//! it, use [`for_key`], so a key lands on the same partition whether it is sent over the
//! native API or by a Kafka client. librdkafka-based clients (confluent-kafka, kcat, ...)
//! default to `consistent_random` (CRC32) instead: they match only when configured with
//! `partitioner=murmur2_random`, as they must to agree with Java clients on Apache Kafka.
//! The broker itself never picks a partition: a native produce names one, and so does every
//! Kafka produce.

use std::num::NonZeroU32;

/// Kafka's 32-bit murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), bit for bit:
/// seed `0x9747b28c`, little-endian 4-byte blocks, the tail folded in, Java's `int`
/// wrapping arithmetic.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Java takes the length as an int; a key of 2 GiB or more is not a key anyone sends.
    let mut h = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of `key` among `partitions`: `toPositive(murmur2(key)) % partitions`, with
/// Kafka's `toPositive` (the sign bit cleared, not the absolute value).
pub fn for_key(key: &[u8], partitions: NonZeroU32) -> u32 {
    (murmur2(key) as u32 & 0x7fff_ffff) % partitions.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Apache Kafka's `UtilsTest.testMurmur2` vectors, and the empty key.
    #[test]
    fn murmur2_matches_kafkas_test_vectors() {
        for (key, hash) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"", 275_646_681),
        ] {
            assert_eq!(murmur2(key), hash, "{}", String::from_utf8_lossy(key));
        }
    }

    /// `toPositive` clears the sign bit (it is not `abs`), then the remainder.
    #[test]
    fn partition_is_the_positive_hash_modulo_the_count() {
        let n = |n| NonZeroU32::new(n).unwrap();
        // -790332482 & 0x7fffffff = 1357151166.
        assert_eq!(for_key(b"foobar", n(10)), 1_357_151_166 % 10);
        assert_eq!(for_key(b"foobar", n(1)), 0);
        // -973932308 & 0x7fffffff = 1173551340 (abs would give 973932308: 8, not 0, of 12).
        assert_eq!(for_key(b"21", n(12)), 1_173_551_340 % 12);
        for key in [&b""[..], b"a", b"ab", b"abc", b"abcd", b"abcde"] {
            assert!(for_key(key, n(7)) < 7);
        }
    }
}
