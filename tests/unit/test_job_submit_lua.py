"""slurm_plugins/job_submit.lua run by Lua 5.1 (the Lua Debian's slurmctld embeds) with a stand-in for
slurmctld's `slurm` table: its HMAC-SHA256 agrees with Python's, a session's signed tag (as the gateway makes
it, bridge.domain.slurm_notice) becomes the admin comment, and a made-up, unsigned or other user's tag is
refused. The real slurmctld runs it in tests/e2e/test_slurm_notices.py."""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from bridge.domain.slurm_notice import session_of, signed_tag

LUA = Path(__file__).resolve().parents[2] / "slurm_plugins" / "job_submit.lua"
pytestmark = pytest.mark.skipif(shutil.which("lua5.1") is None, reason="lua5.1 is not installed "
                                "(scripts/test-deps.sh installs it)")

HARNESS = r"""
slurm = {SUCCESS = 0, ERROR = -1, log_info = function() end,
         log_user = function(fmt, ...) user_message = string.format(fmt, ...) end}
dofile(arg[1])
local mode = arg[2]
if mode == "hmac" then
  io.write(bridge_hmac_hex(arg[3], arg[4]))
else
  local job = {comment = arg[3] ~= "" and arg[3] or nil, user_name = arg[4]}
  local rc = slurm_job_submit(job, {}, 1001)
  io.write(string.format("%d\t%s\t%s", rc, job.admin_comment or "", user_message or ""))
end
"""


def lua(tmp_path: Path, *args: str, notify_dir: Path | None = None) -> str:
    harness = tmp_path / "harness.lua"
    harness.write_text(HARNESS)
    env = {"PATH": "/usr/bin:/bin", "BRIDGE_NOTIFY_DIR": str(notify_dir or tmp_path / "none")}
    done = subprocess.run(["lua5.1", str(harness), str(LUA), *args], capture_output=True, text=True, env=env,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("key,msg", [
    ("key", "The quick brown fox jumps over the lazy dog"), ("", ""), ("k" * 64, "x" * 55), ("k" * 65, "y" * 56),
    ("s3cr3t", "z" * 64), ("\u00e9t\u00e9", "bridge-tag\nbridge-1:abc\nalice"), ("q" * 200, "w" * 1000)])
def test_hmac_sha256_agrees_with_python(tmp_path, key, msg):
    want = hmac.new(key.encode(), msg.encode(), hashlib.sha256).hexdigest()
    assert lua(tmp_path, "hmac", key, msg) == want


def test_only_a_sessions_own_signed_tag_passes_and_becomes_the_admin_comment(tmp_path):
    conf = tmp_path / "notify.d"
    conf.mkdir()
    secret, prefix, sid = "n0tify-secret", "bridge-ab12cd34:", "0b6c1e9a-3f3e-4c1b-9a53-2b9f6c7f1e2d"
    (conf / "gw.json").write_text(json.dumps({"prefix": prefix, "url": "http://gw", "secret": secret}))
    tag = signed_tag(secret, prefix + sid, "alice")
    assert session_of(tag, prefix) == sid and session_of(prefix + sid, prefix) == sid
    ok = lua(tmp_path, "job", tag, "alice", notify_dir=conf).split("\t")
    assert ok[:2] == ["0", f"bridge session {sid}"]
    for comment, user, why in ((tag, "bob", "does not belong to"),             # alice's tag, bob's job
                               (prefix + sid, "alice", "no signature"),         # unsigned
                               (prefix + sid + "." + "0" * 32, "alice", "does not belong to"),   # made up
                               (signed_tag("other", prefix + sid, "alice"), "alice", "does not belong to")):
        rc, admin, message = lua(tmp_path, "job", comment, user, notify_dir=conf).split("\t")
        assert rc == "-1" and admin == "" and why in message and "through the gateway" in message, comment
    for comment in ("", "my own notes", "other-prefix:" + sid + ".abc"):   # not a gateway's: untouched
        assert lua(tmp_path, "job", comment, "alice", notify_dir=conf).split("\t")[:2] == ["0", ""]


def test_a_long_or_tricky_comment_costs_slurmctld_nothing_and_the_longest_prefix_decides(tmp_path):
    import time

    conf = tmp_path / "notify.d"
    conf.mkdir()
    (conf / "a.json").write_text(json.dumps({"prefix": "bridge:", "url": "http://a", "secret": "sa"}))
    (conf / "b.json").write_text(json.dumps({"prefix": "bridge:x:", "url": "http://b", "secret": "sb"}))
    t0 = time.monotonic()
    for comment in ("a" * 1000 + "-.-.-." * 4, ("ab." * 340)[:1020]):   # once quadratic in Lua patterns
        assert lua(tmp_path, "job", comment, "alice", notify_dir=conf).split("\t")[:2] == ["0", ""]
    assert time.monotonic() - t0 < 5
    sid = "0b6c1e9a-3f3e-4c1b-9a53-2b9f6c7f1e2d"
    ok = lua(tmp_path, "job", signed_tag("sb", "bridge:x:" + sid, "alice"), "alice", notify_dir=conf).split("\t")
    assert ok[:2] == ["0", f"bridge session {sid}"]   # gateway b's own tag, though gateway a's prefix matches too
