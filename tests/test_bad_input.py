"""Bad input fails early with one line naming the key or file (and what to do), never a traceback;
impossible distances never reach a bound."""

import contextlib
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from layerbound import api, cli, config
from layerbound.collide import shards
from layerbound.models import checkpoint, registry as models
from layerbound.data import pairs
from layerbound.data.info import pairset_id
from layerbound.core import store
from workflow_helpers import ROOT, default_config, run_snakemake, write_config

S = 3


def one_line_error(capsys, argv) -> str:
    """Run the CLI, expect exit status 1 and exactly one line on stderr; return it."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


# --- 1 and 6: the configuration, before any job is planned -------------------------------------

@pytest.mark.parametrize("mutate,needle", [
    (lambda c: c["pairs"].update(per_class=100_000), "pairs.per_class = 100000, but mnist5k has 400"),
    (lambda c: c["pairs"].update(classes=[3, 3]), "pairs.classes: the two classes must differ"),
    (lambda c: c["pairs"].update(classes=[3, 10]), "pairs.classes: 10 is not a class of mnist5k (classes 0..9)"),
    (lambda c: c["losses"].update(eps=[0.5, float("nan")]), "losses.eps[1]: nan is not a finite number"),
    (lambda c: c["collision"]["search"].update(gamma=float("inf")), "collision.search.gamma: inf"),
    (lambda c: c["figures"].update(collision_projection=2), "figures.collision_projection = 2, but collision.projections = 2"),
    # Numbers that would fail late (HDF5 stores seeds as int64) or build a job list without end.
    (lambda c: c.update(seed=2 ** 63), "seed: 9223372036854775808 is greater than the maximum of 9223372036854775807"),
    (lambda c: c["collision"].update(projections=10 ** 9), "collision.projections: 1000000000 is greater than the maximum"),
    (lambda c: c["collision"].update(m=[10 ** 30]), "collision.m[0]: 1000000000000000000000000000000 is greater"),
    (lambda c: c["collision"]["search"].update(max_iter=0), "collision.search.max_iter: 0 is less than the minimum of 1"),
    (lambda c: c["collision"].update(box=[0.0, float("inf")]), "collision.box[1]: inf is not a finite number"),
])
def test_config_problems_are_one_line_naming_the_key(mutate, needle):
    raw = default_config()
    mutate(raw)
    with pytest.raises(config.ConfigError) as err:
        config.validate(raw)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_a_config_file_with_yte_templates_stops_the_workflow_in_one_line(tmp_path):
    # Snakemake evaluates YTE expressions while reading the file: the run stops at start-up.
    raw = default_config()
    path = write_config(tmp_path / "yte.yaml", {"__use_yte__": True, **raw})
    out = run_snakemake(tmp_path, "-n", configfile=path)
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.startswith("layerbound:")]
    assert len(lines) == 1 and "sets __use_yte__ (YTE templates" in lines[0], out.stderr[-2000:]


def test_a_huge_pair_set_fails_in_seconds_before_the_job_list(tmp_path):
    raw = default_config()
    raw["pairs"]["per_class"] = 100_000
    raw["collision"]["chunk_size"] = 5
    started = time.monotonic()
    result = run_snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "huge.yaml", raw))
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert lines == ["layerbound: pairs.per_class = 100000, but mnist5k has 400 training examples of class 3 "
                     "(allowed 1..400)"]
    assert elapsed < 3 * 3   # under 3 s on an idle machine; slack for a loaded CI runner


def test_an_unknown_top_level_key_is_one_line(tmp_path):
    raw = default_config()
    raw["modles"] = {}
    result = run_snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "bad.yaml", raw))
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and "'modles' was unexpected" in lines[0]


def test_class_counts_of_the_table_are_the_data():
    from layerbound.data import datasets as data, info as dataset_info

    _, y = data.load("mnist5k", "train")
    assert tuple(np.bincount(y.numpy())) == dataset_info.info("mnist5k").train_per_class


# --- 2, 3, 4, 5, 7: files and the command line ---------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A pair set of S = 3 on 1x28x28 images, a matching fcnn_smaller checkpoint and one merged file."""
    root = tmp_path_factory.mktemp("bad")
    g = torch.Generator().manual_seed(0)
    x_a, x_b = torch.rand(S, 1, 28, 28, generator=g), torch.rand(S, 1, 28, 28, generator=g)
    ps = pairs.PairSet(pairset_id((3, 7), S, 0), "mnist5k", "train", (3, 7), S, 0, x_a, x_b,
                       torch.full((S,), 3), torch.full((S,), 7), torch.arange(S), torch.arange(S))
    pairs_file = root / "pairs.h5"
    pairs.save(pairs_file, ps)
    torch.manual_seed(0)
    ckpt = root / "net.pt"
    checkpoint.save(ckpt, models.build("fcnn_smaller", (1, 28, 28), 10), {"note": "test"})
    options = '{"chunk_size": 9, "search": {"max_iter": 3}}'
    shard = root / "p0" / "c0.h5"
    cli.main(["collide-shard", "--pairs", str(pairs_file), "--checkpoint", str(ckpt), "--arch", "fcnn_smaller",
              "--model", "net", "--layer", "fc2", "--m", "5", "--seed", "0", "--options-json", options,
              "--device", "cpu", "--out", str(shard)])
    merged = shards.merge([shard], root / "m5.h5")
    return {"root": root, "pairs": pairs_file, "ckpt": ckpt, "shard": shard, "merged": merged, "options": options}


