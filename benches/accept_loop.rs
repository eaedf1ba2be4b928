//! The cost of kefu's accept loop (`server/listener.rs`: connection cap, header-read timeout,
//! idle timeouts on bodies and writes) against plain `axum::serve`, on the same tiny router,
//! over loopback: a reqwest client keeps `in_flight` requests going on kept-alive
//! connections. Only the serving differs, so the gap is what the limits cost per request.
//!
//! `cargo bench --bench accept_loop`; figures go in notes, never in asserts.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::StreamExt;
use kefu::server::listener::{self, Limits};
use tokio::net::TcpListener;

fn router() -> Router {
    Router::new().route("/ok", get(|| async { "ok" })).route(
        "/echo",
        post(|body: axum::body::Body| async move {
            axum::body::to_bytes(body, 1 << 16)
                .await
                .map(|b| b.len().to_string())
                .unwrap_or_default()
        }),
    )
}

type Server = Pin<Box<dyn Future<Output = ()> + Send>>;

fn axum_serve(l: TcpListener) -> Server {
    Box::pin(async move {
        let _ = axum::serve(l, router()).await;
    })
}

fn kefu_serve(l: TcpListener) -> Server {
    let limits = Limits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        max_connections: 1024,
    };
    Box::pin(async move {
        let _ = listener::serve(l, router(), limits, std::future::pending()).await;
    })
}

fn accept_loop(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut group = c.benchmark_group("accept_loop");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for (name, serve) in [
        ("axum_serve", axum_serve as fn(TcpListener) -> Server),
        ("kefu_listener", kefu_serve),
    ] {
        let base = rt.block_on(async {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let base = format!("http://{}", l.local_addr().expect("addr"));
            tokio::spawn(serve(l));
            base
        });
        let http = reqwest::Client::new();
        for in_flight in [1usize, 32] {
            for (what, path, body) in [
                ("get", "/ok", None),
                ("post_1k", "/echo", Some("x".repeat(1024))),
            ] {
                let id = format!("{name}/{what}/{in_flight}_in_flight");
                group.bench_function(id, |b| {
                    b.iter_custom(|iters| {
                        rt.block_on(async {
                            let started = Instant::now();
                            let mut answers = futures::stream::iter(0..iters)
                                .map(|_| {
                                    let req = match &body {
                                        Some(b) => {
                                            http.post(format!("{base}{path}")).body(b.clone())
                                        }
                                        None => http.get(format!("{base}{path}")),
                                    };
                                    req.send()
                                })
                                .buffer_unordered(in_flight);
                            while let Some(r) = answers.next().await {
                                let r = r.expect("answer");
                                assert!(r.status().is_success());
                                let _ = r.bytes().await;
                            }
                            started.elapsed()
                        })
                    })
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, accept_loop);
criterion_main!(benches);
