//! The connection to etcd: a single-threaded tokio runtime (the plugin is a short-lived
//! process; one thread is all it needs) and the client, with every store operation run to
//! completion under one deadline and its errors turned into [`StoreError`]s.

use std::future::Future;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, KvClient, TlsOptions};

use crate::error::StoreError;
use crate::store::EtcdConfig;

/// The gRPC status codes a retry can cure, by their wire numbers (fixed by the gRPC spec, so
/// no direct dependency on tonic for its `Code` enum): CANCELLED 1, UNKNOWN 2,
/// DEADLINE_EXCEEDED 4, ABORTED 10, UNAVAILABLE 14.
const TRANSIENT_CODES: [i32; 5] = [1, 2, 4, 10, 14];

pub(crate) struct Conn {
    runtime: tokio::runtime::Runtime,
    kv: KvClient,
    endpoints: String,
    timeout: Duration,
}

impl Conn {
    pub fn open(config: &EtcdConfig) -> Result<Conn, StoreError> {
        let endpoints = config.endpoints.join(",");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| StoreError::Etcd {
                endpoints: endpoints.clone(),
                op: "start the etcd client",
                reason: e.to_string(),
            })?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let mut options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        if let Some(ca) = &config.ca_file {
            let mut tls = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read_pem("read store.ca_file", ca)?));
            if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
                tls = tls.identity(Identity::from_pem(
                    read_pem("read store.cert_file", cert)?,
                    read_pem("read store.key_file", key)?,
                ));
            }
            options = options.with_tls(tls);
        }
        // The channel is lazy: this fails only on a bad endpoint or TLS setup, never because
        // etcd is down, so its errors are configuration errors.
        let client = runtime
            .block_on(Client::connect(&config.endpoints, Some(options)))
            .map_err(|e| StoreError::Etcd {
                endpoints: endpoints.clone(),
                op: "set up a client for",
                reason: e.to_string(),
            })?;
        Ok(Conn {
            runtime,
            kv: client.kv_client(),
            endpoints,
            timeout,
        })
    }

    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    /// A handle for one operation's requests (a cheap clone of the shared channel).
    pub fn kv(&self) -> KvClient {
        self.kv.clone()
    }

    /// Runs one store operation to completion, all of its requests within `timeout_ms`: a
    /// runtime waiting longer gets code 11 and retries, which is safe as every change is one
    /// transaction that happened or did not.
    pub fn block<T>(
        &self,
        op: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match self
            .runtime
            .block_on(async { tokio::time::timeout(self.timeout, op).await })
        {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::Unavailable {
                endpoints: self.endpoints.clone(),
                reason: format!(
                    "no answer within store.timeout_ms = {} ms",
                    self.timeout.as_millis()
                ),
            }),
        }
    }

    /// Classifies a failed request: what a retry can cure (etcd down, no leader, a timeout)
    /// is `Unavailable`, the rest (a refused request, a full database) is `Etcd`.
    pub fn error(&self, op: &'static str) -> impl FnOnce(etcd_client::Error) -> StoreError + '_ {
        move |e| {
            let transient = match &e {
                etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
                // A lost connection surfaces as Unknown ("transport error"); etcd's own
                // refusals carry specific codes.
                etcd_client::Error::GRpcStatus(status) => {
                    TRANSIENT_CODES.contains(&i32::from(status.code()))
                }
                _ => false,
            };
            let reason = match &e {
                etcd_client::Error::GRpcStatus(status) => status.message().to_owned(),
                other => other.to_string(),
            };
            if transient {
                StoreError::Unavailable {
                    endpoints: self.endpoints.clone(),
                    reason,
                }
            } else {
                StoreError::Etcd {
                    endpoints: self.endpoints.clone(),
                    op,
                    reason,
                }
            }
        }
    }
}

fn read_pem(field: &'static str, path: &std::path::Path) -> Result<Vec<u8>, StoreError> {
    std::fs::read(path).map_err(StoreError::io(field, path))
}
