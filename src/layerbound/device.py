"""Automatic device selection: cuda when present, overridable by config or LAYERBOUND_DEVICE."""

from __future__ import annotations

import os

import torch


def select(requested: str | None = "auto") -> torch.device:
    requested = os.environ.get("LAYERBOUND_DEVICE", requested or "auto")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {requested!r} was requested but CUDA is not available on this machine")
    return device