def edited(src, dst, edit):
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as h5:
        edit(h5)
    return dst


@pytest.mark.parametrize("value,where", [(-0.01, "negative"), (1e6, "above the midpoint bound")])
def test_merge_refuses_an_impossible_distance_naming_file_and_pair(tiny, tmp_path, value, where):
    def poison(h5):
        d = h5["distance"][()]
        d[4] = value
        h5["distance"][...] = d
    bad = edited(tiny["shard"], tmp_path / "bad.h5", poison)
    with pytest.raises(shards.ShardError, match=r"bad\.h5: pair 4 \(i=1, j=1\) has distance"):
        shards.merge([bad], tmp_path / "out.h5")


def test_loss_stage_refuses_an_edited_merged_file(tiny, tmp_path, capsys):
    def poison(h5):
        d = h5["distances"][()]
        d[0, 2, 1] = -1.0
        h5["distances"][...] = d
    bad = edited(tiny["merged"], tmp_path / "edited.h5", poison)
    err = one_line_error(capsys, ["losses", "--distances", str(bad), "--eps-json", "[0, 1]", "--out", str(tmp_path / "t.csv")])
    assert "edited.h5: pair (i=2, j=1) of projection 0 has distance -1.0" in err
    assert not (tmp_path / "t.csv").exists()


@pytest.mark.parametrize("classes,shape,needle", [
    (5, (1, 28, 28), "num_classes: checkpoint has 5, config asks for 10"),
    (10, (3, 28, 28), "input_shape: checkpoint has (3, 28, 28), config asks for (1, 28, 28)"),
])
def test_checkpoint_of_another_shape_or_class_count_is_one_line(tiny, tmp_path, capsys, classes, shape, needle):
    other = tmp_path / "other.pt"
    checkpoint.save(other, models.build("fcnn_smaller", shape, classes), {"note": "test"})
    err = one_line_error(capsys, ["collide-shard", "--pairs", str(tiny["pairs"]), "--checkpoint", str(other),
                                  "--arch", "fcnn_smaller", "--model", "net", "--layer", "logits", "--m", "5",
                                  "--seed", "0", "--device", "cpu", "--out", str(tmp_path / "s.h5")])
    assert needle in err and str(other) in err
    assert not (tmp_path / "s.h5").exists()


def test_a_projection_beyond_the_config_writes_nothing(tmp_path, capsys):
    err = one_line_error(capsys, ["collide-shard", "--configfile", str(ROOT / "config.yaml"), "--model", "medium_pgd2",
                                  "--layer", "conv2", "--m", "10", "--projection", "3", "--results", str(tmp_path)])
    assert "--projection 3 is out of range" in err and "projections 0..1" in err
    assert not list(tmp_path.rglob("*.h5"))


