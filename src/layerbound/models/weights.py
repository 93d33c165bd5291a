"""A loaded model's weights file: read with torch.load(weights_only=True), so a crafted file is never
executed, and checked against the network, naming the keys and shapes that differ."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..core.errors import ModelLoadError


def load_tensors(path: str | Path, map_location: str | torch.device = "cpu"):
    """torch.load(weights_only=True): a crafted pickle is refused, never executed. Torch's warning
    about a pickle protocol it was not written with is silenced: such a file is refused (or read) in
    the caller's own one line."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location=map_location, weights_only=True)


def read_weights(path: str | Path, net: nn.Module, what: str) -> dict[str, torch.Tensor]:
    """The state_dict in `path` (a state_dict, or a dict holding one under "state_dict"), checked
    against `net`: a mismatch fails in one line naming the file and the differing keys and shapes."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist")
    try:
        state = load_tensors(path)
    except Exception as err:   # a pickle of arbitrary objects, a truncated file: never executed
        raise ModelLoadError(f"weights file {path} cannot be read with torch.load(weights_only=True) "
                             f"({type(err).__name__}); save model.state_dict() with torch.save") from None
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelLoadError(f"weights file {path} does not hold a state_dict (a mapping of names to tensors)")
    mismatch = weights_mismatch(state, net.state_dict())
    if mismatch:
        raise ModelLoadError(f"weights file {path} does not match {what}: {mismatch}")
    bad = non_finite(state)
    if bad:
        raise ModelLoadError(f"weights file {path} holds weights that are not finite ({bad})")
    return dict(state)


def weights_mismatch(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor], shown: int = 4) -> str:
    """'' when `state` has exactly the keys and shapes of `expected`, else what differs (a few of each)."""
    def listed(keys: list[str]) -> str:
        more = f" and {len(keys) - shown} more" if len(keys) > shown else ""
        return ", ".join(keys[:shown]) + more

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the model"
              for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    parts = []
    if missing:
        parts.append(f"missing keys {listed(missing)}")
    if unexpected:
        parts.append(f"unexpected keys {listed(unexpected)}")
    if shapes:
        parts.append(f"shapes differ for {listed(shapes)}")
    return "; ".join(parts)


def non_finite(state_dict: Mapping[str, torch.Tensor]) -> str:
    """'' when every floating tensor of `state_dict` is finite, else which is not (a few names)."""
    bad = [k for k, v in state_dict.items()
           if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    return "" if not bad else "nan or inf in " + ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
