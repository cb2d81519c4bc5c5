"""Property tests of the sources' readers: any pairs line (folder source) and any hub row (hf source) becomes a
record or a recorded reject reason, never a traceback. Derandomized, with a small example budget (fast)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from curate.sources.folder import FolderParams, FolderSource
from curate.sources.hf import HFParams, HFSource
from curate.stages.ingest import IngestParams, to_record
from editkit import schema

FUZZ = settings(derandomize=True, max_examples=40, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
POLICY = IngestParams().policy()


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    folder = base / "pairs"
    folder.mkdir()
    (folder / "s.png").write_bytes(png(0))
    (folder / "e.png").write_bytes(png(1))
    (folder / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], duration=50)
    (base / "secret.png").write_bytes(png(2))
    (folder / "link.png").symlink_to(base / "secret.png")
    (folder / "sub").mkdir()
    return folder


PATHS = st.sampled_from(["s.png", "e.png", "junk.png", "anim.gif", "link.png", "sub", "missing.png", "../secret.png",
                         "/etc/passwd", "", "s.png\x00", "/dev/zero"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20), PATHS)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=4), SCALARS, max_size=2))
KEYS = st.one_of(st.sampled_from(["source", "edited", "instruction", "id", "mask", "edit_type"]), st.text(max_size=6))
OBJECTS = st.dictionaries(KEYS, VALUES, max_size=7)
PAIR_LIKE = st.fixed_dictionaries({"source": PATHS, "edited": PATHS, "instruction": st.text(max_size=30)},
                                  optional={"id": SCALARS, "mask": PATHS, "edit_type": SCALARS})
LINES = st.one_of(
    st.binary(max_size=120),
    st.text(max_size=60).map(lambda t: t.encode("utf-8", "surrogatepass")),  # lone surrogates included
    OBJECTS.map(lambda o: json.dumps(o).encode()),
    PAIR_LIKE.map(lambda o: json.dumps(o, ensure_ascii=False).encode("utf-8", "surrogatepass")),
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3), max_leaves=6).map(lambda v: json.dumps(v).encode()),
)


def check_record(pair) -> None:
    record, row = to_record(pair, POLICY)
    if row is None:
        assert record["status"] == schema.STATUS_REJECTED and record["reject_reason"], record
    else:
        assert schema.is_ok(record) and row["source"]
    schema.to_table([record])  # storable


@FUZZ
@given(lines=st.lists(LINES, max_size=6))
def test_any_pairs_lines_give_one_pair_each_with_data_or_a_reason(root, lines):
    content = b"\n".join(lines)
    (root / "pairs.jsonl").write_bytes(content)
    source = FolderSource(FolderParams(path=str(root)))
    pairs = list(source)
    assert len(pairs) == len(source) == sum(1 for line in content.split(b"\n") if line.strip())
    for pair in pairs:
        assert (pair.error and isinstance(pair.error, str)) or (pair.source is not None and pair.edited is not None)
        check_record(pair)


class Rows(list):
    """An in-memory dataset as the hf source reads one: rows (dicts) with column names and features."""

    def __init__(self, rows, columns):
        super().__init__(rows)
        self.column_names = list(columns)
        self.features = {c: None for c in columns}


COLUMNS = ["source_image", "edited_image", "instruction", "id", "mask", "edit_type"]
CELLS = st.one_of(
    SCALARS, st.binary(max_size=40), st.sampled_from([png(3), png(4)]),
    st.fixed_dictionaries({}, optional={"bytes": st.one_of(st.none(), st.binary(max_size=20), st.text(max_size=5),
                                                           st.integers(-5, 1 << 40), st.sampled_from([png(5)])),
                                        "path": st.one_of(st.none(), PATHS, st.integers())}),
    st.lists(st.integers(), max_size=3),
)


@FUZZ
@given(rows=st.lists(st.fixed_dictionaries({c: CELLS for c in COLUMNS}), max_size=5))
def test_any_hub_rows_give_one_pair_each_with_data_or_a_reason(root, rows):
    params = HFParams(path=str(root), id_column="id", mask_column="mask", edit_type_column="edit_type")
    source = HFSource(params, dataset=Rows(rows, COLUMNS))
    pairs = list(source)
    assert len(pairs) == len(rows)
    for pair in pairs:
        assert (pair.error and isinstance(pair.error, str)) or (pair.source is not None and pair.edited is not None)
        assert pair.source != (root.parent / "secret.png").read_bytes()  # containment holds for path cells
        check_record(pair)


@pytest.mark.parametrize("cell", [{"bytes": "0"}, {"bytes": 1 << 40}, {"bytes": [1, 2]}])
def test_a_hub_cell_whose_bytes_are_not_bytes_is_a_reject_reason(root, cell):
    """Found by the property test: ``bytes(<str>)`` raised, ``bytes(<int>)`` would allocate that many zeros."""
    rows = Rows([{"source_image": png(0), "edited_image": cell, "instruction": "x"}],
                ["source_image", "edited_image", "instruction"])
    (pair,) = list(HFSource(HFParams(path=str(root)), dataset=rows))
    assert pair.edited is None and pair.error.startswith("missing edited image: unsupported 'bytes'")
