import pytest
import torch
import yaml

from layerbound.models import architectures, registry as models
from layerbound.data import datasets as data
from layerbound.config import SCHEMA

SHAPES = [(1, 28, 28), (3, 32, 32)]


def test_medium_tap_widths_on_mnist_match_paper_001():
    net = models.build("medium", (1, 28, 28), 10)
    widths = net.tap_widths()
    assert net.taps == ["conv1", "conv2", "conv3", "conv4", "fc5", "fc6", "logits"]
    assert [widths[t] for t in net.taps] == [25088, 6272, 12544, 3136, 512, 512, 10]


def test_valid_padding_gives_ibp_widths():
    # IBP pads VALID: 28 -3+1 = 26, (26-4)/2+1 = 12, 12-3+1 = 10, (10-4)/2+1 = 4.
    widths = models.build("medium", (1, 28, 28), 10, padding="valid").tap_widths()
    assert [widths[t] for t in ("conv1", "conv2", "conv3", "conv4")] == [26 * 26 * 32, 12 * 12 * 32, 10 * 10 * 64, 4 * 4 * 64]


@pytest.mark.parametrize("arch", list(architectures.ARCHITECTURES))
@pytest.mark.parametrize("shape", SHAPES)
def test_last_tap_is_the_logits(arch, shape):
    torch.manual_seed(0)
    net = models.build(arch, shape, 10).eval()
    x = torch.rand(3, *shape)
    assert torch.equal(net.features(x, net.taps[-1]), net(x))
    assert net.features(x, net.taps[-1]).shape == (3, 10)


@pytest.mark.parametrize("arch", list(architectures.ARCHITECTURES))
def test_taps_compose_layer_by_layer(arch):
    # f_j is a prefix of the network: each hidden tap is non-negative (post-ReLU), and the
    # pre-activation tap of a ReLU-only stage gives the post-activation tap after a ReLU.
    torch.manual_seed(1)
    net = models.build(arch, (1, 28, 28), 10).eval()
    x = torch.rand(4, 1, 28, 28)
    for tap in net.taps[:-1]:
        assert (net.features(x, tap) >= 0).all()
    pre = net.features(x, "fc2_pre" if arch.startswith("fcnn") else net.pre_activation_taps[-1])
    post = net.features(x, "fc2" if arch.startswith("fcnn") else net.taps[-2])
    assert torch.equal(torch.relu(pre), post)
    assert (pre < 0).any()


def test_extractor_is_a_module_computing_the_features():
    net = models.build("small", (1, 28, 28), 10).eval()
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(net.extractor("conv2")(x), net.features(x, "conv2"))
    with pytest.raises(KeyError, match="no tap 'conv9'"):
        net.extractor("conv9")


def test_unknown_architecture_and_padding_are_rejected_by_name():
    with pytest.raises(ValueError, match="unknown architecture 'resnet9'"):
        models.build("resnet9", (1, 28, 28), 10)
    with pytest.raises(ValueError, match="padding"):
        models.build("medium", (1, 28, 28), 10, padding="full")


def test_schema_lists_exactly_the_registered_architectures_and_datasets():
    schema = yaml.safe_load(SCHEMA.read_text())
    # A `models:` entry is trained (registry arch) unless it has `source` (loaded, tests/test_loaded.py).
    model = schema["$defs"]["trained_model"]["properties"]
    assert model["arch"]["enum"] == list(architectures.ARCHITECTURES)
    assert schema["$defs"]["dataset"]["enum"] == list(data.DATASETS)
    assert model["dataset"] == schema["$defs"]["loaded_model"]["properties"]["dataset"] == {"$ref": "#/$defs/dataset"}
