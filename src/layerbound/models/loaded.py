"""Loaded models: torchvision architectures, a user's `module:function`, RobustBench's zoo, with taps by name.

`build(spec, input_shape, num_classes)` makes the network of a loaded `models:` entry (the keys of
`sources.spec`) and loads its weights from a local file (nothing is ever downloaded), checking them
against the architecture first. The result is a `LoadedNet`: the user's network behind an optional
per-channel normalization, so inputs and budgets stay in pixel space [0, 1]. Its taps are layer
names of torchvision's feature extraction (`get_graph_node_names`): every operation of the traced
forward pass ("layer1.0.bn1", "layer2.0.add") and every submodule that runs ("layer1", "fc", whose
output is that of its last operation). f_j is `create_feature_extractor` up to that node, flattened;
it is an FX graph of the same modules, so torch.func differentiates it like any network.

Adapting to small inputs (`small_inputs: true`, torchvision only) follows paper 003's reference code
(Sekeh-Lab/SemirobustSubnetworks, MI/AuxiliaryScripts/cifarmodels.py), whose text does not state it:
ResNets get a 3x3 stride-1 first convolution (padding 1) instead of 7x7/2, keeping the max pool;
VGGs average-pool to 1x1 and their first linear layer takes 512 features; AlexNet becomes that
code's CIFAR AlexNet (first convolution padding 5, the three max pools 2x2/2, no average pool, one
linear classifier on 256 features). The first convolution takes the dataset's channels (1 on MNIST).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from typing import Any, Mapping

import torch
import torch.fx
from torch import nn

from . import zoo
from .weights import read_weights
from ..core.errors import ModelLoadError, first_line

Shape = tuple[int, int, int]


# --- the network of a loaded entry ----------------------------------------------------------------

class Normalize(nn.Module):
    """(x - mean) / std per channel: the model's own input normalization, so budgets are in pixels."""

    def __init__(self, mean, std):
        super().__init__()
        # Not in the state_dict: the config declares them, and the checkpoint's source spec keeps them.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class LoadedNet(nn.Module):
    """A loaded network with taps by layer name: forward(x) = net(normalize(x)).

        model.taps               every usable layer name, in network order
        model.features(x, tap)   f_j(x) flattened to (batch, n_j)
        model.extractor(tap)     f_j as a module, for torch.func transforms
        model.tap_widths()       n_j of every tap
    """

    pre_activation_taps: list[str] = []   # registry networks' `<tap>_pre`; here every operation is a tap

    def __init__(self, net: nn.Module, spec: Mapping[str, Any], input_shape: Shape, num_classes: int):
        super().__init__()
        self.net = net
        normalization = spec.get("normalization")
        self.normalize = Normalize(normalization["mean"], normalization["std"]) if normalization else nn.Identity()
        self.spec = dict(spec)
        self.arch = spec.get("arch") or spec["factory"]
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.__dict__["_extractors"] = {}   # tap -> FX extractor; not submodules (no duplicate state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))

    @property
    def taps(self) -> list[str]:
        return [name for name, _ in _usable_names(self.net)]

    def _extractor(self, tap: str) -> nn.Module:
        if tap not in self._extractors:
            if tap not in self.taps:
                raise KeyError(f"{self.arch} has no layer {tap!r}; `layerbound taps` lists its names")
            self._extractors[tap] = _feature_extractor(self.net, [tap])
        extractor = self._extractors[tap]
        extractor.train(self.training)   # its train and eval graphs follow the network's mode
        return extractor

    def features(self, x: torch.Tensor, tap: str) -> torch.Tensor:
        """f_j(x) flattened to (batch, n_j)."""
        return self._extractor(tap)(self.normalize(x))[tap].flatten(1)

    def extractor(self, tap: str) -> "LoadedExtractor":
        self._extractor(tap)
        return LoadedExtractor(self, tap)

    def tap_widths(self) -> dict[str, int]:
        """n_j of every tap, from one forward pass of a zero input."""
        device = next(self.parameters()).device
        return {name: width for name, width, _ in _table(self.net, self.input_shape, device)}


