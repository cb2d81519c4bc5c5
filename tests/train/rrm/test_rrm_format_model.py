"""The RRM's output format (shared structured-output parser) and the Qwen2.5-VL plumbing on the tiny model."""
from __future__ import annotations

import json

import pytest
import torch

from editkit.mllm.structured import ParseError
from tests.support.numerics import assert_close
from train.rrm.format import FormatConfig, build_request, parse_trajectory, render_trajectory, trajectory_score
from train.rrm.model import (Answers, LoraConfig, ModelConfig, answer_logprobs, answers_from_texts, encode_prompts,
                             generate, join, load_rrm, sft_labels)
from tests.train.rrm.conftest import image

PRINCIPLES = {"keep": ["background"], "follow": ["hat is red"], "quality": ["no artifacts"]}
VERDICTS = [{"group": "keep", "principle": "background", "satisfied": "yes"},
            {"group": "follow", "principle": "hat is red", "satisfied": "no", "reason": "still blue"},
            {"group": "quality", "principle": "no artifacts", "satisfied": "yes"}]


def test_render_parse_round_trip_and_chatter():
    text = render_trajectory(PRINCIPLES, VERDICTS, 4)
    assert text.endswith('"score":4}') and '"reason"' in text and text.count("reason") == 1
    judgement = parse_trajectory(f"Sure! ```json\n{text}\n``` done")
    assert judgement.score == 4
    assert_close(judgement.satisfied_fraction(), 2 / 3, accumulations=3, why="2 of 3 verdicts: a mean of 3")
    assert judgement.satisfied_fraction("follow") == 0.0
    assert trajectory_score(text) == 4.0


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d.update(score=11), "schema"),
    (lambda d: d["verdicts"].pop(), "schema"),
    (lambda d: d["verdicts"][0].update(principle="sky"), "schema"),
    (lambda d: d["verdicts"][0].update(group="style"), "schema"),
    (lambda d: d.update(principles={"keep": [], "follow": [], "quality": []}, verdicts=[]), "schema"),
])
def test_invalid_judgements_are_rejected(mutate, reason):
    data = json.loads(render_trajectory(PRINCIPLES, VERDICTS, 4))
    mutate(data)
    with pytest.raises(ParseError) as error:
        parse_trajectory(json.dumps(data))
    assert error.value.reason == reason
    assert trajectory_score(json.dumps(data)) != trajectory_score(json.dumps(data))  # NaN
    with pytest.raises(ParseError, match="no JSON"):
        parse_trajectory("score: 7")


def test_score_range_is_part_of_the_format():
    text = render_trajectory(PRINCIPLES, VERDICTS, 9)
    assert parse_trajectory(text, FormatConfig(score_min=0, score_max=9)).score == 9
    with pytest.raises(ParseError):
        parse_trajectory(text, FormatConfig(score_min=1, score_max=5))
    with pytest.raises(ValueError):
        render_trajectory({"style": ["x"]}, [], 1)


def test_prompt_equals_the_transformers_backends(tiny_vl_dir):
    from editkit.mllm import ClientConfig
    from editkit.mllm.hf_backend import TransformersBackend, chat_conversation

    request = build_request("make the hat red", image(0), image(1))
    backend = TransformersBackend(ClientConfig(backend="transformers", model=str(tiny_vl_dir), device="cpu"))
    messages, images = chat_conversation(request)
    theirs = backend.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    expected = backend.processor(text=[theirs], images=[i.to_pil() for i in images], return_tensors="pt")
    _, processor = load_rrm(ModelConfig(path=str(tiny_vl_dir), device="cpu"))
    ours = encode_prompts(processor, [request])
    assert torch.equal(ours["input_ids"], expected["input_ids"])
    assert torch.equal(ours["pixel_values"], expected["pixel_values"])
    assert "make the hat red" in theirs and request.prompt_version.startswith("rrm_v1:")


