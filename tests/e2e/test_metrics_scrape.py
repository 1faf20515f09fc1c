"""`curl /metrics` on a real gateway after real work: a batch session created, run by Slurm and seen to its
end through the watcher, then one scrape with the token `dev up` wrote, which must show what happened with
real values (not only the metric names)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.test_session_rest import Api, wait_status

pytestmark = pytest.mark.cluster


def series(text: str, name: str) -> dict[str, float]:
    return {line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")}


def test_the_metrics_tell_what_the_gateway_did(gateway):
    api = Api(gateway)
    name = "metrics-" + uuid.uuid4().hex[:6]
    r = api("POST", "/session", {"name": name, "image": "python", "type": "batch", "startupCommand": "sleep 1"})
    assert r.status_code == 201, r.text
    wait_status(api, name, {"TERMINATED"}, timeout=120)
    url = gateway["BACKEND_ENDPOINT"] + "/metrics"
    assert httpx.get(url).status_code == 401   # the token, or nothing
    scraped = httpx.get(url, headers={"Authorization": f"Bearer {gateway['BRIDGE_DEV_METRICS_TOKEN']}"})
    assert scraped.status_code == 200, scraped.text
    text = scraped.text
    calls = series(text, "bridge_slurm_calls_total")
    assert calls.get('bridge_slurm_calls_total{call="submit",outcome="ok"}', 0) >= 1
    assert calls.get('bridge_slurm_calls_total{call="job_states",outcome="ok"}', 0) >= 1
    assert series(text, "bridge_session_create_to_running_seconds_count")[
        "bridge_session_create_to_running_seconds_count"] >= 1
    assert series(text, "bridge_watcher_tick_seconds_count")["bridge_watcher_tick_seconds_count"] >= 1
    created = series(text, "bridge_http_request_seconds_count")
    assert created.get('bridge_http_request_seconds_count{method="POST",route="/session",status="201"}', 0) >= 1
    assert series(text, "bridge_dependency_up").get('bridge_dependency_up{name="slurmctld"}') == 1
