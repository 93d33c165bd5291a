"""The rules' conda environment and pyproject.toml list the same dependencies with the same bounds."""

import re
import tomllib

import yaml

from workflow_helpers import ROOT

# Conda-forge names of PyPI packages where they differ.
CONDA_NAME = {"torch": "pytorch"}
# The workflow's driver (not needed inside a rule's job).
DRIVER = {"snakemake", "snakemake-executor-plugin-slurm"}
# In the conda environment only: pip runs layerbound.post-deploy.sh (torchattacks, --no-deps).
CONDA_ONLY = {"pip"}


def _split(requirement: str) -> tuple[str, str]:
    name, bound = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", requirement.strip()).groups()
    return name.lower(), bound.replace(" ", "")


def test_conda_environment_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {CONDA_NAME.get(name, name): bound for name, bound in map(_split, project["dependencies"])
              if name not in DRIVER}
    env = yaml.safe_load((ROOT / "envs" / "layerbound.yaml").read_text())
    listed = dict(_split(dep) for dep in env["dependencies"] if isinstance(dep, str) and not dep.startswith("python="))
    assert {name: bound for name, bound in listed.items() if name not in CONDA_ONLY} == wanted
    assert (ROOT / "envs" / "layerbound.post-deploy.sh").is_file()   # Snakemake runs it after creating the env
    python = next(dep for dep in env["dependencies"] if isinstance(dep, str) and dep.startswith("python="))
    floor = re.match(r">=(\d+)\.(\d+)", project["requires-python"]).groups()
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, floor))


def test_rules_run_the_checkouts_code():
    from layerbound import config

    env = config.job_environment({"device": "auto", "data_dir": "data", "download": False})
    assert env["PYTHONPATH"].split(":")[0] == str(ROOT / "src")
    for rule_file in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = rule_file.read_text()
        assert "conda:" not in text or '"../../envs/layerbound.yaml"' in text
        assert not re.search(r'"layerbound ', text), f"{rule_file.name} calls an installed command"
