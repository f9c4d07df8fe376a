//! `spiderctl webhook`: [`crate::inject::patch`] served as a Kubernetes mutating admission
//! endpoint. The API server POSTs an AdmissionReview (admission.k8s.io/v1) over HTTPS; the
//! answer is the same review with a `response`: allowed with a base64 JSONPatch when the
//! workload asks for injection, allowed unchanged when it does not (or its namespace is not
//! one to inject), refused with the reason when inject refuses it.
//!
//! Served by [`crate::http_server`]: TLS (rustls, ring) with HTTP/2 or HTTP/1.1 by ALPN and
//! keep-alive, within [`LIMITS`].

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{header, Method, Request, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use serde_json::{json, Value};

use crate::http_server::{self, Limits};
use crate::inject::{self, NETWORKS};
use crate::manifests::RawMultusConfig;

/// The webhook's limits. The API server waits `timeoutSeconds` for an answer (conf/deploy: 5 s;
/// 10 s by default, 30 s at most) and keeps its connections open: a handshake or a request
/// head that takes seconds on loopback or a pod network is no client worth a slot, and idle
/// connections give their slot to newcomers, so the connection cap only bounds memory.
pub const LIMITS: Limits = Limits {
    handshake_timeout: Duration::from_secs(3),
    header_timeout: Duration::from_secs(5),
    request_timeout: Duration::from_secs(10),
    max_connections: 512,
    // The API server caps objects at 3 MiB (etcd's request limit); the review wraps one.
    max_body_bytes: 4 << 20,
    max_head_bytes: 16 << 10,
    keep_alive: true,
    max_streams: 64,
};

/// What the webhook injects, and where.
pub struct Policy {
    pub configs: Vec<RawMultusConfig>,
    /// Only these namespaces (all when empty).
    pub include: Vec<String>,
    /// Never these; wins over `include`.
    pub exclude: Vec<String>,
}

impl Policy {
    fn injects_into(&self, namespace: &str) -> bool {
        !self.exclude.iter().any(|n| n == namespace)
            && (self.include.is_empty() || self.include.iter().any(|n| n == namespace))
    }
}

/// An HTTP answer: status, reason, JSON body.
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply {
            status,
            body: json!({ "error": message.into() }),
        }
    }
}

/// The CLI: loads the configs and the key pair, then serves until killed.
pub fn run(
    networks: &[PathBuf],
    cert: &Path,
    key: &Path,
    listen: SocketAddr,
    include: Vec<String>,
    exclude: Vec<String>,
) -> Result<(), String> {
    let configs = inject::read_networks(networks)?;
    // A group member that cannot be rendered refuses every workload of its group: say so now.
    for raw in &configs {
        let grouped = [inject::RDMA_INJECT, inject::NETWORK_INJECT]
            .iter()
            .any(|k| raw.annotations.contains_key(*k));
        if grouped {
            if let Err(e) = raw.validate() {
                eprintln!(
                    "spiderctl webhook: warning: workloads of its group will be refused: {e}"
                );
            }
        }
    }
    let tls = Arc::new(tls_config(cert, key)?);
    let policy = Arc::new(Policy {
        configs,
        include,
        exclude,
    });
    let handler = move |request: Request<Bytes>| answer(request, &policy);
    let bound = http_server::start(listen, LIMITS, Some(tls), Arc::new(handler))?;
    println!("spiderctl webhook listening on https://{bound}");
    io::stdout().flush().map_err(|e| e.to_string())?;
    // The server runs on its own thread for the rest of the process.
    loop {
        std::thread::park();
    }
}

fn tls_config(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {}: no CERTIFICATE in it: give the PEM certificate (chain) the API \
             server is told to trust (caBundle)",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        format!(
            "--tls-key {}: {e}: give the PEM private key (PKCS#8, PKCS#1 or SEC1) of the \
             certificate",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    // HTTP/2 first: the API server's Go client multiplexes its reviews on one connection.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// One HTTP request: a POST whose body is an AdmissionReview, on any path.
fn answer(request: Request<Bytes>, policy: &Policy) -> Response<Full<Bytes>> {
    let refused = if request.method() != Method::POST {
        Some(Reply::error(
            405,
            format!(
                "{} {}: only POST of an AdmissionReview is served",
                request.method(),
                request.uri().path()
            ),
        ))
    } else if request.body().is_empty() && !request.headers().contains_key(header::CONTENT_LENGTH) {
        Some(Reply::error(
            411,
            "a Content-Length and the AdmissionReview body are required",
        ))
    } else {
        None
    };
    let reply = match refused {
        Some(reply) => {
            eprintln!(
                "spiderctl webhook: {} {}",
                reply.status, reply.body["error"]
            );
            reply
        }
        None => {
            let reply = handle(request.body(), policy);
            log(request.body(), &reply);
            reply
        }
    };
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    http_server::text(status, "application/json", reply.body.to_string())
}

/// The answer to one request body: HTTP 200 with an AdmissionReview, or 400 when the body is
/// not an AdmissionReview v1 with a `request.uid`.
pub fn handle(body: &[u8], policy: &Policy) -> Reply {
    let review: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Reply::error(400, format!("the body is not JSON: {e}")),
    };
    match admit(&review, policy) {
        Ok(response) => Reply {
            status: 200,
            body: json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": response,
            }),
        },
        Err(message) => Reply::error(400, message),
    }
}

