"""The user-error family: every error pixscribe raises on purpose, with a message the user can
act on. It imports nothing of pixscribe, so every unit can raise its kinds.

:class:`PixscribeError` is the root and carries a short machine-readable ``kind``. A row keeps
it as ``"kind: message"`` in its ``error`` column (record.py); a command that meets one shows
the message as one line and exits 2, in one place for every command (``cli.py``, the app's
group). Anything else that escapes a command is a bug and is shown as a traceback.

The kinds below also derive from the builtin exception they replaced (``ValueError``,
``RuntimeError``, ``ImportError``), so code that catches those still catches them. Kinds that
joined the family from a builtin keep their class name as ``kind``: an error row that named
them before names them the same way.
"""

from __future__ import annotations


class PixscribeError(Exception):
    """An error with a short machine-readable kind, rendered as ``"kind: message"``."""

    kind = "error"

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        if kind:
            self.kind = kind


class ConfigError(PixscribeError, ValueError):
    """A bad option, flag or configuration file (before anything runs)."""

    kind = "ValueError"


class MethodError(PixscribeError, ValueError):
    """A method that cannot run as built (an unmet need, an unknown stage option)."""

    kind = "MethodError"


class MissingDependency(PixscribeError, ImportError):
    """An optional package is not installed; the message says what to ``pip install``."""

    kind = "dependency"


class BackendUnavailable(PixscribeError, RuntimeError):
    """Raised before a run starts when the model or server cannot be reached."""

    kind = "BackendUnavailable"


class ConfigMismatch(PixscribeError, RuntimeError):
    """An output directory written with another configuration (resume refused)."""

    kind = "ConfigMismatch"


class InputFileError(PixscribeError, ValueError):
    """A file a command reads (references, predictions, a report's output folder) that it cannot use."""

    kind = "ValueError"


class ModelUnavailable(PixscribeError, RuntimeError):
    """A model a command needs (an embedding model, a decoder, a tagger's data) cannot be loaded."""

    kind = "RuntimeError"


__all__ = ["BackendUnavailable", "ConfigError", "ConfigMismatch", "InputFileError", "MethodError",
           "MissingDependency", "ModelUnavailable", "PixscribeError"]
