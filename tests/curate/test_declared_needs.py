"""Steps and filters declare the record fields they read: an input without one fails at the stage's start."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from editkit import schema, store
from editkit.errors import ConfigError
from editkit.needs import Needs


def _shard(directory, columns: dict):
    """One record shard holding only ``columns`` (a hand-made or older input)."""
    directory.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), directory / f"{store.shard_name(0)}.parquet")
    return directory


def test_a_step_declaring_a_field_the_input_lacks_fails_at_stage_start(tmp_path):
    from editkit.pipeline import Deferred, run_stage

    called = []

    class NeedsMask:
        needs = Needs(("id", "mask"))

        def __call__(self, records, images):
            called.append(len(records))
            return records

    records = _shard(tmp_path / "in", {"id": ["a", "b"], "status": ["ok", "ok"]})
    with pytest.raises(ConfigError) as error:
        run_stage("demo", records, tmp_path / "out", Deferred(NeedsMask), progress=False)
    assert "demo: step NeedsMask needs field 'mask'" in str(error.value) and "\n" not in str(error.value)
    assert not called and not (tmp_path / "out").exists()


def test_the_score_step_declares_what_it_reads():
    from curate.stages.score import ScoreStep

    assert {"id", "status", "mask", "scores", "has_edited"} <= set(ScoreStep.needs.fields)
    assert set(ScoreStep.needs.fields) <= {f.name for f in schema.RECORD_SCHEMA}


def test_a_filter_reading_a_field_the_input_lacks_fails_at_select_start(tmp_path):
    from curate.stages import select as select_stage

    records = _shard(tmp_path / "in", {"id": ["a"], "status": ["ok"], "edit_type": ["color_alter"],
                                       "scope": ["local"]})
    with pytest.raises(ConfigError) as error:
        select_stage.run(select_stage.SelectParams(target_size=1), records, tmp_path / "out", tmp_path / "rejects")
    message = str(error.value)
    assert message.startswith("filter 'mask_area_min' needs field 'scores'") and "\n" not in message
    assert not (tmp_path / "out").exists()


def test_filters_declare_the_fields_they_read():
    from curate.scoring.filters import FILTERS

    assert FILTERS["bg_psnr_min"].needs.fields == ("scores",)
    assert set(FILTERS["mask_area_min"].needs.fields) == {"scores", "edit_type", "scope"}
