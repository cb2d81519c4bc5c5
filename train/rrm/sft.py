"""SFT cold start: teach the RRM the trajectory format and the teacher's judgements, loss on answer tokens only.

Loss = token-mean cross-entropy over the answer tokens (trajectory + EOS) of the step's batch; prompt tokens
(instruction, images, chat template) carry label -100 (:func:`train.rrm.model.sft_labels`).
"""
from __future__ import annotations

from train.rrm.data import load_sft
from train.rrm.format import build_request
from train.rrm.model import answer_logprobs, answers_from_texts, encode_prompts
from train.rrm.trainer import RRMTrainer


class SFTTrainer(RRMTrainer):
    name = "sft"

    def __init__(self, config):
        records, rejected = load_sft(config.data.path, config.format)
        super().__init__(config, records, rejected)

    def train_step(self, step: int) -> dict[str, float]:
        items = self.step_items(step)
        batches = []
        for chunk in self.micro_batches(items):
            requests = [build_request(r.instruction, r.source, r.edited, self.config.format) for r in chunk]
            batches.append((encode_prompts(self.processor, requests, self.device),
                            answers_from_texts(self.processor, [r.trajectory for r in chunk], self.device)))
        tokens = sum(int(answers.mask.sum()) for _, answers in batches)
        total = 0.0
        for index, (prompts, answers) in enumerate(batches):
            context = self.accelerator.no_sync(self.model) if index < len(batches) - 1 else _null()
            with context:
                loss = -answer_logprobs(self.model, prompts, answers).sum() / tokens
                self.accelerator.backward(loss)
            total += float(loss.detach())
        return {"loss": total, "answer_tokens": float(tokens), "grad_norm": self.clip_and_step()}


def _null():
    from contextlib import nullcontext

    return nullcontext()
