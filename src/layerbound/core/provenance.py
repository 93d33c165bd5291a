"""What produced an output: the versions recorded in every metrics sidecar."""

from __future__ import annotations

import platform

import torch

from .. import __version__


def versions() -> dict[str, str]:
    """layerbound's, torch's and Python's versions, as the sidecars of checkpoints, attacks and
    paper 003's runs record them."""
    return {"layerbound": __version__, "torch": torch.__version__, "python": platform.python_version()}
