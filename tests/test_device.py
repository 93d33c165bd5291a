"""Device selection and the GPU memory plan (the arithmetic; no GPU on the test machines)."""

import pytest
import torch

from layerbound.core import device
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
    assert err.startswith("WARNING: this job was given a GPU (SLURM_JOB_GPUS=0) and runs on the CPU")


@pytest.mark.parametrize("cuda_build,driver,missing", [
    (None, False, "is a CPU-only build; install a CUDA build"),
    ("13.0", False, "is a CUDA 13.0 build, but this node has no NVIDIA driver"),
    ("13.0", True, "the NVIDIA driver loads, but it shows no usable GPU"),
])
def test_the_warning_names_what_is_missing_not_what_is_there(no_cuda, monkeypatch, capsys, cuda_build, driver,
                                                             missing):
    # A CUDA build on a node without the driver was told to install a CUDA build (issue 26).
    monkeypatch.setattr(torch.version, "cuda", cuda_build)
    monkeypatch.setattr(device, "nvidia_driver_loads", lambda: driver)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert device.select("auto") == torch.device("cpu")
    err = capsys.readouterr().err
    assert missing in err
    assert ("install a CUDA build" in err) == (cuda_build is None)


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


@pytest.mark.parametrize("step", ["merit", "decay"])
def test_the_gpu_memory_probe_runs_the_search_step_and_batches_by_its_answer(monkeypatch, step):
    """The CUDA branch of the collision search (tested here on the CPU with the GPU's settings):
    it probes one step of the configured step control on a few pairs, then searches in batches of
    the size the memory planner returns, and the result equals one unbatched search."""
    from layerbound.collide import jacobian

    probed = []

    def fake_gpu_batch_size(probe, num_pairs, requested, device, log):
        result = probe(3)
        probed.append((len(result.distance), int(result.iterations.max())))
        return 2

    monkeypatch.setattr(jacobian, "_plans_gpu_memory", lambda device: True)
    monkeypatch.setattr(jacobian.memory, "gpu_batch_size", fake_gpu_batch_size)
    torch.manual_seed(0)
    f = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 6), torch.nn.ReLU(), torch.nn.Linear(6, 4)).double().eval()
    x, x_prime = torch.rand(5, 12, dtype=torch.float64), torch.rand(5, 12, dtype=torch.float64)
    A = torch.randn(2, 4, dtype=torch.float64)
    batched = jacobian.search(f, A, x, x_prime, step=step, max_iter=6, box=(0.0, 1.0), rows_per_pass=2)
    monkeypatch.setattr(jacobian, "_plans_gpu_memory", lambda device: False)
    whole = jacobian.search(f, A, x, x_prime, step=step, max_iter=6, box=(0.0, 1.0), rows_per_pass=2)
    assert probed == [(3, 2)]   # two steps (Jacobians at the midpoints, then at both points) on 3 pairs
    assert torch.allclose(batched.distance, whole.distance, rtol=1e-12)
