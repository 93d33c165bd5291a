"""The expected failures of layerbound: each says in one line what is wrong and where.

The CLI turns every `LayerboundError` into one line on stderr and exit status 1; anything else is a
bug and keeps its traceback. Each class is also a ValueError (or RuntimeError), so callers that
catch those keep working.
"""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first non-blank line (its class name when it has none), for
    a one-line error that quotes what went wrong underneath."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class LayerboundError(Exception):
    """A failure the user can fix: a bad config key, a missing or foreign file, a mismatch."""


class ConfigError(LayerboundError, ValueError):
    """The configuration is invalid; the message names the key."""


class ShardError(LayerboundError, ValueError):
    """A shard or merged file is missing, malformed, or inconsistent with the others; names the file."""


class CheckpointMismatch(LayerboundError, ValueError):
    """A checkpoint does not hold the model the configuration asks for."""


class DatasetUnavailable(LayerboundError, RuntimeError):
    """A dataset's files are missing and downloading is not allowed (or failed)."""


class ModelLoadError(LayerboundError, ValueError):
    """A loaded model cannot be built: an unknown architecture, a missing optional package or weights
    file, weights that do not match the architecture; names the model's key or the file."""


class WriteError(LayerboundError, OSError):
    """An output could not be written (a full disk, a quota, no permission); names the file. Nothing
    of it is left on disk."""


class UnreadableFile(LayerboundError, ValueError):
    """An input file is truncated, corrupt, or not the kind of file expected; names the file."""


class TrainingDiverged(LayerboundError, ValueError):
    """Training reached a loss or weights that are not finite (a learning rate too large, say)."""
