"""A kill injected between the filesystem steps of an atomic commit (counted, not timed)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from editkit import atomic


class Killed(BaseException):
    """Stands for SIGKILL: nothing catches it, and the commit stops exactly where it was."""


class KillAt:
    """Count the filesystem mutations once armed; raise :class:`Killed` instead of performing the ``at``-th.

    Arm it by setting ``armed``, or with ``arm_at_commit`` from ``atomic._commit`` on (the outputs themselves are
    complete by then).
    """

    def __init__(self, monkeypatch, at: int | None = None, arm_at_commit: bool = False):
        self.at, self.calls, self.armed = at, 0, False
        for owner, name in ((Path, "rename"), (Path, "unlink"), (os, "replace"), (shutil, "rmtree")):
            monkeypatch.setattr(owner, name, self._wrap(getattr(owner, name)))
        if arm_at_commit:
            real_commit = atomic._commit

            def commit(moves):
                self.armed = True
                return real_commit(moves)

            monkeypatch.setattr(atomic, "_commit", commit)

    def _wrap(self, real):
        def mutation(*args, **kwargs):
            if self.armed:
                if self.calls == self.at:
                    raise Killed()
                self.calls += 1
            return real(*args, **kwargs)

        return mutation
