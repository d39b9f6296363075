//! A UDP link proxy for tests and benchmarks: stands between two mirrors (QUIC runs over
//! UDP) and makes the loopback look like a long-distance link — added one-way latency,
//! jitter, random loss, a bandwidth cap — and cuts it on demand. It runs in the test's own
//! process; settings change while it runs.
//!
//! Each client address gets its own upstream socket, so the target sees one peer per
//! client as it would without the proxy. Both directions are impaired alike.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How the link misbehaves (each direction).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Impairment {
    /// Added one-way delay.
    pub latency: Duration,
    /// Up to this much more, uniformly (packets may be reordered by it, as on real paths).
    pub jitter: Duration,
    /// Probability of dropping a datagram (0.0 to 1.0).
    pub loss: f64,
    /// Bytes per second, 0 for no cap.
    pub bandwidth: u64,
    /// Drop everything.
    pub cut: bool,
}

/// Datagrams the proxy carried and dropped.
#[derive(Debug, Default)]
pub struct Counters {
    /// Datagrams forwarded (both directions).
    pub forwarded: AtomicU64,
    /// Datagrams dropped by loss, cut or a full queue.
    pub dropped: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct LinkProxy {
    /// Where clients send to.
    pub addr: SocketAddr,
    settings: Arc<Mutex<Impairment>>,
    /// Traffic so far.
    pub counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LinkProxy {
    /// Starts a proxy on a free 127.0.0.1 UDP port forwarding to `target`.
    pub async fn start(target: SocketAddr, impairment: Impairment) -> std::io::Result<LinkProxy> {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = socket.local_addr()?;
        let settings = Arc::new(Mutex::new(impairment));
        let counters = Arc::new(Counters::default());
        let task = tokio::spawn(run(socket, target, settings.clone(), counters.clone()));
        Ok(LinkProxy {
            addr,
            settings,
            counters,
            task,
        })
    }

    /// Changes the impairment from now on.
    pub fn set(&self, impairment: Impairment) {
        *self.settings.lock().expect("settings lock poisoned") = impairment;
    }

    /// The impairment now.
    pub fn get(&self) -> Impairment {
        *self.settings.lock().expect("settings lock poisoned")
    }

    /// Cuts the link (`true`) or heals it.
    pub fn cut(&self, cut: bool) {
        self.settings.lock().expect("settings lock poisoned").cut = cut;
    }
}

/// A datagram on its way, and when it may leave.
struct Delayed {
    at: Instant,
    bytes: Vec<u8>,
}

async fn run(
    socket: Arc<UdpSocket>,
    target: SocketAddr,
    settings: Arc<Mutex<Impairment>>,
    counters: Arc<Counters>,
) {
    let mut upstreams: HashMap<SocketAddr, mpsc::Sender<Delayed>> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut shaper = Shaper::new(1);
    loop {
        let Ok((n, client)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let tx = match upstreams.get(&client) {
            Some(tx) => tx.clone(),
            None => {
                let Ok(up) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if up.connect(target).await.is_err() {
                    continue;
                }
                let up = Arc::new(up);
                // Outbound: client → target, through a delay line.
                let (tx, rx) = mpsc::channel(65536);
                let sink = up.clone();
                tokio::spawn(deliver(rx, move |b| {
                    let sink = sink.clone();
                    async move {
                        let _ = sink.send(&b).await;
                    }
                }));
                // Inbound: target → client, impaired the same way.
                let (back_tx, back_rx) = mpsc::channel(65536);
                let (reply, to) = (socket.clone(), client);
                tokio::spawn(deliver(back_rx, move |b| {
                    let reply = reply.clone();
                    async move {
                        let _ = reply.send_to(&b, to).await;
                    }
                }));
                let (settings, counters) = (settings.clone(), counters.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let mut shaper = Shaper::new(client.port() as u64);
                    loop {
                        match up.recv(&mut buf).await {
                            Ok(n) => shaper.admit(&settings, &counters, &back_tx, &buf[..n]),
                            // A datagram sent before the target bound its port comes back
                            // as ICMP "port unreachable", which a connected UDP socket
                            // reports on its next receive. The path works as soon as the
                            // target listens, as a real one would: keep reading.
                            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                            Err(_) => return,
                        }
                    }
                });
                upstreams.insert(client, tx.clone());
                tx
            }
        };
        shaper.admit(&settings, &counters, &tx, &buf[..n]);
    }
}

/// Decides each datagram's fate and departure time in one direction.
struct Shaper {
    rng: u64,
    /// When the bandwidth cap lets the next byte leave.
    free_at: Instant,
}

impl Shaper {
    fn new(seed: u64) -> Shaper {
        Shaper {
            rng: 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xBF58_476D_1CE4_E5B9),
            free_at: Instant::now(),
        }
    }

    /// xorshift64*: enough randomness for loss and jitter, and no dependency.
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn admit(
        &mut self,
        settings: &Mutex<Impairment>,
        counters: &Counters,
        tx: &mpsc::Sender<Delayed>,
        bytes: &[u8],
    ) {
        let s = *settings.lock().expect("settings lock poisoned");
        if s.cut || (s.loss > 0.0 && self.uniform() < s.loss) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        let mut at = now;
        if s.bandwidth > 0 {
            // A queue of at most 100 ms at the capped rate; beyond it, tail drop.
            let start = self.free_at.max(now);
            if start > now + Duration::from_millis(100) {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.free_at = start + Duration::from_secs_f64(bytes.len() as f64 / s.bandwidth as f64);
            at = self.free_at;
        }
        at += s.latency + s.jitter.mul_f64(self.uniform());
        if tx
            .try_send(Delayed {
                at,
                bytes: bytes.to_vec(),
            })
            .is_err()
        {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        counters.forwarded.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends each datagram when its time comes. Jittered datagrams are held in time order, so
/// a later one may overtake an earlier one.
async fn deliver<F, Fut>(mut rx: mpsc::Receiver<Delayed>, send: F)
where
    F: Fn(Vec<u8>) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut heap: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64, Vec<u8>)>> =
        Default::default();
    let mut n = 0u64;
    loop {
        let next = heap.peek().map(|std::cmp::Reverse((at, _, _))| *at);
        tokio::select! {
            d = rx.recv() => match d {
                Some(d) => {
                    n += 1;
                    heap.push(std::cmp::Reverse((d.at, n, d.bytes)));
                }
                None if heap.is_empty() => return,
                None => {}
            },
            _ = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => {
                while heap.peek().is_some_and(|std::cmp::Reverse((at, _, _))| *at <= Instant::now()) {
                    let std::cmp::Reverse((_, _, bytes)) = heap.pop().expect("peeked");
                    send(bytes).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: latency adds twice to a round trip, a cut drops
    /// everything, loss drops about its share.
    #[tokio::test]
    async fn delays_drops_and_cuts() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let proxy = LinkProxy::start(
            target,
            Impairment {
                latency: Duration::from_millis(30),
                ..Impairment::default()
            },
        )
        .await
        .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(proxy.addr).await.unwrap();
        let mut buf = [0u8; 2048];
        let start = Instant::now();
        client.send(b"ping").await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), client.recv(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert!(
            start.elapsed() >= Duration::from_millis(60),
            "{:?}",
            start.elapsed()
        );

        proxy.cut(true);
        client.send(b"lost").await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), client.recv(&mut buf))
                .await
                .is_err()
        );
        proxy.set(Impairment {
            loss: 0.5,
            ..Impairment::default()
        });
        let mut answered = 0;
        for _ in 0..200 {
            client.send(b"x").await.unwrap();
        }
        while tokio::time::timeout(Duration::from_millis(200), client.recv(&mut buf))
            .await
            .is_ok()
        {
            answered += 1;
        }
        // Each datagram crosses twice: about a quarter come back.
        assert!((20..=90).contains(&answered), "{answered} of 200 answered");
    }

    /// A client that sends before the target listens (the kernel answers "port
    /// unreachable") is served once the target comes up, as over a real path.
    #[tokio::test]
    async fn a_target_that_comes_up_late_is_reached() {
        let target = {
            let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap()
        };
        let proxy = LinkProxy::start(target, Impairment::default())
            .await
            .unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(proxy.addr).await.unwrap();
        client.send(b"too early").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let echo = UdpSocket::bind(target).await.unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let mut buf = [0u8; 64];
        let mut answered = false;
        for _ in 0..20 {
            client.send(b"ping").await.unwrap();
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(100), client.recv(&mut buf)).await
            {
                assert_eq!(&buf[..n], b"ping");
                answered = true;
                break;
            }
        }
        assert!(
            answered,
            "the proxy's return path died with the early datagram"
        );
    }
}
