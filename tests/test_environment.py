"""The rules' conda environment and pyproject.toml list the same dependencies with the same bounds."""

import re
import tomllib

import yaml

from workflow_helpers import ROOT

# Conda-forge names of PyPI packages where they differ.
CONDA_NAME = {"torch": "pytorch"}
# The workflow's driver (not needed inside a rule's job).
DRIVER = {"snakemake", "snakemake-executor-plugin-slurm"}
# In the conda environment only: pip runs layerbound.post-deploy.sh (torchattacks, --no-deps; the
# package itself, editable, built with the build backend setuptools).
CONDA_ONLY = {"pip", "setuptools"}


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
    backend = dict(map(_split, tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]))
    assert listed["setuptools"] == backend["setuptools"]
    assert (ROOT / "envs" / "layerbound.post-deploy.sh").is_file()   # Snakemake runs it after creating the env
    python = next(dep for dep in env["dependencies"] if isinstance(dep, str) and dep.startswith("python="))
    floor = re.match(r">=(\d+)\.(\d+)", project["requires-python"]).groups()
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, floor))


def test_rules_run_the_checkouts_code():
    from layerbound import config

    # No PYTHONPATH: a job runs the layerbound of its environment (the venv's, or the conda
    # environment's editable install of the workflow's checkout).
    env = config.job_environment({"device": "auto", "data_dir": "data", "download": False}, ROOT)
    assert "PYTHONPATH" not in env and env["LAYERBOUND_WORKFLOW_DIR"] == str(ROOT)
    deploy = (ROOT / "envs" / "layerbound.post-deploy.sh").read_text()
    assert re.search(r'pip install --no-deps --no-build-isolation -e "\$\{LAYERBOUND_WORKFLOW_DIR', deploy)
    assert "job_environment(config, workflow.basedir)" in (ROOT / "workflow" / "rules" / "common.smk").read_text()
    for rule_file in (ROOT / "workflow" / "rules").glob("*.smk"):
        text = rule_file.read_text()
        assert "conda:" not in text or '"../../envs/layerbound.yaml"' in text
        assert not re.search(r'"layerbound ', text), f"{rule_file.name} calls an installed command"
