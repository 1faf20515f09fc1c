import pytest

from bridge.client import sbatch as sb

SCRIPT = """#!/bin/bash
#SBATCH --job-name=train-01
#SBATCH -N2 -t 1-02:30:00
#SBATCH -p gpu --account=phys
#SBATCH --cpus-per-task 4 --mem=8G
#SBATCH --gres=gpu:2
#SBATCH --output=out-%j.txt
#SBATCH --begin=now+1hour
#SBATCH --dependency=afterok:prep-01
#SBATCH --mail-user=me@x.org
#BAI image=python
python3 train.py
#SBATCH --time=5
"""


def test_directives_map_to_a_batch_session():
    s = sb.parse(SCRIPT)
    body = sb.to_session(s, image=None, group="physics", name=None)
    assert body["type"] == "batch" and body["image"] == "python" and body["name"] == "train-01"
    assert body["clusterSize"] == 2 and body["group"] == "physics" and body["config"]["scaling_group"] == "gpu"
    assert body["config"]["resources"] == {"cpu": "4", "mem": "8g", "cuda.device": "2"}
    assert body["batch_timeout"] == ((24 + 2) * 60 + 30) * 60  # the #SBATCH after the first command is ignored
    assert body["starts_at"] == "3600s" and body["dependencies"] == ["prep-01"]
    assert body["startupCommand"].startswith("{ exec /bin/bash -c ") and "> \"out-${SLURM_JOB_ID}.txt\" 2>&1" in body[
        "startupCommand"]
    assert any("--mail-user" in w for w in s.warnings)
    assert s.options["account"] == "phys"


@pytest.mark.parametrize(("value", "seconds"), [("10", 600), ("10:30", 630), ("1:00:00", 3600), ("2-0", 172800),
                                                ("1-01:01:01", 90061)])
def test_slurm_time_forms(value, seconds):
    assert sb.slurm_time_to_seconds(value) == seconds


def test_memory_without_unit_is_megabytes_and_other_dependencies_are_refused():
    s = sb.parse("#!/bin/sh\n#SBATCH --mem=2048\n#SBATCH -d afternotok:x\ntrue\n")
    assert sb.to_session(sb.parse("#!/bin/sh\n#SBATCH --mem=2048\ntrue\n"), image="i", group=None,
                         name=None)["config"]["resources"]["mem"] == "2048m"
    with pytest.raises(ValueError, match="afterok"):
        sb.to_session(s, image="i", group=None, name=None)