def test_cli_failures_are_one_line(tiny, tmp_path, capsys):
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    cases = [
        (["losses", "--distances", str(junk), "--eps-json", "[1]", "--out", "t.csv"], "cannot be read as a merged"),
        (["losses", "--distances", str(tiny["merged"]), "--eps-json", "[1", "--out", "t.csv"], "Expecting"),
        (["losses", "--distances", str(tiny["merged"]), "--eps-json", "[-1]", "--out", "t.csv"], "not allowed"),
        (["losses", "--distances", str(tiny["merged"]), "--eps-json", "NaN", "--out", "t.csv"], "not allowed"),
        (["losses", "--distances", str(tiny["shard"]), "--eps-json", "[1]", "--out", "t.csv"], "is not a merged distance file"),
        (["fetch-data", "foo"], "unknown dataset 'foo'"),
        (["collide-shard", "--pairs", str(tmp_path / "none.h5"), "--model", "net", "--layer", "fc2", "--m", "5",
          "--seed", "0", "--out", str(tmp_path / "s.h5")], "does not exist"),
        (["collide-shard", "--pairs", str(tiny["pairs"]), "--checkpoint", str(tmp_path / "none.pt"), "--model", "net",
          "--layer", "fc2", "--m", "5", "--seed", "0", "--out", str(tmp_path / "s.h5")], "train model 'net' first"),
        (["merge", "--out", str(tmp_path / "o.h5"), str(junk)], "delete it and run the workflow again"),
        (["figures", "layers", "--metrics", str(junk), "t.csv"], "junk.h5 cannot be read (JSONDecodeError)"),
        (["figures", "layers", "--metrics", str(listed), "t.csv"], "list.json is not a layerbound sidecar"),
        (["summarize", "--out", str(tmp_path / "s.csv"), str(foreign)],
         "foreign.csv is not a loss table of `layerbound losses`: 24 of its 24 columns missing"),
        (["summarize", "--out", str(tmp_path / "s.csv"), str(empty)], "empty.csv is not a loss table"),
    ]
    for argv, needle in cases:
        assert needle in one_line_error(capsys, argv), argv


def test_version_is_printed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == "layerbound 0.1.0"


def test_a_killed_writers_temporary_file_is_removed_by_the_next_writer(tmp_path):
    target = tmp_path / "c0.h5"
    stale = tmp_path / ".c0.h5.tmp12345"        # left by a writer killed with SIGKILL
    stale.write_bytes(b"half a file")
    store.write_h5(target, {"distance": np.zeros(3)}, {"format": "x"})
    assert target.exists() and not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c0.h5"]
    # Only its own path's: a name with glob characters matches itself, not another file's temporary.
    other = tmp_path / ".a1.h5.tmp7"             # another writer's, at a1.h5
    other.write_bytes(b"in progress")
    store.write_text(tmp_path / "a[1].h5", "x")
    assert other.exists() and (tmp_path / "a[1].h5").read_text() == "x"


@pytest.mark.parametrize("command", [["attack", "--checkpoint", "x.pt"], ["fab-pairs", "--checkpoint", "x.pt"]])
def test_an_incomplete_job_json_is_one_line(command, capsys):
    err = one_line_error(capsys, [*command, "--job-json", "{}"])
    assert "--job-json is not a complete job" in err and "KeyError" in err


# --- issue 24: a full disk, truncated inputs, Ctrl-C, tracebacks in Snakemake runs -------------------

