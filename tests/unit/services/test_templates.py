import json

import pytest

from bridge.api.routes.template import merge, template_defaults
from bridge.errors import InvalidAPIParameters
from bridge.services.templates import git_bootstrap, parse_payload, session_fields

YAML = """---
api_version: v1
kind: taskTemplate
metadata:
  name: t1
  tag: demo
spec:
  sessionType: batch
  kernel:
    image: python:3.13
    environ: {A: "1"}
    run:
      bootstrap: echo boot
      startupCommand: python3 main.py
    git:
      repository: https://example.org/x/repo.git
      branch: main
      commit: abc123
  mounts:
    data: /home/work/data
  resources: {cpu: "2", mem: 4g}
---
name: second
template:
  apiVersion: v1
  kind: task_template
  metadata: {name: inner}
  spec:
    kernel: {image: python}
"""


def test_multi_document_yaml_and_both_spellings():
    parsed = parse_payload(YAML)
    assert [name for name, _ in parsed] == ["t1", "second"]
    fields = session_fields(parsed[0][1])
    assert fields["type"] == "batch" and fields["image"] == "python:3.13" and fields["environ"] == {"A": "1"}
    assert fields["startup_command"] == "python3 main.py" and fields["mounts"] == ["data"]
    assert fields["mount_map"] == {"data": "/home/work/data"}   # where the template puts it reaches the job
    assert fields["bootstrap_script"].startswith("git clone --branch main https://example.org/x/repo.git "
                                                 "/home/work/repo && git -C /home/work/repo checkout abc123")
    assert fields["bootstrap_script"].endswith("\necho boot")
    assert session_fields(parsed[1][1])["type"] == "interactive"


def test_json_payload():
    doc = {"api_version": "v1", "kind": "taskTemplate", "metadata": {"name": "j"}, "spec": {"kernel": {"image": "x"}}}
    assert parse_payload(json.dumps(doc))[0][0] == "j"


@pytest.mark.parametrize(("payload", "needle"), [
    ("kind: taskTemplate\n", "api_version"),
    ("api_version: v1\nkind: other\nmetadata: {name: a}\nspec: {kernel: {image: x}}\n", "kind"),
    ("api_version: v1\nkind: taskTemplate\nmetadata: {name: a}\nspec: {kernel: {}}\n", "spec.kernel.image"),
    ("api_version: v1\nkind: taskTemplate\nmetadata: {name: a}\nspec: {kernel: {image: x}, bogus: 1}\n", "bogus"),
    ("{not yaml: [", "neither JSON nor YAML"),
    ("", "no template"),
])
def test_bad_payloads_name_the_problem(payload, needle):
    with pytest.raises(InvalidAPIParameters, match=needle):
        parse_payload(payload)


def test_request_values_override_the_template_and_nulls_do_not():
    defaults = template_defaults(session_fields(parse_payload(YAML)[0][1]))
    merged = merge(defaults, {"template_id": "x", "name": "run1", "image": None, "type": "interactive",
                              "config": {"resources": {"cpu": "4"}, "environ": None, "mounts": []}})
    assert merged["image"] == "python:3.13" and merged["type"] == "interactive" and merged["name"] == "run1"
    assert merged["config"]["resources"] == {"cpu": "4"} and merged["config"]["environ"] == {"A": "1"}
    assert merged["config"]["mounts"] == ["data"] and "template_id" not in merged
    assert merged["config"]["mount_map"] == {"data": "/home/work/data"}


def test_git_destination_defaults_to_the_repository_name():
    assert git_bootstrap({"repository": "https://h/o/proj.git"}) == "git clone https://h/o/proj.git /home/work/proj"
