"""A SLURM cluster's shape, and whether the workflow's jobs fit it (docs/cluster.md).

SLURM accepts a job that asks for more CPUs, memory or GPUs than any node of its partition has, and
then leaves it pending for ever (Reason=PartitionConfig) without a word to Snakemake. So before
anything is submitted, the workflow compares each rule's request with the nodes `sinfo` lists and
stops in one line naming the rule, what it asks for and the largest node there. A cluster's own
sizes come from a small YAML file named by $LAYERBOUND_SLURM_RESOURCES, applied over the profile's.

The status check of the profile (squeue) only sees a finished job while slurmctld keeps it, for
MinJobAge seconds; the plugin polls at most every STATUS_POLL_MAX_S, so a shorter MinJobAge would
lose finished jobs and the run would wait for them for ever: that is checked here too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..core.errors import LayerboundError, first_line

# The environment variable naming a cluster's resource file.
RESOURCES_VARIABLE = "LAYERBOUND_SLURM_RESOURCES"
# What a cluster file may set per rule: CPUs (Snakemake's threads and SLURM's --cpus-per-task),
# memory in MB, the time limit of the first attempt in minutes (a retry gets `attempt` times it),
# GPUs, and the partition.
RESOURCE_KEYS = ("cpus", "mem_mb", "runtime", "gpu", "slurm_partition")
# snakemake-executor-plugin-slurm 2.8 waits up to 180 s between two status checks (check_active_jobs).
STATUS_POLL_MAX_S = 180
# sinfo's fields, one line per node and partition: partition, node, CPUs, memory (MB), GRES, time limit.
SINFO_COMMAND = ["sinfo", "--noheader", "--Node", "--format=%R|%N|%c|%m|%G|%l"]


class ClusterMisfit(LayerboundError, RuntimeError):
    """A job of the workflow can never run on this cluster as configured (or the cluster cannot be read)."""


@dataclass(frozen=True)
class Node:
    name: str
    partition: str
    cpus: int
    mem_mb: int
    gpus: int
    time_limit_min: int | None    # the partition's; None: unlimited

    def describe(self) -> str:
        return f"node {self.name}: {self.cpus} CPUs, {self.mem_mb} MB, {self.gpus} GPU{'s' * (self.gpus != 1)}"


@dataclass(frozen=True)
class Request:
    """What one rule's jobs ask SLURM for (the largest over its jobs)."""
    rule: str
    partition: str | None
    cpus: int
    mem_mb: int
    gpus: int
    runtime_min: int | None

    def describe(self) -> str:
        gpus = f", {self.gpus} GPU{'s' * (self.gpus != 1)}" if self.gpus else ""
        return f"{self.cpus} CPU{'s' * (self.cpus != 1)}, {self.mem_mb} MB{gpus}"


# --- reading the cluster ---

def _leading_int(text: str) -> int:
    match = re.match(r"\d+", text.strip())
    return int(match.group()) if match else 0


def gpu_count(gres: str) -> int:
    """GPUs in an sinfo GRES field: 'gpu:2', 'gpu:a100:4(S:0-1)', 'gpu:a100:2,gpu:v100:1' (3), '(null)' (0)."""
    total = 0
    for entry in re.sub(r"\([^)]*\)", "", gres).split(","):
        fields = entry.strip().split(":")
        if fields[0] != "gpu":
            continue
        total += int(fields[-1]) if len(fields) > 1 and fields[-1].isdigit() else 1
    return total


