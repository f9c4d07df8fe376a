//! `spiderctl webhook` over real HTTPS on 127.0.0.1: a self-signed certificate made with the
//! openssl CLI, the built binary listening on a free port, AdmissionReviews POSTed by a rustls
//! client that trusts exactly that certificate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
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

/// Sends raw bytes after the TLS handshake; returns (status, body).
fn exchange(server: &Server, request: &[u8]) -> (u16, Vec<u8>) {
    let mut roots = RootCertStore::empty();
    roots.add(server.cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(&server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    tls.write_all(request).unwrap();
    tls.flush().unwrap();
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer).unwrap();
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete HTTP head");
    let head = String::from_utf8(answer[..end].to_vec()).unwrap();
    let body = answer[end + 4..].to_vec();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len(), "{head}");
    (status, body)
}

fn post(server: &Server, path: &str, body: &[u8]) -> (u16, Value) {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        server.addr,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let (status, body) = exchange(server, &request);
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
