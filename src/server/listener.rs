//! The accept loop: what `axum::serve` does, plus the limits it does not offer.
//!
//! - **Connection cap** (`server.max_connections`): a slot is taken before `accept`, so at
//!   the cap further clients wait in the kernel's listen backlog instead of costing a file
//!   descriptor and memory each (20,000 held connections once exhausted the descriptors).
//! - **Header-read timeout** (`server.header_read_timeout_ms`, hyper's): a request head must
//!   arrive in full within it. hyper starts that clock whenever it waits for a request, so an
//!   idle kept-alive connection is closed after the same time.
//! - **Idle timeout** (`server.idle_timeout_ms`): a request body that stops arriving (408) or
//!   a response the client stops reading ends the connection. It is not a limit on how long
//!   a handler may think (a turn waiting on a slow model is not idle).
//!
//! Shutdown is axum's: stop accepting, let each connection finish its request, wait for all.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Sleep;
use tower::Service;
use tower_http::timeout::TimeoutBody;

use crate::config::ServerConfig;

/// The connection limits of `[server]`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

impl Limits {
    pub fn from_config(s: &ServerConfig) -> Self {
        Limits {
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(s.idle_timeout_ms),
            max_connections: s.max_connections.max(1),
        }
    }
}

/// Serve `router` on `listener` until `shutdown` completes, then finish the requests in
/// flight. Handlers see the peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    // `stop` asks every connection to finish; `done` is dropped by each when it has.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break, // never closed
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop_rx.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            connection(stream, peer, router, limits, stop).await;
            drop(slot);
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// Serve one connection until it ends or `stop` turns true (then finish gracefully).
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let idle = limits.idle_timeout;
    let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let mut req = req.map(|b| Body::new(TimeoutBody::new(idle, b)));
        req.extensions_mut().insert(ConnectInfo(peer));
        router.clone().call(req)
    });
    let io = TokioIo::new(StallTimeout::new(stream, idle));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut conn = pin!(builder.serve_connection(io, svc));
    if !*stop.borrow() {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = stop.changed() => {}
        }
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}

/// Errors of `accept`: a client that vanished mid-handshake is nothing; running out of file
/// descriptors (or memory) must not spin the loop.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; pausing 1 s (file descriptors exhausted? lower server.max_connections or raise ulimit -n)");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A socket whose writes (and flush, shutdown) fail with `TimedOut` once they have made no
/// progress for `timeout`: the client stopped reading. Reads pass through untouched: a
/// connection waiting on its handler is quiet without being stuck.
struct StallTimeout<T> {
    inner: T,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> StallTimeout<T> {
    fn new(inner: T, timeout: Duration) -> Self {
        StallTimeout {
            inner,
            timeout,
            deadline: None,
        }
    }

    /// After a write-side poll: progress clears the deadline; `Pending` starts it (once) and
    /// turns into an error when it has passed.
    fn watch<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(r) => {
                self.deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let deadline = self
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client stopped reading",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(cx, polled)
    }
}

#[cfg(test)]
mod tests;
