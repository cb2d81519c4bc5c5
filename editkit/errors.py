"""User errors: a mistake the user can fix (a bad setting, a missing file, an unknown name).

Commands print them as one line, ``error: <message>``, and exit with code 2 (:mod:`editkit.cli_app`); every other
exception is a bug and keeps its traceback.
"""
from __future__ import annotations

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A one-line message for the user; no traceback is shown."""


class ConfigError(UserError, ValueError):
    """A bad configuration value or key (also a ValueError, which is what it is)."""


class UnknownName(UserError, KeyError, ValueError):
    """A name that no registry entry has (a failed lookup of a bad setting: KeyError and ValueError both)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class CheckpointError(UserError, ValueError):
    """A training checkpoint that cannot be resumed (any part of it: manifest, LoRA, optimizer, RNG, trainer state).

    The message is one line: the checkpoint, the file and what is wrong with it, and the newest valid checkpoint to
    pass to ``--resume`` instead (or that there is none)."""


class MissingCheckpoint(CheckpointError, FileNotFoundError):
    """``--resume`` names a directory that is not a complete checkpoint (also a FileNotFoundError)."""


class OutputRefused(UserError, FileExistsError):
    """An output path that exists and is not a previous output of the same stage (a user's file or folder): it is
    never moved or replaced."""
