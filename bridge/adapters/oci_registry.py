"""The OCI distribution API, as far as the image puller needs it: a tag's manifest digest, with the anonymous
token flow. The registry's answers become the errors.py tree here: a registry that cannot be reached, times out
or answers 5xx is RegistryUnavailable (503, the gateway's side); an image it does not have, a registry that
wants credentials or sends its token requests elsewhere is PullFailed (400, the request's side)."""

from __future__ import annotations

import hashlib
import re
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from bridge.adapters.outbound import OutboundClient
from bridge.errors import PullFailed, RegistryUnavailable

ACCEPT = ", ".join((
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}\Z")


class OciRegistry(Protocol):
    async def digest(self, registry: str, repository: str, tag: str, *, insecure: bool) -> str:
        """The manifest digest `registry/repository:tag` points to now."""
        ...

    async def aclose(self) -> None: ...


def api_host(registry: str, insecure: bool) -> str:
    scheme = "http" if insecure else "https"
    host = "registry-1.docker.io" if registry == "docker.io" else registry
    return f"{scheme}://{host}"


def realm_refused(api: str, realm: str, insecure: bool) -> str | None:
    """Why the gateway will not ask a registry's token realm for a token, or None: it must be HTTPS (unless
    the registry is one of the site's plain-HTTP ones) and on the registry's own domain (auth.docker.io for
    registry-1.docker.io, the same host for GHCR, Harbor, GitLab...)."""
    parts, own = urlsplit(realm), urlsplit(api).hostname or ""
    host = parts.hostname or ""
    if parts.scheme != "https" and not (insecure and parts.scheme == "http"):
        return f"{realm} is not https"
    if host != own and host.split(".")[-2:] != own.split(".")[-2:]:
        return f"{host} is not on the domain of {own}"
    return None


class HttpOciRegistry:
    """Registries over HTTP(S) (httpx), anonymously."""

    def __init__(self) -> None:
        # no redirects: a registry must not send the gateway elsewhere (to a metadata service, say)
        self.http = OutboundClient(timeout_s=30)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def digest(self, registry: str, repository: str, tag: str, *, insecure: bool) -> str:
        name = f"{registry}/{repository}:{tag}"
        api = api_host(registry, insecure)
        url = f"{api}/v2/{repository}/manifests/{tag}"
        try:
            http = self.http()
            headers = {"Accept": ACCEPT}
            r = await http.head(url, headers=headers)
            if r.status_code == 401:   # the anonymous token flow (Docker Hub, GHCR, Harbor, ...)
                token = await self._token(http, r.headers.get("www-authenticate", ""), registry, api, insecure)
                headers["Authorization"] = f"Bearer {token}"
                r = await http.head(url, headers=headers)
            if r.status_code == 200 and not r.headers.get("docker-content-digest"):
                r = await http.get(url, headers=headers)   # no digest header: hash the manifest itself
                if r.status_code == 200:
                    return "sha256:" + hashlib.sha256(r.content).hexdigest()
        except httpx.HTTPError as e:
            raise RegistryUnavailable(f"image: registry {registry} is unreachable: {type(e).__name__}") from e
        if r.status_code == 404:
            raise PullFailed(f"image: {name} does not exist in its registry")
        if r.status_code >= 500:
            raise RegistryUnavailable(f"image: registry {registry} answered {r.status_code} for {name}")
        if r.status_code != 200:
            raise PullFailed(f"image: registry {registry} answered {r.status_code} for {name}")
        digest = r.headers["docker-content-digest"]
        if not DIGEST.match(digest):
            raise PullFailed(f"image: registry {registry} gave an unusable digest {digest!r}")
        return digest

    @staticmethod
    async def _token(http: httpx.AsyncClient, challenge: str, registry: str, api: str, insecure: bool) -> str:
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not challenge.lower().startswith("bearer") or not realm:
            raise PullFailed("image: the registry wants credentials (only anonymous pulls are supported)")
        why = realm_refused(api, realm, insecure)
        if why:
            raise PullFailed(f"image: registry {registry} sends its token requests elsewhere ({why})")
        r = await http.get(realm, params=params)
        if r.status_code >= 500:
            raise RegistryUnavailable(f"image: the registry's token service answered {r.status_code}")
        if r.status_code != 200:
            raise PullFailed(f"image: the registry refused an anonymous token ({r.status_code})")
        body = r.json()
        return str(body.get("token") or body.get("access_token") or "")
