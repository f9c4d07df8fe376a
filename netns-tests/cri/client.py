"""A minimal CRI client: what kubelet sends to create, inspect and delete pod sandboxes.

Usage: client.py SOCKET PB_DIR

PB_DIR holds cri_pb2.py, compiled by the test from cri.proto beside this file. Runs under
Debian's /usr/bin/python3 with python3-grpcio and python3-protobuf. Requests come on stdin and
answers go to stdout, one JSON object per line, so a test drives many sandboxes through one
process (and one gRPC connection) instead of paying an interpreter start per call:

  {"op": "version"}                                   -> {"runtime_name", "runtime_version", ...}
  {"op": "status"}                                    -> {"conditions": {type: status}}
  {"op": "run", "name", "uid", "namespace", "cgroup_parent"} -> {"id"}
  {"op": "inspect", "id"}                             -> {"state", "ip", "additional_ips", "pid", "netns"}
  {"op": "stop", "id"}, {"op": "remove", "id"}        -> {}

A failed call answers {"error": "<gRPC code>: <details>"}.
"""

import json
import sys

import grpc

SERVICE = "/runtime.v1.RuntimeService/"
# Generous next to what one sandbox takes (about a second here): a hung runtime fails the
# test instead of stalling it.
TIMEOUT_S = 120


def connect(socket, pb):
    channel = grpc.insecure_channel("unix://" + socket)

    def method(name, request, response):
        call = channel.unary_unary(
            SERVICE + name,
            request_serializer=request.SerializeToString,
            response_deserializer=response.FromString,
        )
        return lambda message: call(message, timeout=TIMEOUT_S)

    return {
        "Version": method("Version", pb.VersionRequest, pb.VersionResponse),
        "Status": method("Status", pb.StatusRequest, pb.StatusResponse),
        "RunPodSandbox": method("RunPodSandbox", pb.RunPodSandboxRequest, pb.RunPodSandboxResponse),
        "PodSandboxStatus": method(
            "PodSandboxStatus", pb.PodSandboxStatusRequest, pb.PodSandboxStatusResponse),
        "StopPodSandbox": method("StopPodSandbox", pb.StopPodSandboxRequest, pb.StopPodSandboxResponse),
        "RemovePodSandbox": method(
            "RemovePodSandbox", pb.RemovePodSandboxRequest, pb.RemovePodSandboxResponse),
    }


def network_namespace(spec):
    """The network namespace path of an OCI runtime spec (what CNI_NETNS was)."""
    for ns in spec.get("linux", {}).get("namespaces", []):
        if ns.get("type") == "network":
            return ns.get("path", "")
    return ""


def handle(rpc, pb, request):
    op = request["op"]
    if op == "version":
        v = rpc["Version"](pb.VersionRequest(version="v1"))
        return {"runtime_name": v.runtime_name, "runtime_version": v.runtime_version,
                "runtime_api_version": v.runtime_api_version}
    if op == "status":
        s = rpc["Status"](pb.StatusRequest())
        return {"conditions": {c.type: c.status for c in s.status.conditions}}
    if op == "run":
        # What kubelet puts in a sandbox config that matters to the network: the metadata
        # (containerd turns it into K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_UID) and the
        # cgroup parent.
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(
                name=request["name"], uid=request["uid"], namespace=request["namespace"],
                attempt=0),
            hostname=request["name"],
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=request["cgroup_parent"]),
        )
        r = rpc["RunPodSandbox"](pb.RunPodSandboxRequest(config=config))
        return {"id": r.pod_sandbox_id}
    if op == "inspect":
        r = rpc["PodSandboxStatus"](pb.PodSandboxStatusRequest(
            pod_sandbox_id=request["id"], verbose=True))
        info = json.loads(r.info.get("info", "{}"))
        return {
            "state": pb.PodSandboxState.Name(r.status.state),
            "ip": r.status.network.ip,
            "additional_ips": [ip.ip for ip in r.status.network.additional_ips],
            "pid": info.get("pid", 0),
            "netns": network_namespace(info.get("runtimeSpec", {})),
        }
    if op == "stop":
        rpc["StopPodSandbox"](pb.StopPodSandboxRequest(pod_sandbox_id=request["id"]))
        return {}
    if op == "remove":
        rpc["RemovePodSandbox"](pb.RemovePodSandboxRequest(pod_sandbox_id=request["id"]))
        return {}
    raise ValueError("unknown op " + repr(op))


def main():
    socket, pb_dir = sys.argv[1:]
    sys.path.insert(0, pb_dir)
    import cri_pb2 as pb

    rpc = connect(socket, pb)
    for line in sys.stdin:
        try:
            answer = handle(rpc, pb, json.loads(line))
        except grpc.RpcError as e:
            answer = {"error": "%s: %s" % (e.code().name, e.details())}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
