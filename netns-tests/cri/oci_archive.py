"""Wraps a root file system tar into an OCI image archive that `ctr images import` takes.

Usage: oci_archive.py ROOTFS_TAR IMAGE_NAME OUT_TAR CMD...

One uncompressed layer (the rootfs tar as given), a config whose diff_id is that layer's
digest and whose Cmd is CMD, a manifest, and an index naming the image through the
`io.containerd.image.name` annotation, which containerd's importer reads. Made offline: no
registry is ever contacted.
"""

import hashlib
import io
import json
import sys
import tarfile


def blob(data):
    """(digest, bytes) of a blob."""
    return "sha256:" + hashlib.sha256(data).hexdigest(), data


def descriptor(media_type, digest, data, **extra):
    return dict(mediaType=media_type, digest=digest, size=len(data), **extra)


def main():
    rootfs_tar, name, out, *cmd = sys.argv[1:]
    with open(rootfs_tar, "rb") as f:
        layer_digest, layer = blob(f.read())
    config_digest, config = blob(json.dumps({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }).encode())
    manifest_digest, manifest = blob(json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": descriptor("application/vnd.oci.image.config.v1+json", config_digest, config),
        "layers": [descriptor("application/vnd.oci.image.layer.v1.tar", layer_digest, layer)],
    }).encode())
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [descriptor(
            "application/vnd.oci.image.manifest.v1+json", manifest_digest, manifest,
            annotations={"io.containerd.image.name": name},
        )],
    }).encode()

    files = [
        ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
        ("index.json", index),
    ] + [
        ("blobs/sha256/" + digest.split(":")[1], data)
        for digest, data in [(layer_digest, layer), (config_digest, config),
                             (manifest_digest, manifest)]
    ]
    with tarfile.open(out, "w") as archive:
        for path, data in files:
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
