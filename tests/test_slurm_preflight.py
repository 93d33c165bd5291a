"""The pre-flight check of the SLURM profile (layerbound.plan.cluster) on parsed sinfo output, and a
cluster's resource file. The same check against a real `sinfo` runs in tests/test_slurm_real.py."""

import pytest

from layerbound.plan import cluster
from layerbound.plan.cluster import ClusterMisfit, Request

# `sinfo --noheader --Node --format=%R|%N|%c|%m|%G|%l` of a small cluster: two CPU nodes, one GPU
# node with two GPUs in socket-bound GRES, and a debug partition with a 30-minute limit.
SINFO = """\
cpu*|c01|16|64000|(null)|1-00:00:00
cpu*|c02|32|128000|(null)|1-00:00:00
gpu|g01|8|30000|gpu:a100:2(S:0-1)|12:00:00
debug|c01|16|64000|(null)|30:00
"""


def request(rule="collide_shard", partition="gpu", cpus=4, mem_mb=8000, gpus=1, runtime=120):
    return Request(rule, partition, cpus, mem_mb, gpus, runtime)


def test_sinfo_fields_are_read_per_partition_and_node():
    nodes = cluster.parse_sinfo(SINFO)
    assert [(n.partition, n.name) for n in nodes] == [("cpu", "c01"), ("cpu", "c02"), ("gpu", "g01"), ("debug", "c01")]
    g01 = nodes[2]
    assert (g01.cpus, g01.mem_mb, g01.gpus, g01.time_limit_min) == (8, 30000, 2, 720)
    assert nodes[0].time_limit_min == 1440 and nodes[3].time_limit_min == 30


@pytest.mark.parametrize("gres,count", [("(null)", 0), ("gpu:2", 2), ("gpu", 1), ("gpu:a100:4(S:0-1)", 4),
                                        ("gpu:a100:2,gpu:v100:1", 3), ("mps:100,gpu:tesla:1", 1), ("shard:8", 0)])
def test_gpu_count_of_a_gres_field(gres, count):
    assert cluster.gpu_count(gres) == count


@pytest.mark.parametrize("text,minutes", [("infinite", None), ("UNLIMITED", None), ("1-00:00:00", 1440),
                                          ("2:00:00", 120), ("30:00", 30), ("45", 45), ("0:30", 1),
                                          ("2-12:30:00", 3630)])
def test_time_limits_in_minutes(text, minutes):
    assert cluster.time_limit_minutes(text) == minutes


def test_requests_that_fit_a_node_pass():
    nodes = cluster.parse_sinfo(SINFO)
    ok = [request(), request("train_model", cpus=8, mem_mb=30000, runtime=720),
          request("losses_table", "cpu", cpus=1, mem_mb=8000, gpus=0, runtime=30)]
    assert cluster.misfits(ok, nodes) == []
    cluster.preflight(ok, nodes, "squeue", 300)


def test_a_request_no_node_holds_fails_naming_rule_request_and_largest_node():
    nodes = cluster.parse_sinfo(SINFO)
    with pytest.raises(ClusterMisfit) as err:
        cluster.preflight([request("train_model", cpus=16, mem_mb=16000)], nodes)
    message = str(err.value)
    assert "\n" not in message
    assert ("rule train_model asks for 16 CPUs, 16000 MB, 1 GPU on partition 'gpu', more than any node there "
            "has (largest: node g01: 8 CPUs, 30000 MB, 2 GPUs)") in message
    assert "$LAYERBOUND_SLURM_RESOURCES" in message


def test_each_demand_alone_can_be_what_does_not_fit():
    nodes = cluster.parse_sinfo(SINFO)
    assert cluster.misfits([request(cpus=9)], nodes)
    assert cluster.misfits([request(mem_mb=30001)], nodes)
    assert cluster.misfits([request(gpus=3)], nodes)
    # A GPU job on the CPU partition: its nodes have no GPU.
    assert "largest: node c02: 32 CPUs, 128000 MB, 0 GPUs" in cluster.misfits([request(partition="cpu")], nodes)[0]
    # Fitting means one node with all three: c02's CPUs and g01's GPUs do not add up.
    assert cluster.misfits([request(partition=None, cpus=16, mem_mb=8000, gpus=1)], nodes)
    assert not cluster.misfits([request(partition=None, cpus=8, mem_mb=8000, gpus=1)], nodes)


def test_the_largest_node_is_the_one_closest_to_the_request():
    nodes = cluster.parse_sinfo(SINFO)
    # c02 has the CPUs and memory of this job, g01 only the GPU: c02 meets two of three demands.
    text = cluster.misfits([request(partition=None, cpus=20, mem_mb=100000, gpus=1)], nodes)[0]
    assert "largest: node c02" in text


