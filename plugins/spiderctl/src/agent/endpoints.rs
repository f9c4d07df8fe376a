//! The agent's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the loop is alive),
//! `/readyz` (the plugins are installed and a config is in force).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};

use super::metrics::Metrics;
use crate::http_server::{self, Limits};

const TEXT: &str = "text/plain; charset=utf-8";
const EXPOSITION: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What /healthz and /readyz report, set by the loop.
pub struct Health {
    /// When the loop last got round (a pass or a poll of the config dir).
    heartbeat: Mutex<Instant>,
    /// Why the agent is not ready; `None` when it is.
    not_ready: Mutex<Option<String>>,
    /// The loop is stuck when it has not got round for this long.
    stuck_after: Duration,
}

impl Health {
    pub fn new(stuck_after: Duration) -> Health {
        Health {
            heartbeat: Mutex::new(Instant::now()),
            not_ready: Mutex::new(Some("the first pass has not completed".into())),
            stuck_after,
        }
    }

    pub fn beat(&self) {
        *self.heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    pub fn set_ready(&self, not_ready: Option<String>) {
        *self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) = not_ready;
    }

    fn live(&self) -> Result<(), String> {
        let since = self
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed();
        if since > self.stuck_after {
            return Err(format!(
                "the agent's loop has not got round for {}s",
                since.as_secs()
            ));
        }
        Ok(())
    }

    fn ready(&self) -> Result<(), String> {
        self.live()?;
        match &*self.not_ready.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }
}

/// Serves the endpoints on `addr`; returns the bound address.
pub fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> Result<SocketAddr, String> {
    let handler = move |request: Request<Bytes>| route(&request, &metrics, &health);
    http_server::start(addr, Limits::default(), None, Arc::new(handler))
}

fn route(request: &Request<Bytes>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return http_server::text(StatusCode::METHOD_NOT_ALLOWED, TEXT, "GET only\n".into());
    }
    let check = |result: Result<(), String>| match result {
        Ok(()) => http_server::text(StatusCode::OK, TEXT, "ok\n".into()),
        Err(why) => http_server::text(StatusCode::SERVICE_UNAVAILABLE, TEXT, format!("{why}\n")),
    };
    match request.uri().path() {
        "/metrics" => http_server::text(StatusCode::OK, EXPOSITION, metrics.render()),
        "/healthz" => check(health.live()),
        "/readyz" => check(health.ready()),
        other => http_server::text(
            StatusCode::NOT_FOUND,
            TEXT,
            format!("no {other} here: /metrics, /healthz, /readyz\n"),
        ),
    }
}
