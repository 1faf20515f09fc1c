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
