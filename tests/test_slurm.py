"""The SLURM command of docs/cluster.md on the paper grid, run against stub sbatch/squeue/sacct/scontrol/sinfo
commands that record what would be submitted (a real Slurm runs a small config in
tests/test_slurm_real.py, with the sizes of its node): with the profile's own sizes, GPU jobs ask
for one GPU each and fit one modest GPU node (the stub sinfo's, so the pre-flight check passes);
every other rule asks for no GPU."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from workflow_helpers import ROOT, job_counts, run_snakemake

GPU_RULES = {"train_model", "collide_shard", "attacks_model", "attacks_fab_pairs"}
# GPU rules the paper grid of docs/cluster.md does not plan (the dry run of config.yaml checks them).
STUDY_GPU_RULES = {"semirobust_run"}
# A modest GPU node: the per-job requests must fit one of them.
NODE = {"cpus": 32, "mem_mb": 256_000, "gpus": 4}

STUB = textwrap.dedent('''\
    #!{python}
    import json, os, sys
    name = os.path.basename(sys.argv[0])
    record = os.environ["SLURM_STUB_LOG"]
    stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
    with open(record, "a") as f:
        f.write(json.dumps({{"command": name, "argv": sys.argv[1:], "stdin": stdin}}) + "\\n")
    if name == "sbatch":
        count = sum(1 for line in open(record) if '"command": "sbatch"' in line)
        print(1000 + count)
    elif name == "scontrol":
        print("MaxArraySize = 1001\\nMinJobAge = 300 sec")
    elif name == "sinfo":
        print("\\n".join(os.environ["SLURM_STUB_SINFO"].split(";")))
    elif name in ("sacctmgr", "sshare"):
        print(os.environ.get("LAYERBOUND_SLURM_ACCOUNT", "acct"))
    ''')


def cluster_page_commands() -> tuple[dict[str, str], list[str]]:
    """The environment and the snakemake command of the cluster page's first section, as written."""
    text = (ROOT / "docs" / "cluster.md").read_text()
    section = text.split("## Running the paper's grid on a SLURM cluster", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1).replace("\\\n", " ")
    env, command = {}, None
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            env.update(word.split("=", 1) for word in words[1:])
        elif words[:1] == ["snakemake"]:
            command = words
    assert command is not None, "docs/cluster.md's SLURM section has no snakemake command"
    return env, command


def fake_upstream(workdir: Path, config: dict, keep_model: str) -> None:
    """Empty files where the pair set and one model's checkpoint would be: that model's shards and
    attacks and the input baselines' shards are ready, the other models' training too (a few
    hundred jobs, below the profile's `jobs`, so every GPU rule is among the first submissions)."""
    (a, b), per_class = config["pairs"]["classes"], config["pairs"]["per_class"]
    results = workdir / config.get("results", "results")   # the config's results folder
    pairs = results / "pairs" / "mnist" / f"c{a}v{b}-S{per_class}-seed{config['seed']}.h5"
    pairs.parent.mkdir(parents=True)
    pairs.touch()
    for name, entry in config["models"].items():
        if name == keep_model:
            for suffix in (".pt", ".json"):
                path = results / "models" / entry["dataset"] / f"{name}{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.touch()


