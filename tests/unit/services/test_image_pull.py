"""Registry references, normalised as Docker does, and the digest-keyed cache paths."""

from __future__ import annotations

import pytest

from bridge.config import BridgeSettings
from bridge.errors import InvalidAPIParameters
from bridge.services.image_pull import ImagePuller, parse

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("ref", "registry", "repository", "tag", "digest"), [
    ("docker://python", "docker.io", "library/python", "latest", None),
    ("docker://python:3.13", "docker.io", "library/python", "3.13", None),
    ("docker://jupyter/base-notebook:lab", "docker.io", "jupyter/base-notebook", "lab", None),
    ("docker://ghcr.io/org/img:1.2", "ghcr.io", "org/img", "1.2", None),
    ("docker://127.0.0.1:5000/bridge/python:1", "127.0.0.1:5000", "bridge/python", "1", None),
    ("docker://localhost/x", "localhost", "x", "latest", None),
    (f"oras://reg.example:443/a/b@{DIGEST}", "reg.example:443", "a/b", "latest", DIGEST),
])
def test_references_are_normalised(ref, registry, repository, tag, digest):
    r = parse(ref)
    assert r is not None and (r.registry, r.repository, r.tag, r.digest) == (registry, repository, tag, digest)
    assert r.pinned(DIGEST) == f"{r.scheme}://{registry}/{repository}@{DIGEST}"


def test_other_references_are_not_registry_ones_and_bad_ones_are_refused():
    assert parse("python:3.13") is None and parse("/srv/images/python") is None
    assert parse("docker://a b") is None
    with pytest.raises(InvalidAPIParameters):
        parse("docker://x/y@sha256:short")
    with pytest.raises(InvalidAPIParameters):
        parse("docker://reg.example/../etc:1")


def test_cache_paths_and_registry_patterns():
    settings = BridgeSettings(images={"insecure_registries": ["127.0.0.1:*"], "pull_on_create": ["*.example.org"]},
                              sessions={"image_dir": "/srv/images"})
    puller = ImagePuller(None, None, settings)  # type: ignore[arg-type]
    docker, oras = parse("docker://127.0.0.1:5000/a:1"), parse("oras://hub.example.org/b:1")
    # every pulled image is one SIF file, never a directory of unpacked layers (setuid files on shared storage)
    assert puller.cache_path(docker, DIGEST) == f"/srv/images/.cache/sha256-{'ab' * 32}.sif"
    assert puller.cache_path(oras, DIGEST).endswith(".sif")
    assert puller.insecure(docker) and not puller.insecure(oras)
    assert puller.allowed_on_create(oras) and not puller.allowed_on_create(docker)


def test_image_names_split_into_registry_name_and_tag():
    from bridge.services.images import split_reference

    assert split_reference("python:3.13") == ("local", "python", "3.13")
    assert split_reference("python") == ("local", "python", "")
    assert split_reference("cr.backend.ai/stable/python:3.9") == ("cr.backend.ai", "stable/python", "3.9")
    assert split_reference("127.0.0.1:5055/bridge/python:1") == ("127.0.0.1:5055", "bridge/python", "1")
    assert split_reference("team/tool:2") == ("local", "team/tool", "2")


# ---- what a registry's answer becomes: its outage is the gateway's 5xx, a missing image the request's 4xx ----

async def _registry(status: int, headers: str = ""):
    """A loopback 'registry' that answers every request with `status` (HEAD and GET alike)."""
    import asyncio

    async def answer(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n{headers}Connection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


def _puller() -> ImagePuller:
    return ImagePuller(None, None, BridgeSettings(images={"insecure_registries": ["127.0.0.1:*"]}))  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_a_registry_that_fails_is_a_gateway_error_not_the_requests(status):
    from bridge.errors import BackendError, RegistryUnavailable

    server = await _registry(status)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(RegistryUnavailable) as e:
            await _puller().digest(parse(f"docker://127.0.0.1:{port}/team/img:1"))
    assert isinstance(e.value, BackendError) and not isinstance(e.value, InvalidAPIParameters)
    assert e.value.status == 503 and e.value.problem_type == "https://api.backend.ai/probs/registry-unavailable"
    assert str(status) in e.value.msg


async def test_a_registry_that_cannot_be_reached_is_a_gateway_error():
    import socket

    from bridge.errors import RegistryUnavailable

    with socket.socket() as s:   # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RegistryUnavailable) as e:
        await _puller().digest(parse(f"docker://127.0.0.1:{port}/team/img:1"))
    assert e.value.status == 503 and "unreachable" in e.value.msg


@pytest.mark.parametrize("status", [404, 403])
async def test_an_image_the_registry_does_not_have_stays_the_requests_error(status):
    from bridge.errors import PullFailed

    server = await _registry(status)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(PullFailed) as e:
            await _puller().digest(parse(f"docker://127.0.0.1:{port}/team/img:1"))
    assert e.value.status == 400 and e.value.problem_type == "https://api.backend.ai/probs/image-pull-failed"


async def test_a_manifest_without_a_digest_header_that_fails_is_no_digest():
    """A registry that gives no digest header is asked for the manifest itself; an error page is not hashed."""
    from bridge.errors import RegistryUnavailable

    calls = []

    async def answer(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        calls.append(head.split(b" ", 1)[0])
        status = 200 if head.startswith(b"HEAD") else 503
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    import asyncio

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(RegistryUnavailable):
            await _puller().digest(parse(f"docker://127.0.0.1:{port}/team/img:1"))
    assert calls == [b"HEAD", b"GET"]
