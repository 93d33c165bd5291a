"""The plan (config -> units, paths, figures), the schema as the one source of defaults, and the
torch-free planning layer the workflow parses with."""

import dataclasses
import inspect
import json
import os
import subprocess
import sys

import pytest
import yaml

from layerbound import collide, config
from layerbound.core.names import INPUT_MODEL
from layerbound import plan
from layerbound.models import architectures, registry as models
from layerbound.collide import CollisionOptions, SearchOptions, jacobian
from layerbound.config import load as load_config
from layerbound.config import validate
from workflow_helpers import ROOT, job_counts, run_snakemake

DATASETS = [("mnist5k", (1, 28, 28), 10), ("cifar100", (3, 32, 32), 100)]


@pytest.mark.parametrize("arch", list(architectures.ARCHITECTURES))
@pytest.mark.parametrize("padding", architectures.PADDINGS)
@pytest.mark.parametrize("dataset,shape,classes", DATASETS)
def test_widths_by_arithmetic_equal_the_built_network(arch, padding, dataset, shape, classes):
    # The plan computes n_j without torch; the network built from the same spec must agree, in order.
    expected = models.build(arch, shape, classes, padding).tap_widths()
    widths = architectures.tap_widths(arch, shape, classes, padding)
    assert list(widths.items()) == list(expected.items())
    assert architectures.tap_names(arch) == models.build(arch, shape, classes, padding).taps


