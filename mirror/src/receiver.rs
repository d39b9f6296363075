//! The receiving side's shell: accepts other regions' mirrors (mutual TLS: the caller's
//! certificate must name the region its `Hello` claims) and carries out what the protocol
//! core, [`crate::link::receiver::Receiver`], asks: it feeds the core every frame of every
//! inbound stream, reads the marks (where a stream resumes: one past the highest seq of
//! the origin group any log group here holds), appends shipped batches and merges commits
//! through this region's brokers, one at a time per stream and in order, writes the
//! frames the core makes and closes the streams it closes. Appends are idempotent on the
//! origin, so a resent frame or a second stream for the same origin never stores a batch
//! twice (the argument is in [`crate::link::receiver`]).
//!
//! One task owns the core; each stream has a task reading its frames and one writing
//! them, and each mark read, append or merge runs in a task of its own that reports back.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meridian_daemon::listener::{Admission, Refusals};
use meridian_proto::mirror::{Commit, Frame, ShippedBatch};
use meridian_proto::origin::Origin;
use meridian_region_client::RegionClient;
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::frames::{self, StreamError};
use crate::link::LinkError;
use crate::link::receiver::{Action, Receiver, StreamId};
use crate::views::Snapshot;

/// What the streams' tasks tell the task that owns the core.
enum Input {
    /// A peer opened a stream.
    Opened {
        stream: StreamId,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        chain: Arc<Vec<CertificateDer<'static>>>,
        remote: SocketAddr,
    },
    /// A frame of `bytes` arrived.
    Frame {
        stream: StreamId,
        frame: Frame,
        bytes: usize,
    },
    /// The stream ended: cleanly between frames (`None`) or not.
    Ended {
        stream: StreamId,
        error: Option<StreamError>,
    },
    /// The mark asked for.
    Mark { stream: StreamId, mark: Option<u64> },
    /// The append or merge asked for is done.
    Done { stream: StreamId },
}

/// What the core's task keeps of a stream.
struct Inbound {
    writer: mpsc::UnboundedSender<Frame>,
    /// Whether the reader may read on (the core pauses a stream holding too much).
    reading: watch::Sender<bool>,
    chain: Arc<Vec<CertificateDer<'static>>>,
    remote: SocketAddr,
    /// The origin region and group, and the topic of a topic's own stream (0: the main
    /// stream), once `Hello` named them.
    origin: Option<(String, u32, u32)>,
    /// The stream's reader and writer tasks and its mark read, append or merge under way.
    tasks: Vec<AbortHandle>,
}

impl Drop for Inbound {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Accepts links until `stop` turns true: as many connections as `admission` admits (one
/// past it is refused before its handshake, counted and logged at most once a second).
pub async fn serve(
    endpoint: quinn::Endpoint,
    region: String,
    views: watch::Receiver<Arc<Snapshot>>,
    admission: Arc<Admission>,
    mut stop: watch::Receiver<bool>,
) {
    let mut refusals = Refusals::new("mirror");
    let ids = Arc::new(AtomicU64::new(1));
    let (inputs, mut input) = mpsc::unbounded_channel();
    let mut core = Receiver::new(&region);
    let mut streams: HashMap<StreamId, Inbound> = HashMap::new();
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else {
                    return;
                };
                let remote = incoming.remote_address();
                let ticket = match admission.admit(remote.ip()) {
                    Ok(ticket) => ticket,
                    Err(why) => {
                        incoming.refuse();
                        metrics::counter!("meridian_mirror_connections_refused_total").increment(1);
                        refusals.note(&remote, &why);
                        continue;
                    }
                };
                let (ids, inputs) = (ids.clone(), inputs.clone());
                tokio::spawn(async move {
                    let _ticket = ticket;
                    match incoming.await {
                        Ok(conn) => serve_connection(conn, ids, inputs).await,
                        Err(e) => tracing::warn!(%remote, error = %e, "a mirror link failed its handshake"),
                    }
                });
            }
            Some(i) = input.recv() => {
                on_input(&mut core, &mut streams, i, &inputs);
                while let Some(action) = core.poll_action() {
                    act(&mut streams, action, &views, &inputs);
                }
            }
            _ = stop.changed() => return,
        }
    }
}

/// Hands every stream the peer opens on `conn` to the core's task.
async fn serve_connection(
    conn: quinn::Connection,
    ids: Arc<AtomicU64>,
    inputs: mpsc::UnboundedSender<Input>,
) {
    let remote = conn.remote_address();
    let chain: Arc<Vec<CertificateDer<'static>>> = Arc::new(
        conn.peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .map(|b| *b)
            .unwrap_or_default(),
    );
    tracing::info!(%remote, "peer mirror connected");
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(%remote, reason = %e, "peer mirror link closed");
                return;
            }
        };
        let stream = ids.fetch_add(1, Ordering::Relaxed);
        let opened = Input::Opened {
            stream,
            send,
            recv,
            chain: chain.clone(),
            remote,
        };
        if inputs.send(opened).is_err() {
            return;
        }
    }
}

