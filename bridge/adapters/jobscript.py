"""Job scripts from the Jinja2 templates in templates/: undefined variables are errors, and the `shquote`
filter quotes every value that reaches the shell."""

from __future__ import annotations

import shlex
from functools import cache
from typing import Any

import jinja2

from bridge.package_data import data_dir


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # shell scripts, not HTML: values are quoted with shquote instead
        keep_trailing_newline=True,
    )
    env.filters["shquote"] = lambda v: shlex.quote(str(v))
    return env


def render(template: str, **values: Any) -> str:
    return environment().get_template(template).render(**values)
