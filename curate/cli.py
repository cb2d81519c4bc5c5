"""`editkit curate ...`: one sub-command per data stage; DVC stages call these."""
from __future__ import annotations

import importlib

from editkit.cli_app import command_group

app = command_group(help="Curate edit data: ingest -> rewrite -> masks -> score -> select -> export.")

# Stage modules keep heavy imports (torch, transformers) inside functions, so `--help` stays fast.
STAGES = ("fingerprint", "ingest", "rewrite", "masks", "score", "select", "export")
for _name in STAGES:
    _module = importlib.import_module(f"curate.stages.{_name}")
    app.command(name=_name)(_module.main)
