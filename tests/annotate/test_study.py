"""The rating study through the CLI against a real server: blinded push, three raters, pull -> table, plot, jsonl."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from annotate import server
from annotate.cli import app
from annotate.study import project as study
from editkit import store
from tests.support.numerics import assert_close
from tests.support.review import make_sample, write_params


def test_left_right_is_random_per_item_and_reproducible():
    sides = [study.left_is(0, f"item{i}") for i in range(400)]
    assert 0.4 < sides.count("A") / len(sides) < 0.6
    assert sides == [study.left_is(0, f"item{i}") for i in range(400)]
    assert sides != [study.left_is(1, f"item{i}") for i in range(400)]


def test_ratings_map_sides_back_to_editors():
    items = {"x": {"left": "B", "category": "add"}, "y": {"left": "A", "category": "add"}}

    def task(item, *annotations):
        return {"data": {"study_item": item}, "annotations": [
            {"id": i, "completed_by": rater, "updated_at": at, "result": [
                {"from_name": "preference", "value": {"choices": [choice]}}]} for i, (rater, choice, at) in
            enumerate(annotations)]}

    exported = [task("x", (1, "left", "1"), (2, "right", "1"), (2, "tie", "2")), task("y", (1, "left", "1")),
                task("z", (1, "left", "1"))]
    ratings = study.ratings_from_export(exported, items)
    assert [(r["item"], r["rater"], r["winner"]) for r in ratings] == [("x", "1", "B"), ("x", "2", "tie"),
                                                                       ("y", "1", "A")]


@pytest.mark.integration
def test_study_push_rate_pull(ls_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = dataclasses.replace(ls_server, reviews=str(tmp_path / "reviews" / "masks.json"))
    bench = tmp_path / "bench" / "gedit"
    records = make_sample(bench / "records", bench / "images", n=6, prefix="st")
    for name in ("a", "b"):
        (tmp_path / name / "outputs").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for record in records:
        for name in ("a", "b"):
            image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
            (tmp_path / name / "outputs" / f"{record['id']}.png").write_bytes(store.encode_png(image))
    params_file = write_params(params, tmp_path / "params.yaml")
    runner = CliRunner()
    name = f"gedit_base_vs_lora_{tmp_path.name}"
    args = ["study", "push", "--params", str(params_file), "--bench", str(bench), "--a", "a", "--b", "b",
            "--a-name", "base", "--b-name", "lora", "--raters", "3", "--name", name]
    pushed = runner.invoke(app, args)
    assert pushed.exit_code == 0, pushed.output
    assert runner.invoke(app, args).output.count("0 new tasks") == 1  # idempotent
    meta = json.loads((tmp_path / f"reviews/studies/{name}.json").read_text())
    items = meta["items"]

    ls = server.client(params)
    ids = {p.title: int(p.id) for p in ls.projects.list()}
    assert len(meta["projects"]) == 3  # one project per rater
    projects = [ids[title] for title in meta["projects"]]
    assert all(ls.projects.get(id=i).maximum_annotations == 1 for i in projects)
    tasks = [{t.data["study_item"]: t for t in ls.tasks.list(project=i)} for i in projects]
    assert all(set(t) == set(items) for t in tasks), sorted(items)
    assert all("base" not in title and "lora" not in title for title in meta["projects"])
    assert all("base" not in json.dumps(t.data) and "lora" not in json.dumps(t.data) for t in tasks[0].values())
    raters = [ls.users.create(username=f"rater{i}{tmp_path.name}", email=f"rater{i}.{tmp_path.name}@example.invalid")
              for i in range(3)]
    expected = {}
    for k, item_id in enumerate(sorted(items)):
        for j, rater in enumerate(raters):
            winner = "B" if (k + j) % 3 else "A"  # lora preferred two times in three
            side = "left" if items[item_id]["left"] == winner else "right"
            ls.annotations.create(id=tasks[j][item_id].id, completed_by=rater.id, result=[
                {"from_name": "preference", "to_name": "source", "type": "choices", "value": {"choices": [side]}}])
            expected[(item_id, f"rater {j + 1}: {rater.email}")] = winner

    pulled = runner.invoke(app, ["study", "pull", "--params", str(params_file), "--name", name, "--n-boot", "500"])
    assert pulled.exit_code == 0, pulled.output
    out = tmp_path / "results/study" / name
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["n_ratings"] == 18 and report["raters"] == 3
    assert_close(report["overall"]["win"]["rate"], 6 / 18, accumulations=18, why="a mean of 18 outcomes")
    assert_close(report["overall"]["loss"]["rate"], 12 / 18, accumulations=18, why="a mean of 18 outcomes")
    assert (out / "plot.png").read_bytes()[:4] == b"\x89PNG" and "| all | 6 | 18 |" in (out / "table.md").read_text()
    lines = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    assert len(lines) == 18
    for line in lines:
        assert line["winner"] == expected[(line["id"], line["rater"])]
        assert set(line) >= {"source", "instruction", "A", "B", "winner"} and line["A"].endswith(f"{line['id']}.png")
