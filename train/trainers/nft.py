"""DiffusionNFT on an editing model (what CoCoEdit trains with): ODE rollouts, then flow matching on the results
weighted by advantage, optionally with the CoCoEdit region regularizer."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from train.algorithms.advantages import Advantages
from train.algorithms.nft import nft_loss
from train.algorithms.old_policy import LaggedPolicy
from train.algorithms.regularizer import region_regularizer
from train.rollout.micro_batches import sample_micro_batches
from train.rollout.ode_solvers import dpm2_sample
from train.rollout.sampler import Trajectory, per_sample_normal, rollout
from train.trainers.base import Trainer, mean_stats
from train.trainers.batch import Batch, Samples, sample_seed


@dataclass
class NFTSamples(Samples):
    """The flow-matching targets of the trained steps, fixed before this iteration's first update."""

    steps: list[int] = field(default_factory=list)  # the trained step indices
    x_t: dict[int, torch.Tensor] = field(default_factory=dict)  # step -> noised rollout result (N, L, C)
    v_old: dict[int, torch.Tensor | None] = field(default_factory=dict)  # step -> sampling policy's velocity there
    # (None: fused, the update's own forward gives it; objective.nft.fuse_old_forward)
    v_ref: dict[int, torch.Tensor | None] = field(default_factory=dict)  # step -> reference velocity (None: off)
    region_weights: tuple[torch.Tensor, torch.Tensor] | None = None  # regularizer (background, edit) weights
    x_source: torch.Tensor | None = None  # the source images' latents (regularizer)


def unit_loss(objective, x_t, t, x0, v, v_old, v_ref, advantages, keep, region=None):
    """The loss of one backward unit (a micro-batch at one trained step): the per-sample NFT loss (+ the region
    regularizer when ``region = (x_source, background_weights, edit_weights)``), averaged over the kept samples
    (0 when none is kept). Returns (loss, mean regularizer or None)."""
    per_sample, parts = nft_loss(x_t, t, x0, v, v_old, advantages, objective.nft, v_ref=v_ref)
    reg_mean = None
    if region is not None:
        x_source, background, edit = region
        reg, _ = region_regularizer(parts["x0_positive"], parts["x0_negative"], x0, x_source, parts["optimality"],
                                    background, edit, objective.regularizer)
        per_sample = per_sample + reg
        reg_mean = float(reg.detach().mean())
    keep = keep.float()
    return (per_sample * keep).sum() / keep.sum().clamp_min(1.0), reg_mean


