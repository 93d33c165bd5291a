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


@pytest.fixture
def tiny_factory(tmp_path, monkeypatch):
    """A user's module on the import path, named for the test (so no other test's import of the same
    name is reused), with `tiny(width=6)`: 784 -> width -> ReLU -> 10. Its factory's `module:function`."""
    name = f"nets_{tmp_path.name}"
    (tmp_path / f"{name}.py").write_text(
        "import torch\n"
        "def tiny(width=6):\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, width), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(width, 10))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}:tiny"


def _pairs_of(shape: tuple[int, ...], count: int, seed: int, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` random pairs (x, x') of the given shape, uniform in [0, 1), reproducible from `seed`."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(count, *shape, generator=g, dtype=dtype), torch.rand(count, *shape, generator=g, dtype=dtype)


@pytest.fixture(scope="session")
def pairs_of():
    """The random-pairs builder: pairs_of(shape, count, seed, dtype=torch.float64) -> (x, x')."""
    return _pairs_of
