//! `spiderctl webhook` over real HTTPS on 127.0.0.1: a self-signed certificate made with the
//! openssl CLI, the built binary listening on a free port, AdmissionReviews POSTed by a rustls
//! client that trusts exactly that certificate (HTTP/1.1 by hand, HTTP/2 with hyper's client).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use serde_json::{json, Value};

const NETWORKS: &str = r#"
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata:
  name: gpu10-macvlan
  namespace: spiderpool
  annotations:
    cni.spidernet.io/rdma-resource-inject: rdma-network
spec:
  cniType: macvlan
  macvlan:
    master: ["enp20s0f0np0"]
    rdmaResourceName: spidernet.io/shared_cx5_gpu10
    ippools:
      ipv4: ["gpu10-net20"]
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata:
  name: gpu2-macvlan
  namespace: spiderpool
  annotations:
    cni.spidernet.io/rdma-resource-inject: rdma-network
spec:
  cniType: macvlan
  macvlan:
    master: ["enp12s0f0np0"]
    rdmaResourceName: spidernet.io/shared_cx5_gpu2
    ippools:
      ipv4: ["gpu2-net12"]
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata:
  name: ipvlan-net
  namespace: spiderpool
  annotations:
    cni.spidernet.io/network-resource-inject: underlay
spec:
  cniType: ipvlan
  ipvlan:
    master: ["eth1"]
"#;

/// The webhook process and its files; killed and removed however the test ends.
struct Server {
    child: Child,
    dir: PathBuf,
    addr: String,
    cert: CertificateDer<'static>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "spiderctl-webhook-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `spiderctl webhook` on 127.0.0.1:0 with `extra` flags and waits for its address.
fn start(extra: &[&str]) -> Server {
    let dir = scratch_dir();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl CLI makes the test certificate (apt-get install openssl)");
    assert!(status.success(), "openssl req failed");
    let networks = dir.join("networks.yaml");
    std::fs::write(&networks, NETWORKS).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_spiderctl"))
        .arg("webhook")
        .arg("--networks")
        .arg(&networks)
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let cert_der = CertificateDer::from_pem_file(&cert).unwrap();
    // From here on the guard kills the server if anything below panics.
    let mut server = Server {
        child,
        dir,
        addr: String::new(),
        cert: cert_der,
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    server.addr = line
        .trim()
        .strip_prefix("spiderctl webhook listening on https://")
        .unwrap_or_else(|| panic!("webhook did not start; it printed {line:?}"))
        .to_string();
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
    server
}

fn client_config(server: &Server, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(server.cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

fn server_name() -> ServerName<'static> {
    ServerName::try_from("127.0.0.1").unwrap()
}

/// An HTTP/1.1 connection over TLS that offers only http/1.1 by ALPN, as the API server's
/// client does when HTTP/2 is off.
struct Client {
    tls: BufReader<StreamOwned<ClientConnection, TcpStream>>,
}

impl Client {
    fn connect(server: &Server) -> Client {
        let config = client_config(server, &[b"http/1.1"]);
        let conn = ClientConnection::new(config, server_name()).unwrap();
        let tcp = TcpStream::connect(&server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            tls: BufReader::new(StreamOwned::new(conn, tcp)),
        }
    }

    /// Sends raw bytes; reads one answer (by its Content-Length): (status, body).
    fn send(&mut self, request: &[u8]) -> (u16, Vec<u8>) {
        let tls = self.tls.get_mut();
        tls.write_all(request).unwrap();
        tls.flush().unwrap();
        let mut status_line = String::new();
        self.tls.read_line(&mut status_line).unwrap();
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .unwrap_or_else(|| panic!("no status line: {status_line:?}"))
            .parse()
            .unwrap();
        let mut length = None;
        loop {
            let mut line = String::new();
            self.tls.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("a header line");
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().unwrap());
            }
        }
        let mut body = vec![0; length.expect("Content-Length")];
        self.tls.read_exact(&mut body).unwrap();
        (status, body)
    }
}

/// Sends raw bytes on a new connection after the TLS handshake; returns (status, body).
fn exchange(server: &Server, request: &[u8]) -> (u16, Vec<u8>) {
    Client::connect(server).send(request)
}

fn post_request(server: &Server, path: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

fn post(server: &Server, path: &str, body: &[u8]) -> (u16, Value) {
    let (status, body) = exchange(server, &post_request(server, path, body));
    (
        status,
        serde_json::from_slice(&body).expect("a JSON answer"),
    )
}

fn review(uid: &str, namespace: &str, object: Value) -> Vec<u8> {
    let kind = object["kind"].clone();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": { "group": "apps", "version": "v1", "kind": kind },
            "operation": "CREATE",
            "namespace": namespace,
            "object": object,
        }
    })
    .to_string()
    .into_bytes()
}

