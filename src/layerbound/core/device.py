"""Which device a job runs on: CUDA when present (`auto`), or what the config asks for.

`device: cuda` on a node where PyTorch sees no GPU fails at once (DeviceUnavailable), naming why.
`auto` never fails, but when the scheduler gave the job a GPU (SLURM_JOB_GPUS and friends) and
PyTorch cannot use it (a CPU-only build, a driver problem), it says so loudly: the job would
otherwise run on the CPU, correctly but many times slower, without a word.
"""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from .errors import LayerboundError

# Variables through which SLURM (and CUDA) tell a job which GPUs it was given.
GPU_ALLOCATION_VARIABLES = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES")


class DeviceUnavailable(LayerboundError, RuntimeError):
    """The requested device cannot be used on this machine."""


def allocated_gpus() -> dict[str, str]:
    """The scheduler's GPU allocation of this job, as the variables that announce it (empty: none)."""
    found = {name: os.environ[name] for name in GPU_ALLOCATION_VARIABLES if os.environ.get(name, "").strip()}
    if found.get("CUDA_VISIBLE_DEVICES", "").strip() in ("-1", "NoDevFiles"):
        found.pop("CUDA_VISIBLE_DEVICES")
    return found


def nvidia_driver_loads() -> bool:
    """Whether the NVIDIA driver's CUDA library (libcuda.so.1, what a CUDA build of PyTorch needs on
    the node besides the GPU itself) can be loaded here."""
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def _why_no_cuda() -> str:
    """What is missing for CUDA, and what to do: a CUDA build of PyTorch, the node's driver, or a GPU."""
    if torch.version.cuda is None:
        return (f"this PyTorch ({torch.__version__}) is a CPU-only build; install a CUDA build in the job's "
                "environment (docs/cluster.md)")
    build = f"PyTorch {torch.__version__} is a CUDA {torch.version.cuda} build"
    if not nvidia_driver_loads():
        return f"{build}, but this node has no NVIDIA driver (libcuda.so.1 does not load); ask the admins"
    return (f"{build} and the NVIDIA driver loads, but it shows no usable GPU (check `nvidia-smi` on the node, "
            f"and that its driver supports CUDA {torch.version.cuda})")


def select(requested: str | None = "auto") -> torch.device:
    """The device for `requested` (auto, cpu, cuda, cuda:1, mps); None: $LAYERBOUND_DEVICE, else auto."""
    requested = requested or os.environ.get("LAYERBOUND_DEVICE") or "auto"
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        gpus = allocated_gpus()
        if gpus:
            given = ", ".join(f"{k}={v}" for k, v in gpus.items())
            print(f"WARNING: this job was given a GPU ({given}) and runs on the CPU: {_why_no_cuda()}.",
                  file=sys.stderr, flush=True)
        return torch.device("cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise DeviceUnavailable(f"device {requested!r} is not a device name (auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailable(f"device {requested!r} was requested (config `device` or LAYERBOUND_DEVICE), "
                                    f"but {_why_no_cuda()}; `device: auto` falls back to the CPU instead")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"device {requested!r} was requested, but only {torch.cuda.device_count()} "
                                    "GPU(s) are visible")
    return device


def describe(device: torch.device) -> str:
    """One line naming the device a job runs on (for its log)."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return f"device: {device} ({props.name}, {props.total_memory / 2**30:.0f} GiB)"
    return f"device: {device} ({torch.get_num_threads()} threads)"
