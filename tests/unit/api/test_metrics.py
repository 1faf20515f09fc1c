"""What the gateway tells about itself. GET /metrics (Prometheus text): off without a token, refused without
the right one, and counting what the gateway did: requests by route template and status, problem answers by
type, Slurm calls, sessions by status, the create -> RUNNING histogram. Request ids: answered, and carried by
the log records a request causes, as text or JSON."""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from pydantic import SecretStr

from bridge.adapters.db.tables import SessionRow, utcnow
from bridge.adapters.slurm.base import JobInfo, JobState
from bridge.domain.metrics import GatewayMetrics, Histogram
from bridge.domain.request_context import REQUEST_ID
from bridge.errors import SchedulerUnavailable
from bridge.logs import JsonFormatter, TextFormatter, WithRequestId
from bridge.services.health import Health, ObservedSlurm
from bridge.services.watcher import SessionWatcher
from tests.unit.api.test_graphql import add_session


def value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture
def scrape(gw):
    gw.app.state.settings.server.metrics_token = SecretStr("scrape-me")

    async def get() -> str:
        r = await gw.http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.text
        return r.text
    return get


async def test_metrics_are_off_without_a_token_and_refused_without_the_right_one(gw):
    off = await gw.http.get("/metrics")
    assert off.status_code == 404 and "metrics_token" in off.json()["msg"]
    gw.app.state.settings.server.metrics_token = SecretStr("scrape-me")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}):
        r = await gw.http.get("/metrics", headers=headers)
        assert r.status_code == 401 and r.json()["type"].endswith("/unauthorized")


async def test_requests_errors_and_sessions_are_counted(gw, scrape):
    before = await scrape()
    route = 'bridge_http_request_seconds_count{method="GET",route="/session/{ref}",status="404"}'
    for _ in range(3):   # ids stay out of the labels: the route's template names them all
        r = await gw.request("GET", f"/session/nosuch{_}", "alice")
        assert r.status_code == 404
    unsigned = await gw.http.get("/auth/test", headers={"X-BackendAI-Version": "v6.20220615"})
    assert unsigned.status_code == 401
    after = await scrape()
    assert value(after, route) - value(before, route) == 3
    assert value(after, 'bridge_errors_total{type="unauthorized"}') - \
        value(before, 'bridge_errors_total{type="unauthorized"}') == 1
    assert value(after, 'bridge_errors_total{type="session-not-found"}') - \
        value(before, 'bridge_errors_total{type="session-not-found"}') == 3
    assert "# TYPE bridge_sessions gauge" in after and "# TYPE bridge_watcher_tick_seconds histogram" in after


async def test_create_to_running_is_observed_when_a_session_starts(gw, scrape):
    created = utcnow() - timedelta(seconds=3)
    row = SessionRow(id="s1", name="n", access_key="AK", user_uuid="u", domain_name="default", group_id="g",
                     unix_user="alice", slurm_account="a", partition="p", image="i", image_path="/i", job_tag="t",
                     work_dir="/w", status="RUNNING", created_at=created, started_at=created + timedelta(seconds=2))
    gw.app.state.sessions.publish(row, "session_started")
    text = await scrape()
    assert value(text, "bridge_session_create_to_running_seconds_count") == 1
    assert value(text, 'bridge_session_create_to_running_seconds_bucket{le="1"}') == 0
    assert value(text, 'bridge_session_create_to_running_seconds_bucket{le="2"}') == 1
    assert value(text, "bridge_session_create_to_running_seconds_sum") == 2


