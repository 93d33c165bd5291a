"""Bad input fails early with one line naming the key or file (and what to do), never a traceback;
impossible distances never reach a bound."""

import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch
import yaml

from layerbound import checkpoint, cli, config, models, pairs, plan, shards, store
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
])
def test_config_problems_are_one_line_naming_the_key(mutate, needle):
    raw = default_config()
    mutate(raw)
    with pytest.raises(config.ConfigError) as err:
        config.validate(raw)
    assert needle in str(err.value) and "\n" not in str(err.value)


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
    from layerbound import data, dataset_info

    _, y = data.load("mnist5k", "train")
    assert tuple(np.bincount(y.numpy())) == dataset_info.info("mnist5k").train_per_class


# --- 2, 3, 4, 5, 7: files and the command line ---------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A pair set of S = 3 on 1x28x28 images, a matching fcnn_smaller checkpoint and one merged file."""
    root = tmp_path_factory.mktemp("bad")
    g = torch.Generator().manual_seed(0)
    x_a, x_b = torch.rand(S, 1, 28, 28, generator=g), torch.rand(S, 1, 28, 28, generator=g)
    ps = pairs.PairSet(plan.pairset_id((3, 7), S, 0), "mnist5k", "train", (3, 7), S, 0, x_a, x_b,
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


@pytest.mark.parametrize("command", [["attack", "--checkpoint", "x.pt"], ["fab-pairs", "--checkpoint", "x.pt"]])
def test_an_incomplete_job_json_is_one_line(command, capsys):
    err = one_line_error(capsys, [*command, "--job-json", "{}"])
    assert "--job-json is not a complete job" in err and "KeyError" in err
