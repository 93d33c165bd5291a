import json
import os
import subprocess
import sys

import pytest
import torch

from layerbound import api
from layerbound.models import checkpoint, registry as models
from layerbound.core import store


def _model():
    torch.manual_seed(0)
    return models.build("cnn4", (1, 28, 28), 10).eval()


def test_roundtrip_loads_with_weights_only_and_reproduces_outputs(tmp_path):
    net = _model()
    path = tmp_path / "m.pt"
    checkpoint.save(path, net, {"clean_test_accuracy": 0.5})
    payload = torch.load(path, weights_only=True)  # must not need pickled classes
    assert payload["arch"] == "cnn4"
    loaded = checkpoint.load(path, expect={"arch": "cnn4", "input_shape": (1, 28, 28), "num_classes": 10})
    assert not loaded.training
    x = torch.rand(5, 1, 28, 28)
    assert torch.equal(loaded(x), net(x))
    assert json.loads((tmp_path / "m.json").read_text()) == {"clean_test_accuracy": 0.5}
    assert checkpoint.load_metrics(path)["clean_test_accuracy"] == 0.5


def test_architecture_mismatch_fails_naming_file_and_fields(tmp_path):
    path = tmp_path / "m.pt"
    checkpoint.save(path, _model(), {})
    with pytest.raises(checkpoint.CheckpointMismatch) as err:
        checkpoint.load(path, expect={"arch": "medium", "input_shape": (3, 32, 32)})
    message = str(err.value)
    assert str(path) in message
    assert "arch: checkpoint has 'cnn4', config asks for 'medium'" in message
    assert "input_shape" in message


def test_a_foreign_file_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(checkpoint.CheckpointMismatch, match="not a layerbound checkpoint"):
        checkpoint.load(path)


def test_atomic_write_leaves_no_partial_file_on_failure(tmp_path):
    target = tmp_path / "out.bin"

    def failing_write(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        store.atomic_write(target, failing_write)
    assert list(tmp_path.iterdir()) == []


# --- a checkpoint never chooses code -----------------------------------------------------------------

def _crafted(path, spec, state_dict=None):
    """A loaded-model checkpoint as an attacker would write it: any recorded source spec."""
    torch.save({"format": checkpoint.LOADED_FORMAT, "arch": "net", "input_shape": [1, 28, 28], "num_classes": 10,
                "source": json.dumps(spec), "state_dict": state_dict or {}}, path)
    return path


def _side_effect_module(folder, marker):
    """A module that writes `marker` when imported, with a factory that does too."""
    (folder / "evil_nets.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('imported')\n"
        "def make():\n"
        f"    pathlib.Path({str(marker)!r}).write_text('called')\n")


def test_a_checkpoint_naming_a_stdlib_function_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    path = _crafted(tmp_path / "m.pt", {"dataset": "mnist5k", "source": "python", "factory": "subprocess:getoutput",
                                         "kwargs": {"cmd": f"touch {marker}"}})
    with pytest.raises(checkpoint.CheckpointMismatch) as err:
        api.load_model(path)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "'subprocess:getoutput'" in message and "never chooses" in message
    assert not marker.exists()


def test_a_checkpoint_naming_a_module_with_import_side_effects_imports_nothing(tmp_path, tiny_factory):
    marker = tmp_path / "imported"
    _side_effect_module(tmp_path, marker)
    path = _crafted(tmp_path / "m.pt", {"dataset": "mnist5k", "source": "python", "factory": "evil_nets:make",
                                         "kwargs": {}, "normalization": None})
    with pytest.raises(checkpoint.CheckpointMismatch, match="never chooses"):
        api.load_model(path)
    # With the caller's own entry the network comes from the entry's factory, which must be the
    # recorded one: the difference is named, and neither module is imported.
    with pytest.raises(checkpoint.CheckpointMismatch) as err:
        api.load_model(path, dataset="mnist5k", entry={"source": "python", "factory": tiny_factory})
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert f"factory: the checkpoint has 'evil_nets:make', the model entry '{tiny_factory}'" in message
    assert not marker.exists() and "evil_nets" not in sys.modules
    assert tiny_factory.split(":")[0] not in sys.modules


def test_a_checkpoint_naming_code_outside_the_checkout_fails_in_one_line_on_the_command_line(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    marker = tmp_path / "imported"
    _side_effect_module(outside, marker)
    path = _crafted(tmp_path / "m.pt", {"dataset": "mnist5k", "source": "python", "factory": "evil_nets:make",
                                         "kwargs": {}, "normalization": None})
    result = subprocess.run([sys.executable, "-m", "layerbound", "attack", "--checkpoint", str(path),
                             "--job-json", json.dumps({"model": "m"}), "--out", "a.csv", "--summary", "a.json"],
                            cwd=outside, env={**os.environ, "PYTHONPATH": str(outside)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("device: cpu")   # the device line, then the error
    assert lines[1].startswith("layerbound attack: error: checkpoint") and "'evil_nets:make'" in lines[1]
    assert not marker.exists() and not (outside / "a.csv").exists()


def test_a_recorded_registry_spec_is_validated_like_a_config_entry(tmp_path):
    # `pretrained` would make torchvision download weights; the config refuses it, so does a checkpoint.
    path = _crafted(tmp_path / "m.pt", {"dataset": "mnist5k", "source": "torchvision", "arch": "resnet18",
                                         "kwargs": {"pretrained": True}, "small_inputs": True, "normalization": None})
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"kwargs\.pretrained: not allowed"):
        checkpoint.load(path)


def test_a_python_checkpoint_loads_with_the_entry_that_names_its_factory(tmp_path, tiny_factory):
    entry = {"source": "python", "factory": tiny_factory, "kwargs": {"width": 7}}
    model = api.load_model(entry, dataset="mnist5k")
    checkpoint.save(tmp_path / "m.pt", model, {})
    again = api.load_model(tmp_path / "m.pt", dataset="mnist5k", entry=entry)
    x = torch.rand(3, 1, 28, 28)
    assert torch.equal(again(x), model(x))
    with pytest.raises(checkpoint.CheckpointMismatch, match="kwargs: the checkpoint has {'width': 7}, the model entry {'width': 8}"):
        api.load_model(tmp_path / "m.pt", dataset="mnist5k", entry={**entry, "kwargs": {"width": 8}})
