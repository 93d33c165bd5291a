"""Starting a workflow run: the config files read again strictly, the config validated, its results
folder checked, the plan. The Snakefile calls `start` before any rule exists.

Snakemake reads the config files itself and keeps the last of a key given twice; `start` reads them
again with config.read_yaml, which refuses that (and text that is not YAML), then validates what
Snakemake read (config.validate bounds its size: YAML alias bombs fail in a second).

Every output of a run lives under its config's `results` folder (default `results`). The first
config file run into a folder owns it: its run record `{results}/run.json` (plan.PATTERNS["run"],
written by the workflow's rule run_record) names that config file, and a run of another config file
into the same folder is refused in one line at start-up, before any job, so one config cannot
overwrite another's summary, report, figures or the models and distances they come from. Editing the
owner's config file keeps the folder (Snakemake reruns what the edit changes). Why per-unit outputs
are not shared between configs: docs/safety_and_outputs.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Iterable

from .. import config as configuration
from ..core.errors import ConfigError
from ..core.paths import path
from .plan import Plan
from ..core.store import write_text


def config_files(paths: Iterable[str | os.PathLike], workdir: str | os.PathLike = ".") -> list[str]:
    """A run's config files as its record names them: relative to the working directory when inside
    it (so a moved checkout keeps its records), else absolute."""
    base = Path(workdir).resolve()
    names = []
    for p in paths:
        full = Path(p).resolve()
        names.append(str(full.relative_to(base)) if full.is_relative_to(base) else str(full))
    return names


def check_owner(root: str, files: list[str]) -> None:
    """Refuse a run of `files` into `root` when another config file's run owns that folder."""
    record = Path(path("run", root))
    if not record.is_file():
        return
    try:
        owner = json.loads(record.read_text())["configfiles"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(f"{record} is not a layerbound run record: delete it to let this config use {root}/") from None
    if owner != files:
        stem = Path(files[-1]).stem if files else "mine"
        raise ConfigError(f"results folder {root}/ holds the run of {', '.join(owner)}; {', '.join(files)} would "
                          f"overwrite its outputs: give this config its own folder (results: {root}/{stem}), or delete "
                          f"{record} to hand the folder over")


def write_record(out: str | os.PathLike, files: list[str]) -> None:
    """The run record: which config files own this results folder."""
    text = json.dumps({"configfiles": list(files)}, indent=2)
    write_text(out, text + "\n")


# Run by the `python` a job will run: whether it can import layerbound, without importing it.
_FINDS_LAYERBOUND = "import importlib.util, sys; sys.exit(importlib.util.find_spec('layerbound') is None)"


def check_job_python(search_path: str | None = None) -> None:
    """Every rule runs `python -m layerbound` with the `python` on PATH (outside --use-conda): refuse
    the run in one line, before any job, when that python is missing or cannot import layerbound
    (e.g. `.venv/bin/snakemake` run without the environment active, whose jobs would each fail with
    only "No module named layerbound" in their logs)."""
    found = shutil.which("python", path=search_path)
    hint = ("every job runs `python -m layerbound`: activate the environment layerbound is installed in "
            "(`source .venv/bin/activate`), run through make (`make workflow`), or add --use-conda")
    if found is None:
        raise ConfigError(f"no `python` on PATH; {hint}")
    if subprocess.run([found, "-c", _FINDS_LAYERBOUND], capture_output=True).returncode:
        raise ConfigError(f"the `python` on PATH ({found}) cannot import layerbound; {hint}")


def start(config: dict[str, Any], paths: Iterable[str | os.PathLike]) -> tuple[Plan, list[str]]:
    """Check the config files and the config Snakemake read from them, and the results folder; the
    plan and the config files as the run record names them. ConfigError in one line otherwise."""
    paths = list(paths)
    for p in paths:
        raw = configuration.read_yaml(p)
        # Snakemake has already evaluated such a file's YTE expressions (Python) by now; refusing
        # it still stops the run, and says that a config file is to be data.
        if isinstance(raw, dict) and "__use_yte__" in raw:
            raise ConfigError(f"config file {p} sets __use_yte__ (YTE templates, whose expressions are Python that "
                              "Snakemake runs while reading the file): layerbound config files are plain YAML data")
    configuration.validate(config)
    files = config_files(paths)
    check_owner(os.path.normpath(config["results"]), files)
    return Plan(config), files
