"""The training loop sdopt's trainers share (the tiny-shapes trainer; distillation passes next).

One stage = a step function run for a step count, fixed or set from a time budget after timing the first
steps; every step draws its randomness from generators seeded by (seed, stage, step), so a run resumed
from its last safetensors checkpoint continues exactly as an uninterrupted one; an EMA of the weights,
a cosine learning rate with warm-up, gradient clipping, and a progress bar with the running loss.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from sdopt.contract.cache import cache_root, weights_key


def step_seed(seed: int, stage: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, stage, step]).generate_state(1, dtype=np.uint64)[0] % (2**63 - 1))


def cosine_lr(step: int, total: int, base: float, warmup: int, final_frac: float = 0.05) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def world_and_rank() -> tuple[int, int]:
    """(processes, this one's rank) under `accelerate launch` / torchrun; (1, 0) alone."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))


def across_processes(module, world: int):
    """The module that trains `module`: itself alone, DDP-wrapped by accelerate across `world` processes (the
    gradients averaged, so N processes follow the loss curve of one)."""
    if world == 1:
        return module
    import torch
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available()).prepare_model(module)


def checkpoint_path(kind: str, modules, settings: dict, rank: int = 0) -> Path:
    """`$SDOPT_CACHE/KIND/KEY.safetensors`, KEY hashing the modules' weights and the settings; one file per rank."""
    root = cache_root() / kind
    root.mkdir(parents=True, exist_ok=True)
    return root / f"{weights_key(modules, settings)}{'' if rank == 0 else f'.rank{rank}'}.safetensors"


def save_checkpoint(path: str, modules: dict, optimizer, meta: dict) -> None:
    """modules {prefix: nn.Module}; optimizer state flattened; all in one safetensors file (no pickle)."""
    import torch
    from safetensors.torch import save_file

    tensors, storages = {}, set()

    def own(t):  # safetensors refuses tensors that share memory: only those are copied (no second model in RAM)
        t = t.detach().contiguous()
        if t.untyped_storage().data_ptr() in storages:
            return t.clone()
        storages.add(t.untyped_storage().data_ptr())
        return t

    for prefix, mod in modules.items():
        for k, v in mod.state_dict().items():
            tensors[f"{prefix}/{k}"] = own(v)
    groups = []
    if optimizer is not None:
        sd = optimizer.state_dict()
        for idx, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"opt/{idx}/{k}"] = own(v if torch.is_tensor(v) else torch.tensor(v))
        groups = sd["param_groups"]
    metadata = {"meta": json.dumps(meta), "param_groups": json.dumps(groups)}
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


def load_checkpoint(path: str, modules: dict, optimizer) -> dict:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(path)
    with safe_open(path, "pt") as f:
        md = f.metadata()
    for prefix, mod in modules.items():
        sd = {k[len(prefix) + 1:]: v for k, v in tensors.items() if k.startswith(prefix + "/")}
        mod.load_state_dict(sd)
    if optimizer is not None:
        state: dict = {}
        for k, v in tensors.items():
            if k.startswith("opt/"):
                _, idx, name = k.split("/", 2)
                state.setdefault(int(idx), {})[name] = v
        groups = json.loads(md["param_groups"])
        optimizer.load_state_dict({"state": state, "param_groups": groups})
        for st in optimizer.state.values():  # keep 'step' a float tensor as torch expects
            if "step" in st and torch.is_tensor(st["step"]):
                st["step"] = st["step"].to(torch.float32)
    return json.loads(md["meta"])


class EMA:
    """Exponential moving average of a module's weights, in a copy of the module."""

    def __init__(self, module):
        import copy

        self.source, self.average = module, copy.deepcopy(module)
        self.average.requires_grad_(False)

    def update(self, decay: float) -> None:
        import torch

        with torch.no_grad():
            for ps, pd in zip(self.source.parameters(), self.average.parameters()):
                pd.mul_(decay).add_(ps.detach(), alpha=1 - decay)


class StageTimer:
    """Sets a stage's step count from a time budget after timing its first steps."""

    def __init__(self, minutes: float, fixed: int | None, start_step: int, total: int | None,
                 probe_steps: int = 12):
        self.minutes = minutes
        self.total = fixed or total
        self.probe_steps = probe_steps
        self.t0 = time.time()
        self.start = start_step

    def update(self, step: int, elapsed_before: float) -> int | None:
        if self.total is None and step - self.start == self.probe_steps:
            per_step = (time.time() - self.t0) / self.probe_steps
            left = self.minutes * 60 - elapsed_before - (time.time() - self.t0)
            self.total = max(step + 1, step + int(left / per_step))
        return self.total