fn daemonset(annotations: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": { "name": "rdma-tools" },
        "spec": {
            "selector": { "matchLabels": { "app": "rdma-tools" } },
            "template": {
                "metadata": { "labels": { "app": "rdma-tools" }, "annotations": annotations },
                "spec": { "containers": [
                    { "name": "rdma-tools", "image": "ghcr.io/spidernet-io/rdma-tools:latest" }
                ] }
            }
        }
    })
}

fn rdma_daemonset() -> Value {
    daemonset(json!({ "cni.spidernet.io/rdma-resource-inject": "rdma-network" }))
}

/// The decoded JSONPatch of an allowed response.
fn ops(answer: &Value) -> Value {
    let response = &answer["response"];
    assert_eq!(response["allowed"], json!(true), "{answer}");
    assert_eq!(response["patchType"], json!("JSONPatch"), "{answer}");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn assert_allowed_unchanged(answer: &Value, uid: &str) {
    assert_eq!(answer["apiVersion"], json!("admission.k8s.io/v1"));
    assert_eq!(answer["kind"], json!("AdmissionReview"));
    assert_eq!(
        answer["response"],
        json!({ "uid": uid, "allowed": true }),
        "{answer}"
    );
}

const EXPECTED_NETWORKS: &str = "[{\"name\":\"gpu2-macvlan\",\"namespace\":\"spiderpool\"},\n\
     {\"name\":\"gpu10-macvlan\",\"namespace\":\"spiderpool\"}]";

#[test]
fn daemonset_with_the_inject_annotation_gets_networks_and_rdma_limits() {
    let server = start(&[]);
    let (status, answer) = post(
        &server,
        "/mutate",
        &review("uid-1", "default", rdma_daemonset()),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["apiVersion"], json!("admission.k8s.io/v1"));
    assert_eq!(answer["kind"], json!("AdmissionReview"));
    assert_eq!(answer["response"]["uid"], json!("uid-1"));
    assert_eq!(
        ops(&answer),
        json!([
            {
                "op": "add",
                "path": "/spec/template/metadata/annotations/k8s.v1.cni.cncf.io~1networks",
                "value": EXPECTED_NETWORKS,
            },
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/resources",
                "value": { "limits": {
                    "spidernet.io/shared_cx5_gpu2": 1,
                    "spidernet.io/shared_cx5_gpu10": 1,
                } },
            },
        ])
    );
}

#[test]
fn any_path_is_served_and_a_pod_of_an_injected_template_passes_unchanged() {
    let server = start(&[]);
    // A bare Pod asking for the group: patched at the pod's own pointers.
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "rdma-tools-",
            "annotations": { "cni.spidernet.io/rdma-resource-inject": "rdma-network" },
        },
        "spec": { "containers": [ { "name": "c", "image": "busybox",
            "resources": { "limits": { "cpu": "1" } } } ] }
    });
    let (status, answer) = post(&server, "/", &review("uid-pod", "default", pod.clone()));
    assert_eq!(status, 200, "{answer}");
    let patch = ops(&answer);
    assert_eq!(
        patch[0]["path"],
        json!("/metadata/annotations/k8s.v1.cni.cncf.io~1networks")
    );
    assert_eq!(
        patch[1],
        json!({ "op": "add",
            "path": "/spec/containers/0/resources/limits/spidernet.io~1shared_cx5_gpu2",
            "value": 1 })
    );

    // What a ReplicaSet of an injected Deployment creates: it already has what it would get.
    let mut injected = pod;
    injected["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] = json!(EXPECTED_NETWORKS);
    injected["spec"]["containers"][0]["resources"]["limits"] = json!({
        "cpu": "1",
        "spidernet.io/shared_cx5_gpu2": 1,
        "spidernet.io/shared_cx5_gpu10": 1,
    });
    let (status, answer) = post(&server, "/any/path", &review("uid-rs", "default", injected));
    assert_eq!(status, 200, "{answer}");
    assert_allowed_unchanged(&answer, "uid-rs");
}

#[test]
fn a_workload_without_the_annotation_is_allowed_unchanged() {
    let server = start(&[]);
    let plain = daemonset(json!({ "v1.multus-cni.io/default-network": "kube-system/calico" }));
    let (status, answer) = post(&server, "/mutate", &review("uid-2", "default", plain));
    assert_eq!(status, 200, "{answer}");
    assert_allowed_unchanged(&answer, "uid-2");

    // An UPDATE is never mutated, nor a kind inject does not handle.
    let mut update: Value =
        serde_json::from_slice(&review("uid-3", "default", rdma_daemonset())).unwrap();
    update["request"]["operation"] = json!("UPDATE");
    let (status, answer) = post(&server, "/mutate", update.to_string().as_bytes());
    assert_eq!(status, 200, "{answer}");
    assert_allowed_unchanged(&answer, "uid-3");
    let service = json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "s" } });
    let (status, answer) = post(&server, "/mutate", &review("uid-4", "default", service));
    assert_eq!(status, 200, "{answer}");
    assert_allowed_unchanged(&answer, "uid-4");
}

