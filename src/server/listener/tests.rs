//! The limits over real sockets on 127.0.0.1:0, with timeouts of a few hundred ms. Each
//! test waits for an effect (a closed socket, an answer) under a generous guard: slowness
//! can make them wait longer, never pass wrongly.

use std::time::Duration;

use axum::body::Body;
use axum::routing::{get, post};
use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;
use crate::server::error::read_body;
use crate::server::ApiError;

const GUARD: Duration = Duration::from_secs(10);

fn app() -> Router {
    Router::new()
        .route("/small", get(|| async { "ok" }))
        .route(
            "/big",
            get(|| async {
                // 256 MB, streamed: far more than the socket buffers hold.
                let chunk = Bytes::from(vec![b'x'; 1 << 16]);
                Body::from_stream(
                    futures::stream::repeat(chunk)
                        .take(4096)
                        .map(Ok::<_, std::io::Error>),
                )
            }),
        )
        .route(
            "/echo",
            post(|body: Body| async move {
                read_body(body, 1 << 20)
                    .await
                    .map(|b| b.len().to_string())
                    .map_err(|e: ApiError| e)
            }),
        )
}

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

async fn start(limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app(), limits, async {
        let _ = rx.await;
    }));
    Server {
        addr,
        stop: Some(tx),
        task,
    }
}

fn limits(header_ms: u64, idle_ms: u64, max: usize) -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(header_ms),
        idle_timeout: Duration::from_millis(idle_ms),
        max_connections: max,
    }
}

/// Read until the server closes the connection; returns what it sent.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let r = tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(r.is_ok(), "the server never closed the connection");
    String::from_utf8_lossy(&out).to_string()
}

/// One complete response on a fresh connection.
async fn get_small(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    read_to_close(&mut s).await
}

#[tokio::test]
async fn a_request_head_that_never_finishes_is_cut_off() {
    let srv = start(limits(300, 10_000, 16)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    assert!(!got.contains("200 OK"), "{got}");
    assert!(get_small(srv.addr).await.contains("200 OK"));
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed() {
    let srv = start(limits(300, 10_000, 16)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // The answer comes, the connection stays open for another request …
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(GUARD, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    // … and is closed when none comes.
    let rest = read_to_close(&mut s).await;
    assert!(rest.is_empty(), "{rest}");
}

#[tokio::test]
async fn a_stalled_request_body_gets_408() {
    let srv = start(limits(10_000, 300, 16)).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let got = read_to_close(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("stopped arriving"), "{got}");
    // A complete body is fine.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(
        b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\nabc",
    )
    .await
    .unwrap();
    assert!(read_to_close(&mut s).await.ends_with("\r\n\r\n3"));
}

#[tokio::test]
async fn connections_over_the_cap_wait_until_a_slot_frees() {
    let srv = start(limits(30_000, 30_000, 2)).await;
    // Two clients hold both slots with heads they never finish.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /small HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    // A third gets through TCP (the backlog) but no answer while they hold on.
    let mut third = TcpStream::connect(srv.addr).await.unwrap();
    third
        .write_all(b"GET /small HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "answered above the cap: {early:?}");
    // One leaves: the third is served.
    drop(held.pop());
    assert!(read_to_close(&mut third).await.contains("200 OK"));
}

#[tokio::test]
async fn a_client_that_stops_reading_loses_its_slot() {
    // One slot. A client asks for a large response and never reads it: the writes stall,
    // the idle timeout ends that connection, and the next client is served.
    let srv = start(limits(30_000, 300, 1)).await;
    let mut hog = TcpStream::connect(srv.addr).await.unwrap();
    hog.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let next = tokio::time::timeout(GUARD, get_small(srv.addr)).await;
    assert!(
        next.is_ok_and(|r| r.contains("200 OK")),
        "the stalled client kept the only slot"
    );
    drop(hog);
}

#[tokio::test]
async fn shutdown_finishes_and_returns() {
    let mut srv = start(limits(10_000, 10_000, 4)).await;
    assert!(get_small(srv.addr).await.contains("200 OK"));
    // An idle kept-alive connection must not hold shutdown up.
    let mut idle = TcpStream::connect(srv.addr).await.unwrap();
    idle.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let _ = idle.read(&mut buf).await.unwrap();
    let _ = srv.stop.take().unwrap().send(());
    let r = tokio::time::timeout(GUARD, srv.task).await;
    assert!(matches!(r, Ok(Ok(Ok(())))), "{r:?}");
    assert!(
        TcpStream::connect(srv.addr).await.is_err(),
        "still accepting after shutdown"
    );
}
