"""GCPO training on rating-study pairs and the EditReward-Data layout, on the small SFT-ed RRM."""
from __future__ import annotations

import pytest

from editkit.config import load_file
from editkit.errors import CheckpointError
from tests.train.rrm.conftest import assert_identical_checkpoints, image, metrics, write_pairs_jsonl
from train.rrm.config import GCPORunConfig
from train.rrm.gcpo_trainer import GCPOTrainer


def gcpo_config(model_dir, data, out, *extra):
    return load_file(GCPORunConfig, None, [
        f"model.path={model_dir}", "model.device=cpu", f"data.path={data}", f"output_dir={out}",
        "lora.rank=4", "lora.alpha=8", "optim.learning_rate=0.001", "train.batch_size=2",
        "train.micro_batch_size=4", "train.max_steps=2", "checkpoint.every=1", "gcpo.num_trajectories=4",
        "gcpo.max_new_tokens=40", "gcpo.updates_per_batch=2", "gcpo.temperature=1.0",
        "optim.gradient_accumulation=1",  # one update per generation chunk: several updates per step
        "logging.tensorboard=false", "logging.progress=false", *extra])


def test_pairs_reader_rejects_with_reasons(tmp_path):
    from train.rrm.data import load_pairs

    pairs, rejected = load_pairs(write_pairs_jsonl(tmp_path))
    assert [p.winner for p in pairs] == ["A", "B", "A", "B", "tie"]
    assert pairs[1].ordered() == (pairs[1].image_b, pairs[1].image_a)
    reasons = " | ".join(r["reason"] for r in rejected)
    assert "winner: expected one of" in reasons and "leaves the file's folder" in reasons and len(rejected) == 2


def test_editreward_layout_reader(tmp_path):
    import datasets
    from PIL import Image

    rows = [{"key": f"k{i}", "unique_key": f"u{i}", "instruction": f"edit {i}",
             "source_img": Image.fromarray(image(i)), "left_output_image": Image.fromarray(image(10 + i)),
             "right_output_image": Image.fromarray(image(20 + i)), "vote_type": vote,
             "left_overall_score": 5.0, "right_overall_score": 3.0}
            for i, vote in enumerate(["leftvote", "rightvote", "tie", "bothbad"])]
    features = datasets.Features({"key": datasets.Value("string"), "unique_key": datasets.Value("string"),
                                  "instruction": datasets.Value("string"), "source_img": datasets.Image(),
                                  "left_output_image": datasets.Image(), "right_output_image": datasets.Image(),
                                  "vote_type": datasets.Value("string"), "left_overall_score": datasets.Value("float32"),
                                  "right_overall_score": datasets.Value("float32")})
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_list(rows, features=features).to_parquet(str(tmp_path / "data" / "train-00000.parquet"))
    from train.rrm.data import load_editreward

    pairs, rejected = load_editreward(str(tmp_path))
    assert [p.winner for p in pairs] == ["A", "B", "tie"] and pairs[0].instruction == "edit 0"
    assert rejected == [{"where": "u3", "reason": "vote_type: expected one of ['leftvote', 'rightvote', 'tie'], "
                                                   "got 'bothbad'"}]


def test_gcpo_trains_checkpoints_and_resumes_bit_identically(trained_rrm_dir, tmp_path):
    """2 steps straight vs 1 step, then new trainer objects resuming the step-1 checkpoint: the same sampled
    trajectories and losses, and the step-2 checkpoints (weights, AdamW moments, LR schedule, RNG) bit-identical."""
    data = write_pairs_jsonl(tmp_path / "pairs")
    full = tmp_path / "full"
    GCPOTrainer(gcpo_config(trained_rrm_dir, data, full)).fit()
    reference = metrics(full)
    assert [m["step"] for m in reference] == [1, 2]
    assert any(m["valid_fraction"] > 0 for m in reference)  # the SFT-ed model writes parseable trajectories
    assert any(m["grad_norm"] > 0 for m in reference)
    assert all(m["clip_fraction"] >= 0 and m["sampled_tokens"] > 0 for m in reference)
    assert "tie(s) skipped" in (full / "rejected.json").read_text()
    cut = tmp_path / "cut"
    GCPOTrainer(gcpo_config(trained_rrm_dir, data, cut, "train.max_steps=1")).fit()
    GCPOTrainer(gcpo_config(trained_rrm_dir, data, cut)).fit(resume="auto")
    resumed = metrics(cut)
    assert [m["step"] for m in resumed] == [1, 2]
    for ours, theirs in zip(resumed, reference):  # sampling RNG restored: same trajectories, same losses
        for key in ("loss", "loss_last", "grad_norm", "valid_fraction", "reward_winner", "sampled_tokens"):
            assert ours[key] == theirs[key], (ours["step"], key)
    assert_identical_checkpoints(full / "checkpoints" / "step-000002", cut / "checkpoints" / "step-000002")
    with pytest.raises(CheckpointError, match="written by 'sft'"):  # the SFT run's own checkpoint is not GCPO's
        GCPOTrainer(gcpo_config(trained_rrm_dir, data, trained_rrm_dir.parent)).fit(resume="auto")
