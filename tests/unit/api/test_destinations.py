"""Issue 12.11: requests the gateway sends on a user's or a registry's word. A session's callback_url could
point at loopback or internal addresses (a cloud's metadata service, the gateway's own admin ports), and a
registry's token realm and redirects were followed anywhere."""

from __future__ import annotations

import pytest

from bridge.adapters.oci_registry import realm_refused
from bridge.domain.destinations import networks, refused_address


@pytest.mark.parametrize("url", ["http://127.0.0.1:8090/admin", "http://localhost/", "http://169.254.169.254/latest",
                                 "http://10.0.0.7/hook", "http://[::1]/", "http://[::ffff:127.0.0.1]/",
                                 "http://0.0.0.0/"])
async def test_a_callback_into_the_sites_own_networks_is_refused(gw_no_submit, url):
    r = await gw_no_submit.request("POST", "/session", "alice",
                                   json={"name": "cb-test", "image": "python", "callback_url": url})
    assert r.status_code == 400 and r.json()["type"].endswith("/refused-destination"), r.text
    assert "callback_url" in r.json()["msg"]


async def test_a_site_may_allow_a_network_for_callbacks(gw_no_submit):
    sessions = gw_no_submit.app.state.sessions
    sessions.callback_networks = networks(["10.0.0.0/24"])
    r = await gw_no_submit.request("POST", "/session", "alice",
                                   json={"name": "cb-test", "image": "python", "callback_url": "http://10.0.0.7/"})
    assert r.status_code != 400 or "callback_url" not in r.json()["msg"], r.text


def test_public_addresses_pass_and_the_rest_say_why():
    assert refused_address("93.184.216.34", []) is None
    assert refused_address("2606:2800:220:1::", []) is None
    assert "loopback" in refused_address("127.0.0.2", [])
    assert "link-local" in refused_address("169.254.169.254", [])
    assert "private" in refused_address("192.168.1.1", [])
    assert "loopback" in refused_address("::ffff:127.0.0.1", [])   # an IPv4-mapped address is its IPv4
    assert refused_address("127.0.0.2", networks(["127.0.0.0/8"])) is None


@pytest.mark.parametrize(("api", "realm", "insecure", "ok"), [
    ("https://registry-1.docker.io", "https://auth.docker.io/token", False, True),
    ("https://ghcr.io", "https://ghcr.io/token", False, True),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000/token", True, True),
    ("https://ghcr.io", "http://ghcr.io/token", False, False),                 # not https
    ("https://registry.evil.example", "http://169.254.169.254/latest/meta-data", False, False),
    ("https://registry.evil.example", "https://gateway.site.internal/admin", False, False),
])
def test_a_registry_token_realm_stays_on_the_registrys_domain(api, realm, insecure, ok):
    assert (realm_refused(api, realm, insecure) is None) == ok