class LoadedExtractor(nn.Module):
    """f_j of a LoadedNet as a module: (batch, *input_shape) -> (batch, n_j)."""

    def __init__(self, net: LoadedNet, tap: str):
        super().__init__()
        self.net = net
        self.tap = tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x, self.tap)


def build(spec: Mapping[str, Any], input_shape: Shape, num_classes: int, weights: bool = True) -> LoadedNet:
    """The LoadedNet of a loaded entry's spec (sources.spec), in eval mode; with `weights`, its
    weights loaded from the local file after checking them against the architecture."""
    net = network(spec, input_shape, num_classes, weights=weights)
    return LoadedNet(net, spec, input_shape, num_classes).eval()


def network(spec: Mapping[str, Any], input_shape: Shape, num_classes: int, weights: bool = True,
            device: str | torch.device | None = None) -> nn.Module:
    """The user's network of a spec (without normalization); built on `device` (e.g. "meta")."""
    source = spec["source"]
    with torch.device(device) if device is not None else contextlib.nullcontext():
        if source == "torchvision":
            net = _torchvision(spec, input_shape, num_classes)
        elif source == "python":
            net = _python(spec)
        elif source == "robustbench":
            net = _robustbench(spec, weights and device is None)
        else:
            raise ModelLoadError(f"unknown model source {source!r}; known: torchvision, python, robustbench")
    if not isinstance(net, nn.Module):
        raise ModelLoadError(f"{spec.get('factory')} returned a {type(net).__name__}, not a torch.nn.Module")
    disable_inplace(net)
    if weights and source != "robustbench" and spec.get("weights"):
        net.load_state_dict(read_weights(spec["weights"], net, describe(spec)))
    return net.eval()


def describe(spec: Mapping[str, Any]) -> str:
    """'torchvision resnet18 (small inputs)', 'python pkg.mod:make', 'robustbench Standard (cifar10, Linf)'."""
    if spec["source"] == "python":
        return f"python {spec['factory']}"
    small = " (small inputs)" if spec.get("small_inputs") else ""
    return f"{spec['source']} {spec['arch']}{small}"


def _torchvision(spec: Mapping[str, Any], input_shape: Shape, num_classes: int) -> nn.Module:
    import torchvision

    arch = spec["arch"]
    names = torchvision.models.list_models(module=torchvision.models)   # the classification models
    if arch not in names:
        raise ModelLoadError(f"{arch!r} is not a torchvision classification architecture; e.g. "
                             f"{', '.join(n for n in names if n in ('alexnet', 'resnet18', 'resnet50', 'vgg16', 'vgg16_bn'))}"
                             f" (torchvision.models.list_models(module=torchvision.models) lists all {len(names)})")
    # weights=None: the architecture only (no download ever); the config's weights file fills it.
    net = torchvision.models.get_model(arch, weights=None, num_classes=int(num_classes), **spec.get("kwargs", {}))
    if spec.get("small_inputs"):
        net = adapt_small_inputs(net, arch, int(input_shape[0]), int(num_classes))
    return net