async def test_the_watcher_observes_create_to_running_when_it_sees_a_job_start(gw, scrape):
    """Through the real watcher (Slurm faked at its boundary): the event it publishes for RUNNING comes from a
    snapshot of the row, which must carry what the histogram needs, and a tick must never fail on it."""
    sid = await add_session(gw, "alice", "starting")
    async with gw.app.state.db.unit_of_work() as s:
        row = await s.get(SessionRow, sid)
        row.job_id, row.status = "81", "PENDING"

    class Started:
        async def job_states(self, ids):
            return [JobInfo(job_id="81", name="bai-starting", state=JobState.RUNNING, nodes=("n1",))]

        jobs = job_states

        async def history(self, ids):
            return []

    watcher = SessionWatcher(gw.app.state.db, Started(), gw.app.state.sessions, floor_s=0.1, max_s=1,
                             lost_after_s=60)
    async with gw.app.state.sessions.events.subscribe() as q:
        assert await watcher.tick()
        names = [q.get_nowait().name for _ in range(q.qsize())]
    assert "session_started" in names
    assert value(await scrape(), "bridge_session_create_to_running_seconds_count") == 1


async def test_slurm_calls_are_counted_by_operation_and_outcome():
    class Inner:
        async def jobs(self, job_ids=None, *, user=None):
            return []

        async def history(self, job_ids, *, user=None):
            raise SchedulerUnavailable("slurmdbd down", daemon="slurmdbd")

    metrics = GatewayMetrics()
    slurm = ObservedSlurm(Inner(), Health(), None, metrics)   # type: ignore[arg-type]
    await slurm.jobs(["1"])
    await slurm.jobs(["2"])
    with pytest.raises(SchedulerUnavailable):
        await slurm.history(["1"])
    text = metrics.render()
    assert value(text, 'bridge_slurm_calls_total{call="jobs",outcome="ok"}') == 2
    assert value(text, 'bridge_slurm_calls_total{call="history",outcome="error"}') == 1
    assert value(text, 'bridge_slurm_call_seconds_count{call="jobs"}') == 2


def test_histograms_are_cumulative_and_labels_escaped():
    h = Histogram("x_seconds", "help", ("route",), buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 5.0):
        h.observe(v, 'a"b\\c')
    lines = list(h.render())
    assert 'x_seconds_bucket{route="a\\"b\\\\c",le="0.1"} 2' in lines   # le is "less or equal"
    assert 'x_seconds_bucket{route="a\\"b\\\\c",le="1"} 3' in lines
    assert 'x_seconds_bucket{route="a\\"b\\\\c",le="+Inf"} 4' in lines
    assert 'x_seconds_count{route="a\\"b\\\\c"} 4' in lines and 'x_seconds_sum{route="a\\"b\\\\c"} 5.65' in lines


async def test_each_request_has_an_id_that_its_log_records_carry(gw):
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.addFilter(WithRequestId())
    handler.emit = records.append   # type: ignore[method-assign]
    authn = logging.getLogger("bridge.api.authn")
    authn.addHandler(handler)
    authn.setLevel(logging.INFO)
    try:
        headers = gw.headers("GET", "/auth/test", "alice", content_type="text/plain", secret="wrong")
        r = await gw.http.get("/auth/test", headers={**headers, "X-Request-ID": "proxy-42"})
        assert r.status_code == 401 and r.headers["x-request-id"] == "proxy-42"
        assert [rec.request_id for rec in records if "signature mismatch" in rec.getMessage()] == ["proxy-42"]
        odd = await gw.http.get("/auth/test", headers={**headers, "X-Request-ID": "no spaces\\n please"})
        assert odd.headers["x-request-id"] != "no spaces\\n please" and len(odd.headers["x-request-id"]) == 16
    finally:
        authn.removeHandler(handler)
    assert REQUEST_ID.get() is None   # nothing leaks out of the request


def test_json_log_lines_name_the_request():
    record = logging.LogRecord("bridge.x", logging.WARNING, __file__, 1, "job %s ended", ("7",), None)
    token = REQUEST_ID.set("r-1")
    try:
        WithRequestId().filter(record)
    finally:
        REQUEST_ID.reset(token)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "job 7 ended" and line["request_id"] == "r-1" and line["level"] == "WARNING"
    assert TextFormatter().format(record).endswith("job 7 ended [request r-1]")