@pytest.mark.parity
def test_labels_mask_the_prompt_and_loss_is_answer_cross_entropy(tiny_vl_dir):
    model, processor = load_rrm(ModelConfig(path=str(tiny_vl_dir), device="cpu"), LoraConfig(enabled=False))
    requests = [build_request("make the hat red", image(0), image(1)), build_request("remove it", image(2), image(3))]
    prompts = encode_prompts(processor, requests)
    answers = answers_from_texts(processor, ['{"score":3}', '{"a":1,"score":10}'])
    labels = sft_labels(prompts, answers)
    width = prompts["input_ids"].shape[1]
    assert (labels[:, :width] == -100).all()
    assert (labels[0, width + 12:] == -100).all() and (labels[0, width:width + 12] != -100).all()  # 11 chars + EOS
    inputs = join(prompts, answers)
    logits = model(**inputs).logits.float()
    # manual cross-entropy: position t predicts token t + 1, over the answer tokens only
    manual, count = 0.0, 0
    for row in range(2):
        for t in range(width, inputs["input_ids"].shape[1]):
            if labels[row, t] != -100:
                manual -= torch.log_softmax(logits[row, t - 1], -1)[labels[row, t]].item()
                count += 1
    logp = answer_logprobs(model, prompts, answers)
    # the same float32 forward in another call: vocab-long softmax sums per token, a mean over the answer tokens
    terms = logits.shape[-1] * count
    assert_close(-logp.sum() / answers.mask.sum(), manual / count, dtype=torch.float32, accumulations=terms,
                 why="answer cross-entropy from another forward: vocab-long softmaxes, mean over answer tokens")
    # and transformers' own label loss agrees (it shifts labels itself)
    assert_close(model(**inputs, labels=labels).loss, manual / count, dtype=torch.float32, accumulations=terms,
                 why="transformers' loss: vocab-long softmaxes, mean over answer tokens, another order")


def test_batched_generation_left_pads_and_keeps_eos(tiny_vl_dir):
    model, processor = load_rrm(ModelConfig(path=str(tiny_vl_dir), device="cpu"))
    requests = [build_request("a", image(0), image(1)), build_request("a much longer instruction", image(2), image(3))]
    torch.manual_seed(0)
    prompts, answers = generate(model, processor, requests, max_new_tokens=12, temperature=0.0)
    assert prompts["attention_mask"][0, 0] == 0 and prompts["attention_mask"][:, -1].all()  # left padding
    alone = [generate(model, processor, [r], max_new_tokens=12, temperature=0.0)[1] for r in requests]
    for row in range(2):  # greedy batched == greedy one at a time
        ids = answers.ids[row][answers.mask[row]].tolist()
        assert ids == alone[row].ids[0][alone[row].mask[0]].tolist()
    eos = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row in range(2):
        ids = answers.ids[row][answers.mask[row]].tolist()
        assert eos not in ids[:-1] and (ids[-1] == eos or len(ids) == 12)
    assert isinstance(answers, Answers) and len(answers.texts) == 2


def test_lora_targets_only_the_language_model(tiny_vl_dir):
    model, _ = load_rrm(ModelConfig(path=str(tiny_vl_dir), device="cpu"), LoraConfig(rank=2, alpha=2))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "language_model" in n for n in trainable)


def test_sampling_never_emits_vision_placeholders(tiny_vl_dir):
    model, processor = load_rrm(ModelConfig(path=str(tiny_vl_dir), device="cpu"))
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    with torch.no_grad():  # make the image placeholder the most likely next token everywhere
        model.lm_head.weight[pad] += 50 * model.lm_head.weight.abs().max()
    requests = [build_request("a", image(0), image(1))] * 3
    prompts, answers = generate(model, processor, requests, max_new_tokens=8, temperature=1.0)
    assert pad not in answers.ids[answers.mask].tolist()
    answer_logprobs(model, prompts, answers)  # the next forward reads the trajectories without a mismatch