def time_limit_minutes(text: str) -> int | None:
    """sinfo's time limit ('infinite', '1-00:00:00', '2:00:00', '30:00', '45') in minutes; None: unlimited."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    if len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = 0, parts[0], 0
    return int(days or 0) * 1440 + hours * 60 + minutes + (seconds > 0)


def parse_sinfo(text: str) -> list[Node]:
    """The nodes of `sinfo --noheader --Node --format=%R|%N|%c|%m|%G|%l`, one per (partition, node)."""
    nodes = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) != 6:
            raise ClusterMisfit(f"unexpected sinfo line {line!r} (expected partition|node|cpus|memory|gres|timelimit)")
        partition, name, cpus, mem, gres, limit = (f.strip() for f in fields)
        nodes.append(Node(name=name, partition=partition.rstrip("*"), cpus=_leading_int(cpus),
                          mem_mb=_leading_int(mem), gpus=gpu_count(gres), time_limit_min=time_limit_minutes(limit)))
    return nodes


def min_job_age_seconds(scontrol_config: str) -> int | None:
    """MinJobAge from `scontrol show config` ('MinJobAge = 300 sec'); None when it is not listed."""
    match = re.search(r"^\s*MinJobAge\s*=\s*(\d+)", scontrol_config, re.M)
    return int(match.group(1)) if match else None


def _run(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        raise ClusterMisfit(f"`{command[0]}` is not on PATH: the SLURM profile needs SLURM's commands")
    result = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise ClusterMisfit(f"`{' '.join(command)}` failed: {result.stderr.strip().splitlines()[-1:] or result.returncode}")
    return result.stdout


def read_nodes() -> list[Node]:
    """This cluster's nodes, from sinfo."""
    nodes = parse_sinfo(_run(SINFO_COMMAND))
    if not nodes:
        raise ClusterMisfit("sinfo lists no nodes")
    return nodes


def read_min_job_age() -> int | None:
    return min_job_age_seconds(_run(["scontrol", "show", "config"]))


# --- checking requests against it ---

def _fits(request: Request, node: Node) -> bool:
    return node.cpus >= request.cpus and node.mem_mb >= request.mem_mb and node.gpus >= request.gpus


def _largest(request: Request, nodes: list[Node]) -> Node:
    """The node closest to holding the request: most of its three demands met, then most GPUs, CPUs, memory."""
    def score(node):
        met = (node.cpus >= request.cpus) + (node.mem_mb >= request.mem_mb) + (node.gpus >= request.gpus)
        return met, node.gpus, node.cpus, node.mem_mb
    return max(nodes, key=score)


def misfits(requests: list[Request], nodes: list[Node]) -> list[str]:
    """One sentence per rule whose jobs no node of their partition can run (empty: all fit)."""
    partitions = sorted({n.partition for n in nodes})
    problems = []
    for request in requests:
        where = [n for n in nodes if n.partition == request.partition] if request.partition else nodes
        if not where:
            problems.append(f"rule {request.rule} asks for partition {request.partition!r}, which this cluster "
                            f"does not have (sinfo lists {', '.join(partitions)})")
            continue
        if not any(_fits(request, n) for n in where):
            on = f" on partition {request.partition!r}" if request.partition else ""
            problems.append(f"rule {request.rule} asks for {request.describe()}{on}, more than any node there has "
                            f"(largest: {_largest(request, where).describe()})")
            continue
        limits = [n.time_limit_min for n in where if _fits(request, n)]
        if request.runtime_min is not None and None not in limits and request.runtime_min > max(limits):
            problems.append(f"rule {request.rule} asks for {request.runtime_min} min on partition "
                            f"{request.partition!r}, whose time limit is {max(limits)} min")
    return problems


def status_problem(status_command: str | None, min_job_age: int | None) -> str | None:
    """Why the profile's status check would lose finished jobs on this cluster (None: it will not)."""
    if status_command == "squeue" and min_job_age is not None and min_job_age <= STATUS_POLL_MAX_S:
        return (f"this cluster forgets finished jobs after MinJobAge = {min_job_age} s, but the status check "
                f"(squeue) can be {STATUS_POLL_MAX_S} s apart, so a finished job could go unseen and the run "
                f"wait for it for ever; ask for MinJobAge > {STATUS_POLL_MAX_S} s (docs/cluster.md)")
    return None