def _with_file_size_limit(limit: int):
    """For subprocess: files of at most `limit` bytes, as on a nearly full disk. A write past it fails
    with EFBIG (SIGXFSZ ignored, so the process is not killed); no root, no tmpfs needed."""
    import resource
    import signal

    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def _cli_on_a_full_disk(argv, cwd, limit=1000):
    # An empty numba cache folder: the compiled loss code's cache must be written on the full disk
    # too, as on a fresh clone.
    cache = Path(cwd) / "numba-cache"
    cache.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "NUMBA_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "layerbound", *argv], cwd=cwd, capture_output=True, text=True,
                          env=env, preexec_fn=_with_file_size_limit(limit), timeout=600)


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_file(tiny, tmp_path):
    out = tmp_path / "out"
    cases = [
        (["losses", "--distances", str(tiny["merged"]), "--eps-json", '{"start": 0, "stop": 2, "num": 41}', "--out",
          str(out / "t.csv")], out / "t.csv"),
        (["collide-shard", "--pairs", str(tiny["pairs"]), "--checkpoint", str(tiny["ckpt"]), "--arch", "fcnn_smaller",
          "--model", "net", "--layer", "fc2", "--m", "5", "--seed", "0", "--options-json", tiny["options"],
          "--device", "cpu", "--out", str(out / "c0.h5")], out / "c0.h5"),
        (["sample-pairs", "--dataset", "mnist5k", "--classes", "3", "7", "--per-class", "20", "--seed", "0",
          "--out", str(out / "c3v7-S20-seed0.h5")], out / "c3v7-S20-seed0.h5"),
    ]
    for argv, target in cases:
        result = _cli_on_a_full_disk(argv, tmp_path)
        lines = [line for line in result.stderr.splitlines() if line.strip() and "collision search" not in line]
        assert result.returncode == 1, (argv[0], result.stderr[-2000:])   # not a crash (139), not a traceback
        assert lines == [f"layerbound {argv[0]}: error: cannot write {target}: File too large; nothing was written"]
        assert not out.exists() or list(out.iterdir()) == [], list(out.iterdir())


def test_checkpoints_and_figures_on_a_full_disk_leave_no_file(tmp_path):
    script = (
        "import torch, matplotlib.pyplot as plt\n"
        "from layerbound.models import checkpoint, registry as models\n"
        "from layerbound.figures import style as figures_style\n"
        "from layerbound.core.errors import WriteError\n"
        "for write in (lambda: checkpoint.save('m.pt', models.build('fcnn_smaller', (1, 28, 28), 10), {}),\n"
        "              lambda: figures_style.save(plt.figure(), 'f.png', 'f.pdf')):\n"
        "    try:\n"
        "        write()\n"
        "    except WriteError as err:\n"
        "        print(err)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg",
                                 "MPLCONFIGDIR": str(tmp_path / "mpl")},
                            preexec_fn=_with_file_size_limit(1000), timeout=600)
    assert result.stdout.splitlines() == ["cannot write m.pt: File too large; nothing was written",
                                          "cannot write f.png: File too large; nothing was written"], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "mpl") == []


def test_a_truncated_pair_set_is_one_line(tiny, tmp_path, capsys):
    truncated = tmp_path / "pairs.h5"
    truncated.write_bytes(tiny["pairs"].read_bytes()[:3000])
    err = one_line_error(capsys, ["collide-shard", "--pairs", str(truncated), "--checkpoint", str(tiny["ckpt"]),
                                  "--model", "net", "--layer", "fc2", "--m", "5", "--seed", "0", "--device", "cpu",
                                  "--out", str(tmp_path / "s.h5")])
    assert err.startswith(f"layerbound collide-shard: error: pair set {truncated} cannot be read") and "delete it" in err
    err = one_line_error(capsys, ["fab-pairs", "--checkpoint", str(tiny["ckpt"]), "--pairs", str(truncated),
                                  "--job-json", json.dumps({"model": "net", "seed": 0, "batch_size": 4, "fab": {}}),
                                  "--device", "cpu", "--out", str(tmp_path / "f.csv")])
    assert err.startswith(f"layerbound fab-pairs: error: pair set {truncated} cannot be read")
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "f.csv").exists()


