//! Provides compression utilities for encoding records.
//!
//! This module has implementations of gzip, Snappy, as well as a noop compression format that
//! allows encoding and decoding records into a [`Record`](crate::records::Record).

use crate::protocol::buf::{ByteBuf, ByteBufMut};
use anyhow::Result;

#[cfg(feature = "gzip")]
mod gzip;
#[cfg(feature = "lz4")]
mod lz4;
mod none;
#[cfg(feature = "snappy")]
mod snappy;
#[cfg(feature = "zstd")]
mod zstd;

#[cfg(feature = "gzip")]
pub use gzip::Gzip;
#[cfg(feature = "lz4")]
pub use lz4::Lz4;
pub use none::None;
#[cfg(feature = "snappy")]
pub use snappy::Snappy;
#[cfg(feature = "zstd")]
pub use zstd::Zstd;

// MERIDIAN PATCH (3): a limit on what a compressed batch may inflate to, checked while
// decompressing, so a small batch declaring or producing gigabytes is refused before they
// are allocated (a decompression bomb). The limit is the caller's, per thread, for the
// duration of a decode: see `with_decompressed_limit`.
thread_local! {
    static DECOMPRESSED_LIMIT: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// Runs `f` (a decode) with decompression refusing to produce more than `limit` bytes per
/// compressed batch: it fails with an error naming the limit instead.
pub fn with_decompressed_limit<R>(limit: usize, f: impl FnOnce() -> R) -> R {
    let before = DECOMPRESSED_LIMIT.with(|l| l.replace(limit));
    let result = f();
    DECOMPRESSED_LIMIT.with(|l| l.set(before));
    result
}

/// The limit in force on this thread.
#[allow(dead_code)]
pub(crate) fn decompressed_limit() -> usize {
    DECOMPRESSED_LIMIT.with(|l| l.get())
}

/// The error of a batch that inflates past the limit.
#[allow(dead_code)]
pub(crate) fn too_large(limit: usize) -> anyhow::Error {
    anyhow::anyhow!("the compressed batch inflates past the {limit}-byte limit")
}

/// Reads `reader` to its end, failing once it yields more than the limit.
#[allow(dead_code)]
pub(crate) fn read_limited(reader: impl std::io::Read, out: &mut Vec<u8>) -> Result<()> {
    use std::io::Read as _;
    let limit = decompressed_limit();
    let read = reader
        .take((limit as u64).saturating_add(1))
        .read_to_end(out)?;
    if read > limit {
        return Err(too_large(limit));
    }
    Ok(())
}

/// A trait for record compression algorithms.
pub trait Compressor<B: ByteBufMut> {
    /// Target buffer type for compression.
    type BufMut: ByteBufMut;
    /// Compresses into provided [`ByteBufMut`], with records encoded by `F` into `R`.
    fn compress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::BufMut) -> Result<R>;
}

/// A trait for record decompression algorithms.
pub trait Decompressor<B: ByteBuf> {
    /// Target buffer type for decompression.
    type Buf: ByteBuf;
    /// Decompress records from `B` mapped using `F` into `R`.
    fn decompress<R, F>(buf: &mut B, f: F) -> Result<R>
    where
        F: FnOnce(&mut Self::Buf) -> Result<R>;
}