@dataclass(frozen=True)
class Stage:
    name: str  # progress bar and log label
    stage_id: int  # with the seed and the step, seeds each step's generators
    seed: int
    lr: float
    warmup: int  # learning-rate warm-up steps
    checkpoint: str  # safetensors path
    steps: int | None = None  # fixed step count (always run in full), else from `minutes`
    minutes: float = 10.0
    deadline_factor: float = 1.1  # a timed stage stops anyway after minutes x this
    checkpoint_seconds: float = 120.0
    resume: bool = False
    log_every: int = 20
    clip_norm: float = 1.0
    repeat: str = ""  # how a user fixes the step count, "{}" for it (default: the trainer's --NAME-steps flag)


def run_stage(stage: Stage, modules: dict, optimizer, params: list, loss_fn: Callable, *, total: int | None = None,
              after_step: Callable | None = None, stop: Callable | None = None, log=print) -> dict:
    """Train: `loss_fn(step, rng, generator) -> (loss, display)` for each step (numpy rng and torch generator
    seeded by (seed, stage_id, step) and (seed, 11 * stage_id, step)); `after_step(step)` after each optimizer
    step (an EMA update); `stop(elapsed_s)` ends a timed stage early. Checkpoints `modules` and `optimizer`
    every `checkpoint_seconds` and at the end; with `resume`, continues from the checkpoint.
    Returns {"step", "total", "seconds"}."""
    import torch
    from tqdm.auto import tqdm

    step, elapsed = 0, 0.0
    if stage.resume and os.path.exists(stage.checkpoint):
        meta = load_checkpoint(stage.checkpoint, modules, optimizer)
        step, total, elapsed = meta["step"], meta["total"], meta["elapsed"]
        log(f"{stage.name}: resumed at step {step}/{total}")
    timer = StageTimer(stage.minutes, stage.steps, step, total)
    bar = tqdm(total=total, initial=step, desc=stage.name, unit="step", dynamic_ncols=True, mininterval=5)
    t_start, last_checkpoint = time.time(), time.time()

    def save():
        save_checkpoint(stage.checkpoint, modules, optimizer,
                        {"step": step, "total": total, "elapsed": elapsed + time.time() - t_start})

    while True:
        total = timer.update(step, elapsed)
        if total is not None:
            if bar.total != total:
                bar.total = total
                bar.refresh()
                hint = (stage.repeat or f"--{stage.name}-steps {{}}").format(total)
                log(f"{stage.name}: {total} steps (repeat exactly with {hint})")
            if step >= total:
                break
        rng = np.random.default_rng(step_seed(stage.seed, stage.stage_id, step))
        generator = torch.Generator().manual_seed(step_seed(stage.seed, stage.stage_id * 11, step))
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(step, total or 10**9, stage.lr, stage.warmup)
        loss, display = loss_fn(step, rng, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, stage.clip_norm)
        optimizer.step()
        if after_step is not None:
            after_step(step)
        step += 1
        bar.update(1)
        if step % stage.log_every == 0:
            bar.set_postfix(display())
        # time limits guard step counts derived from minutes; explicit counts are always run in full
        seconds = elapsed + time.time() - t_start
        over = stage.steps is None and (seconds > stage.minutes * 60 * stage.deadline_factor
                                        or (stop is not None and stop(seconds)))
        if time.time() - last_checkpoint > stage.checkpoint_seconds or over or (total and step >= total):
            save()
            last_checkpoint = time.time()
        if over:
            log(f"{stage.name}: time budget exceeded, stopping at step {step}")
            break
    bar.close()
    return {"step": step, "total": total, "seconds": elapsed + time.time() - t_start}


def check_budget(name: str, train_steps: int | None, minutes: float | None) -> None:
    """A training pass's length: a step count, or a time budget in minutes, not both."""
    from sdopt.contract.errors import SdoptError

    if train_steps is not None and minutes is not None:
        raise SdoptError(f"{name}: give train_steps or minutes, not both")
    if minutes is not None and not 0 < minutes <= 24 * 60:
        raise SdoptError(f"{name}: minutes {minutes} must lie in (0, 1440]")
    if train_steps is not None and not 1 <= train_steps <= 10_000_000:
        raise SdoptError(f"{name}: train_steps {train_steps} must lie in [1, 10000000]")


def fixed_steps(train_steps: int | None, minutes: float | None, default: int) -> int | None:
    """The step count a pass trains for: the given one, the default when neither it nor a time budget is given
    (the same model on any CPU), or None under a budget (the count is then set from the first steps' pace)."""
    return train_steps if train_steps is not None or minutes is not None else default
