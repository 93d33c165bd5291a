"""The f_a / f_b split of paper 003 (Section 3.2) and freezing f_a.

A layerbound network (`models.TappedNet`) is a list of stages, each one weight layer (a conv or a
linear map, with batch norm where the architecture has it) and its activation; stage j outputs
tap j. `split_last(net, k)` makes f_b the last k weight layers (paper 003's "f_b layers", the
reference code's convention) and f_a the stages before; `split_after(net, tap)` cuts after a named
tap. h_j is the output of stage j (post-activation; raw logits for the last), h_a that of f_a.
A loaded network (`loaded.LoadedNet`: torchvision, python) has no stages: its weight layers are its
conv and linear modules in execution order, `split_last` cuts before any of them (paper 003's
reference code's rule, so a ResNet may be cut inside a residual block), f_a owns every module first
run before the cut, and h_j is the output of weight layer j (`module_outputs`, forward hooks).

Freezing f_a (`freeze_f_a`, `train_mode`): its parameters get requires_grad=False and the
optimizer sees only f_b's parameters (so neither gradients nor weight decay touch f_a), and during
training f_a stays in eval mode, so its BatchNorm layers normalize with their stored running
statistics and do not update them. f_a therefore computes the same function in training as at
test time, and its weights and buffers stay bit-identical (`retrain_semirobust` checks this after every
trial). The reference code instead trains f_a's BatchNorm in train mode and restores f_a's weights
and buffers from the robust checkpoint after every optimizer step: its f_a normalizes training
batches with batch statistics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import CheckpointMismatch
from ..models import loaded

WEIGHT_LAYERS = loaded.WEIGHT_LAYERS   # conv and linear: the layers f_b's size counts


# --- the split -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Split:
    """h_0..h_{n-1} = `taps`, f_a computes h_0..h_{a-1}, f_b the rest.

    `f_a_modules` / `f_b_modules`: the names (in the network) of the modules each part owns, so
    freezing, copying f_b and the checks work on state_dict keys by module. A registry network's
    parts are its stages; a loaded network's are the modules that run before / from f_b's first
    weight layer. `hooked`: h_j are outputs of the network's modules of those names (`net.<tap>`,
    loaded networks), not registry taps.
    """

    taps: tuple[str, ...]
    a: int
    f_a_modules: tuple[str, ...] = ()
    f_b_modules: tuple[str, ...] = ()
    hooked: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.a < len(self.taps):
            raise ValueError(f"f_a and f_b need at least one layer each: cannot split {len(self.taps)} "
                             f"layers after {self.a}")

    @property
    def f_a_taps(self) -> tuple[str, ...]:
        return self.taps[:self.a]

    @property
    def f_b_taps(self) -> tuple[str, ...]:
        return self.taps[self.a:]

    def layer_pairs(self) -> list[tuple[str, str]]:
        """(h_{j-1}, h_j) for j = a+1..n: from f_a's output through f_b's layers to the logits."""
        return [(self.taps[j - 1], self.taps[j]) for j in range(self.a, len(self.taps))]


def _weight_layers(stage: nn.Module) -> int:
    return sum(isinstance(m, WEIGHT_LAYERS) for m in stage.modules())


def _is_loaded(net: nn.Module) -> bool:
    return not hasattr(net, "pre")


def _stage_split(net: nn.Module, a: int) -> Split:
    """A registry network cut before stage a: each part owns its stages and everything in them."""
    def owned(stages: range) -> tuple[str, ...]:
        return tuple(name for name, _ in net.named_modules()
                     if name.count(".") >= 1 and name.split(".")[0] in ("pre", "post")
                     and int(name.split(".")[1]) in stages)
    return Split(tuple(net.taps), a, owned(range(a)), owned(range(a, len(net.taps))))


def loaded_weight_layers(net: nn.Module) -> list[str]:
    """A loaded network's conv and linear modules in execution order (names inside `net.net`)."""
    return loaded.weight_layers(net.net, net.input_shape, next(net.parameters()).device)


def _loaded_split(net: nn.Module, k: int) -> Split:
    """A loaded network cut before its k-th weight layer from the output (the reference code's
    rule: any conv or linear module, in execution order). f_a owns every module first run before
    that layer (for a ResNet cut inside a block: the block's earlier convolutions and their
    BatchNorm), f_b every module first run from it on; modules that never run belong to neither."""
    device = next(net.parameters()).device
    order = loaded.execution_order(net.net, net.input_shape, device)
    weights = loaded.weight_layers(net.net, net.input_shape, device, order)
    if not 1 <= k < len(weights):
        raise ValueError(f"{net.arch} has {len(weights)} weight layers (conv and linear): f_b cannot be its last {k} "
                         f"(f_a keeps one); choose k in 1..{len(weights) - 1}")
    cut = order.index(weights[len(weights) - k])
    return Split(tuple(weights), len(weights) - k, tuple(f"net.{m}" for m in order[:cut]),
                 tuple(f"net.{m}" for m in order[cut:]), hooked=True)