def test_ctrl_c_is_one_line(tiny, tmp_path):
    # A search long enough to be interrupted mid-way (after its device line).
    process = subprocess.Popen(
        [sys.executable, "-m", "layerbound", "collide-shard", "--pairs", str(tiny["pairs"]), "--checkpoint",
         str(tiny["ckpt"]), "--model", "net", "--layer", "fc1", "--m", "200", "--seed", "0", "--device", "cpu",
         "--options-json", '{"chunk_size": 9, "search": {"max_iter": 10000, "tol": 0}}', "--out",
         str(tmp_path / "s.h5")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # A shell that starts the tests in the background (a CI script, nohup ... &) makes them ignore
        # SIGINT, and Python keeps an ignore it inherits: give the command the default disposition it
        # has when started from a terminal.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert process.stdout.readline().startswith("device: cpu")
        time.sleep(3)
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130
    lines = [line for line in rest.splitlines() if line.strip() and "collision search" not in line]
    assert lines == ["layerbound collide-shard: interrupted"], rest[-3000:]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("models,needle", [
    ({"m1": {"dataset": "mnist5k", "arch": "medium"}}, "model 'm1' (medium) has no tap 'nosuchlayer'"),
    ({"m1": {"dataset": "mnist5k", "source": "torchvision", "arch": "resnet1800", "train": {"method": "benign"}}},
     "'resnet1800' is not a torchvision classification architecture"),
])
def test_an_unknown_layer_or_architecture_is_one_line_in_a_snakemake_run(tmp_path, models, needle):
    raw = {"models": models, "collision": {"layers": ["nosuchlayer"] if "arch" in models["m1"] and
                                           models["m1"]["arch"] == "medium" else "all"}}
    result = run_snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "bad.yaml", raw))
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and needle in lines[0], lines


# --- issue 24: configs read strictly, bounded, and kept apart ----------------------------------------

DUPLICATE = "seed: 0\nmodels:\n  m1:\n    dataset: mnist5k\n    arch: medium\nseed: 5\n"


def test_a_key_given_twice_is_one_line_naming_it_and_both_lines(tmp_path, capsys):
    configfile = tmp_path / "dup.yaml"
    configfile.write_text(DUPLICATE)
    expected = f"config file {configfile}: key 'seed' is given twice (lines 1 and 6); keep one"
    assert one_line_error(capsys, ["collide-plan", "--configfile", str(configfile)]) == \
        f"layerbound collide-plan: error: {expected}"
    result = run_snakemake(tmp_path, "-n", configfile=configfile)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0 and lines == [f"layerbound: {expected}"]
    # Nested too, and a merge key (<<) may still be overridden below it.
    configfile.write_text("models:\n  m1:\n    dataset: mnist5k\n    arch: medium\n    arch: large\n")
    with pytest.raises(config.ConfigError, match=r"key 'arch' is given twice \(lines 4 and 5\)"):
        config.load(configfile)
    configfile.write_text("base: &b {dataset: mnist5k, arch: medium}\n")
    assert config.read_yaml(configfile) == {"base": {"dataset": "mnist5k", "arch": "medium"}}
    configfile.write_text("models:\n  m1: &b {dataset: mnist5k, arch: medium}\n  m2:\n    <<: *b\n    arch: large\n")
    assert config.load(configfile)["models"]["m2"]["arch"] == "large"


