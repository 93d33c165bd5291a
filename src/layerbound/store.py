"""Files on disk: atomic writes, digests, and the HDF5 columns-and-attributes format of shards.

Every output is written through a temporary file in the same folder and then renamed, so a reader
(or a resumed workflow) never sees half a file.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    # A writer killed mid-write (SIGKILL, a node lost) leaves its temporary file behind: the next
    # writer of the same path removes it (one job writes a path at a time).
    for stale in path.parent.glob(f".{path.name}.tmp*"):
        stale.unlink(missing_ok=True)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_digest(path: str | Path) -> str:
    """sha256 of a file, recorded in downstream outputs so a stale result is detectable."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_h5(path: str | Path, columns: dict[str, np.ndarray], attrs: dict[str, Any]) -> None:
    """Datasets (a name with a slash goes into a group) and attributes, written atomically.

    No timestamps are stored, so the same inputs give byte-identical files.
    """
    import h5py

    def write_to(tmp: Path) -> None:
        with h5py.File(tmp, "w") as h5:
            for name, values in columns.items():
                h5.create_dataset(name, data=values, track_times=False)
            h5.attrs.update(attrs)
    atomic_write(path, write_to)


def plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (str, int, float, list)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
