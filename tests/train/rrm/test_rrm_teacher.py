"""make-sft-data against the scripted chat server: teacher trajectories, judge filter, reasons for every drop."""
from __future__ import annotations

import json

from PIL import Image

from editkit.mllm import Client, ClientConfig
from tests.support.scripted_server import ScriptedServer
from tests.train.rrm.conftest import image
from train.rrm.data import load_sft
from train.rrm.format import render_trajectory
from train.rrm.teacher import MakeSFTConfig, make_sft_data

GOOD = render_trajectory({"keep": ["face"], "follow": ["hat red"], "quality": ["clean"]},
                         [{"group": "keep", "principle": "face", "satisfied": "yes"},
                          {"group": "follow", "principle": "hat red", "satisfied": "yes"},
                          {"group": "quality", "principle": "clean", "satisfied": "yes"}], 9)


def teacher_handler(request):
    text = request.text
    if '"make the hat red"' in text:
        return "Here you go:\n" + GOOD  # chatter around the JSON: tolerated, stored canonical
    if '"make the sky green"' in text:
        return json.dumps({"principles": {"keep": ["x"]}, "verdicts": [], "score": 3})  # invalid, twice
    return GOOD.replace('"score":9', '"score":2')  # "car" and "tree"


def judge_handler(request):
    if "remove the tree" in request.text:
        return json.dumps({"accept": "no", "reason": "the tree is still there"})
    return json.dumps({"accept": "yes"})


def client(server):
    return Client(ClientConfig(backend="openai", endpoint=server.url, retries=0, timeout_s=5, cache_dir=""))


def test_make_sft_data_keeps_judged_trajectories_and_records_drops(tmp_path):
    (tmp_path / "in").mkdir()
    rows = []
    for i, instruction in enumerate(["make the hat red", "make the sky green", "remove the car", "remove the tree"]):
        Image.fromarray(image(i)).save(tmp_path / "in" / f"s{i}.png")
        Image.fromarray(image(10 + i)).save(tmp_path / "in" / f"e{i}.png")
        rows.append({"source": f"s{i}.png", "instruction": instruction, "edited": f"e{i}.png"})
    rows.append({"source": "../x.png", "instruction": "bad", "edited": "e0.png"})
    (tmp_path / "in" / "edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = MakeSFTConfig(input=str(tmp_path / "in" / "edits.jsonl"), output=str(tmp_path / "out" / "sft.jsonl"))
    with ScriptedServer(teacher_handler) as teacher, ScriptedServer(judge_handler) as judge:
        counts = make_sft_data(config, client(teacher), client(judge))
        assert all(r.n_images == 2 for r in teacher.requests) and "keep (what must stay unchanged)" in teacher.requests[0].text
        assert judge.count == 3 and any('"score":9' in r.text for r in judge.requests)
    assert counts == {"kept": 2, "dropped": 3, "read": 5}
    dropped = [json.loads(l) for l in (tmp_path / "out" / "dropped.jsonl").read_text().splitlines()]
    reasons = {d["stage"]: d["reason"] for d in dropped}
    assert "leaves the file's folder" in reasons["input"]
    assert reasons["teacher"].startswith("teacher_fallback:schema")
    assert reasons["judge"] == "judge_rejected: the tree is still there"
    records, rejected = load_sft(tmp_path / "out" / "sft.jsonl")  # the output trains as it is
    assert not rejected and [r.instruction for r in records] == ["make the hat red", "remove the car"]
    assert records[0].trajectory == GOOD and records[0].source.data == (tmp_path / "in" / "s0.png").read_bytes()
