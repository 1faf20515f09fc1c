import pytest

from bridge.domain.resources import VFOLDER_HOST_PERMISSIONS, normalize_vfolder_hosts, parse_binary_size


@pytest.mark.parametrize(("text", "value"), [("1024", 1024), ("1k", 1024), ("512m", 512 * 2**20), ("1g", 2**30),
                                             ("1.5G", int(1.5 * 2**30)), ("2GiB", 2 * 2**30), (7, 7)])
def test_sizes(text, value):
    assert parse_binary_size(text) == value


@pytest.mark.parametrize("bad", ["", "1x", "-1", "g", "1..2g"])
def test_bad_sizes(bad):
    with pytest.raises(ValueError):
        parse_binary_size(bad)


def test_vfolder_hosts_in_every_client_shape():
    full = list(VFOLDER_HOST_PERMISSIONS)
    assert normalize_vfolder_hosts('{"local": ["mount-in-session"]}') == {"local": ["mount-in-session"]}
    assert normalize_vfolder_hosts(["local", "nfs"]) == {"local": full, "nfs": full}
    assert normalize_vfolder_hosts("['local']") == {"local": full}
    assert normalize_vfolder_hosts("local, nfs") == {"local": full, "nfs": full}
    assert normalize_vfolder_hosts(None) == {} and normalize_vfolder_hosts("") == {}
    with pytest.raises(ValueError):
        normalize_vfolder_hosts("[oops")


def test_a_project_quota_is_the_whole_grptres():
    from bridge.domain.resources import quota_tres

    assert quota_tres({"cpu": "8", "mem": "16g", "cuda.device": 2}) == {"cpu": 8, "mem": 16384, "gres/gpu": 2}
    # what the slots leave out, or call unlimited, is cleared (-1): a modify states the whole quota
    assert quota_tres({"cpu": 4, "mem": "Infinity"}, shards_per_gpu=4) == {
        "cpu": 4, "mem": -1, "gres/gpu": -1, "gres/shard": -1}
    assert quota_tres({"cuda.shares": "1.5"}, shards_per_gpu=4)["gres/shard"] == 6
    assert quota_tres({}) == {"cpu": -1, "mem": -1, "gres/gpu": -1}


@pytest.mark.parametrize("bad, says", [({"tpu": 1}, "total_resource_slots.tpu"),
                                       ({"cpu": "1.5"}, "total_resource_slots.cpu"),
                                       ({"mem": "lots"}, "total_resource_slots.mem"),
                                       ({"cuda.shares": 1}, "total_resource_slots.cuda.shares")])
def test_a_quota_slurm_cannot_hold_is_refused_by_name(bad, says):
    from bridge.domain.resources import quota_tres

    with pytest.raises(ValueError, match=says.replace(".", r"\.")):
        quota_tres(bad)

