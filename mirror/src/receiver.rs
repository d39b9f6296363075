//! The receiving side: accepts other regions' mirrors (mutual TLS: the caller's certificate
//! must name the region its `Hello` claims), answers each stream with where to resume (one
//! past the highest seq of that origin group any log group here holds), then appends every
//! shipped batch through this region's brokers, one at a time and in order, acknowledging
//! each frame once all of it is held. Appends are idempotent on the origin, so a resent
//! frame or a second stream for the same origin never stores a batch twice; and since a
//! batch is appended only after the one before it, "the highest seq held" means "everything
//! before it is held".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meridian_client::Client;
use meridian_proto::mirror::{Commit, Frame, ShippedBatch, VERSION};
use meridian_proto::origin::Origin;
use tokio::sync::watch;

use crate::frames::{self, StreamError};
use crate::views::Snapshot;

/// Accepts links until `stop` turns true.
pub async fn serve(
    endpoint: quinn::Endpoint,
    region: String,
    views: watch::Receiver<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
) {
    let streams: Streams = Arc::default();
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => i,
            _ = stop.changed() => return,
        };
        let Some(incoming) = incoming else {
            return;
        };
        let (region, views, streams) = (region.clone(), views.clone(), streams.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => serve_connection(conn, region, views, streams).await,
                Err(e) => tracing::warn!(%remote, error = %e, "a mirror link failed its handshake"),
            }
        });
    }
}

/// The newest stream of each origin `(region, group)`: a newer one ends the older (a peer
/// that redialled may leave a half-dead stream behind).
type Streams = Arc<Mutex<HashMap<(String, u32), watch::Sender<()>>>>;

async fn serve_connection(
    conn: quinn::Connection,
    region: String,
    views: watch::Receiver<Arc<Snapshot>>,
    streams: Streams,
) {
    let remote = conn.remote_address();
    let chain: Vec<rustls::pki_types::CertificateDer<'static>> = conn
        .peer_identity()
        .and_then(|id| {
            id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .map(|b| *b)
        .unwrap_or_default();
    tracing::info!(%remote, "peer mirror connected");
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(%remote, reason = %e, "peer mirror link closed");
                return;
            }
        };
        let (region, views, streams, chain) = (
            region.clone(),
            views.clone(),
            streams.clone(),
            chain.clone(),
        );
        tokio::spawn(async move {
            let mut send = send;
            if let Err(e) = serve_stream(&mut send, recv, &region, views, streams, &chain).await {
                tracing::warn!(%remote, error = %e, "inbound mirror stream stopped");
                if let StreamError::Refused(reason) = &e {
                    let _ = frames::write(
                        &mut send,
                        &Frame::Refuse {
                            reason: reason.clone(),
                        },
                    )
                    .await;
                    let _ = send.finish();
                }
            }
        });
    }
}

