"""The Snakemake workflow: planning (dry runs) and, once, a real end-to-end run of a tiny config."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def run_snakemake(workdir: Path, *args: str, configfile: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [*SNAKEMAKE, "-s", str(ROOT / "Snakefile"), "--directory", str(workdir)]
    if configfile is not None:
        cmd += ["--configfile", str(configfile)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env, timeout=3000)


def job_counts(stdout: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats' table."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Job stats"))
    counts = {}
    for line in lines[start + 3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def default_config() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_plans_one_training_job_per_model(tmp_path):
    result = run_snakemake(tmp_path, "-n", configfile=ROOT / "config.yaml")
    assert result.returncode == 0, result.stderr
    assert job_counts(result.stdout)["train_model"] == len(default_config()["models"])


@pytest.mark.parametrize(
    "mutate,needle",
    [
        (lambda c: c.update(modles={}), "'modles' was unexpected"),
        (lambda c: c["models"]["medium_pgd2"]["train"].update(eps="two"), "'two' is not of type 'number'"),
        (lambda c: c["models"]["medium_benign"].update(arch="resnet9"), "'resnet9' is not one of"),
        (lambda c: c["models"]["medium_benign"]["train"].update(method="fgsm"), "'fgsm' is not one of"),
    ],
)
def test_bad_config_fails_at_start_naming_the_key(tmp_path, mutate, needle):
    config = default_config()
    mutate(config)
    result = run_snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "bad.yaml", config))
    assert result.returncode != 0
    assert needle in result.stdout + result.stderr


def test_adversarial_model_without_budget_fails_naming_the_model(tmp_path):
    config = default_config()
    del config["models"]["medium_pgd2"]["train"]["eps"]
    result = run_snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "bad.yaml", config))
    assert result.returncode != 0
    assert "models.medium_pgd2" in result.stdout + result.stderr


@pytest.mark.parametrize("name,dataset", [("paper_mnist", "mnist"), ("paper_cifar10", "cifar10")])
def test_paper_config_replaces_the_default_and_plans_the_paper_grid(tmp_path, name, dataset):
    configfile = ROOT / "config" / f"{name}.yaml"
    paper = yaml.safe_load(configfile.read_text())
    result = run_snakemake(tmp_path, "-n", configfile=configfile)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    # 3 architectures x 3 training methods, none of the default experiment's mnist5k models.
    assert counts["train_model"] == len(paper["models"]) == 9
    assert "mnist5k" not in result.stdout
    assert f"results/models/{dataset}/medium_benign.pt" in result.stdout
    # Every layer of every model plus the two input baselines, each with its own merged file.
    taps = {"small": 4, "medium": 7, "large": 7}
    assert counts["collide_merge"] == 3 * sum(taps.values()) + 2
    assert counts["losses_table"] == counts["collide_merge"]


def rule_resources(stdout: str) -> dict[str, set[str]]:
    """rule name -> the distinct 'resources:' lines of its jobs in a dry run's output."""
    found: dict[str, set[str]] = {}
    rule = None
    for line in stdout.splitlines():
        if line.lstrip().startswith(("rule ", "localrule ")):  # indented inside group jobs
            rule = line.split()[1].rstrip(":")
        elif line.strip().startswith("resources:") and rule is not None:
            found.setdefault(rule, set()).add(line.strip())
    return found


def test_slurm_profile_gives_gpus_to_training_and_collisions_only(tmp_path):
    result = run_snakemake(tmp_path, "-n", "--workflow-profile", str(ROOT / "workflow" / "profiles" / "slurm"),
                           configfile=ROOT / "config.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    resources = rule_resources(result.stdout)
    gpu_rules = {"train_model", "collide_shard"}
    assert gpu_rules <= set(resources)
    for rule, lines in resources.items():
        for line in lines:
            has_gpu = "gpu=1" in line
            assert has_gpu == (rule in gpu_rules), f"{rule}: {line}"
    (train,) = resources["train_model"]
    assert "cpus_per_task=8" in train and "mem_mb=32000" in train and "runtime=360" in train
    assert all("runtime=60" in line and "mem_mb=24000" in line for line in resources["collide_shard"])
    assert all("runtime=30" in line and "cpus_per_task=1" in line for line in resources["pairs_sample"])
    # Many small shard jobs go out together as group jobs.
    assert "Group job shards" in result.stdout


def tiny_config() -> dict:
    """The default experiment shrunk to seconds: small FCNNs, one epoch."""
    return {
        "seed": 0,
        "training": {"epochs": 1, "batch_size": 128, "lr": 0.05},
        "evaluation": {"norm": "l2", "eps": 1.5, "steps": 5, "examples": 200},
        "models": {
            "fcnn_benign": {"dataset": "mnist5k", "arch": "fcnn_smaller", "train": {"method": "benign"}},
            "fcnn_pgd": {"dataset": "mnist5k", "arch": "fcnn_smaller",
                         "train": {"method": "pgd", "norm": "l2", "eps": 1.5, "steps": 3}},
        },
    }


@pytest.mark.slow
def test_end_to_end_workflow_run_and_rerun_is_a_no_op(tmp_path):
    configfile = write_config(tmp_path / "tiny.yaml", tiny_config())
    result = run_snakemake(tmp_path, "--cores", "2", configfile=configfile)
    assert result.returncode == 0, result.stderr[-5000:]

    from layerbound import checkpoint

    for name, arch in [("fcnn_benign", "fcnn_smaller"), ("fcnn_pgd", "fcnn_smaller")]:
        path = tmp_path / "results" / "models" / "mnist5k" / f"{name}.pt"
        model = checkpoint.load(path, expect={"arch": arch, "input_shape": (1, 28, 28)})
        metrics = checkpoint.load_metrics(path)
        assert model.taps == ["fc1", "fc2", "logits"]
        assert metrics["clean_test_accuracy"] > 0.5
        assert (tmp_path / "results" / "logs" / "train" / "mnist5k" / f"{name}.log").exists()

    again = run_snakemake(tmp_path, "-n", configfile=configfile)
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
