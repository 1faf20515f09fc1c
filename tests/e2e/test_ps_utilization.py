"""Both official clients show a running session's utilization (containers' live_stat, from the gateway's
one sstat per interval): 22.3.2 in `ps --format name,containers`, 23.9.10 (whose `ps` has no containers
field) in `session info`."""

from __future__ import annotations

import re
import time
import uuid

import pytest

from tests.e2e.test_admin_cli import ok
from tests.e2e.test_session_rest import Api, wait_status

pytestmark = pytest.mark.cluster


def test_ps_shows_the_live_utilization_of_a_running_session(client, gateway):
    api = Api(gateway)
    name = "util-" + uuid.uuid4().hex[:6]
    made = api("POST", "/session", {"name": name, "image": "python", "enqueueOnly": True}).json()
    sid = made["sessionId"]
    try:
        wait_status(api, sid, {"RUNNING"}, 120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not api("GET", f"/session/{sid}").json().get("liveStat"):
            time.sleep(0.5)
        args = ["ps", "--format", "name,containers"] if client.version == "22.3.2" else ["session", "info", sid]
        out = ok(client.run("alice", *args))
        live = out[out.index("Live Stat:"):]
        assert name in out or sid in out
        mem = re.search(r"- mem:\s+\{'current': '(\d+)\.\d+', 'capacity': '1073741824\.000'", live)
        assert mem and int(mem.group(1)) > 0, live     # the kernel's resident memory, of its 1 GiB
        assert "cpu_util" in live and "io_read" in live
    finally:
        api("DELETE", f"/session/{sid}")
