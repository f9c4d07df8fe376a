//! A small HTTP server (hyper) for spiderctl's endpoints: the agent's /metrics, /healthz and
//! /readyz over plain HTTP/1.1, the webhook over TLS with HTTP/2 or HTTP/1.1 by ALPN. Whoever
//! can reach the port must not be able to hold it: the TLS handshake must end within
//! `handshake_timeout`, each request head arrive within `header_timeout` (with keep-alive also
//! the time an HTTP/1 connection may sit idle), each body within `request_timeout`, bodies are
//! capped, and when all `max_connections` slots are taken an idle connection gives its slot to
//! the newcomer ([`slots`]).

mod slots;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use slots::{Slot, Slots};

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// TLS only: from accept to the end of the handshake.
    pub handshake_timeout: Duration,
    pub header_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub max_body_bytes: usize,
    /// Request line plus headers (HTTP/1: at least 8 KiB, hyper's floor).
    pub max_head_bytes: usize,
    /// HTTP/1 keep-alive; HTTP/2 connections always carry many requests.
    pub keep_alive: bool,
    /// HTTP/2 streams at once on one connection.
    pub max_streams: u32,
}

impl Default for Limits {
    /// Enough for a Prometheus scrape or a kubelet probe; a slow or idle client is cut off.
    fn default() -> Limits {
        Limits {
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_connections: 32,
            max_body_bytes: 64 * 1024,
            max_head_bytes: 16 * 1024,
            keep_alive: false,
            max_streams: 16,
        }
    }
}

/// Answers one request, whose body has been read in full (within the limit).
pub type Handler = dyn Fn(Request<Bytes>) -> Response<Full<Bytes>> + Send + Sync;

/// Binds `addr` and serves `handler` (over TLS when `tls` is given) on a thread of its own,
/// with a single-threaded tokio runtime, for the rest of the process; returns the bound
/// address (port 0 picks one).
pub fn start(
    addr: SocketAddr,
    limits: Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
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
    let tls = tls.map(TlsAcceptor::from);
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || runtime.block_on(serve(listener, limits, tls, handler)))
        .map_err(|e| format!("cannot start the HTTP server's thread: {e}"))?;
    Ok(bound)
}

async fn serve(
    listener: TcpListener,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    handler: Arc<Handler>,
) {
    let slots = Slots::new(limits.max_connections);
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
        // Every slot inside a request: this one is closed at once rather than queued.
        let Some(slot) = slots.admit() else {
            continue;
        };
        let (tls, handler) = (tls.clone(), Arc::clone(&handler));
        tokio::spawn(async move {
            // A timeout, a client error or an eviction ends this connection only.
            tokio::select! {
                () = slot.evicted() => {}
                () = connection(stream, limits, tls, handler, &slot) => {}
            }
        });
    }
}

/// One connection: the TLS handshake if any, then HTTP/2 when ALPN chose it, else HTTP/1.1.
async fn connection(
    stream: TcpStream,
    limits: Limits,
    tls: Option<TlsAcceptor>,
    handler: Arc<Handler>,
    slot: &Slot,
) {
    let Some(acceptor) = tls else {
        return http1_connection(stream, limits, handler, slot).await;
    };
    let Ok(Ok(stream)) =
        tokio::time::timeout(limits.handshake_timeout, acceptor.accept(stream)).await
    else {
        return;
    };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        let service = service(limits, handler, slot);
        let _ = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.max_streams)
            .max_header_list_size(u32::try_from(limits.max_head_bytes).unwrap_or(u32::MAX))
            .serve_connection(TokioIo::new(stream), service)
            .await;
    } else {
        http1_connection(stream, limits, handler, slot).await;
    }
}

async fn http1_connection<S>(stream: S, limits: Limits, handler: Arc<Handler>, slot: &Slot)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service(limits, handler, slot);
    let _ = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .keep_alive(limits.keep_alive)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// The connection's hyper service: each request marks the slot busy until it is answered.
fn service(
    limits: Limits,
    handler: Arc<Handler>,
    slot: &Slot,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
> + Clone {
    let slot = slot.handle();
    service_fn(move |request| {
        let (handler, busy) = (Arc::clone(&handler), slot.busy());
        async move {
            let response = respond(request, limits, &*handler).await;
            drop(busy);
            Ok::<_, Infallible>(response)
        }
    })
}

async fn respond(
    request: Request<Incoming>,
    limits: Limits,
    handler: &Handler,
) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let too_large = |detail: String| {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text/plain; charset=utf-8",
            format!(
                "request body refused: {detail} (at most {} bytes)\n",
                limits.max_body_bytes
            ),
        )
    };
    // A declared length over the cap is refused before any of the body is read.
    let declared = body.size_hint().lower();
    if declared > limits.max_body_bytes as u64 {
        return too_large(format!("Content-Length {declared}"));
    }
    let read = Limited::new(body, limits.max_body_bytes).collect();
    match tokio::time::timeout(limits.request_timeout, read).await {
        Ok(Ok(body)) => handler(Request::from_parts(parts, body.to_bytes())),
        Ok(Err(e)) => too_large(e.to_string()),
        Err(_) => text(
            StatusCode::REQUEST_TIMEOUT,
            "text/plain; charset=utf-8",
            format!(
                "the request body did not arrive within {:?}\n",
                limits.request_timeout
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
    fn idle_clients_are_cut_off_and_give_their_slot_to_a_newcomer() {
        let limits = Limits {
            header_timeout: Duration::from_millis(300),
            max_connections: 2,
            max_body_bytes: 16,
            ..Limits::default()
        };
        let addr = start(
            "127.0.0.1:0".parse().unwrap(),
            limits,
            None,
            Arc::new(hello),
        )
        .unwrap();
        let mut idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // The listener accepts in connect order: both slots are taken when the third comes,
        // so the longest idle one is closed at once, long before the header timeout.
        let mut third = TcpStream::connect(addr).unwrap();
        let (got, took) = until_closed(&mut idle[0]);
        assert!(
            got.is_empty() && took < Duration::from_millis(250),
            "{got} after {took:?}"
        );
        for stream in [&mut idle[1], &mut third] {
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
