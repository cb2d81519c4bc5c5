"""Algorithms: one trainer class per objective, in :data:`TRAINERS` keyed by ``objective.name`` (declared in
:mod:`train.objectives`), on the runtime every trainer shares (:mod:`train.runtime`)."""
from __future__ import annotations

from train.objectives import TRAINERS

__all__ = ["TRAINERS"]