def sbatch_calls(log: Path) -> list[dict]:
    if not log.exists():
        return []
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    out = []
    for call in calls:
        if call["command"] != "sbatch":
            continue
        args = call["argv"]
        text = " ".join(args)
        rule = re.search(r"rule_([A-Za-z0-9_]+?)(?:_wildcards|$|\s)", text).group(1)

        def option(*names, default=None):
            for name in names:
                for i, arg in enumerate(args):
                    if arg == name and i + 1 < len(args):
                        return args[i + 1]
                    if arg.startswith(name + "="):
                        return arg.split("=", 1)[1]
            return default
        out.append({"rule": rule, "gpus": int(option("--gpus", default=0)), "time": option("-t", "--time"),
                    "mem_mb": int(option("--mem", default=0)), "cpus": int(option("--cpus-per-task", "-c", default=1)),
                    "partition": option("-p", "--partition"), "account": option("-A", "--account"),
                    "array": option("--array"), "text": text})
    return out


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    """Run the cluster page's command with stub SLURM commands until the GPU rules have been submitted."""
    workdir = tmp_path_factory.mktemp("cluster")
    stubs = workdir / "bin"
    stubs.mkdir()
    for name in ("sbatch", "squeue", "sacct", "scontrol", "sinfo", "sacctmgr", "sshare", "scancel"):
        path = stubs / name
        path.write_text(STUB.format(python=sys.executable))
        path.chmod(0o755)
    env_vars, command = cluster_page_commands()
    configfile = ROOT / command[command.index("--configfile") + 1]
    fake_upstream(workdir, yaml.safe_load(configfile.read_text()), keep_model="small_benign")
    log = workdir / "slurm_calls.jsonl"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    for i, word in enumerate(command[1:], start=1):
        previous = command[i - 1]
        cmd.append(str(ROOT / word) if previous in ("--workflow-profile", "--configfile") else word)
    sinfo = ";".join(f"{env_vars[p]}|node1|{NODE['cpus']}|{NODE['mem_mb']}|gpu:{NODE['gpus']}|1-00:00:00"
                     for p in ("LAYERBOUND_CPU_PARTITION", "LAYERBOUND_GPU_PARTITION"))
    env = {**os.environ, **env_vars, "SLURM_STUB_LOG": str(log), "SLURM_STUB_SINFO": sinfo,
           "PATH": os.pathsep.join([str(stubs), str(Path(sys.executable).parent), os.environ["PATH"]])}
    env.pop("LAYERBOUND_SLURM_RESOURCES", None)     # the profile's own sizes
    # Snakemake's output goes to a file: a pipe nobody reads would fill up and stall it.
    output_file = workdir / "snakemake.log"
    with open(output_file, "w") as out:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 240
        try:
            while time.monotonic() < deadline and proc.poll() is None:
                if GPU_RULES <= {call["rule"] for call in sbatch_calls(log)}:
                    time.sleep(2)   # let the submissions of this round finish
                    break
                time.sleep(1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = output_file.read_text()
    calls = sbatch_calls(log)
    assert GPU_RULES <= {c["rule"] for c in calls}, output[-4000:]
    return {"calls": calls, "env": env_vars, "output": output}


def test_every_gpu_job_asks_for_one_gpu_and_fits_one_node(submitted):
    env = submitted["env"]
    for call in submitted["calls"]:
        if call["rule"] in GPU_RULES:
            assert call["gpus"] == 1, call["text"]
            assert call["partition"] == env["LAYERBOUND_GPU_PARTITION"], call["text"]
        else:
            assert call["gpus"] == 0, call["text"]
            assert call["partition"] == env["LAYERBOUND_CPU_PARTITION"], call["text"]
        assert call["account"] == env["LAYERBOUND_SLURM_ACCOUNT"], call["text"]
        assert call["time"] and int(call["time"]) <= 24 * 60, call["text"]
        assert 0 < call["mem_mb"] <= NODE["mem_mb"] // NODE["gpus"], call["text"]
        assert call["cpus"] <= NODE["cpus"] // NODE["gpus"], call["text"]


def test_shards_go_out_as_single_jobs(submitted):
    # Not arrays: plugin 2.8's array tasks each check the first task's output (docs/cluster.md).
    shards = [c for c in submitted["calls"] if c["rule"] == "collide_shard"]
    assert len(shards) > 1 and all(c["array"] is None for c in shards)


def test_cpu_rules_ask_for_no_gpu(tmp_path):
    # Merges, loss tables, the summary and the figures never reach sbatch in the stub run (their
    # inputs do not exist yet); the dry run shows the resources every job would be submitted with.
    env_vars, command = cluster_page_commands()
    profile = ROOT / command[command.index("--workflow-profile") + 1]
    result = run_snakemake(tmp_path, "-n", "--workflow-profile", str(profile), env=env_vars,
                           configfile=ROOT / "config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    rule = None
    seen = set()
    for line in result.stdout.splitlines():
        if line.lstrip().startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule:
            seen.add(rule)
            assert ("gpu=1" in line) == (rule in GPU_RULES | STUDY_GPU_RULES), f"{rule}: {line}"
    assert GPU_RULES | STUDY_GPU_RULES < seen
    assert {"losses_table", "figures_layers", "pairs_sample", "collide_merge", "semirobust_table"} <= seen
    assert set(job_counts(result.stdout)) - {"all"} <= seen


def planned_jobs(stdout: str) -> dict[str, dict]:
    """Rule -> the threads and resources of its last planned job, from a dry run's job blocks."""
    jobs, rule = {}, None
    for line in stdout.splitlines():
        words = line.strip()
        if line.lstrip().startswith(("rule ", "localrule ")):
            rule = line.split()[1].rstrip(":")
            jobs[rule] = {"threads": 1}
        elif rule and words.startswith("threads:"):
            jobs[rule]["threads"] = int(words.split(":")[1])
        elif rule and words.startswith("resources:"):
            jobs[rule].update(item.split("=", 1) for item in words[len("resources:"):].strip().split(", "))
    return jobs


def test_a_cluster_file_sizes_the_jobs_over_the_profile(tmp_path):
    """LAYERBOUND_SLURM_RESOURCES: only what it names changes, the rest is the profile's."""
    env_vars, command = cluster_page_commands()
    profile = ROOT / command[command.index("--workflow-profile") + 1]
    cluster_file = tmp_path / "mycluster.yaml"
    cluster_file.write_text("collide_shard: {cpus: 2, mem_mb: 3500, runtime: 45}\nlosses_table: {mem_mb: 1000}\n")
    # (--cores: a dry run's threads are capped by it, 1 unless given)
    result = run_snakemake(tmp_path, "-n", "--cores", "64", "--workflow-profile", str(profile),
                           configfile=ROOT / "config.yaml",
                           env={**env_vars, "LAYERBOUND_SLURM_RESOURCES": str(cluster_file)})
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned_jobs(result.stdout)
    shard, table, train = jobs["collide_shard"], jobs["losses_table"], jobs["train_model"]
    assert (shard["threads"], shard["cpus_per_task"], shard["mem_mb"], shard["runtime"]) == (2, "2", "3500", "45")
    assert (shard["gpu"], shard["slurm_partition"]) == ("1", env_vars["LAYERBOUND_GPU_PARTITION"])
    assert (table["mem_mb"], table["runtime"]) == ("1000", "30")
    assert (train["threads"], train["cpus_per_task"], train["mem_mb"]) == (8, "8", "16000")