def test_planning_imports_neither_torch_nor_matplotlib():
    code = ("import sys; from layerbound import config; from layerbound.plan import claims as claim_plan; "
            "from layerbound import plan; "
            f"p = plan.Plan(config.load({str(ROOT / 'config.yaml')!r})); assert p.all_targets(); "
            "assert claim_plan.job(p)['instances']; "
            "print(sorted(m for m in ('torch', 'matplotlib', 'numba', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_schema_defaults_fill_every_section_and_the_dataclasses_use_them():
    filled = validate({"models": {"a": {"dataset": "mnist5k", "arch": "fcnn"}}})
    schema = yaml.safe_load(config.SCHEMA.read_text())
    assert set(filled) == set(schema["properties"])   # every section present after validation
    assert filled["models"]["a"]["padding"] == "same"
    search = filled["collision"]["search"]
    assert SearchOptions() == SearchOptions(**search)
    assert CollisionOptions().chunk_size == filled["collision"]["chunk_size"]
    assert config.TrainConfig().epochs == filled["training"]["epochs"]
    assert config.EvalConfig().examples == filled["evaluation"]["examples"]
    # The search's keyword defaults are the same values (one source: the schema).
    defaults = {k: v.default for k, v in inspect.signature(jacobian.search).parameters.items()}
    assert all(defaults[k] == v for k, v in search.items())
    # A model's own train block overrides the global training defaults, key by key.
    filled = validate({"training": {"epochs": 2}, "models": {"a": {"dataset": "mnist5k", "arch": "fcnn",
                                                                   "train": {"lr": 0.5}}}})
    spec = config.model_specs(filled)["a"]
    assert (spec.train.epochs, spec.train.lr, spec.train.batch_size) == (2, 0.5, 64)


@pytest.mark.parametrize("mutate,needle", [
    (lambda c: c.update(modles={}), "(top level): Additional properties are not allowed ('modles' was unexpected)"),
    (lambda c: c["collision"].update(m=[0]), "collision.m[0]: 0 is less than the minimum of 1"),
    (lambda c: c["models"]["medium_pgd2"]["train"].update(eps="two"), "models.medium_pgd2.train.eps: 'two'"),
])
def test_a_bad_key_is_named_in_one_line(mutate, needle):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    mutate(raw)
    with pytest.raises(config.ConfigError) as err:
        validate(raw)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_collision_options_json_round_trips_with_the_box_and_step_control():
    options = CollisionOptions(chunk_size=8, method_options=SearchOptions(gamma=0.9))
    assert CollisionOptions.from_dict(json.loads(options.to_json())) == options
    # The JSON (and so every shard's config_digest) records the adversary's box and the step control.
    assert json.loads(options.to_json()) == {
        "method": "jacobian", "dtype": "float32", "batch_size": 64, "chunk_size": 8, "keep_points": 4,
        "box": [0.0, 1.0],
        "search": {"step": "auto", "alpha": 1.0, "gamma": 0.9, "max_iter": None, "tol": None,
                   "verify_tol": None, "rows_per_pass": None}}
    unboxed = CollisionOptions(box=None)
    assert json.loads(unboxed.to_json())["box"] is None and unboxed.digest() != CollisionOptions().digest()
    assert CollisionOptions(box=[0, 1]) == CollisionOptions(box=(0.0, 1.0))   # one form, one digest
    assert unboxed.adversary_label() == "l2 unboxed" and CollisionOptions().adversary_label() == "l2 in [0, 1]^n"
    with pytest.raises(ValueError, match="need lo < hi"):
        CollisionOptions(box=(1.0, 0.0))
    with pytest.raises(ValueError, match="unknown collision method 'cone'"):
        CollisionOptions.from_dict({"method": "cone"})
    with pytest.raises(ValueError, match="unknown collision.search options: stride"):
        CollisionOptions.from_dict({"search": {"stride": 1}})
    assert set(collide.METHODS) == set(config.schema()["properties"]["collision"]["properties"]["methods"]["items"]["enum"])


def test_paths_come_from_one_pattern_each():
    unit = plan.Unit("mnist5k", "c3v7-S8-seed0", "jacobian", "net", "conv1", 10, 6272, 2, 1)
    assert unit.merged_path() == "results/distances/mnist5k/c3v7-S8-seed0/jacobian/net/conv1/m10.h5"
    assert unit.shard_paths("out")[1] == "out/shards/mnist5k/c3v7-S8-seed0/jacobian/net/conv1/m10/p1/c0.h5"
    assert unit.losses_path() == "results/losses/mnist5k/c3v7-S8-seed0/jacobian/net/conv1/m10.csv"
    assert plan.pattern("shard", under="logs", suffix=".log") == \
        "results/logs/shards/{dataset}/{pairset}/{collision_method}/{model}/{layer}/m{m}/p{p}/c{chunk}.log"
    assert plan.pattern("figure_layers", suffix=".png").endswith("/layers/{model}/m{m}.png")


def test_plan_of_the_default_config():
    config = load_config(ROOT / "config.yaml")
    units = plan.units(config)
    collision = config["collision"]
    net_units = [u for u in units if u.model != INPUT_MODEL]
    model_names = list(config["models"]) if collision["models"] == "all" else collision["models"]
    assert {u.model for u in net_units} == set(model_names)
    medium = [u for u in net_units if u.model == model_names[0]]
    assert [u.layer for u in medium][:7] == ["conv1", "conv2", "conv3", "conv4", "fc5", "fc6", "logits"][:len(medium)]
    for u in units:
        expected = 1 if (u.layer == "input" or u.m >= u.n_j) else collision["projections"]
        assert u.projections == expected
        assert len(u.shards()) == u.projections * u.chunks
    assert {u.layer for u in units if u.model == INPUT_MODEL} == {"input", "input_rp"}
    # Every shard path is distinct.
    paths = [p for u in units for p in u.shard_paths()]
    assert len(paths) == len(set(paths))


def test_workflow_dry_run_schedules_every_shard_and_merge(tmp_path):
    # The collide rules with a tiny config: every shard of the plan and one merge per unit.
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.pop("semirobust")   # its study names the default models, replaced here
    config["models"] = {"tiny": {"dataset": "mnist5k", "arch": "fcnn_smaller", "train": {"method": "benign"}}}
    config["pairs"] = {"classes": [3, 7], "per_class": 3}
    config["collision"].update({"m": [5, 10], "projections": 2, "chunk_size": 4})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text(
        "from layerbound.plan.startup import start\n"
        f'configfile: "{tmp_path}/config.yaml"\n'
        "PLAN, CONFIG_FILES = start(config, workflow.configfiles)\n"
        f'include: "{ROOT}/workflow/rules/common.smk"\n'
        f'include: "{ROOT}/workflow/rules/train.smk"\n'
        f'include: "{ROOT}/workflow/rules/collide.smk"\n'
        "rule all:\n    input: [u.merged_path() for u in PLAN.units.values()]\n    default_target: True\n")
    out = run_snakemake(tmp_path, "-n", "-c1", "--quiet", "rules", snakefile=tmp_path / "Snakefile")
    assert out.returncode == 0, out.stderr[-2000:]
    counts = job_counts(out.stdout)
    units = plan.units(validate(config))
    # fcnn_smaller taps fc1 (75), fc2 (50), logits (10: projected at m = 5 only) at m = 5, 10; input
    # (never projected), input_rp; 9 pairs in 3 chunks.
    assert len(units) == 3 * 2 + 2 * 2
    assert counts["collide_merge"] == len(units)
    assert counts["collide_shard"] == sum(len(u.shards()) for u in units) == 3 * (2 + 2 + 2 + 2 + 2 + 1 + 1 + 1 + 2 + 2)
    assert counts["pairs_sample"] == 1 and counts["train_model"] == 1



def _fake_python(folder, flags=""):
    """A `python` in `folder` that runs this interpreter (with `flags`)."""
    folder.mkdir()
    script = folder / "python"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" {flags} "$@"\n')
    script.chmod(0o755)
    return str(folder)


def test_a_python_on_path_that_cannot_import_layerbound_stops_the_run_in_one_line(tmp_path):
    from layerbound.plan.startup import check_job_python

    check_job_python(_fake_python(tmp_path / "venv"))           # this environment's python: fine
    # -S: the same interpreter without its site-packages, where layerbound is installed.
    with pytest.raises(config.ConfigError, match=r"the `python` on PATH \(.*bare/python\) cannot import layerbound; "
                                                 r"every job runs `python -m layerbound`: activate"):
        check_job_python(_fake_python(tmp_path / "bare", "-S"))
    with pytest.raises(config.ConfigError, match="no `python` on PATH"):
        check_job_python(str(tmp_path / "empty"))
    # Through Snakemake, before any job: one line on stderr.
    bare = f"{tmp_path / 'bare'}{os.pathsep}/usr/bin{os.pathsep}/bin"
    out = run_snakemake(tmp_path, "-n", "--quiet", "rules", configfile=ROOT / "config.yaml", env={"PATH": bare})
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.startswith("layerbound:")]
    assert len(lines) == 1 and "cannot import layerbound" in lines[0], out.stderr[-2000:]


