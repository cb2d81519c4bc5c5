"""Versioned prompt files: ``editkit/mllm/prompts/<name>_<version>.txt`` with ``$placeholders`` (string.Template,
so JSON braces in a prompt need no escaping). A prompt's version goes into the cache key of every request built
from it; edit a prompt's meaning -> add a new version file, keep the old one for reproducing past runs.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from string import Template

PROMPT_DIR = Path(__file__).parent / "prompts"


@dataclass(frozen=True)
class Prompt:
    name: str
    version: str
    text: str

    @property
    def tag(self) -> str:
        """``name_version`` plus a short content hash, so an edited file never hits stale cache entries."""
        return f"{self.name}_{self.version}:{hashlib.sha256(self.text.encode()).hexdigest()[:8]}"

    def render(self, **values: str) -> str:
        try:
            return Template(self.text).substitute(values)
        except KeyError as error:
            raise KeyError(f"prompt {self.name}_{self.version} needs a value for ${error.args[0]}") from None


def load_prompt(name: str, version: str, directory: Path = PROMPT_DIR) -> Prompt:
    path = directory / f"{name}_{version}.txt"
    if not path.exists():
        known = sorted(p.stem for p in directory.glob(f"{name}_*.txt"))
        raise FileNotFoundError(f"no prompt {path.name} in {directory}; available: {known}")
    return Prompt(name, version, path.read_text())