async fn serve_stream(
    send: &mut quinn::SendStream,
    mut recv: quinn::RecvStream,
    region: &str,
    mut views: watch::Receiver<Arc<Snapshot>>,
    streams: Streams,
    chain: &[rustls::pki_types::CertificateDer<'static>],
) -> Result<(), StreamError> {
    let (origin, group) = match frames::read(&mut recv).await? {
        Some(Frame::Hello {
            version,
            region: origin,
            group,
        }) => {
            if version != VERSION {
                return Err(StreamError::Refused(format!(
                    "link protocol version {version} is not supported (this mirror speaks {VERSION}): upgrade the older mirror"
                )));
            }
            if origin == region {
                return Err(StreamError::Refused(format!(
                    "region {origin} cannot ship to itself"
                )));
            }
            if !crate::tls::certifies_region(chain, &origin) {
                return Err(StreamError::Refused(format!(
                    "the certificate presented is not region {origin}'s mirror certificate"
                )));
            }
            (origin, group)
        }
        Some(other) => {
            return Err(StreamError::Protocol(format!(
                "expected Hello, got {other:?}"
            )));
        }
        None => return Ok(()),
    };
    let mut client = loop {
        if let Some(c) = views.borrow_and_update().client.clone() {
            break c;
        }
        let _ = views.changed().await;
    };
    // Where to resume: ask until the region answers (a lower answer would only mean
    // duplicates the appends skip, but no answer means no safe start at all).
    let mark = loop {
        match client.mirror_mark(&origin, group).await {
            Ok(m) => break m,
            Err(e) => {
                tracing::warn!(origin = %origin, group, error = %e, "cannot read the mirror marks; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let from = mark.map_or(1, |m| m + 1);
    let (cancel, mut cancelled) = watch::channel(());
    if let Some(older) = streams
        .lock()
        .expect("streams lock poisoned")
        .insert((origin.clone(), group), cancel)
    {
        let _ = older.send(());
    }
    cancelled.borrow_and_update();
    frames::write(send, &Frame::Resume { from }).await?;
    tracing::info!(origin = %origin, group, from, "receiving");
    let labels = [("origin", origin.clone()), ("group", group.to_string())];
    loop {
        let frame = tokio::select! {
            f = frames::read(&mut recv) => f?,
            _ = cancelled.changed() => {
                return Err(StreamError::Protocol("a newer stream for the same origin replaced this one".into()));
            }
        };
        match frame {
            Some(Frame::Records { through, entries }) => {
                // The region's brokers may have changed since the last frame.
                if let Some(c) = views.borrow().client.clone() {
                    client = c;
                }
                for e in entries {
                    tokio::select! {
                        _ = apply(&client, &origin, group, through, e, &labels) => {}
                        _ = cancelled.changed() => {
                            return Err(StreamError::Protocol("a newer stream for the same origin replaced this one".into()));
                        }
                    }
                }
                frames::write(send, &Frame::Ack { through }).await?;
                metrics::gauge!("meridian_mirror_applied_seq", &labels).set(through as f64);
            }
            Some(Frame::Commits { through, commits }) => {
                if let Some(c) = views.borrow().client.clone() {
                    client = c;
                }
                for c in commits {
                    tokio::select! {
                        _ = merge(&client, &origin, c, &labels) => {}
                        _ = cancelled.changed() => {
                            return Err(StreamError::Protocol("a newer stream for the same origin replaced this one".into()));
                        }
                    }
                }
                frames::write(send, &Frame::Ack { through }).await?;
            }
            Some(other) => {
                return Err(StreamError::Protocol(format!(
                    "expected Records or Commits, got {other:?}"
                )));
            }
            None => return Ok(()),
        }
    }
}

/// Appends one shipped batch, retrying until the region holds it: a batch is never skipped
/// (a stalled stream shows as lag; a skipped batch would be lost).
async fn apply(
    client: &Client,
    origin: &str,
    group: u32,
    through: u64,
    e: ShippedBatch,
    labels: &[(&'static str, String); 2],
) {
    let o = Origin {
        region: origin.to_owned(),
        group,
        seq: e.seq,
        through,
    };
    let mut backoff = Duration::from_millis(50);
    loop {
        match client
            .append_mirrored(e.topic_id, e.partition, &o, e.count, e.payload.clone())
            .await
        {
            Ok(duplicate) => {
                if duplicate {
                    metrics::counter!("meridian_mirror_duplicates_total", labels).increment(1);
                } else {
                    metrics::counter!("meridian_mirror_applied_batches_total", labels).increment(1);
                    metrics::counter!("meridian_mirror_applied_messages_total", labels)
                        .increment(u64::from(e.count));
                    let lag_ms = now_ms().saturating_sub(e.append_time_ms).max(0);
                    metrics::histogram!("meridian_mirror_lag_seconds", &labels[..1])
                        .record(lag_ms as f64 / 1000.0);
                }
                return;
            }
            Err(err) => {
                metrics::counter!("meridian_mirror_apply_errors_total", labels).increment(1);
                tracing::warn!(
                    origin, group, seq = e.seq, topic_id = e.topic_id, partition = e.partition,
                    error = %err, retry_in_ms = backoff.as_millis() as u64,
                    "appending a mirrored batch failed; retrying (the stream waits: nothing is skipped)"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Merges a consumer group's positions committed in the origin region, retrying until the
/// region takes them (merging is idempotent: a resent commit changes nothing).
async fn merge(client: &Client, origin: &str, c: Commit, labels: &[(&'static str, String); 2]) {
    let positions: meridian_client::Positions = c.positions.into_iter().collect();
    let mut backoff = Duration::from_millis(50);
    loop {
        match client
            .merge_positions(&c.group, c.topic_id, c.partition, &positions)
            .await
        {
            Ok(_) => {
                metrics::counter!("meridian_mirror_applied_commits_total", labels).increment(1);
                return;
            }
            Err(err) => {
                metrics::counter!("meridian_mirror_apply_errors_total", labels).increment(1);
                tracing::warn!(
                    origin, group = %c.group, topic_id = c.topic_id, partition = c.partition,
                    error = %err, retry_in_ms = backoff.as_millis() as u64,
                    "merging a consumer group's positions failed; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