def preflight(requests: list[Request], nodes: list[Node], status_command: str | None = None,
              min_job_age: int | None = None) -> None:
    """Raise ClusterMisfit, in one line, when a request cannot run here or finished jobs would go unseen."""
    problems = misfits(requests, nodes)
    status = status_problem(status_command, min_job_age)
    if problems:
        others = f" (also: {len(problems) - 1} more rule{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
        raise ClusterMisfit(f"{problems[0]}{others}; size the rules for your nodes in the file named by "
                            f"${RESOURCES_VARIABLE} (docs/cluster.md)")
    if status:
        raise ClusterMisfit(status)


# --- a cluster's resource file ---

def load_resources(path: str | Path) -> dict[str, dict[str, int | str]]:
    """A cluster file: rule -> {cpus, mem_mb, runtime, gpu, slurm_partition}, validated."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ClusterMisfit(f"${RESOURCES_VARIABLE} names {str(path)!r}, which is not a file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ClusterMisfit(f"{path}: not YAML ({first_line(err)})") from None
    if not isinstance(data, dict):
        raise ClusterMisfit(f"{path}: expected rule names as keys, each with its resources")
    for rule, entry in data.items():
        if not isinstance(entry, dict) or not entry:
            raise ClusterMisfit(f"{path}: {rule}: expected a mapping of {', '.join(RESOURCE_KEYS)}")
        for key, value in entry.items():
            if key not in RESOURCE_KEYS:
                raise ClusterMisfit(f"{path}: {rule}.{key}: unknown key (allowed: {', '.join(RESOURCE_KEYS)})")
            if key == "slurm_partition":
                if not isinstance(value, str) or not value:
                    raise ClusterMisfit(f"{path}: {rule}.{key}: expected a partition name")
            elif isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "gpu" else 1):
                raise ClusterMisfit(f"{path}: {rule}.{key}: expected a {'non-negative' if key == 'gpu' else 'positive'} "
                                    f"integer, got {value!r}")
    return data


def snakemake_resources(entry: dict[str, int | str]) -> tuple[int | None, dict[str, str]]:
    """A cluster file's entry as Snakemake sees it: (threads or None, resource expressions)."""
    resources = {}
    for key, value in entry.items():
        if key == "cpus":
            resources["cpus_per_task"] = str(value)
        elif key == "runtime":
            resources["runtime"] = f"{value} * attempt"    # a job killed at its limit gets twice the time
        elif key == "slurm_partition":
            resources["slurm_partition"] = repr(value)
        else:
            resources[key] = str(value)
    return entry.get("cpus"), resources


def unknown_rules(resources: dict, rules: set[str]) -> list[str]:
    return sorted(set(resources) - rules)


# --- what the workflow's jobs ask for ---

def _number(value) -> int | None:
    """A resource's value when it is a number (not one Snakemake has yet to compute from inputs)."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def job_request(rule: str, resources: dict, threads: int) -> Request:
    """A job's SLURM request from its Snakemake resources, as the plugin turns them into sbatch options."""
    cpus = _number(resources.get("cpus_per_task")) or _number(threads) or 1
    mem_mb = _number(resources.get("mem_mb")) or (_number(resources.get("mem_mb_per_cpu")) or 0) * cpus
    return Request(rule=rule, partition=resources.get("slurm_partition") or None, cpus=cpus, mem_mb=mem_mb,
                   gpus=_number(resources.get("gpu")) or 0, runtime_min=_number(resources.get("runtime")))


def largest_per_rule(requests) -> list[Request]:
    """One request per rule and partition: the largest of each demand over its jobs."""
    merged: dict[tuple, Request] = {}
    for r in requests:
        key = (r.rule, r.partition)
        if key in merged:
            m = merged[key]
            runtimes = [t for t in (m.runtime_min, r.runtime_min) if t is not None]
            r = Request(r.rule, r.partition, max(m.cpus, r.cpus), max(m.mem_mb, r.mem_mb), max(m.gpus, r.gpus),
                        max(runtimes) if runtimes else None)
        merged[key] = r
    return list(merged.values())
