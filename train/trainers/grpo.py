"""Flow-GRPO on an editing model: SDE rollouts with log-probs, clipped ratio loss on the SDE window's steps.

Rollout-graph reuse (``train.reuse_rollout_graph``): when the update is on-policy (one optimizer update per
iteration, so the policy that rolled out is the one trained), the trained steps' forwards in :meth:`optimize` would
be exactly the rollout's. The rollout then runs those forwards with gradients and keeps their graphs
(:func:`train.rollout.sampler.rollout`'s ``keep_graph``); the update back-propagates through them, one forward less
per trained step. A memory guard measures each kept forward's saved activations and stops keeping graphs once the
next would exceed the budget; those (micro-batch, step) units are recomputed as before. Only the trained steps
(``sampler.train_steps`` of the ``sde_window``, MixGRPO-style) keep graphs: the window's other SDE steps and the
ODE steps stay gradient-free.
"""
from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
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
    graphs: dict[tuple[int, int], object] = field(default_factory=dict)  # (micro-batch, step) -> kept StepOutput


class GraphBudget:
    """Which rollout steps keep their graph: the trained ones, while the kept activations fit. Each kept forward's
    saved tensors are counted (saved-tensor hooks; parameters and repeats excluded); a step keeps its graph while
    the total so far plus the largest forward seen fits the budget (the first always does: recomputing it would need
    as much)."""

    def __init__(self, budget_bytes: float | None, model: torch.nn.Module, trained: list[int]):
        self.budget, self.trained = budget_bytes, set(trained)  # budget None: no limit
        self.params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        self.used = self.largest = self.current = 0
        self.seen: set[int] = set()

    def keep(self, step: int) -> bool:
        self.flush()
        return step in self.trained and (self.budget is None or self.used + self.largest <= self.budget)

    def flush(self) -> None:
        self.used += self.current
        self.largest = max(self.largest, self.current)
        self.current = 0
        self.seen.clear()

    @contextmanager
    def counting(self):
        def pack(tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in self.params and storage.data_ptr() not in self.seen:
                self.seen.add(storage.data_ptr())
                self.current += storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield
        self.flush()


def free_memory_bytes(device: torch.device) -> float:
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class GRPOTrainer(Trainer):
    name = "grpo"

    def graph_budget(self, batch: Batch, step: int) -> tuple[GraphBudget | None, list[int]]:
        """The rollout-graph guard for this iteration (None: recompute) and the steps that will be trained."""
        cfg = self.config
        start, end = cfg.sampler.sde_window
        window = list(range(start, end)) if cfg.sampler.noise_level > 0 else []
        trained = self.trained_steps(window, step) if window else []
        mode = cfg.train.reuse_rollout_graph
        if mode == "off" or not trained:
            return None, trained
        units = len(self.micro_batches(len(batch.seeds))) * len(trained)
        reasons = []
        if sum(ends for ends, _ in self.update_schedule(units)) > 1:
            reasons.append("optim.gradient_accumulation splits the iteration into several updates (off-policy)")
        if self.accelerator.num_processes > 1:
            reasons.append("it runs in one process only")
        if cfg.lora.dropout > 0:
            reasons.append("lora.dropout > 0 makes the update's forward differ from the rollout's")
        if reasons:
            if mode == "on":
                from editkit.errors import ConfigError

                raise ConfigError(f"train.reuse_rollout_graph=on cannot apply: {'; '.join(reasons)}")
            return None, trained
        budget = None
        if mode == "auto":
            gib = cfg.train.reuse_rollout_graph_budget_gib
            budget = gib * 2**30 if gib > 0 else free_memory_bytes(self.accelerator.device) / 2
        return GraphBudget(budget, self.model, trained), trained

    def sample(self, batch: Batch, step: int) -> None:
        cfg, region = self.config.sampler, self.config.region_advantages.enabled
        noise, generators = self.rollout_noise(batch, step)
        guard, trained = self.graph_budget(batch, step)
        graphs: dict[tuple[int, int], object] = {}
        if guard is not None:
            self.model.train()  # the mode the update runs in

        def roll_out(mb: slice):
            model = self.model if guard is not None else self.adapter.transformer
            counting = guard is not None and guard.budget is not None  # no budget: nothing to measure
            with guard.counting() if counting else nullcontext():
                trajectory = rollout(self.adapter, model, batch.cond.select(mb),
                                     noise[mb].to(self.accelerator.device), self.sigmas, sde=cfg.sde,
                                     noise_level=cfg.noise_level, window=tuple(cfg.sde_window),
                                     generators=generators[mb], autocast=self.accelerator.autocast,
                                     per_token=region, keep_means=self.config.objective.grpo.guard,
                                     keep_graph=guard.keep if guard is not None else None)
            graphs.update({(mb.start, j): out for j, out in trajectory.graphs.items()})
            trajectory.graphs = {}
            return trajectory

        rollouts = sample_micro_batches(self, batch, roll_out)
        parts = rollouts.trajectories
        steps = sorted(parts[0].states)
        batch.samples = GRPOSamples.from_rollouts(
            rollouts,
            states={i: torch.cat([p.states[i] for p in parts]) for i in steps},
            next_states={i: torch.cat([p.next_states[i] for p in parts]) for i in steps},
            log_probs={i: torch.cat([p.log_probs[i] for p in parts]) for i in steps},
            means={i: torch.cat([p.means[i] for p in parts]) for i in steps} if parts[0].means else {},
            graphs=graphs)

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
        stats: dict[str, list] = {"loss": [], "ratio": [], "clip_fraction": [], "kl": [], "reused": []}
        self.model.train()
        graphs, samples.graphs = samples.graphs, {}  # each kept graph is back-propagated once, then released
        for (mb, j), (ends_update, group_size) in zip(units, plan):
            sigma, sigma_next = float(self.sigmas[j]), float(self.sigmas[j + 1])
            x, x_next = samples.states[j][mb], samples.next_states[j][mb]
            cond = batch.cond.select(mb)
            out = graphs.pop((mb.start, j), None)
            stats["reused"].append(float(out is not None))
            if out is None:
                with self.accelerator.autocast():
                    v = self.adapter.velocity(self.model, x, torch.full((x.shape[0],), sigma), cond)
                out = sde_transition(cfg.sampler.sde, x, v, sigma, sigma_next, cfg.sampler.noise_level,
                                     sigma_max=sigma_max, prev_sample=x_next)
                log_prob = out.log_prob
            else:  # the rollout's forward: score the stored transition as the recomputation does
                log_prob = gaussian_log_prob(x_next.to(torch.float32), out.mean, out.std)
            if region:
                log_prob = gaussian_log_prob(x_next, out.mean, out.std, per_token=True)
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
