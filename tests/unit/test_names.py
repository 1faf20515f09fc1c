"""Issue 12 (low): `$` in Python regexes also matches before a final newline, so "alice\n" passed as a Unix
name and "job1\n" as a session name. Every name pattern is anchored with \\Z."""

from __future__ import annotations

import pytest

from bridge.errors import InvalidAPIParameters
from bridge.services.accounts import check_unix_name
from bridge.services.sessions import check_session_name


@pytest.mark.parametrize("check", [lambda v: check_unix_name(v, "unix_user"), check_session_name])
def test_a_trailing_newline_is_not_part_of_a_valid_name(check):
    assert check("alice1") == "alice1"
    with pytest.raises(InvalidAPIParameters):
        check("alice1\n")
