from bridge.domain import cluster
from bridge.domain.resources import session_slots

SID = "7ca6c9f0-9250-430a-9af1-9f3dfa258b6a"


def test_kernels_are_main1_then_subs_with_ids_traceable_to_the_session():
    ks = cluster.kernels(SID, 3, cluster.MULTI_NODE)
    assert [k.host for k in ks] == ["main1", "sub1", "sub2"]
    assert [k.idx for k in ks] == [1, 1, 2] and [k.role for k in ks] == ["main", "sub", "sub"]
    assert ks[0].id == SID and ks[2].id == SID[:-4] + "8b6c"   # the session id's last digits, plus the rank
    assert [k.node_index for k in ks] == [0, 1, 2] and {k.local_rank for k in ks} == {0}


def test_single_node_kernels_share_node_zero_with_local_ranks():
    ks = cluster.kernels(SID, 3, cluster.SINGLE_NODE)
    assert [k.node_index for k in ks] == [0, 0, 0] and [k.local_rank for k in ks] == [0, 1, 2]
    assert cluster.node_of(ks[2], ["n4"]) == "n4" and cluster.node_of(ks[1], []) is None


def test_the_documented_environment():
    ks = cluster.kernels(SID, 3, cluster.MULTI_NODE)
    env = cluster.environment(ks, ks[2])
    assert env == {"BACKENDAI_KERNEL_ID": SID[:-4] + "8b6c", "BACKENDAI_CLUSTER_SIZE": "3",
                   "BACKENDAI_CLUSTER_HOSTS": "main1,sub1,sub2", "BACKENDAI_CLUSTER_REPLICAS": "main:1,sub:2",
                   "BACKENDAI_CLUSTER_HOST": "sub2", "BACKENDAI_CLUSTER_IDX": "2", "BACKENDAI_CLUSTER_ROLE": "sub",
                   "BACKENDAI_CLUSTER_LOCAL_RANK": "0"}


def test_find_by_id_or_host_name():
    assert cluster.find(SID, 2, cluster.MULTI_NODE, None).host == "main1"
    assert cluster.find(SID, 2, cluster.MULTI_NODE, "SUB1").rank == 1
    assert cluster.find(SID, 2, cluster.MULTI_NODE, SID[:-4] + "8b6b").host == "sub1"
    assert cluster.find(SID, 2, cluster.MULTI_NODE, "sub2") is None
    assert cluster.find(SID, 2, cluster.MULTI_NODE, "1") is None


def test_the_failed_kernel_marker_is_read_strictly():
    assert cluster.failed_kernel("sub1 3\n") == "kernel sub1 failed (exit 3)"
    assert cluster.failed_kernel("sub1 sub2 timeout") == "kernel sub1, sub2 did not start"
    # the user can write the file: anything else names nothing
    for junk in ("", "sub1", "rm -rf / 3", "sub1 three", "x" * 300 + " 1", "sub1;reboot 1"):
        assert cluster.failed_kernel(junk) is None


def test_a_sessions_slots_are_every_kernels():
    assert session_slots({"cpu": "2", "mem": "1073741824", "cuda.shares": "0.5"}, 3) == \
        {"cpu": "6", "mem": "3221225472", "cuda.shares": "1.5"}
    assert session_slots({"cpu": "1"}, 1) == {"cpu": "1"} and session_slots(None, 4) == {}


def test_kernel_ids_never_repeat_the_session_id():
    for sid in ("7ca6c9f0-9250-430a-9af1-9f3dfa250001", "7ca6c9f0-9250-430a-9af1-9f3dfa25ffff"):
        ids = [k.id for k in cluster.kernels(sid, 5, cluster.MULTI_NODE)]
        assert ids[0] == sid and len(set(ids)) == 5 and all(i[:-4] == sid[:-4] for i in ids)


def test_a_lost_step_names_its_kernels():
    assert cluster.failed_kernel("sub1 sub2 lost") == "kernel sub1, sub2 lost (its Slurm step ended)"
