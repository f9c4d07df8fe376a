//! `spiderctl webhook`: [`crate::inject::patch`] served as a Kubernetes mutating admission
//! endpoint. The API server POSTs an AdmissionReview (admission.k8s.io/v1) over HTTPS; the
//! answer is the same review with a `response`: allowed with a base64 JSONPatch when the
//! workload asks for injection, allowed unchanged when it does not (or its namespace is not
//! one to inject), refused with the reason when inject refuses it.
//!
//! Deliberately small and synchronous: a blocking TLS listener, one thread per connection
//! (at most [`MAX_CONNECTIONS`] at once), one request per connection, bodies of at most
//! [`MAX_BODY`] bytes with a Content-Length.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use serde_json::{json, Value};

use crate::inject::{self, NETWORKS};
use crate::manifests::RawMultusConfig;

/// Connections served at once; the next waits in the listen backlog.
pub const MAX_CONNECTIONS: usize = 16;
/// Largest request body; the API server caps objects at 3 MiB (etcd's request limit).
pub const MAX_BODY: usize = 4 << 20;
/// Largest request line plus headers.
const MAX_HEAD: usize = 16 << 10;
/// A client that stalls longer than this is dropped; the API server's webhook timeout is at
/// most 30 s.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

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
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    println!("spiderctl webhook listening on https://{bound}");
    io::stdout().flush().map_err(|e| e.to_string())?;

    let slots = Arc::new((Mutex::new(0usize), Condvar::new()));
    loop {
        {
            let (busy, freed) = &*slots;
            let mut busy = busy.lock().expect("slot count");
            while *busy >= MAX_CONNECTIONS {
                busy = freed.wait(busy).expect("slot count");
            }
            *busy += 1;
        }
        let release = SlotGuard(slots.clone());
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("spiderctl webhook: accept: {e}");
                continue;
            }
        };
        let (tls, policy) = (tls.clone(), policy.clone());
        std::thread::spawn(move || {
            let _release = release;
            let peer = stream
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            if let Err(e) = serve(stream, tls, &policy) {
                eprintln!("spiderctl webhook: {peer}: {e}");
            }
        });
    }
}

/// Gives a connection slot back when the connection's thread ends, however it ends.
struct SlotGuard(Arc<(Mutex<usize>, Condvar)>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let (busy, freed) = &*self.0;
        if let Ok(mut busy) = busy.lock() {
            *busy -= 1;
        }
        freed.notify_one();
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
    // HTTP/1.1 only: the API server's client falls back to it.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One connection: one request, one answer, then close.
fn serve(stream: TcpStream, tls: Arc<ServerConfig>, policy: &Policy) -> Result<(), String> {
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let conn = ServerConnection::new(tls).map_err(|e| e.to_string())?;
    let mut tls = StreamOwned::new(conn, stream);
    let reply = match read_request(&mut tls) {
        Ok(body) => {
            let reply = handle(&body, policy);
            log(&body, &reply);
            reply
        }
        Err(RequestError::Io(e)) => return Err(format!("reading the request: {e}")),
        Err(RequestError::Http(reply)) => {
            eprintln!(
                "spiderctl webhook: {} {}",
                reply.status, reply.body["error"]
            );
            reply
        }
    };
    let body = reply.body.to_string();
    let head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        reply.status,
        reason(reply.status),
        body.len()
    );
    tls.write_all(head.as_bytes())
        .and_then(|()| tls.write_all(body.as_bytes()))
        .and_then(|()| {
            tls.conn.send_close_notify();
            tls.flush()
        })
        .map_err(|e| format!("writing the answer: {e}"))
}

enum RequestError {
    /// The connection failed (TLS handshake, reset, timeout): nothing to answer.
    Io(io::Error),
    /// A request we answer with this error.
    Http(Reply),
}

impl From<io::Error> for RequestError {
    fn from(e: io::Error) -> Self {
        RequestError::Io(e)
    }
}

/// Reads a POST with a Content-Length body, the only thing the API server sends.
fn read_request<S: Read + Write>(stream: &mut S) -> Result<Vec<u8>, RequestError> {
    let mut reader = BufReader::new(stream);
    let mut head_len = 0;
    let mut line = String::new();
    let mut read_line =
        |reader: &mut BufReader<_>, line: &mut String| -> Result<(), RequestError> {
            line.clear();
            let n = reader
                .by_ref()
                .take((MAX_HEAD - head_len) as u64 + 1)
                .read_line(line)?;
            head_len += n;
            if head_len > MAX_HEAD {
                return Err(RequestError::Http(Reply::error(
                    431,
                    format!("request head over {MAX_HEAD} bytes"),
                )));
            }
            if n == 0 || !line.ends_with('\n') {
                return Err(
                    io::Error::new(io::ErrorKind::UnexpectedEof, "request head cut short").into(),
                );
            }
            Ok(())
        };
    read_line(&mut reader, &mut line)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let bad = |status: u16, message: String| Err(RequestError::Http(Reply::error(status, message)));
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return bad(
            400,
            format!("not an HTTP/1.x request line: {:?}", line.trim_end()),
        );
    }
    if method != "POST" {
        return bad(
            405,
            format!("{method} {target}: only POST of an AdmissionReview is served"),
        );
    }
    let mut length: Option<usize> = None;
    let mut expect_continue = false;
    loop {
        read_line(&mut reader, &mut line)?;
        let header = line.trim_end_matches(['\r', '\n']);
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return bad(400, format!("malformed header line {header:?}"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return bad(400, format!("bad Content-Length {value:?}")),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return bad(
                411,
                format!("Transfer-Encoding {value} is not supported: send a Content-Length"),
            );
        } else if name.eq_ignore_ascii_case("expect") && value.eq_ignore_ascii_case("100-continue")
        {
            expect_continue = true;
        }
    }
    let Some(length) = length else {
        return bad(411, "a Content-Length is required".into());
    };
    if length > MAX_BODY {
        return bad(
            413,
            format!("body of {length} bytes is over the limit of {MAX_BODY}"),
        );
    }
    if expect_continue {
        let stream = reader.get_mut();
        stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        stream.flush()?;
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(body)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
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
