//! The broker's gRPC listener is bounded as its Kafka listener is, against a real broker:
//! a connection past the per-address or the listener's limit is answered
//! RESOURCE_EXHAUSTED naming the key to raise, connections with no request in flight are
//! closed after the idle timeout (and give their places back), a request whose body stops
//! arriving fails with DEADLINE_EXCEEDED, and the broker serves other clients throughout.

use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use meridian_proto::v1::broker_client::BrokerClient;
use meridian_proto::v1::{ListTopicsRequest, ListTopicsResponse};
use meridian_tests::{BrokerProcess, http_get};
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects from a chosen loopback address (127.0.0.x), whatever the URI says.
#[derive(Clone)]
struct From(SocketAddr, [u8; 4]);

impl tonic::codegen::Service<Uri> for From {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (to, from) = (self.0, self.1);
        Box::pin(async move {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((from, 0)))?;
            Ok(TokioIo::new(socket.connect(to).await?))
        })
    }
}

/// A gRPC channel to the broker at `to` from the local address `from`.
async fn channel_from(from: [u8; 4], to: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{to}"))
        .unwrap()
        .connect_with_connector(From(to, from))
        .await
        .expect("connecting to the gRPC listener")
}

async fn list_topics(channel: &Channel) -> Result<ListTopicsResponse, tonic::Status> {
    BrokerClient::new(channel.clone())
        .list_topics(ListTopicsRequest {})
        .await
        .map(tonic::Response::into_inner)
}

/// A plain TCP connection from `from` that sends nothing (counted, then idle).
fn silent_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    // Bound first: std cannot, so through tokio's socket, handed back as a std stream.
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(async {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::from((from, 0))).unwrap();
            let stream = socket.connect(to).await.unwrap().into_std().unwrap();
            stream.set_nonblocking(false).unwrap();
            stream
        })
    })
}

/// Whether the broker closed `stream` (a read sees EOF or a reset within `wait`).
fn closed_by_broker(stream: &mut TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // The server's HTTP/2 settings: read on.
            Ok(_) => continue,
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                );
            }
        }
    }
}

/// A metric's value from the broker's /metrics (0 when absent).
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let text = http_get(addr, "/metrics").await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_connections_are_bounded_and_idle_ones_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(
        tmp.path(),
        &[
            "--grpc-connections-per-address-max",
            "4",
            "--grpc-connections-max",
            "7",
            "--grpc-idle-timeout-ms",
            "2000",
        ],
    )
    .await
    .unwrap();
    let addr = broker.addr;
    // The start-up check's connection (from 127.0.0.1) is closed once its client is gone.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Four from one address are taken; the fifth is answered with the refusal.
    let mut silent: Vec<TcpStream> = (0..4).map(|_| silent_from([127, 0, 0, 2], addr)).collect();
    let over = channel_from([127, 0, 0, 2], addr).await;
    let refused = list_topics(&over).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("grpc.connections_per_address_max"),
        "{refused:?}"
    );
    // Another address is served meanwhile.
    let other = channel_from([127, 0, 0, 3], addr).await;
    list_topics(&other)
        .await
        .expect("another address is served");
    // Two more fill the listener's seven; an eighth, from a new address, is refused.
    silent.push(silent_from([127, 0, 0, 4], addr));
    silent.push(silent_from([127, 0, 0, 4], addr));
    let full = channel_from([127, 0, 0, 5], addr).await;
    let refused = list_topics(&full).await.unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("grpc.connections_max"),
        "{refused:?}"
    );
    drop((over, full));

    // Idle connections are closed after the idle timeout and give their places back.
    tokio::task::spawn_blocking(move || {
        for s in &mut silent {
            assert!(
                closed_by_broker(s, Duration::from_secs(10)),
                "an idle connection is closed"
            );
        }
    })
    .await
    .unwrap();
    assert!(
        metric(broker.metrics, "meridian_grpc_idle_closed_total").await >= 6.0,
        "idle closes are counted"
    );
    let again = channel_from([127, 0, 0, 2], addr).await;
    list_topics(&again)
        .await
        .expect("served again once the idle ones closed");
    // The channel whose connection was closed while idle reconnects on its next call.
    list_topics(&other)
        .await
        .expect("a closed idle channel reconnects");

    // A request whose body stops half-way fails after the idle timeout; others are served.
    let mut grpc = tonic::client::Grpc::new(again.clone());
    grpc.ready().await.unwrap();
    use tonic::codegen::tokio_stream::{self, StreamExt};
    let body = tokio_stream::iter([ListTopicsRequest {}]).chain(tokio_stream::pending());
    let started = std::time::Instant::now();
    let stalled = grpc
        .client_streaming::<_, ListTopicsRequest, ListTopicsResponse, _>(
            tonic::Request::new(body),
            tonic::codegen::http::uri::PathAndQuery::from_static("/meridian.v1.Broker/ListTopics"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(stalled.code(), tonic::Code::DeadlineExceeded, "{stalled:?}");
    assert!(
        stalled.message().contains("grpc.idle_timeout_ms"),
        "{stalled:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(1500));
    list_topics(&other)
        .await
        .expect("the broker serves others throughout");
}

/// The raft transport's port is bounded by the same `[grpc]` limits as the API: anyone who
/// reaches it can connect, not only peers. A connection past the per-address limit is
/// answered RESOURCE_EXHAUSTED naming the key, and the broker goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raft_transport_port_is_bounded_too() {
    let tmp = tempfile::tempdir().unwrap();
    let (grpc, raft) = (meridian_tests::free_addr(), meridian_tests::free_addr());
    let (raft_flag, peer) = (raft.to_string(), format!("1={raft},{grpc}"));
    let broker = BrokerProcess::start_at(
        tmp.path(),
        grpc,
        &[
            "--broker-id",
            "1",
            "--raft-listen",
            &raft_flag,
            "--peer",
            &peer,
            "--sync-replicas",
            "0",
            "--grpc-connections-per-address-max",
            "3",
        ],
    )
    .await
    .unwrap();
    let silent: Vec<TcpStream> = (0..3).map(|_| silent_from([127, 0, 0, 9], raft)).collect();
    let over = channel_from([127, 0, 0, 9], raft).await;
    let mut call = tonic::client::Grpc::new(over);
    call.ready().await.unwrap();
    let refused = call
        .unary::<ListTopicsRequest, ListTopicsResponse, _>(
            tonic::Request::new(ListTopicsRequest {}),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/meridian.v1.RaftTransport/Append",
            ),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("grpc.connections_per_address_max"),
        "{refused:?}"
    );
    // The broker's raft group of one goes on committing: a topic is created and written.
    let client = broker.client().await;
    client.create_topic("bounded", 1).await.unwrap();
    client
        .producer(meridian_client::ProducerConfig::default())
        .send(meridian_client::Record::new("bounded", "still served"))
        .await
        .await
        .unwrap();
    drop(silent);
}
