"""Files on disk: atomic writes, digests, and the HDF5 columns-and-attributes format of shards.

Every output is written through a temporary file in the same folder and then renamed, so a reader
(or a resumed workflow) never sees half a file. A write that fails (a full disk, a quota, no
permission, an I/O error) leaves no file behind and raises WriteError, one line naming the file.
torch.save and h5py report a full disk as RuntimeError, not OSError: they serialize in memory
(`atomic_write_buffered`) and only the final bytes go to disk.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import WriteError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp)` on a temporary path beside `path`, then rename it to `path`; an OSError on
    the way becomes WriteError naming `path`, with no file left (neither `path` nor the temporary)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # A writer killed mid-write (SIGKILL, a node lost) leaves its temporary file behind: the next
        # writer of the same path removes it (one job writes a path at a time).
        for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp*"):
            stale.unlink(missing_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise WriteError(f"cannot write {path}: {reason}; nothing was written") from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_buffered(path: str | Path, write: Callable[[io.BytesIO], None]) -> None:
    """atomic_write for writers that take a file object (torch.save, h5py): serialized in memory
    first, so a full disk shows up as the OSError of writing the bytes."""
    buffer = io.BytesIO()
    write(buffer)
    data = buffer.getvalue()
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_text(path: str | Path, text: str) -> None:
    """A text file (CSV, JSON, HTML), written atomically."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_csv(path: str | Path, table: Any, float_format: str) -> None:
    """A pandas table as CSV without its index, written atomically."""
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, float_format=float_format))


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

    def write_to(buffer: io.BytesIO) -> None:
        with h5py.File(buffer, "w") as h5:
            for name, values in columns.items():
                h5.create_dataset(name, data=values, track_times=False)
            h5.attrs.update(attrs)
    atomic_write_buffered(path, write_to)


def plain(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (str, int, float, list)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value