def test_m_sweep_of_a_later_layer_uses_a_layer_present_at_every_m():
    cfg = validate({"models": {"a": {"dataset": "mnist5k", "arch": "fcnn"}},
                    "collision": {"m": [10], "sweeps": [{"layers": ["fc2"], "m": [5, 50]}]}})
    p = plan.Plan(cfg)
    key = ("mnist5k", plan.pairset_name(cfg), "jacobian", "a")
    assert sorted(p.figure_layers[key]) == [5, 10, 50]
    assert p.m_sweep_layer(*key) == "fc2"
    tables = p.m_sweep_tables(*key)
    planned = {u.losses_path() for u in p.units.values()}
    assert set(tables) <= planned
    # The input baseline is the main grid's (it does not depend on m).
    assert any("/input/input/m10.csv" in t for t in tables)
    assert any("/m_sweep/a.png" in t for t in p.figure_targets())


def test_method_polytope_is_planned_for_unprojected_maps_only():
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    raw["collision"]["methods"] = ["polytope"]
    with pytest.raises(config.ConfigError, match=r"method polytope searches unprojected maps only .* "
                                                  r"medium_benign/conv1 has n_j = 25088 > m = 10"):
        plan.units(validate(raw))
    raw["collision"].update(layers=["logits"], m=[10])     # logits: n_j = 10 = m, not projected
    units = plan.units(validate(raw))
    assert {(u.model, u.layer) for u in units} == {(name, "logits") for name in raw["models"]} | {("input", "input")}
    assert all(u.projections == 1 for u in units)          # and no projected input baseline


def test_the_search_revision_and_resolved_defaults_are_in_the_digest(monkeypatch):
    """`step: auto` and `max_iter: null` are stored as written, so what they resolve to, and the
    algorithm's revision, must change the digest (and the shard job's parameters) by themselves:
    otherwise a new search would reuse the shards of the old one."""
    from layerbound.collide import options as collide_options

    options = CollisionOptions()
    revision = options.revision()
    assert "merit up to 50 features" in revision and '"merit": 15' in revision
    json_before, digest_before = options.to_json(), options.digest()
    method_revision = collide_options.METHODS["jacobian"].revision
    changed = dataclasses.replace(collide_options.METHODS["jacobian"], revision=method_revision + " (changed)")
    monkeypatch.setitem(collide_options.METHODS, "jacobian", changed)
    assert options.to_json() == json_before and options.digest() != digest_before
    assert options.revision() == revision.replace(method_revision, method_revision + " (changed)")
    # The certificate's revision is part of every method's (collide/certify.py): a new one re-runs every shard.
    monkeypatch.setattr(collide_options, "CERTIFY_REVISION", "next")
    assert options.revision().endswith("; certificate next") and options.digest() != digest_before