fn on_input(
    core: &mut Receiver,
    streams: &mut HashMap<StreamId, Inbound>,
    input: Input,
    inputs: &mpsc::UnboundedSender<Input>,
) {
    match input {
        Input::Opened {
            stream,
            mut send,
            mut recv,
            chain,
            remote,
        } => {
            let (writer, mut frames_out) = mpsc::unbounded_channel::<Frame>();
            let write = tokio::spawn(async move {
                while let Some(frame) = frames_out.recv().await {
                    if frames::write(&mut send, &frame).await.is_err() {
                        return;
                    }
                }
                // The core closed the stream: what it sent before goes out, then the end.
                let _ = send.finish();
                let _ = send.stopped().await;
            });
            let to_core = inputs.clone();
            let (reading, mut may_read) = watch::channel(true);
            let read = tokio::spawn(async move {
                loop {
                    // Paused: QUIC's flow control holds the peer back meanwhile.
                    if may_read.wait_for(|on| *on).await.is_err() {
                        return;
                    }
                    let (input, more) = match frames::read_sized(&mut recv).await {
                        Ok(Some((frame, bytes))) => (
                            Input::Frame {
                                stream,
                                frame,
                                bytes,
                            },
                            true,
                        ),
                        Ok(None) => (
                            Input::Ended {
                                stream,
                                error: None,
                            },
                            false,
                        ),
                        Err(e) => (
                            Input::Ended {
                                stream,
                                error: Some(e),
                            },
                            false,
                        ),
                    };
                    if to_core.send(input).is_err() || !more {
                        return;
                    }
                }
            });
            core.accept(stream);
            streams.insert(
                stream,
                Inbound {
                    writer,
                    reading,
                    chain,
                    remote,
                    origin: None,
                    // The writer is not aborted: it finishes the stream once the core's
                    // last frames are written.
                    tasks: vec![read.abort_handle()],
                },
            );
            drop(write);
        }
        Input::Frame {
            stream,
            frame,
            bytes,
        } => {
            let Some(s) = streams.get(&stream) else {
                return;
            };
            let chain = s.chain.clone();
            core.handle(stream, frame, bytes, |region| {
                crate::tls::certifies_region(&chain, region)
            });
        }
        Input::Ended { stream, error } => {
            if let (Some(s), Some(e)) = (streams.get(&stream), error) {
                tracing::warn!(remote = %s.remote, error = %e, "inbound mirror stream stopped");
            }
            core.ended(stream);
            streams.remove(&stream);
        }
        Input::Mark { stream, mark } => core.mark(stream, mark),
        Input::Done { stream } => core.done(stream),
    }
}

/// Carries out one of the core's actions.
fn act(
    streams: &mut HashMap<StreamId, Inbound>,
    action: Action,
    views: &watch::Receiver<Arc<Snapshot>>,
    inputs: &mpsc::UnboundedSender<Input>,
) {
    match action {
        Action::Send { stream, frame } => {
            let Some(s) = streams.get(&stream) else {
                return;
            };
            if let Some((origin, group, topic)) = &s.origin {
                match &frame {
                    Frame::Resume { from } => {
                        tracing::info!(origin = %origin, group, topic, from, "receiving");
                    }
                    Frame::Ack { through } => {
                        let mut labels =
                            vec![("origin", origin.clone()), ("group", group.to_string())];
                        if *topic != 0 {
                            labels.push(("topic", topic.to_string()));
                        }
                        metrics::gauge!("meridian_mirror_applied_seq", &labels)
                            .set(*through as f64);
                    }
                    _ => {}
                }
            }
            let _ = s.writer.send(frame);
        }
        Action::ReadMark {
            stream,
            origin,
            group,
            topic,
        } => {
            let Some(s) = streams.get_mut(&stream) else {
                return;
            };
            s.origin = Some((origin.clone(), group, topic));
            let (views, inputs) = (views.clone(), inputs.clone());
            let task = tokio::spawn(async move {
                let mark = read_mark(views, &origin, group, topic).await;
                let _ = inputs.send(Input::Mark { stream, mark });
            });
            s.tasks.push(task.abort_handle());
        }
        Action::Append { stream, batches } => {
            let Some(s) = streams.get_mut(&stream) else {
                return;
            };
            let (views, inputs) = (views.clone(), inputs.clone());
            let task = tokio::spawn(async move {
                apply(views, batches).await;
                let _ = inputs.send(Input::Done { stream });
            });
            s.tasks.retain(|t| !t.is_finished());
            s.tasks.push(task.abort_handle());
        }
        Action::Merge {
            stream,
            origin,
            commit,
        } => {
            let Some(s) = streams.get_mut(&stream) else {
                return;
            };
            let (views, inputs) = (views.clone(), inputs.clone());
            let group = s.origin.as_ref().map_or(0, |(_, g, _)| *g);
            let task = tokio::spawn(async move {
                let labels = [("origin", origin.clone()), ("group", group.to_string())];
                merge(views, &origin, commit, &labels).await;
                let _ = inputs.send(Input::Done { stream });
            });
            s.tasks.retain(|t| !t.is_finished());
            s.tasks.push(task.abort_handle());
        }
        Action::Pause { stream } | Action::Resume { stream } => {
            if let Some(s) = streams.get(&stream) {
                let on = matches!(action, Action::Resume { .. });
                if !on {
                    tracing::debug!(remote = %s.remote, stream, "inbound mirror stream paused: it holds too much unacknowledged");
                }
                s.reading.send_replace(on);
            }
        }
        Action::Close { stream, error } => {
            if let Some(s) = streams.remove(&stream) {
                match &error {
                    LinkError::Closed => {}
                    e => {
                        tracing::warn!(remote = %s.remote, error = %e, "inbound mirror stream stopped")
                    }
                }
            }
        }
    }
}

