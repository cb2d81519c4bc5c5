"""Dataset presets: each published layout ingests with only ``name`` and ``path``, types map, ids stay unique."""
from __future__ import annotations

import json

import numpy as np
import pytest

from curate.sources import presets
from curate.sources.presets import PresetParams, base, open_preset
from curate.stages.ingest import IngestParams, run_ingest
from editkit import rle, schema, store, taxonomy
from tests.support import dataset_layouts as layouts

# preset -> (pairs read, of them ok) for the fixture as built
EXPECTED = {
    "magicbrush": (3, 3), "ultraedit": (3, 3), "omniedit": (8, 8), "instructpix2pix": (3, 3), "hq_edit": (3, 3),
    "anyedit": (8, 8), "imgedit": (7, 6), "gpt_image_edit": (5, 5), "pico_banana": (7, 5), "inter_edit": (4, 4),
    "cocoedit_40k": (3, 3),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Every preset's look-alike, ingested with only name + path."""
    out = {}
    for name, builder in layouts.BUILDERS.items():
        root = builder(tmp_path_factory.mktemp(name) / "dataset")
        target = root.parent / "ingest"
        source = open_preset(PresetParams(name=name, path=str(root)))
        metrics = run_ingest(source, target, IngestParams(source="preset"), progress=False)
        records = [r for _, shard in store.iter_records(target / "records") for r in shard]
        out[name] = (root, metrics, records, target)
    return out


def test_registry_lists_every_preset_without_importing():
    assert set(presets.names()) >= set(layouts.BUILDERS)
    with pytest.raises(ValueError, match=r"ingest.preset.name: unknown preset 'nope'; choose one of: .*magicbrush"):
        presets.get_preset("nope")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_preset_ingests_its_layout(built, name):
    _, metrics, records, target = built[name]
    total, ok = EXPECTED[name]
    assert (metrics["records"], metrics["ok"]) == (total, ok), [r["reject_reason"] for r in records]
    keys = [r["origin_key"] for r in records]
    assert len(set(keys)) == len(keys), keys  # origin_key is unique
    assert all(r["origin"] == f"preset:{name}" for r in records)
    images = store.ImageStore(target / "images")
    for record in filter(schema.is_ok, records):
        assert record["instruction"] and record["instruction"] in record["instruction_variants"]
        assert images.source(record).shape == (layouts.SIZE, layouts.SIZE, 3)
        assert record["edit_type"] is None or record["edit_type"] in taxonomy.EDIT_TYPES


def by_key(records):
    return {r["origin_key"]: r for r in records}


def test_magicbrush_keys_turns_and_painted_masks(built):
    _, _, records, _ = built["magicbrush"]
    assert sorted(by_key(records)) == ["242679/turn1", "242679/turn2", "242680/turn1"]
    for record in records:  # the photo with the region painted white reads as exactly that region
        np.testing.assert_array_equal(rle.decode(record["gt_mask"]), layouts.region())


def test_magicbrush_dev_split_and_single_file(built):
    root = built["magicbrush"][0]
    dev = list(open_preset(PresetParams(name="magicbrush", path=str(root), split="dev")))
    assert len(dev) == 3 and dev[0].origin_key == "242779/turn1"
    single = open_preset(PresetParams(name="magicbrush", path=str(root / "data" / layouts.hub_shard("dev", 0, 1))))
    assert len(single) == 3 and [p.origin_key for p in single] == [p.origin_key for p in dev]
    with pytest.raises(ValueError, match=r"ingest.preset.split: 'test' not found .*choose one of: dev, train"):
        open_preset(PresetParams(name="magicbrush", path=str(root), split="test"))


def test_ultraedit_region_based_masks_and_phrases(tmp_path):
    root = layouts.ultraedit(tmp_path / "region", region_based=True)
    pairs = list(open_preset(PresetParams(name="ultraedit", path=str(root))))
    assert [p.origin_key for p in pairs] == ["1000", "1001", "1002"]
    assert pairs[0].target_phrases == ["box"] and pairs[0].meta["clip_sim_dir"] == 0.5
    np.testing.assert_array_equal(pairs[0].gt_mask, layouts.region())
    free = list(open_preset(PresetParams(name="ultraedit", path=str(layouts.ultraedit(tmp_path / "free")))))
    assert all(p.gt_mask is None for p in free)


def test_omniedit_keeps_every_instruction_and_maps_tasks(built):
    _, metrics, records, _ = built["omniedit"]
    first = by_key(records)["omni_000000"]
    assert first["instruction"] == "Make the box red (0)."
    assert first["instruction_variants"] == ["Make the box red (0).", "Turn the box red, keep the rest (0)."]
    types = {json.loads(r["meta"])["dataset_edit_type"]: r["edit_type"] for r in records}
    assert types == {"addition": "add", "removal": "remove", "swap": "replace", "attribute_modification": "adjust",
                     "background_swap": "background", "environment": "tone", "style": "style",
                     "mystery_task": None}
    unmapped = [r for r in records if r["edit_type"] is None]
    assert len(unmapped) == 1 and base.UNMAPPED_FLAG in unmapped[0]["flags"] and schema.is_ok(unmapped[0])


def test_anyedit_types_visual_input_and_unique_keys(built):
    _, metrics, records, _ = built["anyedit"]
    types = {json.loads(r["meta"])["dataset_edit_type"]: r for r in records}
    assert {k: r["edit_type"] for k, r in types.items()} == {
        "color_alter": "recolor", "background_change": "background", "material_change": "material",
        "action_change": "action", "tone_transfer": "tone", "movement": None, "visual_sketch": None,
        "remove": "remove"}
    assert base.UNMAPPED_FLAG in types["movement"]["flags"] and schema.is_ok(types["movement"])
    assert "visual_input_unused" in types["visual_sketch"]["flags"]
    assert "visual_input_unused" not in types["remove"]["flags"]
    assert metrics["flags"]["visual_input_unused"] == 1


def test_anyedit_table_covers_the_published_names():
    for name, ours in {"color_alter": "recolor", "appearance_alter": "adjust", "textual_change": "text",
                       "counting": "adjust", "background_change": "background", "style_change": "style"}.items():
        assert presets.get_preset("anyedit") and \
            __import__("curate.sources.presets.anyedit", fromlist=["x"]).EDIT_TYPES[base.normalized(name)] == ours


def test_imgedit_lists_of_paths_tasks_and_containment(built):
    _, _, records, _ = built["imgedit"]
    rejected = [r for r in records if not schema.is_ok(r)]
    assert len(rejected) == 1 and "unsafe source path" in rejected[0]["reject_reason"]
    assert "outside the dataset root" in rejected[0]["reject_reason"]
    ok = by_key([r for r in records if schema.is_ok(r)])
    assert ok["results_add_coco_part1/000000/output"]["edit_type"] == "add"
    assert "extra_inputs_unused" in ok["results_add_coco_part1/000000/output"]["flags"]
    assert ok["results_adjust_coco_part1/000200/output"]["edit_type"] == "adjust"


def test_imgedit_task_split_and_single_file(built):
    root = built["imgedit"][0]
    assert len(list(open_preset(PresetParams(name="imgedit", path=str(root), split="adjust")))) == 2
    assert len(list(open_preset(PresetParams(name="imgedit", path=str(root / "Parquet" / "add_part1.parquet"))))) == 2
    with pytest.raises(ValueError, match=r"ingest.preset.split: task 'zoom' .*choose one of: add, adjust, remove"):
        open_preset(PresetParams(name="imgedit", path=str(root), split="zoom"))


def test_gpt_image_edit_pairs_through_annotations(built):
    _, _, records, _ = built["gpt_image_edit"]
    keys = by_key(records)
    rewrite = keys["omniedit_gpt_rewrite/00000000"]
    assert rewrite["instruction"].startswith("Add a red box") and rewrite["edit_type"] == "add"
    assert rewrite["instruction_variants"] == [rewrite["instruction"], "add a red box 0"]
    hq = keys["hqedit_gpt_edit/00000000"]
    assert hq["edit_type"] is None and base.UNMAPPED_FLAG not in hq["flags"]  # "edit" is a folder, not a type
    assert keys["omniedit_gpt_rewrite/llava"]["instruction"] == "add a box (llava style)"


def test_pico_banana_relative_paths_urls_and_types(built):
    root, _, records, _ = built["pico_banana"]
    keys = by_key(records)
    assert keys["images/positive-edit/1.png"]["edit_type"] == "remove"
    assert keys["images/positive-edit/3.png"]["edit_type"] == "tone"
    assert keys["images/positive-edit/4.png"]["edit_type"] is None  # "Zoom in": no equivalent
    assert base.UNMAPPED_FLAG in keys["images/positive-edit/5.png"]["flags"]  # a name not in the table
    assert "is a URL" in keys["images/positive-edit/99.png"]["reject_reason"]
    assert "outside the dataset root" in keys["../../../etc/hostname"]["reject_reason"]
    assert keys["images/positive-edit/1.png"]["instruction_variants"] == ["Turn the box red (0).", "red box"]
    # the manifest file itself as the path: the same pairs, paths still resolved against its folder
    single = list(open_preset(PresetParams(name="pico_banana", path=str(root / "sft.jsonl"))))
    assert len(single) == 7 and single[0].source is not None


def test_limit_takes_the_first_n(built):
    root = built["omniedit"][0]
    source = open_preset(PresetParams(name="omniedit", path=str(root), limit=3))
    assert len(source) == 3 and [p.origin_key for p in source] == ["omni_000000", "omni_000001", "omni_000002"]


def test_missing_columns_name_the_preset_and_the_columns(built):
    root = built["hq_edit"][0]
    with pytest.raises(ValueError, match=r"ingest.preset.path: .* is not omniedit: missing column\(s\) omni_edit_id"):
        open_preset(PresetParams(name="omniedit", path=str(root)))


def test_mapping_tables_only_name_taxonomy_types():
    for name in layouts.BUILDERS:
        module = __import__(presets.MODULES[name], fromlist=["x"])
        for attribute in ("EDIT_TYPES", "TASKS"):
            for ours in getattr(module, attribute, {}).values():
                assert ours is None or ours in taxonomy.EDIT_TYPES, (name, ours)


def test_streaming_hub_dataset_is_iterated_not_downloaded(built, monkeypatch):
    """A hub id with ``streaming: true`` goes through datasets' IterableDataset (here over the local parquet files,
    standing in for the hub), images stay encoded, the length is unknown and ``limit`` stops the iteration."""
    import datasets

    root = built["anyedit"][0]
    calls, real_load_dataset = [], datasets.load_dataset

    def fake_load_dataset(path, split=None, streaming=False):
        calls.append((path, split, streaming))
        files = sorted(str(p) for p in (root / "data").glob(f"{split}-*.parquet"))
        return real_load_dataset("parquet", data_files=files, split="train", streaming=streaming)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    source = open_preset(PresetParams(name="anyedit", streaming=True, split="validation", limit=5))
    assert isinstance(source.table.dataset, datasets.IterableDataset)
    with pytest.raises(TypeError):
        len(source)
    pairs = list(source)
    assert calls == [("Bin1117/AnyEdit", "validation", True)] and len(pairs) == 5
    assert all(p.error is None and p.source.startswith(b"\x89PNG") for p in pairs)


def test_ingest_cli_with_a_preset(built, tmp_path):
    from typer.testing import CliRunner
    import typer

    from curate.stages import ingest

    root = built["hq_edit"][0]
    params = tmp_path / "params.yaml"
    params.write_text(f"ingest:\n  source: preset\n  preset:\n    name: hq_edit\n    path: {root}\n    limit: 2\n")
    app = typer.Typer()
    app.command()(ingest.main)
    result = CliRunner().invoke(app, ["--params", str(params), "--out", str(tmp_path / "out"),
                                      "--metrics", str(tmp_path / "m.json"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "m.json").read_text())["ok"] == 2


@pytest.mark.parametrize("preset,expected", [
    ("    name: nope\n", "error: ingest.preset.name: unknown preset 'nope'; choose one of: anyedit, "),
    ("    name: magicbrush\n    path: {root}\n    split: test\n",
     "error: ingest.preset.split: 'test' not found in {root}; choose one of: dev, train"),
    ("    name: omniedit\n    path: {root}\n", "error: ingest.preset.path: {root} is not omniedit: missing column(s)"),
    ("    name: magicbrush\n    path: {root}\n    limits: 3\n", "error: {params}: unknown key ingest.preset.limits; known: "),
])
def test_config_errors_are_one_line(built, tmp_path, preset, expected):
    from typer.testing import CliRunner
    import typer

    from curate.stages import ingest

    root = built["magicbrush"][0]
    params = tmp_path / "params.yaml"
    params.write_text("ingest:\n  source: preset\n  preset:\n" + preset.format(root=root))
    app = typer.Typer()
    app.command()(ingest.main)
    result = CliRunner().invoke(app, ["--params", str(params), "--out", str(tmp_path / "out"),
                                      "--metrics", str(tmp_path / "m.json"), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected.format(root=root, params=params)), result.output


def test_hf_source_column_error_names_the_key(tmp_path):
    import datasets

    from curate.sources.hf import HFParams, HFSource

    dataset = datasets.Dataset.from_dict({"a": [1], "b": [2]})
    with pytest.raises(ValueError, match=r"ingest.hf.source_column: 'source_image'.*choose from: a, b"):
        HFSource(HFParams(path="x"), dataset=dataset)
