"""Device selection and the GPU memory plan (the arithmetic; no GPU on the test machines)."""

import pytest
import torch

from layerbound import device
from layerbound.collide import memory

GiB = 2 ** 30


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in (*device.GPU_ALLOCATION_VARIABLES, "LAYERBOUND_DEVICE"):
        monkeypatch.delenv(name, raising=False)


def test_cuda_requested_without_a_gpu_fails_at_once_naming_why(no_cuda):
    with pytest.raises(device.DeviceUnavailable, match="'cuda' was requested.*device: auto"):
        device.select("cuda")


def test_auto_on_a_node_that_was_given_a_gpu_says_so_loudly(no_cuda, monkeypatch, capsys):
    assert device.select("auto") == torch.device("cpu")
    assert capsys.readouterr().err == ""                      # no GPU asked for: nothing to say
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    assert device.select("auto") == torch.device("cpu")
    err = capsys.readouterr().err
    assert err.startswith("WARNING: this job was given a GPU (SLURM_JOB_GPUS=0)") and "running on the CPU" in err


def test_environment_is_the_default_and_an_explicit_request_wins(no_cuda, monkeypatch):
    monkeypatch.setenv("LAYERBOUND_DEVICE", "cpu")
    assert device.select(None) == torch.device("cpu")
    with pytest.raises(device.DeviceUnavailable):
        device.select("cuda")


def test_batch_fits_the_card_and_grows_with_it():
    per_pair = 37.5 * 2 ** 20            # e.g. a large CNN with all m Jacobian rows in one pass
    small = memory.planned_batch_size(10_000, 16 * GiB, per_pair)
    large = memory.planned_batch_size(10_000, 80 * GiB, per_pair)
    # The planned pairs never need more than the safety fraction of the free memory...
    assert small * per_pair <= memory.SAFETY * 16 * GiB < (small + 1) * per_pair
    # ... and a card with 5x the memory takes 5x the pairs (to rounding), not the same few.
    assert large == pytest.approx(5 * small, abs=5)
    # Never more than configured, never fewer than one.
    assert memory.planned_batch_size(64, 80 * GiB, per_pair) == 64
    assert memory.planned_batch_size(64, 2 ** 20, per_pair) == 1
    with pytest.raises(ValueError):
        memory.pairs_that_fit(GiB, 0.0)
