"""SFT cold start: teach the RRM the trajectory format and the teacher's judgements, loss on answer tokens only.

Loss = token-mean cross-entropy over the answer tokens (trajectory + EOS) of each optimizer update's micro-batches;
prompt tokens (instruction, images, chat template) carry label -100 (:func:`train.rrm.model.sft_labels`).
"""
from __future__ import annotations

from train.rrm.data import load_sft
from train.rrm.format import build_request
from train.rrm.model import answer_logprobs, answers_from_texts, encode_prompts
from train.rrm.trainer import RRMTrainer
from train.runtime import mean_stats


class SFTTrainer(RRMTrainer):
    name = "sft"
    csv_fields = ("step", "loss", "grad_norm")

    def __init__(self, config):
        records, rejected = load_sft(config.data.path, config.format)
        super().__init__(config, records, rejected)

    def step(self, step: int) -> dict[str, float]:
        batches = []
        for chunk in self.micro_batches(self.step_items(step)):
            requests = [build_request(r.instruction, r.source, r.edited, self.config.format) for r in chunk]
            batches.append((encode_prompts(self.processor, requests, self.device),
                            answers_from_texts(self.processor, [r.trajectory for r in chunk], self.device)))
        self.model.train()
        stats: dict[str, list] = {"loss": []}
        for group in self.update_groups(batches):
            tokens, total = sum(int(answers.mask.sum()) for _, answers in group), 0.0
            for index, (prompts, answers) in enumerate(group):
                ends_update = index == len(group) - 1
                with self.sync_context(ends_update):
                    loss = -answer_logprobs(self.model, prompts, answers).sum() / tokens
                    self.backward(loss, ends_update, 1, stats)
                total += float(loss.detach())
            stats["loss"].append(total)
        answer_tokens = float(sum(int(answers.mask.sum()) for _, answers in batches))
        return self.reduce_mean({**mean_stats(stats), "answer_tokens": answer_tokens})