def test_time_limit_and_unknown_partition():
    nodes = cluster.parse_sinfo(SINFO)
    (text,) = cluster.misfits([request(runtime=721)], nodes)
    assert text == "rule collide_shard asks for 721 min on partition 'gpu', whose time limit is 720 min"
    (text,) = cluster.misfits([request(partition="gpu-long")], nodes)
    assert "partition 'gpu-long', which this cluster does not have (sinfo lists cpu, debug, gpu)" in text
    assert not cluster.misfits([request(partition="cpu", gpus=0, runtime=None)], nodes)


def test_several_misfits_are_one_line_naming_the_first():
    nodes = cluster.parse_sinfo(SINFO)
    with pytest.raises(ClusterMisfit, match=r"rule a asks .* \(also: 2 more rules\)"):
        cluster.preflight([request("a", cpus=99), request("b", cpus=99), request("c", gpus=5)], nodes)


def test_squeue_status_needs_finished_jobs_kept_longer_than_the_poll_interval():
    nodes = cluster.parse_sinfo(SINFO)
    with pytest.raises(ClusterMisfit, match="MinJobAge = 60 s"):
        cluster.preflight([request()], nodes, "squeue", 60)
    cluster.preflight([request()], nodes, "squeue", cluster.STATUS_POLL_MAX_S + 1)
    cluster.preflight([request()], nodes, "sacct", 60)     # sacct reads the accounting database
    config = "MaxJobCount             = 10000\nMinJobAge               = 300 sec\nMpiDefault = none\n"
    assert cluster.min_job_age_seconds(config) == 300
    assert cluster.min_job_age_seconds("MaxJobCount = 1") is None


def test_job_requests_as_the_plugin_submits_them():
    # cpus_per_task wins over threads; mem_mb_per_cpu scales with the CPUs; the largest job per rule.
    a = cluster.job_request("r", {"cpus_per_task": 4, "mem_mb": 8000, "gpu": 1, "runtime": 120,
                                  "slurm_partition": "gpu"}, threads=1)
    assert a == Request("r", "gpu", 4, 8000, 1, 120)
    b = cluster.job_request("r", {"mem_mb_per_cpu": 1000, "slurm_partition": "gpu", "runtime": 240}, threads=2)
    assert b == Request("r", "gpu", 2, 2000, 0, 240)
    assert cluster.largest_per_rule([a, b]) == [Request("r", "gpu", 4, 8000, 1, 240)]
    # A value Snakemake computes from inputs that do not exist yet is not a request (yet).
    assert cluster.job_request("r", {"mem_mb": "<TBD>", "runtime": "<TBD>"}, threads=1) == Request("r", None, 1, 0, 0, None)


def test_cluster_file_is_validated_and_becomes_snakemake_resources(tmp_path):
    path = tmp_path / "mycluster.yaml"
    path.write_text("collide_shard: {cpus: 2, mem_mb: 3000, runtime: 90}\ntrain_model: {gpu: 0, slurm_partition: cpu}\n")
    resources = cluster.load_resources(path)
    assert cluster.snakemake_resources(resources["collide_shard"]) == (
        2, {"cpus_per_task": "2", "mem_mb": "3000", "runtime": "90 * attempt"})
    assert cluster.snakemake_resources(resources["train_model"]) == (None, {"gpu": "0", "slurm_partition": "'cpu'"})
    assert cluster.unknown_rules(resources, {"collide_shard", "train_model"}) == []
    assert cluster.unknown_rules({"colide_shard": {}}, {"collide_shard"}) == ["colide_shard"]


@pytest.mark.parametrize("text,needle", [
    ("collide_shard: {threads: 2}", "collide_shard.threads: unknown key"),
    ("collide_shard: {cpus: 0}", "collide_shard.cpus: expected a positive integer, got 0"),
    ("collide_shard: {mem_mb: 4G}", "expected a positive integer, got '4G'"),
    ("collide_shard: {gpu: -1}", "expected a non-negative integer"),
    ("collide_shard: 4", "collide_shard: expected a mapping"),
    ("- a\n- b", "expected rule names as keys"),
])
def test_bad_cluster_file_fails_in_one_line_naming_the_key(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ClusterMisfit, match=needle.replace("(", r"\(")):
        cluster.load_resources(path)


def test_cluster_file_must_exist(tmp_path):
    with pytest.raises(ClusterMisfit, match="not a file"):
        cluster.load_resources(tmp_path / "missing.yaml")
