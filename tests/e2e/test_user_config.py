"""Dotfiles and the stored bootstrap script reach a real session: the domain's, the project's and the
user's dotfiles are in the home with their modes, owned by the user, and the keypair's bootstrap script ran
before the startup command."""

from __future__ import annotations

import uuid

import pytest

from tests.e2e.test_session_rest import Api, wait_status

pytestmark = pytest.mark.cluster


def test_a_batch_session_finds_the_dotfiles_and_ran_the_bootstrap_script(gateway):
    bob, admin = Api(gateway, "BOB_"), Api(gateway, "ADMIN_")
    made = [
        (bob, "/user-config/dotfiles", {"path": ".e2e-rc", "data": "mine\n", "permission": "600"}),
        (bob, "/user-config/dotfiles", {"path": "conf/e2e.ini", "data": "[x]\n", "permission": "640"}),
        (admin, "/group-config/dotfiles", {"group": "default", "path": ".e2e-team", "data": "team\n"}),
        (admin, "/domain-config/dotfiles", {"domain": "default", "path": ".e2e-team", "data": "domain\n"}),
    ]
    try:
        for who, path, body in made:
            r = who("POST", path, body)
            assert r.status_code == 200, r.text
        r = bob("POST", "/user-config/bootstrap-script", {"script": "echo booted-$(id -un) > $HOME/e2e-booted"})
        assert r.status_code == 200, r.text
        name = "dot-" + uuid.uuid4().hex[:6]
        command = ("cat ~/.e2e-rc ~/.e2e-team ~/e2e-booted ~/conf/e2e.ini; "
                   "stat -c '%a %U %n' ~/.e2e-rc ~/conf/e2e.ini ~/.e2e-team")
        r = bob("POST", "/session", {"name": name, "image": "python", "type": "batch", "startupCommand": command,
                                     "enqueueOnly": True})
        assert r.status_code in (200, 201), r.text
        info = wait_status(bob, name, {"TERMINATED", "ERROR", "CANCELLED"}, 180)
        logs = bob("GET", f"/session/{name}/logs").json()["result"]["logs"]
        assert info["result"] == "SUCCESS", logs
        assert "mine\nteam\nbooted-bob\n[x]\n" in logs                 # the project's wins over the domain's
        assert "600 bob /home/work/.e2e-rc" in logs and "640 bob /home/work/conf/e2e.ini" in logs
        assert "644 bob /home/work/.e2e-team" in logs
    finally:
        bob("POST", "/user-config/bootstrap-script", {"script": ""})
        for who, path, body in made:
            who("DELETE", path, {k: v for k, v in body.items() if k in ("path", "group", "domain")})
