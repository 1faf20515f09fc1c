"""Session templates with the real CLI; create-from-template only in 23.9.10 (22.3.2 and 26.9.6 fail
client-side before sending anything, client-compat.md §5.16)."""

from __future__ import annotations

import re
import uuid

import pytest

from tests.e2e.test_admin_cli import ok
from tests.e2e.test_sessions_cli import wait_row

pytestmark = pytest.mark.cluster

TEMPLATE = """---
api_version: v1
kind: taskTemplate
metadata:
  name: {name}
spec:
  sessionType: batch
  kernel:
    image: python
    environ: {{GREETING: hello-from-template}}
    run:
      bootstrap: echo booted > /home/work/boot.txt
      startup_command: cat /home/work/boot.txt; echo $GREETING
  resources: {{cpu: "1", mem: 256m}}
"""


def test_template_crud_and_create_from_template(client, tmp_path):
    name = "tpl-" + uuid.uuid4().hex[:6]
    path = tmp_path / "t.yaml"
    path.write_text(TEMPLATE.format(name=name))
    out = ok(client.run("alice", "session-template", "create", "-f", str(path)))
    tid = re.search(r"[0-9a-f]{8}-[0-9a-f-]{27}", out).group(0)
    assert name in ok(client.run("alice", "session-template", "list"))
    assert "hello-from-template" in ok(client.run("alice", "session-template", "get", tid))
    denied = client.run("bob", "session-template", "get", tid)
    assert "no session template" in denied.stdout + denied.stderr
    if client.version == "23.9.10":
        session = "ft-" + uuid.uuid4().hex[:6]
        ok(client.run("alice", "session", "create-from-template", tid, "-t", session, "--type", "batch"))
        wait_row(client, "alice", session, "SUCCESS")
        logs = ok(client.run("alice", "session", "logs", session))
        assert "booted" in logs and "hello-from-template" in logs
    ok(client.run("alice", "session-template", "delete", tid, answer="y\n"))
    assert name not in ok(client.run("alice", "session-template", "list"))
