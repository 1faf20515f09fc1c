"""The signing scheme against signatures computed independently, step by step from client-compat.md §2."""

import hashlib
import hmac
from datetime import UTC, datetime

import pytest

from bridge.api import signing

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def independent_signature(method, path, date_header, host, ctype, version, secret=SECRET):
    day = datetime.fromisoformat(date_header).astimezone(UTC).strftime("%Y%m%d").encode()
    k1 = hmac.new(secret.encode(), day, hashlib.sha256).digest()
    k2 = hmac.new(k1, host.encode(), hashlib.sha256).digest()
    body_hash = hashlib.sha256(b"").hexdigest()
    text = "\n".join([method, path, date_header, f"host:{host}", f"content-type:{ctype}",
                      f"x-backendai-version:{version}", body_hash])
    return hmac.new(k2, text.encode(), hashlib.sha256).hexdigest()


CASES = [
    ("GET", "/auth/test", "2026-11-22T11:18:48.695083+00:00", "127.0.0.1:8090", "text/plain", "v6.20220315"),
    ("POST", "/admin/gql", "2026-11-22T23:59:59+09:00", "api.example.org", "application/json", "v6.20220615"),
    ("GET", "/stream/session/s1/tcpproxy?app=jupyter&arguments=%7B%22--foo%22:+%22bar%22%7D",
     "2026-01-01T00:00:00+00:00", "h:1", "application/octet-stream", "v6.20220615"),
]


@pytest.mark.parametrize(("method", "path", "date", "host", "ctype", "version"), CASES)
def test_signature_matches_an_independent_computation(method, path, date, host, ctype, version):
    expected = independent_signature(method, path, date, host, ctype, version)
    d = signing.parse_date(date)
    ours = signing.signature(SECRET, d, host, signing.string_to_sign(method, path, date, host, ctype, version))
    assert ours == expected
    assert signing.verify(SECRET, expected, method=method, path_qs=path, date_header=date, date=d, host=host,
                          content_type=ctype, version=version)


def test_key_derivation_uses_the_utc_day_of_the_date():
    # 23:59 at +09:00 is 14:59 UTC the same day; 01:00 at +09:00 is the previous UTC day
    late = signing.parse_date("2026-11-22T01:00:00+09:00")
    assert signing.signing_key(SECRET, late, "h") == signing.signing_key(
        SECRET, datetime(2026, 11, 21, 16, tzinfo=UTC), "h")


@pytest.mark.parametrize("tamper", ["method", "path", "host", "version", "secret"])
def test_any_change_breaks_the_signature(tamper):
    m, p, date, h, ct, v = CASES[0]
    good = independent_signature(m, p, date, h, ct, v)
    args = dict(method=m, path_qs=p, date_header=date, date=signing.parse_date(date), host=h, content_type=ct,
                version=v)
    secret = SECRET
    if tamper == "secret":
        secret = SECRET + "x"
    else:
        key = {"method": "method", "path": "path_qs", "host": "host", "version": "version"}[tamper]
        args[key] = {"method": "POST", "path_qs": "/auth/test?x=1", "host": "evil:1", "version": "v6.20220615"}[key]
    assert not signing.verify(secret, good, **args)


def test_authorization_header_parsing():
    assert signing.parse_authorization(
        "BackendAI signMethod=HMAC-SHA256, credential=AKIAXX:ABCDEF0123") == ("sha256", "AKIAXX", "abcdef0123")
    for bad in ["Bearer x", "BackendAI signMethod=HMAC-SHA256 credential=AK:xx", "BackendAI credential=AK:zz"]:
        with pytest.raises(ValueError):
            signing.parse_authorization(bad)


def test_dates_without_zone_are_utc_and_rfc1123_is_accepted():
    assert signing.parse_date("2026-11-22T10:00:00") == datetime(2026, 11, 22, 10, tzinfo=UTC)
    assert signing.parse_date("Sun, 22 Nov 2026 10:00:00 GMT") == datetime(2026, 11, 22, 10, tzinfo=UTC)
    with pytest.raises(ValueError):
        signing.parse_date("yesterday")
