"""A real OCI registry for the image-import tests: Debian's `docker-registry` (the CNCF distribution
server) on a free loopback port, and a pusher that turns a root file system into a one-layer OCI image."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import httpx


def start(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    exe = shutil.which("docker-registry")
    if exe is None:
        raise FileNotFoundError("docker-registry (Debian package docker-registry)")
    config = workdir / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {workdir / 'data'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\nlog:\n  level: warn\n")
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("docker-registry did not start")


def push_rootfs(registry: str, repo: str, tag: str, rootfs: Path, labels: dict[str, str] | None = None,
                extra_files: dict[str, bytes] | None = None) -> str:
    """Push `rootfs` (plus `extra_files`, path -> content) as a one-layer OCI image whose config carries
    `labels`; returns the manifest digest."""
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w|") as tar:
        for entry in sorted(rootfs.iterdir()):
            # Apptainer's own entries of a sandbox are made again by whoever builds from the image
            if entry.name.startswith(".") or entry.name in ("proc", "sys", "dev", "singularity", "environment"):
                continue
            tar.add(entry, arcname=entry.name, filter=lambda t: None if t.name in (extra_files or {}) else t)
        for name, content in (extra_files or {}).items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    layer = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                         "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                                    "Labels": {"ai.backend.kernelspec": "1", "ai.backend.resource.min.mem": "128m",
                                               **(labels or {})}}}).encode()
    base = f"http://{registry}/v2/{repo}"
    with httpx.Client(timeout=300) as http:
        blobs = []
        for blob, media in ((config, "application/vnd.oci.image.config.v1+json"),
                            (layer, "application/vnd.oci.image.layer.v1.tar+gzip")):
            digest = "sha256:" + hashlib.sha256(blob).hexdigest()
            start_upload = http.post(f"{base}/blobs/uploads/")
            location = start_upload.headers["location"]
            if location.startswith("/"):
                location = f"http://{registry}{location}"
            sep = "&" if "?" in location else "?"
            done = http.put(f"{location}{sep}digest={digest}", content=blob,
                            headers={"Content-Type": "application/octet-stream"})
            assert done.status_code == 201, done.text
            blobs.append({"mediaType": media, "digest": digest, "size": len(blob)})
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": blobs[0], "layers": blobs[1:]}).encode()
        put = http.put(f"{base}/manifests/{tag}", content=manifest,
                       headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert put.status_code == 201, put.text
        return "sha256:" + hashlib.sha256(manifest).hexdigest()
