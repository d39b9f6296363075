//! The shipping side's shell: one QUIC connection per peer region (claimed from the control
//! plane so that one mirror of the region ships it), one stream per log group of this
//! region, and one more per log group holding a topic that joined the peer's region after
//! its creation (that topic alone, from the first record retained; the main stream leaves
//! it out). The protocol of a stream (`Hello`, `Resume`, the window, acknowledgements) is
//! [`crate::link::sender::ShipStream`]'s; this carries it out: it writes the frames the
//! core makes and reads the group's committed local-origin batches from this region's
//! brokers where the core asks, keeping those of topics the peer holds (`select`). A lost
//! connection is redialled with backoff; every stream resumes where the peer says.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use meridian_proto::mirror::{Commit, ShippedBatch};
use meridian_region_client::RegionError;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{Config, Peer};
use crate::frames::{self, StreamError};
use crate::link::Backoff;
use crate::link::sender::{Event, ShipStream};
use crate::views::Snapshot;

/// The longest wait between two attempts to dial a peer or reopen a stream.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long one read from the brokers waits for new batches.
const READ_WAIT: Duration = Duration::from_secs(1);

/// Ships this region's local-origin batches to `peer` until `stop` turns true.
pub async fn run_link(
    endpoint: quinn::Endpoint,
    config: Arc<Config>,
    peer: Peer,
    views: watch::Receiver<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
) {
    let labels = [("peer", peer.region.clone())];
    let mut backoff = Duration::from_millis(100);
    loop {
        if *stop.borrow() {
            return;
        }
        let conn = tokio::select! {
            c = dial(&endpoint, &peer) => c,
            _ = stop.changed() => return,
        };
        let conn = match conn {
            Ok(c) => c,
            Err(e) => {
                metrics::gauge!("meridian_mirror_link_up", &labels).set(0.0);
                tracing::warn!(peer = %peer.region, addrs = ?peer.addrs, error = %format!("{e:#}"), retry_in_ms = backoff.as_millis() as u64, "cannot reach the peer's mirrors");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        metrics::gauge!("meridian_mirror_link_up", &labels).set(1.0);
        metrics::counter!("meridian_mirror_connects_total", &labels).increment(1);
        tracing::info!(peer = %peer.region, remote = %conn.remote_address(), "link up");
        let reason = serve_connection(&conn, &config, &peer, views.clone(), &mut stop).await;
        metrics::gauge!("meridian_mirror_link_up", &labels).set(0.0);
        match reason {
            None => {
                conn.close(0u32.into(), b"mirror stopping");
                return;
            }
            Some(e) => tracing::warn!(peer = %peer.region, error = %e, "link down; redialling"),
        }
    }
}

/// Connects to the first of the peer region's mirrors that answers.
async fn dial(endpoint: &quinn::Endpoint, peer: &Peer) -> anyhow::Result<quinn::Connection> {
    let mut last = anyhow::anyhow!("no address for region {}", peer.region);
    for host in &peer.addrs {
        match dial_one(endpoint, peer, host).await {
            Ok(c) => return Ok(c),
            Err(e) => last = e.context(host.clone()),
        }
    }
    Err(last)
}

async fn dial_one(
    endpoint: &quinn::Endpoint,
    peer: &Peer,
    host: &str,
) -> anyhow::Result<quinn::Connection> {
    let addr: SocketAddr = tokio::net::lookup_host(host)
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{host} resolves to no address"))?;
    let connecting = endpoint.connect(addr, &crate::tls::server_name(&peer.region))?;
    Ok(tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .map_err(|_| anyhow::anyhow!("no QUIC handshake within 10 s"))??)
}

/// Ships to `peer` while this mirror holds the link: claims it from the control plane
/// every third of the claim's lease, starts shipping when granted and stops when another
/// mirror of the region holds it (this one's claim lapsed: it was presumed dead). When the
/// control plane does not answer it keeps doing what it does: a second sender for a while
/// costs bandwidth, never correctness (appends are idempotent), and no sender would cost
/// the link.
pub async fn run_claimed(
    endpoint: quinn::Endpoint,
    config: Arc<Config>,
    peer: Peer,
    views: watch::Receiver<Arc<Snapshot>>,
    mut stop: watch::Receiver<bool>,
) {
    let labels = [("peer", peer.region.clone())];
    let ttl = Duration::from_millis(config.claim_ttl_ms);
    let id = config.id();
    let mut link: Option<(watch::Sender<bool>, JoinHandle<()>)> = None;
    let mut holder = String::new();
    let mut control = crate::views::Control::new(&config.control);
    loop {
        let granted = match claim(&mut control, &config, &peer.region, &id, ttl).await {
            Ok((granted, by)) => {
                if !granted && by != holder {
                    tracing::info!(peer = %peer.region, holder = %by, "another mirror of this region ships the link");
                }
                holder = by;
                granted
            }
            Err(e) => {
                tracing::warn!(peer = %peer.region, error = %e, "cannot claim the link from the control plane; carrying on as before");
                link.is_some()
            }
        };
        match (granted, link.is_some()) {
            (true, false) => {
                tracing::info!(peer = %peer.region, id = %id, "this mirror holds the link");
                let (tx, rx) = watch::channel(false);
                let task = tokio::spawn(run_link(
                    endpoint.clone(),
                    config.clone(),
                    peer.clone(),
                    views.clone(),
                    rx,
                ));
                link = Some((tx, task));
            }
            (false, true) => {
                if let Some((tx, task)) = link.take() {
                    let _ = tx.send(true);
                    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
                }
            }
            _ => {}
        }
        metrics::gauge!("meridian_mirror_link_held", &labels)
            .set(f64::from(u8::from(link.is_some())));
        tokio::select! {
            _ = tokio::time::sleep(ttl / 3) => {}
            _ = stop.changed() => {
                if let Some((tx, task)) = link.take() {
                    let _ = tx.send(true);
                    let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
                }
                return;
            }
        }
    }
}

async fn claim(
    control: &mut crate::views::Control,
    config: &Config,
    peer: &str,
    id: &str,
    ttl: Duration,
) -> Result<(bool, String), RegionError> {
    let request = meridian_proto::v1::ClaimMirrorLinkRequest {
        from: config.region.clone(),
        to: peer.to_owned(),
        holder: id.to_owned(),
        ttl_ms: ttl.as_millis() as u32,
    };
    control
        .call(|mut client| async move {
            let answer = tokio::time::timeout(ttl / 3, client.claim_mirror_link(request))
                .await
                .map_err(|_| RegionError::NoAnswer("the control plane", ttl / 3))??
                .into_inner();
            Ok((answer.granted, answer.holder))
        })
        .await
}

/// The streams to ship to `peer`: `(log group of this region, topic)`, topic 0 for each
/// group's main stream, else one per group holding a topic that joined the peer later.
fn streams_for(snapshot: &Snapshot, own: &str, peer: &str) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = snapshot.groups(own).into_iter().map(|g| (g, 0)).collect();
    for topic in snapshot.joined_later(peer) {
        out.extend(
            snapshot
                .topic_groups(own, topic)
                .into_iter()
                .map(|g| (g, topic)),
        );
    }
    out
}

/// Runs the streams of [`streams_for`] on `conn` until the connection fails (its error) or
/// `stop` turns true (`None`).
async fn serve_connection(
    conn: &quinn::Connection,
    config: &Arc<Config>,
    peer: &Peer,
    mut views: watch::Receiver<Arc<Snapshot>>,
    stop: &mut watch::Receiver<bool>,
) -> Option<quinn::ConnectionError> {
    let mut streams: HashMap<(u32, u32), JoinHandle<()>> = HashMap::new();
    let result = loop {
        let wanted = streams_for(&views.borrow_and_update(), &config.region, &peer.region);
        streams.retain(|key, task| {
            let keep = wanted.contains(key) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (g, topic) in wanted {
            streams.entry((g, topic)).or_insert_with(|| {
                tokio::spawn(ship_group(
                    conn.clone(),
                    config.clone(),
                    peer.region.clone(),
                    (g, topic),
                    views.clone(),
                ))
            });
        }
        tokio::select! {
            e = conn.closed() => break Some(e),
            _ = views.changed() => {}
            _ = stop.changed() => break None,
        }
    };
    for task in streams.into_values() {
        task.abort();
    }
    result
}

/// Ships group `g` (`topic` 0: its main stream; else that topic alone), reopening the
/// stream after a failure while the connection lives.
async fn ship_group(
    conn: quinn::Connection,
    config: Arc<Config>,
    peer: String,
    (g, topic): (u32, u32),
    views: watch::Receiver<Arc<Snapshot>>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), BACKOFF_MAX);
    loop {
        match ship_stream(&conn, &config, &peer, (g, topic), views.clone()).await {
            Ok(()) => return,
            Err(e) => {
                if conn.close_reason().is_some() {
                    return;
                }
                tracing::warn!(peer = %peer, group = g, topic, error = %e, retry_in_ms = backoff.wait().as_millis() as u64, "mirror stream stopped");
                let at = backoff.failed(tokio::time::Instant::now().into_std());
                tokio::time::sleep_until(at.into()).await;
            }
        }
    }
}

/// Ships group `g` on one stream: the protocol is [`ShipStream`]'s; this carries out its
/// transmits and reads. Frames from the peer are read by a task of their own (a read is
/// not cancel-safe), so acknowledgements are taken while a read of the brokers waits.
async fn ship_stream(
    conn: &quinn::Connection,
    config: &Config,
    peer: &str,
    (g, topic): (u32, u32),
    views: watch::Receiver<Arc<Snapshot>>,
) -> Result<(), StreamError> {
    let (mut send, mut recv) = conn
        .open_bi()
        .await
        .map_err(|e| StreamError::Write(e.into()))?;
    let (frames_in, mut incoming) = mpsc::channel(16);
    let reader = tokio::spawn(async move {
        loop {
            let frame = frames::read(&mut recv).await;
            let more = matches!(frame, Ok(Some(_)));
            if frames_in.send(frame).await.is_err() || !more {
                return;
            }
        }
    });
    let _reader = AbortOnDrop(reader);
    let mut core = ShipStream::new(&config.region, g, topic, config.window_bytes);
    let mut labels = vec![("peer", peer.to_owned()), ("group", g.to_string())];
    if topic != 0 {
        labels.push(("topic", topic.to_string()));
    }
    let mut read: Option<Pin<Box<dyn Future<Output = Read> + Send + '_>>> = None;
    loop {
        while let Some(t) = core.poll_transmit() {
            send.write_all(&t.bytes).await?;
            let labels = &labels;
            if t.commits > 0 {
                metrics::counter!("meridian_mirror_shipped_commits_total", labels)
                    .increment(t.commits);
            }
            if t.batches > 0 {
                metrics::counter!("meridian_mirror_shipped_batches_total", labels)
                    .increment(t.batches);
                metrics::counter!("meridian_mirror_shipped_messages_total", labels)
                    .increment(t.messages);
                metrics::counter!("meridian_mirror_shipped_bytes_total", labels)
                    .increment(t.bytes.len() as u64);
                if let Some(through) = t.through {
                    metrics::gauge!("meridian_mirror_shipped_seq", labels).set(through as f64);
                }
            }
        }
        if read.is_none()
            && let Some(from) = core.poll_read()
        {
            read = Some(Box::pin(read_next(
                config,
                peer,
                (g, topic),
                from,
                views.clone(),
                labels.clone(),
            )));
        }
        tokio::select! {
            frame = incoming.recv() => {
                let frame = match frame {
                    Some(Ok(Some(frame))) => frame,
                    Some(Err(e)) => return Err(e),
                    Some(Ok(None)) | None => return Err(core.ended().into()),
                };
                match core.handle(frame)? {
                    Event::Resumed { from } => tracing::info!(peer = %peer, group = g, topic, from, "shipping"),
                    Event::Acked { through } => {
                        metrics::gauge!("meridian_mirror_acked_seq", &labels).set(through as f64);
                    }
                }
            }
            r = async { read.as_mut().expect("checked").await }, if read.is_some() => {
                read = None;
                core.read_done(r.batches, r.commits, r.through);
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one read of the origin group found to ship.
struct Read {
    batches: Vec<ShippedBatch>,
    commits: Vec<Commit>,
    through: u64,
}

/// Reads the group's committed local batches from `next` on (0: from the first retained),
/// until there is something new, and keeps those (and the commits) the stream ships
/// ([`select`]). Read errors are retried: a batch is never skipped.
async fn read_next(
    config: &Config,
    peer: &str,
    (g, topic): (u32, u32),
    next: u64,
    mut views: watch::Receiver<Arc<Snapshot>>,
    labels: Vec<(&'static str, String)>,
) -> Read {
    loop {
        let snapshot = views.borrow_and_update().clone();
        let (Some(client), Some(_)) = (snapshot.client.clone(), snapshot.topics(peer)) else {
            let _ = tokio::time::timeout(READ_WAIT, views.changed()).await;
            continue;
        };
        let (batches, commits, after) = match client
            .read_local_records(g, next, topic != 0, config.batch_bytes, READ_WAIT)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(group = g, from = next, error = %e, "reading local batches failed; retrying");
                metrics::counter!("meridian_mirror_read_errors_total", &labels).increment(1);
                tokio::time::sleep(READ_WAIT).await;
                continue;
            }
        };
        if after <= next {
            continue;
        }
        let now = super::receiver::now_ms();
        for b in &batches {
            let ms = now.saturating_sub(b.append_time_ms).max(0);
            metrics::histogram!("meridian_mirror_read_lag_seconds", &labels[..1])
                .record(ms as f64 / 1000.0);
        }
        let (batches, through, stale) = select(batches, after, &snapshot, config, peer, topic);
        if stale {
            // A topic newer than our views: wait for the next refresh, never skip it.
            let _ = tokio::time::timeout(READ_WAIT * 3, views.changed()).await;
        }
        let wanted = shipped_topics(&snapshot, peer, topic);
        let commits = commits
            .into_iter()
            .filter(|c| c.seq <= through && wanted.contains(&c.topic_id))
            .map(|c| Commit {
                seq: c.seq,
                topic_id: c.topic_id,
                partition: c.partition,
                group: c.group,
                positions: c
                    .positions
                    .into_iter()
                    .map(|p| (p.region, p.position))
                    .collect(),
            })
            .collect();
        return Read {
            batches,
            commits,
            through,
        };
    }
}

/// The topics a stream to `peer` ships: for the main stream (`topic` 0) those the peer
/// holds but the ones that joined it later; else that topic alone.
fn shipped_topics(snapshot: &Snapshot, peer: &str, topic: u32) -> HashSet<u32> {
    match topic {
        0 => {
            let later = snapshot.joined_later(peer);
            let mut wanted = snapshot.topics(peer).unwrap_or_default();
            wanted.retain(|t| !later.contains(t));
            wanted
        }
        t => HashSet::from([t]),
    }
}

/// The batches of `batches` (read up to record `after - 1`) to ship to `peer` on the stream
/// of `topic` (0: the main stream): those of [`shipped_topics`]. On the main stream a topic
/// this region holds but the peer does not (or holds on its own stream) is skipped, as is
/// a deleted one. A topic unknown to our views (created since they were fetched) stops the
/// selection before it: returns the entries, the last record covered, and whether it
/// stopped so. The views are fetched own region first, then the peers, and the control
/// plane writes a topic's record after its placement in every region: a topic in our own
/// view is therefore in every view fetched after it that it spans. A topic's own stream
/// skips every other topic: the main stream carries them.
fn select(
    batches: Vec<ShippedBatch>,
    after: u64,
    snapshot: &Snapshot,
    config: &Config,
    peer: &str,
    topic: u32,
) -> (Vec<ShippedBatch>, u64, bool) {
    let wanted = shipped_topics(snapshot, peer, topic);
    if topic != 0 {
        let entries = batches
            .into_iter()
            .filter(|b| b.topic_id == topic)
            .collect();
        return (entries, after - 1, false);
    }
    let own = snapshot.topics(&config.region).unwrap_or_default();
    let retired = snapshot.retired(&config.region);
    let mut entries = Vec::new();
    for b in batches {
        if !wanted.contains(&b.topic_id) {
            if own.contains(&b.topic_id) || retired.contains(&b.topic_id) {
                continue;
            }
            return (entries, b.seq - 1, true);
        }
        entries.push(b);
    }
    (entries, after - 1, false)
}

#[cfg(test)]
mod tests {
    use meridian_proto::v1;

    use super::*;

    fn view(region: &str, topics: &[u32], retired: &[u32]) -> v1::RegionView {
        v1::RegionView {
            region: region.into(),
            topics: topics
                .iter()
                .map(|id| v1::TopicInRegion {
                    id: *id,
                    ..Default::default()
                })
                .collect(),
            retired: retired.to_vec(),
            ..Default::default()
        }
    }

    fn batch(seq: u64, topic_id: u32) -> ShippedBatch {
        ShippedBatch {
            seq,
            topic_id,
            ..Default::default()
        }
    }

    #[test]
    fn ships_what_the_peer_holds_skips_what_it_does_not_and_waits_on_new_topics() {
        let config = Config {
            region: "us".into(),
            ..Config::default()
        };
        let mut snapshot = Snapshot::default();
        // Topic 1 spans both, 2 only us, 3 was deleted; 4 is newer than the views.
        snapshot
            .views
            .insert("us".into(), view("us", &[1, 2], &[3]));
        snapshot.views.insert("eu".into(), view("eu", &[1], &[3]));
        let seqs = |e: &[ShippedBatch]| e.iter().map(|e| e.seq).collect::<Vec<_>>();
        let (e, through, stale) = select(
            vec![batch(5, 1), batch(6, 2), batch(7, 3), batch(8, 1)],
            10,
            &snapshot,
            &config,
            "eu",
            0,
        );
        assert_eq!((seqs(&e), through, stale), (vec![5, 8], 9, false));
        let (e, through, stale) = select(
            vec![batch(5, 1), batch(6, 4), batch(7, 1)],
            10,
            &snapshot,
            &config,
            "eu",
            0,
        );
        assert_eq!((seqs(&e), through, stale), (vec![5], 5, true));
        // Once the views know topic 4 (spanning eu), it ships.
        snapshot
            .views
            .insert("us".into(), view("us", &[1, 2, 4], &[3]));
        snapshot
            .views
            .insert("eu".into(), view("eu", &[1, 4], &[3]));
        let (e, through, stale) = select(
            vec![batch(6, 4), batch(7, 1)],
            8,
            &snapshot,
            &config,
            "eu",
            0,
        );
        assert_eq!((seqs(&e), through, stale), (vec![6, 7], 7, false));
    }

    #[test]
    fn a_topic_that_joined_the_peer_later_ships_on_its_own_streams_only() {
        let config = Config {
            region: "us".into(),
            ..Config::default()
        };
        let mut snapshot = Snapshot::default();
        // Topic 1 spans both from the start; 2 joined eu later. In us, topic 2 is in
        // groups 0 and 1.
        let mut us = view("us", &[1, 2], &[]);
        us.topics[1].groups = vec![0, 1, 1];
        us.groups = (0..3)
            .map(|id| v1::LogGroupPlacement {
                id,
                ..Default::default()
            })
            .collect();
        let mut eu = view("eu", &[1, 2], &[]);
        eu.topics[1].joined_later = true;
        snapshot.views.insert("us".into(), us);
        snapshot.views.insert("eu".into(), eu);
        let mut streams = streams_for(&snapshot, "us", "eu");
        streams.sort_unstable();
        assert_eq!(streams, [(0, 0), (0, 2), (1, 0), (1, 2), (2, 0)]);
        // Nothing the other way: us holds both from the start.
        assert_eq!(
            streams_for(&snapshot, "eu", "us").len(),
            0,
            "eu has no groups"
        );
        let read = || vec![batch(5, 1), batch(6, 2), batch(7, 1)];
        let seqs = |e: &[ShippedBatch]| e.iter().map(|e| e.seq).collect::<Vec<_>>();
        let (e, through, stale) = select(read(), 9, &snapshot, &config, "eu", 0);
        assert_eq!((seqs(&e), through, stale), (vec![5, 7], 8, false));
        let (e, through, stale) = select(read(), 9, &snapshot, &config, "eu", 2);
        assert_eq!((seqs(&e), through, stale), (vec![6], 8, false));
        assert_eq!(shipped_topics(&snapshot, "eu", 0), HashSet::from([1]));
    }
}