def _alias_bomb(levels: int = 8) -> str:
    lines = ["models:", "  m1:", "    dataset: mnist5k", "    source: python", "    factory: 'nets:make'",
             "    kwargs:", '      a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    names = "abcdefghij"
    for previous, name in zip(names, names[1:levels]):
        lines.append(f"      {name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def test_a_yaml_alias_bomb_fails_in_seconds(tmp_path, capsys):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(_alias_bomb())
    assert len(bomb.read_bytes()) < 700   # 9^8 = 43 million values once its aliases are expanded
    started = time.monotonic()
    err = one_line_error(capsys, ["collide-plan", "--configfile", str(bomb)])
    assert time.monotonic() - started < 10   # well under a second of work; slack for a loaded machine
    assert "models.m1.kwargs" in err and f"more than {config.MAX_VALUES} values" in err
    result = run_snakemake(tmp_path, "-n", configfile=bomb)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1 and "alias bomb" in lines[0]


def test_another_config_cannot_overwrite_a_run_and_gets_its_own_folder(tmp_path):
    from layerbound.plan import startup

    mine = write_config(tmp_path / "mine.yaml", default_config())
    startup.write_record(tmp_path / "results" / "run.json", ["config.yaml"])   # the default run's folder
    result = run_snakemake(tmp_path, "-n", configfile=mine)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0 and lines == [
        "layerbound: results folder results/ holds the run of config.yaml; mine.yaml would overwrite its outputs: "
        "give this config its own folder (results: results/mine), or delete results/run.json to hand the folder over"]
    own = write_config(tmp_path / "mine.yaml", {**default_config(), "results": "results/mine"})
    result = run_snakemake(tmp_path, "-n", configfile=own)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "results/mine/summary.csv" in result.stdout and "results/mine/run.json" in result.stdout
    assert "results/summary.csv" not in result.stdout and "results/mine/logs/" in result.stdout
    # The command line's default paths follow the config's folder too.
    out = subprocess.run([sys.executable, "-m", "layerbound", "collide-plan", "--configfile", str(own)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and all(line.startswith("results/mine/distances/") for line in out.stdout.splitlines())


# --- issue 24: the Python API refuses what a config refuses ------------------------------------------

@pytest.mark.parametrize("call,needle", [
    (lambda found, net, ps: api.loss_curve(found, eps=[-1.0]),
     "loss_curve: eps = [-1.0] is not allowed (-1.0 is less than the minimum of 0"),
    (lambda found, net, ps: api.loss_curve(found, eps=[0.5, float("inf")]),
     "loss_curve: eps = [0.5, inf]: inf is not a finite number"),
    (lambda found, net, ps: api.loss_curve(found, eps=[1.0], bootstrap=-3), "loss_curve: bootstrap = -3 is not allowed"),
    (lambda found, net, ps: api.collisions(net, "2", ps, m=0),
     "collisions: m = 0 is not allowed (0 is less than the minimum of 1"),
    (lambda found, net, ps: api.collisions(net, "2", ps, m=-5), "collisions: m = -5 is not allowed"),
    (lambda found, net, ps: api.collisions(net, "2", ps, projections=0), "collisions: projections = 0 is not allowed"),
    (lambda found, net, ps: api.collisions(net, "2", ps, threads=0), "collisions: threads must be a whole number >= 1"),
    (lambda found, net, ps: api.collisions(net, "2", ps, max_iter=5, smooth_iters=5),
     "collisions: smooth_iters (5) must be below max_iter (5)"),
    (lambda found, net, ps: api.collisions(net, "2", ps, smooth_iters=-1),
     "collisions: smooth_iters = -1: need a whole number >= 0"),
    (lambda found, net, ps: api.collisions(net, "2", ps, max_iter=0), "collisions: max_iter must be None or an integer"),
    (lambda found, net, ps: api.collisions(net, "2", ps, seed=1.5), "collisions: seed must be an integer"),
    (lambda found, net, ps: api.collisions(net, "2", ps, box=(-math.inf, math.inf)), "need finite bounds"),
    (lambda found, net, ps: api.collisions(net, "2", ps, box=(0, 1, 2)), "collision box (0, 1, 2): need [lo, hi]"),
    (lambda found, net, ps: api.collisions(net, "2", api.make_pairs(ps.x_a[:, :, :27], ps.x_b[:, :, :27])),
     "collisions: the pairs' images have shape (1, 27, 28), the model takes (1, 28, 28)"),
    # What the API builds itself is checked too: a NaN, a negative distance or a missing pair moves the bound.
    (lambda found, net, ps: api.loss_curve(dataclasses.replace(found, distances=found.distances * np.nan), [1.0]),
     "distances must be finite and non-negative: 9 of 9 are not"),
    (lambda found, net, ps: api.loss_curve(dataclasses.replace(found, distances=-found.distances), [1.0]),
     "distances must be finite and non-negative"),
    (lambda found, net, ps: api.loss_curve(dataclasses.replace(found, distances=found.distances[:, :0]), [1.0]),
     "with none of them 0"),
    (lambda found, net, ps: api.loss_curve(dataclasses.replace(found, candidates=np.zeros((1, 2, 2))), [1.0]),
     "candidates must have the distances' shape (1, 3, 3)"),
    (lambda found, net, ps: api.make_pairs(ps.x_a, ps.x_b[:2]), "make_pairs: x_a and x_b must both be (S, *input_shape)"),
    (lambda found, net, ps: api.make_pairs(ps.x_a, ps.x_b.clone().index_fill_(0, torch.tensor([1]), math.nan)),
     "make_pairs: x_b has 784 pixels that are not finite"),
    (lambda found, net, ps: api.make_pairs((255 * ps.x_a).to(torch.uint8), ps.x_b), "make_pairs: the images must be floating point"),
    (lambda found, net, ps: api.make_pairs(ps.x_a, ps.x_b, classes=(3, 3)), "make_pairs: the two classes must differ"),
    (lambda found, net, ps: api.make_pairs(ps.x_a, ps.x_b, classes=(3,)), "make_pairs: classes must be two labels"),
    (lambda found, net, ps: api.collisions(net, "2", ps, box="01"), "collision box '01': need [lo, hi]"),
    (lambda found, net, ps: api.collisions(net, "2", ps, box=(True, 2)), "collision box (True, 2): need [lo, hi]"),
])
def test_the_api_refuses_what_a_config_refuses(tiny, call, needle):
    torch.manual_seed(0)
    net = api.wrap(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 30), torch.nn.ReLU(),
                                       torch.nn.Linear(30, 10)), (1, 28, 28), 10)
    ps = pairs.load(tiny["pairs"])
    with pytest.raises(ValueError) as err:
        call(api.input_distances(ps), net, ps)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_api_leaves_the_callers_model_as_it_was_and_refuses_non_finite_features(tiny):
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(2 * 28 * 28, 10)).double()
    net = api.wrap(module, (1, 28, 28), 10)
    ps = pairs.load(tiny["pairs"])
    before = {k: v.clone() for k, v in module.state_dict().items()}
    found = api.collisions(net, "1", api.make_pairs(ps.x_a[:2], ps.x_b[:2]), m=3, max_iter=2)
    assert found.distances.shape == (1, 2, 2)
    # Weights, their dtype and requires_grad, and the convolution's own forward are the caller's again.
    after = module.state_dict()
    assert all(after[k].dtype == torch.float64 and torch.equal(after[k], v) for k, v in before.items())
    assert all(p.requires_grad for p in module.parameters())
    assert "forward" not in vars(module[0])
    x = torch.rand(1, 1, 28, 28, dtype=torch.float64, requires_grad=True)
    module(x).sum().backward()
    assert x.grad is not None
    with torch.no_grad():
        module[3].weight[0, 0] = math.nan
    with pytest.raises(ValueError, match=r"collisions: the features at '3' are not finite at 4 of the pairs' 4 images"):
        api.collisions(net, "3", api.make_pairs(ps.x_a[:2], ps.x_b[:2]), m=3, max_iter=2)
    with pytest.raises(TypeError, match="collisions: the model has no taps; pass api.load_model"):
        api.collisions(module, "1", ps)
    with pytest.raises(TypeError, match="input_distances: pairs must be a pair set .* has no x_a"):
        api.input_distances(ps.x_a)


def test_the_api_searches_on_the_workflow_s_threads_unless_told(tiny, monkeypatch):
    from layerbound.core import threads

    seen = []
    monkeypatch.setattr(threads, "limited", lambda n: (seen.append(n), contextlib.nullcontext())[1])
    net = api.wrap(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)), (1, 28, 28), 10)
    ps = pairs.load(tiny["pairs"])
    api.collisions(net, "1", ps, m=5, max_iter=1)
    api.collisions(net, "1", ps, m=5, max_iter=1, threads=2)
    assert seen == [threads.JOB_THREADS["collide_shard"], 2] == [1, 2]


def test_wrapping_a_forward_that_branches_on_its_inputs_fails_in_one_line():
    from layerbound.core.errors import ModelLoadError

    class Branchy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(x) if x.sum() > 0 else -self.linear(x)

    with pytest.raises(ModelLoadError, match=r"^wrap: Branchy cannot be traced by torch.fx, .*control flow$"):
        api.wrap(Branchy(), (4,), 3)
