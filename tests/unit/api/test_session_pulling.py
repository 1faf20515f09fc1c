"""Sessions that name a registry image: PULLING, then submitted once the image is in the cache; a failed pull
ends them in ERROR, one destroyed meanwhile never reaches Slurm. The registry and Slurm are the boundaries
faked here; the session service is real."""

from __future__ import annotations

import asyncio

import pytest

from bridge.adapters.db.tables import ImageRow, SessionRow
from bridge.errors import PullFailed
from bridge.services.image_pull import RemoteRef

DIGEST = "sha256:" + "cd" * 32


class FakePuller:
    def __init__(self, labels: dict[str, str] | None = None) -> None:
        self.release = asyncio.Event()
        self.error: Exception | None = None
        self.labels = labels or {"ai.backend.service-ports": "jupyter:http:8080"}

    def allowed_on_create(self, ref: RemoteRef) -> bool:
        return ref.registry == "reg.test"

    async def cached(self, ref: RemoteRef) -> tuple[str, None]:
        return DIGEST, None

    def start(self, ref: RemoteRef, digest: str, user: str | None = None) -> None:
        pass

    async def pull(self, ref: RemoteRef, digest: str | None = None, **_: object) -> ImageRow:
        await self.release.wait()
        if self.error:
            raise self.error
        return ImageRow(name=ref.name, path=f"/srv/images/.cache/{digest}", labels=self.labels, aliases=[])


@pytest.fixture
def pulling(gw):
    sessions = gw.app.state.sessions
    sessions.slurm = gw.app.state.slurm   # FakeSlurm: partitions
    sessions.puller = FakePuller()
    submitted: list[str] = []

    async def submit(row, *a, **kw):
        submitted.append(row.image_path)
        return "4242"

    sessions._submit = submit
    return gw, sessions.puller, submitted


async def _row(gw, sid: str, until: set[str]) -> SessionRow:
    """The session once it reaches one of `until` (a deadline, not a timing: a loaded machine may be slow)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        async with gw.app.state.db.unit_of_work() as s:
            row = await s.get(SessionRow, sid)
        if row.status in until:
            return row
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{sid} stayed {row.status}")
        await asyncio.sleep(0.01)


async def _create(gw, image: str) -> dict:
    r = await gw.request("POST", "/session", "alice", json={"name": "pull-me", "image": image, "enqueueOnly": True})
    assert r.status_code == 201, r.text
    return r.json()


async def test_pulling_then_submitted_with_the_pulled_image(pulling):
    gw, puller, submitted = pulling
    created = await _create(gw, "docker://reg.test/team/img:1")
    assert created["status"] == "PULLING" and created["statusInfo"].startswith("pulling reg.test/team/img:1 (sha256:")
    assert (await _row(gw, created["sessionId"], {"PULLING"})).job_id is None and not submitted
    puller.release.set()
    row = await _row(gw, created["sessionId"], {"PENDING"})
    assert row.job_id == "4242" and row.image_path == f"/srv/images/.cache/{DIGEST}"
    assert submitted == [row.image_path] and [p["name"] for p in row.service_ports][0] == "jupyter"
    assert row.status_info is None
    assert list(row.status_history)[:2] == ["PULLING", "PENDING"]


async def test_a_failed_pull_ends_the_session_with_the_reason(pulling):
    gw, puller, submitted = pulling
    created = await _create(gw, "docker://reg.test/team/img:1")
    puller.error = PullFailed("image: pulling reg.test/team/img:1 failed: manifest unknown")
    puller.release.set()
    row = await _row(gw, created["sessionId"], {"ERROR"})
    assert "manifest unknown" in row.status_info and row.result == "FAILURE" and not submitted


async def test_an_image_too_big_for_the_request_fails_after_the_pull(pulling):
    gw, puller, submitted = pulling
    puller.labels = {"ai.backend.resource.min.mem": "64g"}
    created = await _create(gw, "docker://reg.test/team/img:1")
    puller.release.set()
    row = await _row(gw, created["sessionId"], {"ERROR"})
    assert "resources.mem" in row.status_info and not submitted


async def test_destroyed_while_pulling_never_reaches_slurm(pulling):
    gw, puller, submitted = pulling
    created = await _create(gw, "docker://reg.test/team/img:1")
    r = await gw.request("DELETE", f"/session/{created['sessionId']}", "alice")
    assert r.status_code in (200, 204), r.text
    puller.release.set()
    await asyncio.sleep(0.05)
    row = await _row(gw, created["sessionId"], {"CANCELLED"})
    assert row.job_id is None and not submitted


async def test_a_registry_the_site_does_not_pull_from_is_refused_before_anything(pulling):
    gw, _, submitted = pulling
    r = await gw.request("POST", "/session", "alice", json={"name": "far-away", "image": "docker://else.test/x:1"})
    assert r.status_code == 400 and "does not pull from else.test" in r.json()["msg"]
    async with gw.app.state.db.unit_of_work() as s:
        assert await s.get(SessionRow, "far-away") is None
    assert not submitted


class BlockingBuilder:
    """The command runner under a real ImagePuller: `apptainer build` waits until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.builds: list[str] = []
        self.running = 0
        self.most_at_once = 0

    async def run(self, argv, *, user=None, env=None, stdin=None, timeout_s=60.0):
        from bridge.adapters.runner import Completed

        if argv[0] == "apptainer":
            self.builds.append(argv[-1])
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
            await self.release.wait()
            self.running -= 1
        return Completed(tuple(argv), 1 if argv[0] == "test" else 0, "", "", 0.0)


async def test_one_user_cannot_start_more_pulls_than_the_limit(gw):
    """A user naming one new tag after another started a pull each, with no bound (finding 9)."""
    from bridge.services.image_pull import ImagePuller

    sessions = gw.app.state.sessions
    sessions.slurm = gw.app.state.slurm
    settings = gw.app.state.settings
    settings.images.pull_on_create = ["reg.test"]
    settings.images.max_pulls_per_user, settings.images.max_pulls = 2, 1
    builder = BlockingBuilder()
    sessions.puller = ImagePuller(builder, sessions.images, settings)   # type: ignore[arg-type]

    async def submit(row, *a, **kw):
        return "4242"

    sessions._submit = submit

    def image(n: int) -> str:
        return f"docker://reg.test/team/img@sha256:{n:064x}"

    async def create(user: str, ref: str, name: str):
        return await gw.request("POST", "/session", user, json={"name": name, "image": ref, "enqueueOnly": True})

    first = await create("alice", image(1), "pull-a1")
    assert first.status_code == 201, first.text
    assert (await create("alice", image(2), "pull-a2")).status_code == 201
    refused = await create("alice", image(3), "pull-a3")
    assert refused.status_code == 429 and "2 image pulls running" in refused.json()["msg"]
    assert (await create("alice", image(1), "pull-a4")).status_code == 201   # joins a running pull: free
    assert (await create("bob", image(3), "pull-b1")).status_code == 201     # another user's limit is their own
    async with gw.app.state.db.unit_of_work() as s:
        assert await s.get(SessionRow, refused.json().get("sessionId") or "-") is None
    await asyncio.sleep(0.1)
    assert builder.most_at_once == 1   # images.max_pulls: the others wait their turn
    builder.release.set()
    async with asyncio.timeout(30):   # every pull ends (a deadline, not a timing)
        await asyncio.gather(*list(sessions.puller._inflight.values()))
    assert sorted(builder.builds) == sorted(image(n) for n in (1, 2, 3))
    assert (await create("alice", image(4), "pull-a5")).status_code == 201   # once they ended, alice may pull again
