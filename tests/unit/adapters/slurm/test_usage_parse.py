"""Usage from sacct --json, on two real captures from the dev cluster (Slurm 24.11), each of one job with a
batch step and one srun step: sacct_usage.json (job 2203) under JobAcctGatherType=jobacct_gather/none, so
nothing gathered, and sacct_usage_gathered.json (job 2226) under jobacct_gather/linux, where sacct printed

    2226|1|00:00.365|||
    2226.batch|1|00:00.299|...,fs/disk=0,mem=3874816,...|...,fs/disk=0,mem=3874816,...|energy=0,fs/disk=1
    2226.0|0|00:00.066|...,fs/disk=0,mem=3780608,...|...,fs/disk=0,mem=3780608,...|energy=0,fs/disk=1

(`-P -n --noconvert -o JobID,ElapsedRaw,TotalCPU,TRESUsageInMax,TRESUsageInTot,TRESUsageOutTot`); and the
first capture with larger step figures put in, for bytes read."""

import copy
import json

from bridge.adapters.slurm import parse
from bridge.adapters.slurm.base import JobState
from bridge.domain.jobs import JobUsage


def capture(slurm_data):
    return json.loads((slurm_data / "sacct_usage.json").read_text())


def tres(**counts):
    out = []
    for key, count in counts.items():
        kind, _, name = key.partition("_")
        out.append({"type": kind, "name": name, "id": 0, "count": count})
    return out


def test_real_capture_without_gathering_has_elapsed_time_and_zero_usage(slurm_data):
    [job] = parse.jobs_from_sacct(capture(slurm_data))
    assert job.job_id == "2203" and job.state is JobState.COMPLETED
    assert [s["step"]["id"] for s in capture(slurm_data)["jobs"][0]["steps"]] == ["2203.batch", "2203.0"]
    assert job.usage == JobUsage(elapsed_s=1)


def test_real_capture_with_gathering_matches_what_sacct_printed(slurm_data):
    [job] = parse.jobs_from_sacct(json.loads((slurm_data / "sacct_usage_gathered.json").read_text()))
    assert job.job_id == "2226" and job.state is JobState.COMPLETED
    assert job.usage == JobUsage(elapsed_s=1, cpu_time_ms=365, max_rss_bytes=3874816, disk_read_bytes=0,
                                 disk_write_bytes=2)


def test_gathered_step_usage_is_summed_and_peak_memory_is_the_largest(slurm_data):
    doc = copy.deepcopy(capture(slurm_data))
    batch, step0 = doc["jobs"][0]["steps"]
    batch["time"]["total"] = {"seconds": 2, "microseconds": 345678}
    batch["tres"]["requested"] = {"max": tres(cpu=2345, mem=52428800, fs_disk=20971520),
                                  "total": tres(cpu=2345, mem=52428800, fs_disk=20975000)}
    batch["tres"]["consumed"] = {"max": tres(fs_disk=20971520), "total": tres(fs_disk=20971600, energy=0)}
    step0["time"]["total"] = {"seconds": 0, "microseconds": 512000}
    step0["tres"]["requested"] = {"max": tres(mem=3145728), "total": tres(fs_disk=4096)}
    step0["tres"]["consumed"] = {"total": tres(fs_disk=12)}
    [job] = parse.jobs_from_sacct(doc)
    assert job.usage == JobUsage(elapsed_s=1, cpu_time_ms=2857, max_rss_bytes=52428800,
                                 disk_read_bytes=20975000 + 4096, disk_write_bytes=20971612)


def test_record_without_steps_falls_back_to_the_job_cpu_time(slurm_data):
    doc = copy.deepcopy(capture(slurm_data))
    job = doc["jobs"][0]
    job["steps"] = []
    job["time"]["total"] = {"seconds": 7, "microseconds": 1500}
    assert parse.jobs_from_sacct(doc)[0].usage == JobUsage(elapsed_s=1, cpu_time_ms=7001)


def test_squeue_records_carry_no_usage(slurm_data):
    jobs = parse.jobs_from_squeue(json.loads((slurm_data / "squeue.json").read_text()))
    assert jobs and all(j.usage is None for j in jobs)


def test_het_components_add_up():
    a = JobUsage(elapsed_s=10, cpu_time_ms=100, max_rss_bytes=5, disk_read_bytes=1, disk_write_bytes=2)
    b = JobUsage(elapsed_s=12, cpu_time_ms=50, max_rss_bytes=3, disk_read_bytes=4, disk_write_bytes=8)
    assert a + b == JobUsage(elapsed_s=12, cpu_time_ms=150, max_rss_bytes=5, disk_read_bytes=5, disk_write_bytes=10)
