"""The manual's performance tables are generated from perf/results/*.json (perf/tables.py), never typed by hand."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from perf import tables  # noqa: E402

# results without a provenance block: a prediction computed from configs (not a measurement), and a script that
# does not write one yet (its table then says that no date or commit was recorded)
NO_PROVENANCE = {"memory_plan", "ingest_stream"}


def test_every_table_matches_its_json():
    stale = tables.stale()
    assert not stale, ("generated tables differ from perf/results (run `.venv/bin/python -m perf.tables --write`): "
                       + ", ".join(str(p.relative_to(ROOT)) for p in stale))


def test_every_renderer_has_a_table_in_the_docs():
    used = {name for path in tables.DOCS for name in tables.blocks(path.read_text(encoding="utf-8"))}
    assert used == set(tables.TABLES), f"renderers without a table: {set(tables.TABLES) - used}; " \
                                       f"tables without a renderer: {used - set(tables.TABLES)}"


def test_a_number_typed_into_a_table_is_caught():
    page = ROOT / "docs" / "performance.md"
    text = page.read_text(encoding="utf-8")
    match = next(tables.BLOCK.finditer(text))
    body = match.group("body")
    number = re.search(r"\| (\d+(?:\.\d+)?) ", body)
    edited = text[:match.start("body")] + body.replace(number.group(0), f"| {number.group(1)}9 ", 1) + \
        text[match.end("body"):]
    assert tables.render(edited) != edited
    assert tables.render(text) == text


def test_results_say_where_when_and_at_which_commit():
    for path in sorted(tables.RESULTS.glob("*.json")):
        if path.stem in NO_PROVENANCE:
            continue
        provenance = json.loads(path.read_text()).get("provenance")
        assert provenance, f"{path.name} has no provenance"
        assert provenance["hardware"] and provenance["commit"] and re.match(r"\d{4}-\d\d-\d\d$", provenance["date"])
        assert provenance["smoke"] is False, f"{path.name} holds a smoke run's numbers"
