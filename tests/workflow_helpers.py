"""Running the workflow from tests: Snakemake in a subprocess, and its job counts."""

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run_snakemake(workdir: Path, *args: str, configfile: Path | None = None, env: dict | None = None,
                  snakefile: Path = ROOT / "Snakefile") -> subprocess.CompletedProcess:
    """Snakemake on `snakefile` in `workdir`, with this Python's bin folder first on PATH (the rules
    call the `layerbound` command)."""
    cmd = [*SNAKEMAKE, "-s", str(snakefile), "--directory", str(workdir)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    full_env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **(env or {})}
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=full_env, timeout=3000)


def job_counts(stdout: str) -> dict[str, int]:
    """Rule name -> job count, from Snakemake's 'Job stats' table (dry runs print it)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    counts = {}
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            counts[parts[0]] = int(parts[1])
    return counts


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())
