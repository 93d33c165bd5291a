import json

import pytest
import torch

from layerbound import checkpoint, models, store


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