class NFTTrainer(Trainer):
    name = "nft"

    @property
    def old_policy(self) -> LaggedPolicy:
        """The sampling policy θ_old (rollouts and v_old); the current weights unless objective.nft.old_decay_*."""
        if getattr(self, "_old_policy", None) is None:
            nft = self.config.objective.nft
            params = [p for p in self.adapter.transformer.parameters() if p.requires_grad]
            self._old_policy = LaggedPolicy(params, nft.old_decay_rate, nft.old_decay_max)
        return self._old_policy

    def sample(self, batch: Batch, step: int) -> None:
        noise, generators = self.rollout_noise(batch, step)
        solver = self.config.sampler.solver
        if solver not in ("euler", "dpm2"):
            raise ValueError(f"sampler.solver must be 'euler' or 'dpm2', got {solver!r}")

        def roll_out(mb: slice):
            x, cond = noise[mb].to(self.accelerator.device), batch.cond.select(mb)
            if solver == "dpm2":
                def velocity(z, sigma):
                    with self.accelerator.autocast():
                        return self.adapter.velocity(self.adapter.transformer, z, torch.full((z.shape[0],), sigma),
                                                     cond)
                return Trajectory(final=dpm2_sample(velocity, x, self.sigmas))
            sampler = self.config.sampler
            eta, window = (sampler.noise_level, tuple(sampler.sde_window)) if sampler.nft_sde else (0.0, (0, 0))
            # region_sde: the SDE steps explore only the edit region; background tokens follow the ODE
            tokens = self.token_masks(batch)[mb] if sampler.region_sde and sampler.nft_sde else None
            return rollout(self.adapter, self.adapter.transformer, cond, x, self.sigmas, sde="flow_sde",
                           noise_level=eta, window=window, generators=generators[mb],
                           autocast=self.accelerator.autocast, sde_tokens=tokens)

        with self.old_policy.active():
            batch.samples = NFTSamples.from_rollouts(sample_micro_batches(self, batch, roll_out))
            self._prepare_targets(batch, step)

    def fuse_old_forward(self, units: int) -> bool:
        """Whether v_old comes from the update's own forward this iteration (``objective.nft.fuse_old_forward``):
        only when that forward computes exactly the sampling policy's velocity."""
        cfg = self.config
        mode = cfg.objective.nft.fuse_old_forward
        if mode == "off":
            return False
        reasons = []
        if self.old_policy.enabled:
            reasons.append("the sampling policy lags the trained one (objective.nft.old_decay_rate/old_decay_max)")
        if sum(ends for ends, _ in self.update_schedule(units)) > 1:
            reasons.append("optim.gradient_accumulation splits the iteration into several updates")
        if cfg.lora.dropout > 0:
            reasons.append("lora.dropout > 0 makes the update's forward differ from the sampling policy's")
        if reasons and mode == "on":
            from editkit.errors import ConfigError

            raise ConfigError(f"objective.nft.fuse_old_forward=on cannot apply: {'; '.join(reasons)}")
        return not reasons

    @torch.no_grad()
    def _prepare_targets(self, batch: Batch, step: int) -> None:
        """Fresh noise per trained step, and the sampling policy's (and reference's) velocity there, before any
        update of this iteration changes the weights (v_old left to the update's forward when fused)."""
        cfg, samples = self.config, batch.samples
        start, end = cfg.sampler.sde_window
        steps = self.trained_steps(list(range(start, end)), step)
        x0 = samples.final.float()
        samples.steps = steps
        fused = self.fuse_old_forward(len(self.micro_batches(x0.shape[0])) * len(steps))
        for j in steps:
            t = float(self.sigmas[j])
            generators = [torch.Generator().manual_seed(sample_seed(seed, step, j, stream=1)) for seed in batch.seeds]
            eps = per_sample_normal(tuple(x0.shape[1:]), generators).to(x0.device)
            x_t = (1 - t) * x0 + t * eps
            samples.x_t[j] = x_t
            v_old, v_ref = [], []
            for mb in self.micro_batches(x0.shape[0]):
                sigma = torch.full((x_t[mb].shape[0],), t)
                with self.accelerator.autocast():
                    if not fused:
                        v_old.append(self.adapter.velocity(self.adapter.transformer, x_t[mb], sigma,
                                                           batch.cond.select(mb)))
                    if cfg.objective.nft.ref_weight > 0:
                        with self.adapter.reference():
                            v_ref.append(self.adapter.velocity(self.adapter.transformer, x_t[mb], sigma,
                                                               batch.cond.select(mb)))
            samples.v_old[j] = torch.cat(v_old).float() if v_old else None
            samples.v_ref[j] = torch.cat(v_ref).float() if v_ref else None
        if cfg.objective.regularizer.enabled:
            from train.adapters.base import region_grid_weights

            background, edit = region_grid_weights(self.adapter, batch.masks, self.height, self.width,
                                                   cfg.objective.regularizer)
            samples.region_weights = (background.to(x0.device), edit.to(x0.device))
            samples.x_source = self.adapter.encode_images(batch.sources)

    def optimize(self, batch: Batch, advantages: Advantages, step: int) -> dict[str, float]:
        cfg, samples = self.config, batch.samples
        units = [(mb, j) for mb in self.micro_batches(len(batch.seeds)) for j in samples.steps]
        plan = self.update_schedule(len(units))
        keep = advantages.keep.float()
        stats: dict[str, list] = {"loss": [], "regularizer": [], "fused_old_forward": []}
        self.model.train()
        for (mb, j), (ends_update, group_size) in zip(units, plan):
            t = torch.full((keep[mb].shape[0],), float(self.sigmas[j]))
            x_t = samples.x_t[j][mb]
            with self.accelerator.autocast():
                v = self.adapter.velocity(self.model, x_t, t, batch.cond.select(mb))
            v_ref = samples.v_ref[j][mb] if samples.v_ref[j] is not None else None
            region = None
            if cfg.objective.regularizer.enabled:
                background, edit = samples.region_weights
                region = (samples.x_source[mb], background[mb], edit[mb])
            fused = samples.v_old[j] is None  # the sampling policy is the current one: its velocity is v's value
            v_old = v.detach().float() if fused else samples.v_old[j][mb]
            stats["fused_old_forward"].append(float(fused))
            loss, reg = unit_loss(cfg.objective, x_t, t.to(x_t.device), samples.final[mb], v, v_old,
                                  v_ref, advantages.values[mb], keep[mb], region)
            if reg is not None:
                stats["regularizer"].append(reg)
            stats["loss"].append(float(loss.detach()))
            self.backward(loss, ends_update, group_size, stats)
        self.old_policy.update(step)
        return mean_stats(stats)

    def trainer_state(self, step: int) -> dict:
        state = super().trainer_state(step)
        if self.old_policy.enabled:
            state["old_policy"] = self.old_policy.state()
        return state

    def _resume(self, resume: str | None) -> int:
        step = super()._resume(resume)
        if step > 0:
            self.old_policy.load(self.resumed_state.get("old_policy"))
        return step