def adapt_small_inputs(net: nn.Module, arch: str, channels: int, num_classes: int) -> nn.Module:
    """Adapt a torchvision ImageNet architecture to 28x28 / 32x32 inputs with `channels` channels,
    as paper 003's reference code does (module docstring); changes `net` in place and returns it."""
    if arch.startswith(("resnet", "resnext", "wide_resnet")):
        # 7x7/2 -> 3x3/1, padding 1, no bias; the 3x3/2 max pool stays, as in the reference code.
        net.conv1 = nn.Conv2d(channels, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        return net
    if arch.startswith("vgg"):
        first = net.features[0]
        net.features[0] = nn.Conv2d(channels, first.out_channels, kernel_size=3, padding=1)
        net.avgpool = nn.AdaptiveAvgPool2d((1, 1))          # 32x32 leaves 1x1 after five pools
        net.classifier[0] = nn.Linear(512, net.classifier[0].out_features)
        return net
    if arch == "alexnet":
        net.features[0] = nn.Conv2d(channels, 64, kernel_size=11, stride=4, padding=5)
        for index in (2, 5, 12):
            net.features[index] = nn.MaxPool2d(kernel_size=2, stride=2)
        net.avgpool = nn.Identity()
        net.classifier = nn.Linear(256, num_classes)   # AlexNet.forward flattens before its classifier
        return net
    raise ModelLoadError(f"small_inputs is defined for torchvision's ResNet (resnet*, resnext*, wide_resnet*), VGG "
                         f"(vgg*) and AlexNet architectures, as paper 003's reference code adapts them; not for {arch!r}")


def _python(spec: Mapping[str, Any]) -> nn.Module:
    module_name, function_name = spec["factory"].split(":")
    if "" not in sys.path:
        sys.path.insert(0, "")   # the working directory, as `python -c` has it
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelLoadError(f"factory {spec['factory']}: cannot import {module_name!r} ({err}); put it on "
                             "PYTHONPATH or in the working directory") from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ModelLoadError(f"factory {spec['factory']}: module {module_name!r} has no function {function_name!r}")
    return factory(**spec.get("kwargs", {}))


def _robustbench(spec: Mapping[str, Any], with_weights: bool) -> nn.Module:
    dataset = spec["dataset"]
    problem = zoo.robustbench_missing(spec, weights=with_weights)
    if problem:
        raise ModelLoadError(problem)
    try:
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    except Exception as err:   # installed, but broken (e.g. a dependency it imports is missing)
        raise ModelLoadError(f"robustbench is installed but cannot be imported ({type(err).__name__}: {first_line(err)}); "
                             "reinstall it (pip install robustbench) or fix its dependencies") from None

    # Not `zoo`: a local of that name would shadow the module used above (UnboundLocalError).
    listed = model_dicts[BenchmarkDataset(dataset)][ThreatModel(spec["threat_model"])]
    if spec["arch"] not in listed:
        raise ModelLoadError(f"RobustBench has no {dataset} {spec['threat_model']} model {spec['arch']!r}")
    if not with_weights:
        return listed[spec["arch"]]["model"]()
    from robustbench.utils import load_model   # the file is present, so this reads it and downloads nothing

    return load_model(model_name=spec["arch"], model_dir=spec.get("model_dir", "models"), dataset=dataset,
                      threat_model=spec["threat_model"])


def disable_inplace(net: nn.Module) -> None:
    """Switch in-place activations off: a tap before one (a BatchNorm before its ReLU) must keep its
    own values, not the ones the activation writes over it. The outputs are unchanged."""
    for module in net.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False


# --- taps by name --------------------------------------------------------------------------------

def _feature_extractor(net: nn.Module, names: list[str]) -> nn.Module:
    from torchvision.models.feature_extraction import create_feature_extractor

    extractor = create_feature_extractor(net, return_nodes=list(names))
    return extractor.train(net.training)


def check_traceable(net: nn.Module, what: str) -> None:
    """Taps are named by tracing the forward pass (torch.fx): one that branches on its inputs' values
    cannot be traced, which fails here in one line rather than at the first tap."""
    try:
        _usable_names(net)
    except torch.fx.proxy.TraceError as err:
        raise _untraceable(what, err) from None


def _untraceable(what: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(f"{what} cannot be traced by torch.fx, which naming its layers needs (torchvision's "
                          f"feature extraction; a forward that branches on its inputs' values cannot be): "
                          f"{first_line(err)}")


def _usable_names(net: nn.Module) -> list[tuple[str, str]]:
    """(name, node) in network order: every operation of the traced eval-mode forward pass (not
    the input), and every submodule that runs, named by its own name and standing for its last node."""
    from torchvision.models.feature_extraction import get_graph_node_names

    cache = net.__dict__.setdefault("_layerbound_names", {})
    if "names" not in cache:
        _, nodes = get_graph_node_names(net)
        nodes = nodes[1:]   # the first node is the input placeholder
        last = {}           # submodule -> its last node
        for node in nodes:
            parts = node.split(".")
            for i in range(1, len(parts)):
                last[".".join(parts[:i])] = node
        names, seen = [], set()
        for node in nodes:
            for module in [m for m, n in last.items() if n == node and m not in seen]:
                names.append((module, node))
                seen.add(module)
            if node not in seen:
                names.append((node, node))
                seen.add(node)
        cache["names"] = names
    return cache["names"]


def _table(net: nn.Module, input_shape: Shape, device) -> list[tuple[str, int, bool]]:
    """(name, n_j, top-level submodule?) of every usable name whose output is a batch of tensors."""
    names = _usable_names(net)
    nodes = list(dict.fromkeys(node for _, node in names))
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            outputs = _feature_extractor(net, nodes)(torch.zeros((1, *input_shape), device=device))
    finally:
        net.train(was_training)
    top = {name for name, _ in net.named_children()}
    table = []
    for name, node in names:
        value = outputs.get(node)
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == 1:
            table.append((name, int(value[0].numel()), name in top))
    return table


def tap_table(spec: Mapping[str, Any], input_shape: Shape, num_classes: int) -> list[tuple[str, int, bool]]:
    """(name, n_j, top-level?) for every usable layer of a loaded spec, in network order.

    Widths do not depend on the weights: the network is built without them on PyTorch's meta device
    (no memory, no arithmetic), or on the CPU when its code does not run there. Fails in one line
    when the network cannot take the dataset's inputs or has another number of outputs."""
    try:
        table, outputs = _without_weights(spec, input_shape, num_classes, lambda net, device: (
            _table(net, input_shape, device), _outputs(net, input_shape, device)))
    except ModelLoadError:
        raise
    except Exception as err:
        if isinstance(err, torch.fx.proxy.TraceError):
            raise _untraceable(describe(spec), err) from None
        hint = ("; small_inputs: true adapts an ImageNet architecture's stem to the dataset's channels and size"
                if spec["source"] == "torchvision" and not spec.get("small_inputs") else "")
        raise ModelLoadError(f"{describe(spec)} cannot take inputs of shape {tuple(input_shape)}: {first_line(err)}{hint}") from None
    if not table:
        raise ModelLoadError(f"{describe(spec)} has no layer whose output is a tensor")
    if outputs != num_classes:
        raise ModelLoadError(f"{describe(spec)} outputs {outputs} values, but the dataset has {num_classes} classes")
    return table


def _without_weights(spec: Mapping[str, Any], input_shape: Shape, num_classes: int, measure):
    """measure(net, device) of a spec's network built without its weights: on PyTorch's meta
    device (no memory, no arithmetic), or on the CPU with random weights when its code does not
    run there (the CPU's errors propagate)."""
    try:
        return measure(network(spec, input_shape, num_classes, weights=False, device="meta"), "meta")
    except ModelLoadError:
        raise
    except Exception:
        return measure(network(spec, input_shape, num_classes, weights=False), "cpu")


def _outputs(net: nn.Module, input_shape: Shape, device) -> int:
    """The number of values the network outputs per example (its logits)."""
    with torch.no_grad():
        return int(net.eval()(torch.zeros((1, *input_shape), device=device))[0].numel())


# --- weight layers in execution order (paper 003's split) -------------------------------------------

WEIGHT_LAYERS = (nn.Conv2d, nn.Linear)


def execution_order(net: nn.Module, input_shape: Shape, device) -> list[str]:
    """The names of `net`'s submodules (not `net` itself) in the order one forward pass of a zero
    input first calls them (eval mode, no gradients; the network is left in its mode)."""
    order: dict[str, None] = {}
    handles = [module.register_forward_pre_hook(lambda m, args, name=name: order.setdefault(name))
               for name, module in net.named_modules() if name]
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            net(torch.zeros((1, *input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return list(order)


def weight_layers(net: nn.Module, input_shape: Shape, device, order: list[str] | None = None) -> list[str]:
    """Its conv and linear modules in execution order (`order`, if already known): paper 003's
    "trainable layers", which its reference code counts from the output to make f_b."""
    order = execution_order(net, input_shape, device) if order is None else order
    return [name for name in order if isinstance(net.get_submodule(name), WEIGHT_LAYERS)]


def spec_weight_layers(spec: Mapping[str, Any], input_shape: Shape, num_classes: int) -> list[str]:
    """weight_layers of a spec's network, built without its weights."""
    return _without_weights(spec, input_shape, num_classes, lambda net, device: weight_layers(net, input_shape, device))
