"""`pip install .` (not editable) gives a package that works on its own: it imports, reads its config
schema from the installed copy, and the workflow plans from the checkout with it and no PYTHONPATH."""

import json
import os
import shutil
import subprocess
import sysconfig
import venv
from pathlib import Path

from layerbound import config
from workflow_helpers import ROOT

def _fresh_environment(where: Path) -> Path:
    """A new virtual environment whose only layerbound is the one pip installs into it: the test's
    environment lends it the dependencies (and pip and setuptools) through a path file, which puts
    that site-packages folder on sys.path without running its own path files (the editable
    install's among them)."""
    venv.EnvBuilder(with_pip=False).create(where)
    python = where / "bin" / "python"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "lend_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_a_wheel_install_imports_reads_its_schema_and_plans_the_workflow(tmp_path):
    # The sources pip builds from: the checkout's packaging files and src/, copied so the build
    # writes nothing into the checkout.
    source = tmp_path / "source"
    shutil.copytree(ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    python = _fresh_environment(tmp_path / "env")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{python.parent}{os.pathsep}{env['PATH']}"
    built = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                            "--no-index", str(source)], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert built.returncode == 0, built.stderr[-2000:]

    work = tmp_path / "work"
    work.mkdir()
    check = ("import json, layerbound, layerbound.config as c; from pathlib import Path; "
             "print(Path(layerbound.__file__).resolve()); print(c.SCHEMA); print(json.dumps(c.defaults('collision')))")
    out = subprocess.run([python, "-c", check], env=env, cwd=work, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    package, schema, filled = out.stdout.splitlines()
    installed = tmp_path / "env"
    assert Path(package).is_relative_to(installed.resolve()) and not Path(package).is_relative_to(ROOT)
    assert Path(schema).is_relative_to(installed) and Path(schema).read_text() == (
        ROOT / "src" / "layerbound" / "core" / "config.schema.yaml").read_text()
    assert json.loads(filled) == config.defaults("collision")   # defaults come from the installed schema
    assert (installed / "bin" / "layerbound").is_file()   # the console script

    plan = subprocess.run([python, "-m", "snakemake", "-n", "-s", str(ROOT / "Snakefile"), "--directory", str(work),
                           "--configfile", str(ROOT / "config.yaml")],
                          env=env, cwd=work, capture_output=True, text=True, timeout=600)
    assert plan.returncode == 0, plan.stderr[-2000:]
    assert "Job stats" in plan.stdout and "collide_shard" in plan.stdout
