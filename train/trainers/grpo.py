"""Flow-GRPO on an editing model: SDE rollouts with log-probs, clipped ratio loss on the SDE window's steps."""
from __future__ import annotations

import numpy as np
import torch

from train.advantages import Advantages
from train.objectives.grpo import gaussian_kl, grpo_loss
from train.rollout import rollout
from train.sde import sde_transition
from train.trainers.base import Batch, Trainer, mean_stats


class GRPOTrainer(Trainer):
    name = "grpo"

    def sample(self, batch: Batch, step: int) -> None:
        cfg = self.config.sampler
        noise, generators = self.initial_noise(batch.seeds)
        parts = []
        for mb in self.micro_batches(len(batch.seeds)):
            x = noise[mb].to(self.accelerator.device)
            parts.append(rollout(self.adapter, self.adapter.transformer, batch.cond.select(mb), x, self.sigmas,
                                 sde=cfg.sde, noise_level=cfg.noise_level, window=tuple(cfg.sde_window),
                                 generators=generators[mb], autocast=self.accelerator.autocast))
        steps = sorted(parts[0].states)
        batch.samples = {
            "final": torch.cat([p.final for p in parts]),
            "states": {i: torch.cat([p.states[i] for p in parts]) for i in steps},
            "next_states": {i: torch.cat([p.next_states[i] for p in parts]) for i in steps},
            "log_probs": {i: torch.cat([p.log_probs[i] for p in parts]) for i in steps},
        }
        batch.samples["images"] = self.decode(batch.samples["final"])

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.adapter.decode(latents[mb], self.height, self.width).cpu()
                          for mb in self.micro_batches(latents.shape[0])])

    def trained_steps(self, available: list[int], step: int) -> list[int]:
        """The window's steps trained this iteration: all, or a seeded subset (same on every process)."""
        count = self.config.sampler.train_steps
        if count <= 0 or count >= len(available):
            return available
        chosen = np.random.default_rng([self.config.train.seed, step, 7]).choice(available, count, replace=False)
        return sorted(int(i) for i in chosen)

    def optimize(self, batch: Batch, advantages: Advantages, step: int) -> dict[str, float]:
        cfg, samples = self.config, batch.samples
        if not samples["states"]:
            raise ValueError("GRPO needs SDE steps: sampler.noise_level must be > 0 with a non-empty sde_window")
        steps = self.trained_steps(sorted(samples["states"]), step)
        units = [(mb, j) for mb in self.micro_batches(len(batch.seeds)) for j in steps]
        plan = self.update_schedule(len(units))
        sigma_max = float(self.sigmas[1])
        adv, keep = advantages.values, advantages.keep
        stats: dict[str, list] = {"loss": [], "ratio": [], "clip_fraction": [], "kl": []}
        self.model.train()
        for (mb, j), (ends_update, group_size) in zip(units, plan):
            sigma, sigma_next = float(self.sigmas[j]), float(self.sigmas[j + 1])
            x, x_next = samples["states"][j][mb], samples["next_states"][j][mb]
            cond = batch.cond.select(mb)
            with self.accelerator.autocast():
                v = self.adapter.velocity(self.model, x, torch.full((x.shape[0],), sigma), cond)
            out = sde_transition(cfg.sampler.sde, x, v, sigma, sigma_next, cfg.sampler.noise_level,
                                 sigma_max=sigma_max, prev_sample=x_next)
            loss, parts = grpo_loss(out.log_prob, samples["log_probs"][j][mb], adv[mb], keep[mb],
                                    cfg.objective.grpo.clip_range)
            if cfg.objective.grpo.kl_beta > 0:
                with torch.no_grad(), self.adapter.reference(), self.accelerator.autocast():
                    v_ref = self.adapter.velocity(self.adapter.transformer, x, torch.full((x.shape[0],), sigma), cond)
                ref = sde_transition(cfg.sampler.sde, x, v_ref, sigma, sigma_next, cfg.sampler.noise_level,
                                     sigma_max=sigma_max, prev_sample=x_next)
                kl = gaussian_kl(out.mean, ref.mean, out.std).mean()
                loss = loss + cfg.objective.grpo.kl_beta * kl
                stats["kl"].append(float(kl.detach()))
            stats["loss"].append(float(loss.detach()))
            stats["ratio"].append(float(parts["ratio_mean"]))
            stats["clip_fraction"].append(float(parts["clip_fraction"]))
            self.backward(loss, ends_update, group_size, stats)
        result = mean_stats(stats)
        result["ratio_first"] = stats["ratio"][0]  # on-policy: exactly 1
        return result
