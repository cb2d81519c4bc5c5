"""The one-line message a bad config file is refused with."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from editkit.errors import ConfigError


def config_error(path: Path, text: str, load: Callable[[Path], object]) -> str:
    """Writes ``text`` to ``path`` and loads it with ``load``: the :class:`ConfigError`'s message (fails the test when
    loading succeeds)."""
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    return str(info.value)
