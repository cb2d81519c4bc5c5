"""The prompt store: every prompt the system sends is a file ``editkit/mllm/prompts/<name>_<version>.txt`` with
``$placeholders`` (string.Template, so JSON braces in a prompt need no escaping).

Prompts are versioned by content: every request built from a prompt carries its tag (``name_version:<sha8>``) and
its full content hash (``prompt_sha``), and both go into the response cache key, so an edited file can never be
answered from stale cache entries. Change a prompt's meaning -> add a new version file (keep the old one to
reproduce past runs); the hash protects against edits that forget to.
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
    def sha(self) -> str:
        """SHA-256 of the prompt's text: its content version."""
        return hashlib.sha256(self.text.encode()).hexdigest()

    @property
    def tag(self) -> str:
        """``name_version`` plus a short content hash, so an edited file never hits stale cache entries."""
        return f"{self.name}_{self.version}:{self.sha[:8]}"

    def stamp(self) -> dict[str, str]:
        """The :class:`~editkit.mllm.messages.Request` fields that identify this prompt (cache key, provenance)."""
        return {"prompt_version": self.tag, "prompt_sha": self.sha}

    def render(self, **values: str) -> str:
        try:
            return Template(self.text).substitute(values)
        except KeyError as error:
            raise KeyError(f"prompt {self.name}_{self.version} needs a value for ${error.args[0]}") from None


def load_prompt(name: str, version: str, directory: Path | str = PROMPT_DIR) -> Prompt:
    directory = Path(directory)
    path = directory / f"{name}_{version}.txt"
    if not path.exists():
        known = sorted(p.stem for p in directory.glob(f"{name}_*.txt"))
        raise FileNotFoundError(f"no prompt {path.name} in {directory}; available: {known}")
    return Prompt(name, version, path.read_text())
