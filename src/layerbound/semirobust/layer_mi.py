"""The layers' outputs h_j and the dependence between consecutive ones (paper 003, eq. 5):
I_{j,t} = sum_y pi(y) I(h_{j-1}; h_j | y), estimated by mutual_info.py."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core import seeds
from .mutual_info import PAPER003_ESTIMATOR, EdgeOptions, class_conditional_mi
from .split import Split


@torch.no_grad()
def layer_outputs(net: nn.Module, x: torch.Tensor, taps, batch_size: int = 500) -> dict[str, np.ndarray]:
    """h_j = net.features(x, tap) for every tap in `taps`, flattened, from one pass per batch."""
    wanted = set(taps)
    unknown = wanted - set(net.taps)
    if unknown:
        raise KeyError(f"{net.arch} has no tap {sorted(unknown)[0]!r}; taps: {', '.join(net.taps)}")
    last = max(net.taps.index(t) for t in wanted)
    net.eval()
    pieces: dict[str, list[np.ndarray]] = {t: [] for t in wanted}
    for i in range(0, len(x), batch_size):
        h = x[i:i + batch_size]
        for j in range(last + 1):
            h = net.post[j](net.pre[j](h))
            if net.taps[j] in wanted:
                pieces[net.taps[j]].append(h.flatten(1).double().cpu().numpy())
    return {t: np.concatenate(p) for t, p in pieces.items()}


@torch.no_grad()
def module_outputs(net: nn.Module, x: torch.Tensor, names, batch_size: int = 500) -> dict[str, np.ndarray]:
    """The outputs of a loaded network's modules `names` (inside `net.net`; for paper 003 its conv
    and linear layers, as the reference code hooks them), flattened, from one forward pass per batch.
    A module that runs more than once per pass has no single output and fails."""
    wanted = list(dict.fromkeys(names))
    pieces: dict[str, list[np.ndarray]] = {t: [] for t in wanted}
    batch: dict[str, list[torch.Tensor]] = {}

    def keep(name):
        return lambda module, args, output: batch.setdefault(name, []).append(output)
    handles = [net.net.get_submodule(name).register_forward_hook(keep(name)) for name in wanted]
    net.eval()
    try:
        for i in range(0, len(x), batch_size):
            batch.clear()
            net(x[i:i + batch_size])
            for name in wanted:
                if len(batch.get(name, [])) != 1:
                    raise ValueError(f"{net.arch}: module {name} ran {len(batch.get(name, []))} times in one forward pass")
                pieces[name].append(batch[name][0].flatten(1).double().cpu().numpy())
    finally:
        for handle in handles:
            handle.remove()
    return {t: np.concatenate(p) for t, p in pieces.items()}


def layer_mi(net: nn.Module, split: Split, x: torch.Tensor, y: torch.Tensor, estimator: str = PAPER003_ESTIMATOR,
             seed: int = 0, edge_options: EdgeOptions | None = None) -> dict[str, float]:
    """I_j = sum_y pi(y) I(h_{j-1}; h_j | y) (paper 003, eq. 5) in bits, for j = a+1..n.

    Keyed by h_j's tap: the entry for the logits is paper 003's rho_n, the one for f_b's first layer
    rho_{a+1}. `x` are the (adversarially perturbed) inputs, `y` their true labels.
    """
    pairs = split.layer_pairs()
    outputs = (module_outputs if split.hooked else layer_outputs)(net, x, [t for pair in pairs for t in pair])
    labels = y.cpu().numpy()
    return {nxt: class_conditional_mi(outputs[prev], outputs[nxt], labels, estimator,
                                      seed=seeds.derive(f"{seed}/mi/{nxt}"), edge_options=edge_options).value
            for prev, nxt in pairs}
