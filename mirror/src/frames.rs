//! Reading and writing `meridian_proto::mirror` frames on a QUIC stream, and why a
//! stream stopped ([`StreamError`]).

use bytes::Bytes;
use meridian_proto::mirror::{FRAME_MAX, Frame, FrameError};

use crate::link::LinkError;

/// Why a stream stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The QUIC stream or connection failed.
    #[error("link: {0}")]
    Read(#[from] quinn::ReadExactError),
    /// Writing failed.
    #[error("link: {0}")]
    Write(#[from] quinn::WriteError),
    /// The other side sent bytes that are not a frame.
    #[error("the peer sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The link protocol ended the stream (a refusal, a frame out of place, the peer
    /// closing it, a newer stream replacing it).
    #[error(transparent)]
    Link(#[from] LinkError),
}

/// Reads one frame: `Ok(None)` when the stream ended cleanly between frames. The length is
/// checked before anything is buffered, so a peer cannot make us allocate more than a frame.
pub async fn read(recv: &mut quinn::RecvStream) -> Result<Option<Frame>, StreamError> {
    Ok(read_sized(recv).await?.map(|(frame, _)| frame))
}

/// [`read`], with the frame's size in bytes as read.
pub async fn read_sized(
    recv: &mut quinn::RecvStream,
) -> Result<Option<(Frame, usize)>, StreamError> {
    let mut len = [0u8; 4];
    match recv.read_exact(&mut len).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let body = u32::from_le_bytes(len) as usize;
    if body + 4 > FRAME_MAX {
        return Err(FrameError::TooLarge(body + 4).into());
    }
    let mut buf = vec![0u8; 4 + body];
    buf[..4].copy_from_slice(&len);
    recv.read_exact(&mut buf[4..]).await?;
    match Frame::decode(&Bytes::from(buf))? {
        Some((frame, _)) => Ok(Some((frame, 4 + body))),
        None => Err(FrameError::Malformed {
            kind: "any",
            why: "shorter than its length",
        }
        .into()),
    }
}

/// Writes one frame.
pub async fn write(send: &mut quinn::SendStream, frame: &Frame) -> Result<(), StreamError> {
    let mut buf = Vec::new();
    frame.encode(&mut buf);
    send.write_all(&buf).await?;
    Ok(())
}