#[test]
fn namespaces_exclude_and_include_are_honoured() {
    let server = start(&["--namespaces-exclude", "kube-system,monitoring"]);
    for (uid, ns) in [("ex-1", "kube-system"), ("ex-2", "monitoring")] {
        let (status, answer) = post(&server, "/mutate", &review(uid, ns, rdma_daemonset()));
        assert_eq!(status, 200, "{answer}");
        assert_allowed_unchanged(&answer, uid);
    }
    let (_, answer) = post(&server, "/mutate", &review("ex-3", "ai", rdma_daemonset()));
    ops(&answer);
    drop(server);

    let server = start(&[
        "--namespaces-include",
        "ai,training",
        "--namespaces-exclude",
        "training",
    ]);
    let (_, answer) = post(&server, "/mutate", &review("in-1", "ai", rdma_daemonset()));
    ops(&answer);
    for (uid, ns) in [("in-2", "default"), ("in-3", "training")] {
        let (status, answer) = post(&server, "/mutate", &review(uid, ns, rdma_daemonset()));
        assert_eq!(status, 200, "{answer}");
        assert_allowed_unchanged(&answer, uid);
    }
}

#[test]
fn conflicts_are_refused_with_the_reason() {
    let server = start(&[]);
    let cases = [
        (
            "c-1",
            json!({ "cni.spidernet.io/rdma-resource-inject": "rdma-network",
                    "ipam.spidernet.io/ippools": "[{\"interface\":\"net1\"}]" }),
            "ipam.spidernet.io/ippools",
        ),
        (
            "c-2",
            json!({ "cni.spidernet.io/rdma-resource-inject": "rdma-network",
                    "k8s.v1.cni.cncf.io/networks": "spiderpool/other" }),
            "k8s.v1.cni.cncf.io/networks is already set",
        ),
        (
            "c-3",
            json!({ "cni.spidernet.io/network-resource-inject": "underlay" }),
            "\"ipvlan\" is not supported",
        ),
        (
            "c-4",
            json!({ "cni.spidernet.io/rdma-resource-inject": "no-such-group" }),
            "no SpiderMultusConfig",
        ),
    ];
    for (uid, annotations, reason) in cases {
        let (status, answer) = post(
            &server,
            "/mutate",
            &review(uid, "default", daemonset(annotations)),
        );
        assert_eq!(status, 200, "{answer}");
        let response = &answer["response"];
        assert_eq!(response["uid"], json!(uid));
        assert_eq!(response["allowed"], json!(false), "{answer}");
        assert!(response.get("patch").is_none(), "{answer}");
        assert_eq!(response["status"]["code"], json!(403), "{answer}");
        let message = response["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("DaemonSet default/rdma-tools: "),
            "{message}"
        );
        assert!(message.contains(reason), "{uid}: {message}");
    }
}

#[test]
fn malformed_requests_get_http_errors() {
    let server = start(&[]);
    let (status, answer) = post(&server, "/mutate", b"this is not json");
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("not JSON"),
        "{answer}"
    );

    let (status, answer) = post(&server, "/mutate", br#"{"kind":"Pod","apiVersion":"v1"}"#);
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("AdmissionReview"),
        "{answer}"
    );

    let no_uid = json!({ "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": { "operation": "CREATE", "object": rdma_daemonset() } });
    let (status, answer) = post(&server, "/mutate", no_uid.to_string().as_bytes());
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("uid"),
        "{answer}"
    );

    let (status, _) = exchange(&server, b"GET /mutate HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 405);
    let (status, _) = exchange(&server, b"POST /mutate HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 411);
    let (status, _) = exchange(
        &server,
        b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
    );
    assert_eq!(status, 413);

    // The server is still serving after all that.
    let (status, answer) = post(
        &server,
        "/mutate",
        &review("after", "default", rdma_daemonset()),
    );
    assert_eq!(status, 200);
    ops(&answer);
}

#[test]
fn bad_key_material_is_refused_at_start() {
    let dir = scratch_dir();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a pem\n").unwrap();
    std::fs::write(dir.join("n.yaml"), NETWORKS).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spiderctl"))
        .arg("webhook")
        .arg("--networks")
        .arg(dir.join("n.yaml"))
        .arg("--tls-cert")
        .arg(&junk)
        .arg("--tls-key")
        .arg(&junk)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-cert"), "{stderr}");
}

#[test]
fn one_connection_carries_many_reviews_with_keep_alive() {
    let server = start(&[]);
    let mut client = Client::connect(&server);
    for i in 0..5 {
        let uid = format!("ka-{i}");
        let body = review(&uid, "default", rdma_daemonset());
        let (status, answer) = client.send(&post_request(&server, "/mutate", &body));
        assert_eq!(status, 200);
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["response"]["uid"], json!(uid));
        ops(&answer);
    }
    // An error answer keeps the connection too.
    let (status, _) = client.send(&post_request(&server, "/mutate", b"not json"));
    assert_eq!(status, 400);
    let (status, _) = client.send(&post_request(
        &server,
        "/mutate",
        &review("ka-last", "default", rdma_daemonset()),
    ));
    assert_eq!(status, 200);
}