/// The review's `response`; Err for a body that is no AdmissionReview v1.
pub fn admit(review: &Value, policy: &Policy) -> Result<Value, String> {
    let api_version = review.get("apiVersion").and_then(Value::as_str);
    let kind = review.get("kind").and_then(Value::as_str);
    if api_version != Some("admission.k8s.io/v1") || kind != Some("AdmissionReview") {
        return Err(format!(
            "expected an AdmissionReview of admission.k8s.io/v1, got kind {} of apiVersion {}: \
             set admissionReviewVersions: [v1] in the MutatingWebhookConfiguration",
            kind.unwrap_or("(none)"),
            api_version.unwrap_or("(none)")
        ));
    }
    let request = review
        .get("request")
        .filter(|r| r.is_object())
        .ok_or("the AdmissionReview has no request object")?;
    let uid = request
        .get("uid")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or("the AdmissionReview's request has no uid")?;
    let allow = || json!({ "uid": uid, "allowed": true });
    // Only a CREATE is injected: an UPDATE's template already holds what its CREATE got, and
    // a Pod's annotations and resources cannot change after it is created.
    let operation = request.get("operation").and_then(Value::as_str);
    if operation.is_some_and(|o| o != "CREATE") {
        return Ok(allow());
    }
    let object = match request.get("object") {
        Some(o @ Value::Object(_)) => o,
        _ => return Err("the AdmissionReview's request has no object".into()),
    };
    let namespace = request
        .get("namespace")
        .and_then(Value::as_str)
        .or_else(|| {
            object
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
        })
        .unwrap_or("default");
    if !policy.injects_into(namespace) {
        return Ok(allow());
    }
    let deny = |code: u16, message: String| {
        json!({
            "uid": uid,
            "allowed": false,
            "status": { "code": code, "message": message },
        })
    };
    let Some(template) = template_pointer(object) else {
        // Not a kind inject knows: the webhook was registered for more than it serves.
        return Ok(allow());
    };
    match inject::group(object) {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(allow()),
        Err(e) => return Ok(deny(400, format!("{}: {e}", describe(object, namespace)))),
    }
    match inject::patch(object, &policy.configs) {
        Ok(ops) => {
            let patch = serde_json::to_vec(&ops).map_err(|e| e.to_string())?;
            let mut response = allow();
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
            Ok(response)
        }
        // A Pod of an injected Deployment's template: it has what it would get.
        Err(_) if already_injected(object, template, &policy.configs) => Ok(allow()),
        Err(e) => Ok(deny(403, format!("{}: {e}", describe(object, namespace)))),
    }
}

/// JSON pointer of the pod template of the kinds inject handles.
fn template_pointer(object: &Value) -> Option<&'static str> {
    match object.get("kind").and_then(Value::as_str)? {
        "Pod" => Some(""),
        "Deployment" | "DaemonSet" | "StatefulSet" | "Job" => Some("/spec/template"),
        _ => None,
    }
}

/// True when the object already carries exactly what inject would write: the networks
/// annotation it would set, and every RDMA resource in some container's limits.
fn already_injected(object: &Value, template: &str, configs: &[RawMultusConfig]) -> bool {
    let pointer = format!("{template}/metadata/annotations");
    let Some(existing) = object.pointer(&pointer).and_then(|a| a.get(NETWORKS)) else {
        return false;
    };
    let mut without = object.clone();
    if let Some(Value::Object(annotations)) = without.pointer_mut(&pointer) {
        annotations.remove(NETWORKS);
    }
    match inject::patch(&without, configs) {
        Ok(ops) => {
            ops.len() == 1
                && ops[0].path.ends_with("/k8s.v1.cni.cncf.io~1networks")
                && &ops[0].value == existing
        }
        Err(_) => false,
    }
}

/// `DaemonSet ns/name` for messages; a Pod may only have a generateName yet.
fn describe(object: &Value, namespace: &str) -> String {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("object");
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .or_else(|| {
            object
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
        })
        .unwrap_or("(unnamed)");
    format!("{kind} {namespace}/{name}")
}

/// One line per review on stderr: what was asked and what was answered.
fn log(body: &[u8], reply: &Reply) {
    let review: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let request = &review["request"];
    let what = format!(
        "{} {} {}",
        request["operation"].as_str().unwrap_or("-"),
        request["kind"]["kind"]
            .as_str()
            .or(request["object"]["kind"].as_str())
            .unwrap_or("-"),
        request["namespace"].as_str().unwrap_or("-"),
    );
    let response = &reply.body["response"];
    let outcome = if reply.status != 200 {
        format!("{} {}", reply.status, reply.body["error"])
    } else if response["allowed"] == json!(false) {
        format!("denied: {}", response["status"]["message"])
    } else if response.get("patch").is_some() {
        "patched".into()
    } else {
        "allowed".into()
    };
    eprintln!(
        "spiderctl webhook: {} {what}: {outcome}",
        request["uid"].as_str().unwrap_or("-")
    );
}