/// This region's brokers, once the views know them.
async fn client(mut views: watch::Receiver<Arc<Snapshot>>) -> RegionClient {
    loop {
        if let Some(c) = views.borrow_and_update().client.clone() {
            return c;
        }
        let _ = views.changed().await;
    }
}

/// Where to resume: asks until the region answers (a lower answer would only mean
/// duplicates the appends skip, but no answer means no safe start at all). The main stream
/// (`topic` 0) counts the log groups shared by topics, a topic's own stream that topic's
/// own groups: the other kind's appends run apart. A group the views do not show yet is
/// left out, which can only lower the mark.
async fn read_mark(
    views: watch::Receiver<Arc<Snapshot>>,
    origin: &str,
    group: u32,
    topic: u32,
) -> Option<u64> {
    let client = client(views.clone()).await;
    loop {
        match client.mirror_marks(origin, group).await {
            Ok(marks) => {
                let snapshot = views.borrow().clone();
                let counted = snapshot.groups_of(&snapshot.own, topic);
                return marks
                    .into_iter()
                    .filter(|(g, _)| counted.contains(g))
                    .map(|(_, seq)| seq)
                    .max();
            }
            Err(e) => {
                tracing::warn!(origin = %origin, group, error = %e, "cannot read the mirror marks; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Appends shipped batches in order, retrying until the region holds them all: a batch is
/// never skipped (a stalled stream shows as lag; a skipped batch would be lost). Each call
/// appends the leading run the first batch's log group takes; the rest go again.
/// Why appending or merging what an origin shipped fails here, as a metric label (a few
/// fixed values: the console turns them into words).
fn stall_reason(e: &meridian_region_client::RegionError) -> &'static str {
    match e.code() {
        Some(tonic::Code::ResourceExhausted) => "resource_exhausted",
        Some(tonic::Code::NotFound) => "not_found",
        Some(tonic::Code::PermissionDenied | tonic::Code::Unauthenticated) => "refused",
        Some(tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition) => "refused",
        Some(tonic::Code::Unavailable) | None => "unavailable",
        Some(_) => "error",
    }
}

/// A stream that cannot be applied here:
/// `meridian_mirror_stalled_seconds{origin, group, reason}` says for how long while it
/// lasts, and drops to 0 once the stream applies again. The link itself may be up all
/// along: this is what tells "up" from "delivering".
struct Stall {
    origin: String,
    group: String,
    /// Since when the current attempts have not applied anything (an attempt that fails
    /// may have waited long for its answer: the stall began when it was sent).
    trying: std::time::Instant,
    /// The reason last reported.
    reported: Option<&'static str>,
}

impl Stall {
    fn new(origin: &str, group: String) -> Stall {
        Stall {
            origin: origin.to_owned(),
            group,
            trying: std::time::Instant::now(),
            reported: None,
        }
    }

    fn failed(&mut self, e: &meridian_region_client::RegionError) {
        let reason = stall_reason(e);
        if let Some(was) = self.reported.replace(reason)
            && was != reason
        {
            self.set(was, 0.0);
        }
        self.set(reason, self.trying.elapsed().as_secs_f64());
    }

    /// A call still waiting for its answer: a region whose brokers do not answer at all
    /// (stopped, not refusing) is stalled too, before the call finally fails.
    fn waiting(&mut self) {
        let e = meridian_region_client::RegionError::NoAnswer("its brokers", self.trying.elapsed());
        if self.trying.elapsed() >= Duration::from_secs(5) {
            self.failed(&e);
        }
    }

    fn applied(&mut self) {
        self.trying = std::time::Instant::now();
        if let Some(reason) = self.reported.take() {
            self.set(reason, 0.0);
        }
    }

    fn set(&self, reason: &'static str, seconds: f64) {
        metrics::gauge!(
            "meridian_mirror_stalled_seconds",
            "origin" => self.origin.clone(),
            "group" => self.group.clone(),
            "reason" => reason
        )
        .set(seconds);
    }
}

async fn apply(views: watch::Receiver<Arc<Snapshot>>, batches: Vec<(Origin, ShippedBatch)>) {
    let client = client(views.clone()).await;
    let Some((first, _)) = batches.first() else {
        return;
    };
    let (origin, group) = (first.region.clone(), first.group);
    let labels = &[("origin", origin.clone()), ("group", group.to_string())];
    let mut rest = &batches[..];
    let mut backoff = Duration::from_millis(50);
    let started = std::time::Instant::now();
    let mut stall = Stall::new(&origin, group.to_string());
    while !rest.is_empty() {
        // A topic deleted or removed from this region since the origin read it: nothing to
        // hold (appending it would fail forever and hold the stream).
        let retired = {
            let snapshot = views.borrow();
            snapshot.retired(&snapshot.own)
        };
        let gone = rest
            .iter()
            .take_while(|(_, b)| retired.contains(&b.topic_id))
            .count();
        if gone > 0 {
            metrics::counter!("meridian_mirror_dropped_batches_total", labels)
                .increment(gone as u64);
            rest = &rest[gone..];
            continue;
        }
        match waiting(client.append_mirrored(rest), &mut stall).await {
            Ok(duplicates) => {
                stall.applied();
                let (done, left) = rest.split_at(duplicates.len());
                rest = left;
                backoff = Duration::from_millis(50);
                metrics::histogram!("meridian_mirror_append_batches").record(done.len() as f64);
                let now = now_ms();
                for ((_, e), duplicate) in done.iter().zip(duplicates) {
                    if duplicate {
                        metrics::counter!("meridian_mirror_duplicates_total", labels).increment(1);
                        continue;
                    }
                    metrics::counter!("meridian_mirror_applied_batches_total", labels).increment(1);
                    metrics::counter!("meridian_mirror_applied_messages_total", labels)
                        .increment(u64::from(e.count));
                    let lag_ms = now.saturating_sub(e.append_time_ms).max(0);
                    metrics::histogram!("meridian_mirror_lag_seconds", &labels[..1])
                        .record(lag_ms as f64 / 1000.0);
                }
            }
            Err(err) => {
                stall.failed(&err);
                let (o, e) = &rest[0];
                metrics::counter!("meridian_mirror_apply_errors_total", labels).increment(1);
                tracing::warn!(
                    origin, group, seq = o.seq, topic_id = e.topic_id, partition = e.partition,
                    error = %err, retry_in_ms = backoff.as_millis() as u64,
                    "appending a mirrored batch failed; retrying (the stream waits: nothing is skipped)"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    metrics::histogram!("meridian_mirror_append_seconds", &labels[..1])
        .record(started.elapsed().as_secs_f64());
}

/// Merges a consumer group's positions committed in the origin region, retrying until the
/// region takes them (merging is idempotent: a resent commit changes nothing).
async fn merge(
    views: watch::Receiver<Arc<Snapshot>>,
    origin: &str,
    c: Commit,
    labels: &[(&'static str, String); 2],
) {
    let client = client(views.clone()).await;
    let positions: meridian_region_client::Positions = c.positions.into_iter().collect();
    let mut backoff = Duration::from_millis(50);
    let mut stall = Stall::new(origin, "commits".to_owned());
    loop {
        // As for batches: a topic gone from this region takes no commits.
        let snapshot = views.borrow().clone();
        if snapshot.retired(&snapshot.own).contains(&c.topic_id) {
            return;
        }
        match waiting(
            client.merge_positions(&c.group, c.topic_id, c.partition, &positions),
            &mut stall,
        )
        .await
        {
            Ok(_) => {
                stall.applied();
                metrics::counter!("meridian_mirror_applied_commits_total", labels).increment(1);
                return;
            }
            Err(err) => {
                stall.failed(&err);
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

/// Awaits `call`, telling `stall` every 2 s that it still waits.
async fn waiting<T>(call: impl Future<Output = T>, stall: &mut Stall) -> T {
    tokio::pin!(call);
    loop {
        tokio::select! {
            r = &mut call => return r,
            _ = tokio::time::sleep(Duration::from_secs(2)) => stall.waiting(),
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
