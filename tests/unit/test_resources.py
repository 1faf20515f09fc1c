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
