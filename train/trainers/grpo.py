"""Flow-GRPO on an editing model: SDE rollouts with log-probs, clipped ratio loss on the SDE window's steps."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from train.algorithms.advantages import Advantages, gathered_advantages
from train.algorithms.grpo import gaussian_kl, grpo_loss
from train.algorithms.grpo_guard import GuardInputs
from train.algorithms.region_advantages import per_token_advantages, reward_mix
from train.algorithms.sde import gaussian_log_prob, sde_transition
from train.rollout.micro_batches import sample_micro_batches
from train.rollout.sampler import rollout
from train.trainers.base import Trainer, mean_stats
from train.trainers.batch import Batch, Samples


@dataclass
class GRPOSamples(Samples):
    """The SDE window's transitions, by step index: what the clipped ratio loss recomputes log-probs on."""

    states: dict[int, torch.Tensor] = field(default_factory=dict)  # x before the step (N, L, C)
    next_states: dict[int, torch.Tensor] = field(default_factory=dict)  # x after the step
    log_probs: dict[int, torch.Tensor] = field(default_factory=dict)  # (N,), or (N, L) per token
    means: dict[int, torch.Tensor] = field(default_factory=dict)  # the rollout's transition means (GRPO-Guard)


class GRPOTrainer(Trainer):
    name = "grpo"

    def sample(self, batch: Batch, step: int) -> None:
        cfg, region = self.config.sampler, self.config.region_advantages.enabled
        noise, generators = self.rollout_noise(batch, step)

        def roll_out(mb: slice):
            return rollout(self.adapter, self.adapter.transformer, batch.cond.select(mb),
                           noise[mb].to(self.accelerator.device), self.sigmas, sde=cfg.sde,
                           noise_level=cfg.noise_level, window=tuple(cfg.sde_window), generators=generators[mb],
                           autocast=self.accelerator.autocast, per_token=region,
                           keep_means=self.config.objective.grpo.guard)

        rollouts = sample_micro_batches(self, batch, roll_out)
        parts = rollouts.trajectories
        steps = sorted(parts[0].states)
        batch.samples = GRPOSamples.from_rollouts(
            rollouts,
            states={i: torch.cat([p.states[i] for p in parts]) for i in steps},
            next_states={i: torch.cat([p.next_states[i] for p in parts]) for i in steps},
            log_probs={i: torch.cat([p.log_probs[i] for p in parts]) for i in steps},
            means={i: torch.cat([p.means[i] for p in parts]) for i in steps} if parts[0].means else {})

    def region_advantages(self, batch: Batch) -> Advantages:
        """Edit-GRPO: edit-reward advantages on edit-mask tokens, preservation-reward advantages elsewhere."""
        cfg, device = self.config, self.accelerator.device
        parts, weights = batch.samples.reward_parts, cfg.rewards.weights
        mixes = [reward_mix(parts, weights, names).to(torch.float32).to(device)
                 for names in (cfg.region_advantages.edit_rewards, cfg.region_advantages.preservation_rewards)]
        edit, preservation = (gathered_advantages(self.accelerator, m, batch.group_ids, cfg.advantages) for m in mixes)
        finite = torch.isfinite(mixes[0]) & torch.isfinite(mixes[1])
        return per_token_advantages(edit, preservation, self.token_masks(batch).to(device), finite)

    def optimize(self, batch: Batch, advantages: Advantages, step: int) -> dict[str, float]:
        cfg, samples = self.config, batch.samples
        if not samples.states:
            raise ValueError("GRPO needs SDE steps: sampler.noise_level must be > 0 with a non-empty sde_window")
        steps = self.trained_steps(sorted(samples.states), step)
        units = [(mb, j) for mb in self.micro_batches(len(batch.seeds)) for j in steps]
        plan = self.update_schedule(len(units))
        sigma_max = float(self.sigmas[1])
        region = cfg.region_advantages.enabled
        if region:
            advantages = self.region_advantages(batch)
        adv, keep = advantages.values, advantages.keep
        stats: dict[str, list] = {"loss": [], "ratio": [], "clip_fraction": [], "kl": []}
        self.model.train()
        for (mb, j), (ends_update, group_size) in zip(units, plan):
            sigma, sigma_next = float(self.sigmas[j]), float(self.sigmas[j + 1])
            x, x_next = samples.states[j][mb], samples.next_states[j][mb]
            cond = batch.cond.select(mb)
            with self.accelerator.autocast():
                v = self.adapter.velocity(self.model, x, torch.full((x.shape[0],), sigma), cond)
            out = sde_transition(cfg.sampler.sde, x, v, sigma, sigma_next, cfg.sampler.noise_level,
                                 sigma_max=sigma_max, prev_sample=x_next)
            log_prob = gaussian_log_prob(x_next, out.mean, out.std, per_token=True) if region else out.log_prob
            guard = GuardInputs(out.mean, samples.means[j][mb], out.std, sigma_next - sigma) \
                if cfg.objective.grpo.guard else None
            loss, parts = grpo_loss(log_prob, samples.log_probs[j][mb], adv[mb], keep[mb],
                                    cfg.objective.grpo.clip_range, guard=guard)
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
        if region:
            result.update({k: v for k, v in advantages.stats.items() if isinstance(v, float)})
        return result