def split_last(net: nn.Module, k: int) -> Split:
    """f_b = the last k weight layers (conv or linear; batch norm does not count)."""
    if _is_loaded(net):
        return _loaded_split(net, k)
    counts = [_weight_layers(stage) for stage in net.pre]
    ends = {sum(counts[a:]): a for a in range(1, len(counts))}   # k -> a: stages a.. hold k weight layers
    if k not in ends:
        raise ValueError(f"{net.arch} has {sum(counts)} weight layers in stages of {counts}: f_b cannot be "
                         f"its last {k} (f_a and f_b need one stage each); choose k in {sorted(ends)}")
    return _stage_split(net, ends[k])


def split_after(net: nn.Module, tap: str) -> Split:
    """f_a = the network up to and including `tap`, f_b = the rest (for a loaded network `tap` is
    one of its weight layers)."""
    taps = tuple(loaded_weight_layers(net)) if _is_loaded(net) else tuple(net.taps)
    if tap not in taps[:-1]:
        raise ValueError(f"cannot split {net.arch} after {tap!r}; choose one of {', '.join(taps[:-1])}")
    if _is_loaded(net):
        return _loaded_split(net, len(taps) - 1 - taps.index(tap))
    return _stage_split(net, taps.index(tap) + 1)


def _modules(net: nn.Module, names) -> list[nn.Module]:
    return [net.get_submodule(name) for name in names]


def f_a_modules(net: nn.Module, split: Split) -> list[nn.Module]:
    return _modules(net, split.f_a_modules)


def f_b_modules(net: nn.Module, split: Split) -> list[nn.Module]:
    return _modules(net, split.f_b_modules)


def f_b_parameters(net: nn.Module, split: Split) -> list[nn.Parameter]:
    return [p for m in f_b_modules(net, split) for p in m.parameters(recurse=False)]


def _owned(key: str, modules: set[str]) -> bool:
    """Whether state_dict entry `key` belongs to one of `modules` (its module is the key's prefix)."""
    return key.rpartition(".")[0] in modules


def f_a_state(net: nn.Module, split: Split) -> dict[str, torch.Tensor]:
    """A copy of f_a's weights and buffers (BatchNorm running statistics and batch counts)."""
    owned = set(split.f_a_modules)
    return {key: value.detach().clone() for key, value in net.state_dict().items() if _owned(key, owned)}


def f_a_changes(net: nn.Module, split: Split, reference: dict[str, torch.Tensor]) -> list[str]:
    """The entries of f_a's state that differ from `reference` (bit for bit); empty if none."""
    state = f_a_state(net, split)
    return sorted(k for k in set(state) | set(reference)
                  if k not in state or k not in reference or not torch.equal(state[k], reference[k]))


def _network_of(net: nn.Module) -> tuple:
    """What must agree for f_b to move between two networks: the architecture and, for a loaded
    one, its source spec except the weights file."""
    spec = {k: v for k, v in getattr(net, "spec", {}).items() if k != "weights"}
    return net.arch, json.dumps(spec, sort_keys=True)


def load_f_b(net: nn.Module, source: nn.Module, split: Split) -> None:
    """Copy f_b's weights and buffers from `source` (the same architecture) into `net`."""
    if _network_of(source) != _network_of(net) or (not split.hooked and tuple(source.taps) != split.taps):
        raise CheckpointMismatch(f"cannot take f_b from a {source.arch} network into a {net.arch} one: "
                                 f"{_network_of(source)[1]} vs {_network_of(net)[1]}, taps "
                                 f"{list(getattr(source, 'taps', []))} vs {list(split.taps)}")
    own = net.state_dict()
    owned = set(split.f_b_modules)
    for key, value in source.state_dict().items():
        if _owned(key, owned):
            if own[key].shape != value.shape:
                raise CheckpointMismatch(f"f_b entry {key} has shape {tuple(value.shape)} in the regular "
                                         f"network, {tuple(own[key].shape)} in the robust one")
            own[key].copy_(value)


def freeze_f_a(net: nn.Module, split: Split) -> None:
    """No gradients for f_a's parameters (the optimizer is given f_b's alone)."""
    for module in f_a_modules(net, split):
        for p in module.parameters(recurse=False):
            p.requires_grad_(False)


def train_mode(net: nn.Module, split: Split) -> None:
    """f_b in training mode, f_a in eval mode (its BatchNorm uses and keeps its running statistics,
    its dropout is off). Each f_a module is switched alone: a container that also holds f_b modules
    (a ResNet block cut inside) is not in f_a."""
    net.train()
    for module in f_a_modules(net, split):
        module.training = False
