"""One reader interface for every benchmark (benchmarks.reader.BenchmarkReader), one module per benchmark."""
from __future__ import annotations

import sys

import pytest

from benchmarks.build import READERS
from benchmarks.items import BenchItem
from benchmarks.reader import READ_ARGUMENTS, BenchmarkReader, reader_check
from editkit.errors import ConfigError


def test_every_built_in_reader_is_one_module_s_read_and_fits_the_interface():
    assert READ_ARGUMENTS == ("path", "params")
    for name in READERS.names():
        reader = READERS.get(name)  # the registry's check is reader_check
        assert reader_check(reader) is None and isinstance(reader, BenchmarkReader)
        assert reader.__module__ == f"benchmarks.{name}" and reader.__name__ == "read", name


def test_the_compbench_reader_yields_items_with_edit_types(tmp_path):
    from tests.benchmarks.test_compbench import build_compbench

    build_compbench(tmp_path / "release", per_task=1)
    items = list(READERS.get("compbench")(tmp_path / "release", None))
    assert len(items) == 6 and all(isinstance(item, BenchItem) for item, _ in items)
    assert {kind for item, kind in items if item.error is None} == {"add", "remove", "replace"}


def test_a_plugin_reader_is_held_to_the_same_interface(tmp_path, monkeypatch):
    (tmp_path / "my_bench_readers.py").write_text("def read(path, params):\n    yield from ()\n\n"
                                                  "def wrong(path):\n    yield from ()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert list(READERS.get("my_bench_readers:read")(tmp_path, None)) == []
        with pytest.raises(ConfigError, match="benchmark 'my_bench_readers:wrong' must be callable as"):
            READERS.get("my_bench_readers:wrong")
    finally:
        for name in ("read", "wrong"):
            READERS.unregister(f"my_bench_readers:{name}")
        sys.modules.pop("my_bench_readers", None)