#[test]
fn http2_is_chosen_by_alpn_and_carries_concurrent_reviews() {
    let server = start(&[]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let connector =
            tokio_rustls::TlsConnector::from(client_config(&server, &[b"h2", b"http/1.1"]));
        let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        let tls = connector.connect(server_name(), tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let requests = (0..8).map(|i| {
            let mut sender = sender.clone();
            let uid = format!("h2-{i}");
            let request = hyper::Request::post(format!("https://{}/mutate", server.addr))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(review(
                    &uid,
                    "default",
                    rdma_daemonset(),
                ))))
                .unwrap();
            tokio::spawn(async move {
                let response = sender.send_request(request).await.unwrap();
                assert_eq!(response.version(), hyper::Version::HTTP_2);
                let status = response.status().as_u16();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (uid, status, body)
            })
        });
        let requests: Vec<_> = requests.collect();
        for request in requests {
            let (uid, status, body) = request.await.unwrap();
            assert_eq!(status, 200);
            let answer: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(answer["response"]["uid"], json!(uid));
            ops(&answer);
        }
    });
}

/// The first bytes of a ClientHello for this server, as a client would send them.
fn client_hello(server: &Server) -> Vec<u8> {
    let mut conn = ClientConnection::new(client_config(server, &[b"h2"]), server_name()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

#[test]
fn idle_and_half_handshaken_connections_never_starve_real_reviews() {
    let server = start(&[]);
    let hello = client_hello(&server);
    // 100 that never send a byte, 50 with half a ClientHello, 50 with a whole one that never
    // read the server's answer nor finish the handshake.
    let mut idle: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut tcp = TcpStream::connect(&server.addr).unwrap();
            match i % 4 {
                0 => tcp.write_all(&hello[..hello.len() / 2]).unwrap(),
                1 => tcp.write_all(&hello).unwrap(),
                _ => {}
            }
            tcp
        })
        .collect();
    for i in 0..20 {
        let started = Instant::now();
        let uid = format!("busy-{i}");
        let (status, answer) = post(
            &server,
            "/mutate",
            &review(&uid, "default", rdma_daemonset()),
        );
        let took = started.elapsed();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["response"]["uid"], json!(uid));
        assert!(
            took < Duration::from_secs(1),
            "review {i} took {took:?} with 200 idle connections open"
        );
    }
    // And the server lets none of them stay: the 3 s handshake deadline closes every one.
    let started = Instant::now();
    for tcp in &mut idle {
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let _ = tcp.read_to_end(&mut rest);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "idle connections kept for {took:?}"
    );
}

/// Requests per second for `seconds` of sequential reviews, on one kept-alive connection or a
/// new connection (TLS handshake included) for each.
fn rate(server: &Server, keep_alive: bool, seconds: f64) -> f64 {
    let request = post_request(
        server,
        "/mutate",
        &review("rate", "default", rdma_daemonset()),
    );
    let mut client = Client::connect(server);
    let started = Instant::now();
    let mut done = 0u32;
    while started.elapsed().as_secs_f64() < seconds {
        if !keep_alive {
            client = Client::connect(server);
        }
        let (status, _) = client.send(&request);
        assert_eq!(status, 200);
        done += 1;
    }
    f64::from(done) / started.elapsed().as_secs_f64()
}

/// The numbers in the README's webhook section:
/// `cargo test --profile ci-test --features spiderpool/etcd -p spiderctl --test webhook requests_per_second -- --nocapture`
#[test]
fn requests_per_second_with_and_without_keep_alive() {
    let server = start(&[]);
    let kept = rate(&server, true, 2.0);
    let fresh = rate(&server, false, 2.0);
    println!("webhook requests/s: {kept:.0} with keep-alive, {fresh:.0} with a TLS handshake each");
    // A handshake per request costs far more than the review itself.
    assert!(kept > fresh, "{kept:.0} vs {fresh:.0}");
}
