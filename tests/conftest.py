"""Fixtures shared by the test modules (test_collide.py, test_shards.py)."""

import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    # Small tensors: OpenMP threads only add synchronization, and on a busy machine their
    # barriers dominate (measured 10x slower with 2 threads under load). A module opts in with
    # `pytestmark = pytest.mark.usefixtures("one_thread")`.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pairs_of(shape: tuple[int, ...], count: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` random pairs (x, x') of the given shape, uniform in [0, 1), reproducible from `seed`."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, *shape, generator=g, dtype=dtype), torch.rand(count, *shape, generator=g, dtype=dtype)


@pytest.fixture(scope="session")
def pairs_of():
    """The random-pairs builder: pairs_of(shape, count, seed, dtype=torch.float64) -> (x, x')."""
    return _pairs_of
