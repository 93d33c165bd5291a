"""The one seed derivation: a key string -> sha256 -> the first 8 bytes, little-endian.

Every random draw of the workflow (training, pair sampling, projections) is seeded from a key
naming what it is for, so any piece can be recomputed alone on any machine. The key formats are
part of the file formats (shards record their projection seed and merge checks it), so they are
fixed; `bits` is 63 for torch generators (a signed 64-bit seed) and 64 for numpy's.
"""

from __future__ import annotations

import hashlib


def derive(key: str, bits: int = 63) -> int:
    """A `bits`-bit seed from a key string, stable across runs, machines and Python versions."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must lie in 1..64, not {bits}")
    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")
    return value >> (64 - bits)
