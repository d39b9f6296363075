//! MQTT over WebSocket (MQTT 6.0): binary frames carry the packets' bytes, whatever
//! their boundaries; the handshake names the `mqtt` subprotocol. The frames are turned
//! into a byte stream (an in-memory pipe, at most [`PIPE_BYTES`] buffered each way), so a
//! connection is served the same over TCP and WebSocket.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Bytes buffered in the pipe each way.
const PIPE_BYTES: usize = 64 << 10;

/// Accepts a WebSocket handshake on `stream`; the connection's bytes, as a stream.
pub(super) async fn accept(
    stream: TcpStream,
    frame_max: usize,
) -> Result<DuplexStream, tokio_tungstenite::tungstenite::Error> {
    // The callback's type is tungstenite's (its large error is theirs).
    #[allow(clippy::result_large_err)]
    let subprotocol = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        let offered = req
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .find(|p| p.eq_ignore_ascii_case("mqtt") || p.eq_ignore_ascii_case("mqttv3.1"));
        if let Some(p) = offered
            && let Ok(v) = p.parse()
        {
            resp.headers_mut().insert("Sec-WebSocket-Protocol", v);
        }
        Ok(resp)
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(frame_max))
        .max_frame_size(Some(frame_max));
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(stream, subprotocol, Some(config)).await?;
    let (mine, theirs) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(async move {
        let (mut sink, mut frames) = ws.split();
        let (mut rd, mut wr) = tokio::io::split(mine);
        let inbound = async {
            while let Some(Ok(frame)) = frames.next().await {
                match frame {
                    Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                    Message::Binary(_) => {}
                    Message::Close(_) => break,
                    // Text frames are not MQTT (MQTT 6.0: closed).
                    Message::Text(_) => break,
                    _ => {}
                }
            }
            let _ = wr.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 16 << 10];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let frame = Message::Binary(buf[..n].to_vec().into());
                        if sink.send(frame).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = sink.close().await;
        };
        // Either side ending ends both.
        tokio::select! {
            _ = inbound => {}
            _ = outbound => {}
        }
    });
    Ok(theirs)
}
