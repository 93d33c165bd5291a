"""What produced an output: the versions and compute settings recorded in every metrics sidecar."""

from __future__ import annotations

import platform

import torch

from .. import __version__


def versions() -> dict[str, str]:
    """layerbound's, torch's and Python's versions, as the sidecars of checkpoints, attacks and
    paper 003's runs record them."""
    return {"layerbound": __version__, "torch": torch.__version__, "python": platform.python_version()}


def compute() -> dict[str, int | str]:
    """The CPU settings a result's last digits depend on, as the same sidecars record them: the
    intra-op thread count (CPU kernels sum in an order that depends on it, so training with 1 and
    with 2 threads gives other weights) and the CPU kernel family PyTorch uses (AVX512, AVX2 or
    DEFAULT; `ATEN_CPU_CAPABILITY` chooses it)."""
    return {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}
