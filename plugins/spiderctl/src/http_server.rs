//! A small HTTP/1.1 server (hyper) for spiderctl's endpoints: the agent's /metrics, /healthz
//! and /readyz now, the webhook later. Whoever can reach the port must not be able to hold it:
//! the request head must arrive within `header_timeout`, the whole exchange ends after
//! `request_timeout`, bodies are capped, one request per connection, and connections beyond
//! `max_connections` are closed at once instead of queueing.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_body_bytes: usize,
}

impl Default for Limits {
    /// Enough for a Prometheus scrape or a kubelet probe; a slow or idle client is cut off.
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connections: 32,
            max_body_bytes: 64 * 1024,
        }
    }
}

/// Answers one request, whose body has been read in full (within the limit).
pub type Handler = dyn Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync;

/// Binds `addr` and serves `handler` on a thread of its own (with a single-threaded tokio
/// runtime) for the rest of the process; returns the bound address (port 0 picks one).
pub fn start(
    addr: SocketAddr,
    limits: Limits,
    handler: Arc<Handler>,
) -> Result<SocketAddr, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start the HTTP server's runtime: {e}"))?;
    let listener = runtime
        .block_on(TcpListener::bind(addr))
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("cannot read the address bound for {addr}: {e}"))?;
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || runtime.block_on(serve(listener, limits, handler)))
        .map_err(|e| format!("cannot start the HTTP server's thread: {e}"))?;
    Ok(bound)
}

async fn serve(listener: TcpListener, limits: Limits, handler: Arc<Handler>) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, mostly: back off rather than spin.
                eprintln!("http: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let handler = Arc::clone(&handler);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let handler = Arc::clone(&handler);
                async move { Ok::<_, Infallible>(respond(request, limits, &*handler).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            // A timeout or a client error ends this connection only.
            let _ = tokio::time::timeout(limits.request_timeout, connection).await;
            drop(slot);
        });
    }
}

async fn respond(
    request: Request<Incoming>,
    limits: Limits,
    handler: &Handler,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    match Limited::new(body, limits.max_body_bytes).collect().await {
        Ok(body) => handler(Request::from_parts(parts, body.to_bytes())),
        Err(e) => text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain; charset=utf-8",
            format!(
                "request body refused: {e} (at most {} bytes)\n",
                limits.max_body_bytes
            ),
        ),
    }
}

/// A response of `status` with `body` as `content_type`.
pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    fn hello(request: Request<Bytes>) -> Response<Full<Bytes>> {
        text(
            StatusCode::OK,
            "text/plain",
            format!("{} {}", request.method(), request.uri().path()),
        )
    }

    /// Reads until the server closes; what it sent and how long that took.
    fn until_closed(stream: &mut TcpStream) -> (String, Duration) {
        let started = Instant::now();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        (
            String::from_utf8_lossy(&out).into_owned(),
            started.elapsed(),
        )
    }

    #[test]
    fn idle_clients_are_cut_off_and_connections_beyond_the_limit_refused() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            request_timeout: Duration::from_secs(5),
            max_connections: 2,
            max_body_bytes: 16,
        };
        let addr = start("127.0.0.1:0".parse().unwrap(), limits, Arc::new(hello)).unwrap();
        let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // The listener accepts in connect order: both slots are taken when the third comes,
        // so it is closed at once, long before the idle ones time out.
        let mut third = TcpStream::connect(addr).unwrap();
        let (got, took) = until_closed(&mut third);
        assert!(
            got.is_empty() && took < Duration::from_millis(250),
            "{got} after {took:?}"
        );
        for stream in &mut idle {
            let (got, took) = until_closed(stream);
            assert!(
                took < Duration::from_secs(3),
                "idle connection kept for {took:?}: {got}"
            );
        }
        // Slots free again: a request is answered, one per connection.
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (got, _) = until_closed(&mut client);
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.ends_with("GET /metrics"), "{got}");
        // A body over the cap is refused.
        let mut client = TcpStream::connect(addr).unwrap();
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 17\r\n\r\n01234567890123456")
            .unwrap();
        let (got, _) = until_closed(&mut client);
        assert!(got.starts_with("HTTP/1.1 413"), "{got}");
    }
}
