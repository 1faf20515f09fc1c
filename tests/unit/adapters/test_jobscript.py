import jinja2
import pytest

from bridge.adapters import jobscript


def test_values_are_shell_quoted():
    out = jobscript.render("dev_first_job.sh.j2", image="/srv/images/py thon", code="print('$(rm -rf /)')")
    assert "exec apptainer -s exec --nv '/srv/images/py thon' python3 -c 'print('\"'\"'$(rm -rf /)'\"'\"')'" in out


def test_a_missing_value_is_an_error_not_an_empty_string():
    with pytest.raises(jinja2.UndefinedError):
        jobscript.render("dev_first_job.sh.j2", image="/srv/images/python")
