"""Latent consistency distillation (Luo et al. 2023): a few-step student of the denoiser, data-free.

The student is the teacher with a guidance embedding added to its time embedding (the backbone's
`guidance_input`, zero-initialised, so training starts from the teacher): it samples without the negative
batch. Each step noises clean latents to a timestep of the distillation schedule (every k-th training
timestep), lets the teacher take one guided DDIM step from there to the previous one at a random guidance
scale, and trains the student's consistency function at the noisier point towards the target network's at the
less noisy one (skipping-step consistency distillation; the target is an EMA of the student, the artifact gets
it). The clean latents are the teacher's own generations over prompts: no image dataset.

With `lora_rank`, the student is an LCM-LoRA instead (Luo et al. 2023b): the teacher plus low-rank adapters
(peft) on its attention, feed-forward and resnet layers, no guidance embedding; it distils one guidance scale
(the default) into the adapters, and samples unguided. One denoiser is in memory: the teacher is the denoiser
with its adapters off, the target network the denoiser with an EMA of the adapters swapped in. The adapters are
fused into the artifact's denoiser and also saved in diffusers' LoRA format
(`lcm_lora/pytorch_lora_weights.safetensors`), which the `lora` pass (`--lora FILE`) fuses into related models
(fine-tunes of the same base).

The artifact records the student's sampler (`lcm`), default steps and guidance. Training is the shared
loop's (seeded, progress, checkpoints in `$SDOPT_CACHE/lcm`, resume) and runs under `accelerate launch`
on several processes as distillation does.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from sdopt.backbones import backbone_of, backbone_of_pipeline
from sdopt.calibration.trajectory import CalibrationConfig, check_calibration
from sdopt.compress.denoising import Objective
from sdopt.compress.registry import register
from sdopt.compress.trajectories import generate_latents
from sdopt.contract.errors import SdoptError
from sdopt.contract.limits import MAX_STEPS
from sdopt.contract.sampling import consistency_scalings, consistency_timesteps, guidance_embedding
from sdopt.training.loop import (
    EMA,
    Stage,
    across_processes,
    check_budget,
    checkpoint_path,
    fixed_steps,
    run_stage,
    world_and_rank,
)

EMBEDDING_DIM = 256  # of the guidance embedding, as LCM's released models
HUBER_C = 0.001
DEFAULT_TRAIN_STEPS = 3000  # a fixed count: the same student on any CPU (a time budget is the `minutes` option)
DEFAULT_PROMPTS = 576  # teacher generations over this many calibration prompts (all of tiny-shapes' training set)
# Learning rates as diffusers' LCM distillation scripts choose them: small for the whole denoiser (its README:
# 1e-6 for SD; 1e-4, the LoRA rate, made a tiny-shapes student whose 4-step images lose corners: 94.5 % instead of
# 100 % alignment), larger for low-rank adapters (the layers they adapt: the backbone's `lora_targets`)
STUDENT_LR = 1e-5
LORA_LR = 1e-4
LORA_FILE = "lcm_lora/pytorch_lora_weights.safetensors"


@dataclass(frozen=True)
class LcmConfig:
    steps: int = 4  # the student's default sampling steps (recorded in the artifact)
    guidance: float = 0.0  # its default guidance scale; 0: the teacher's
    guidance_min: float = 1.0  # training draws guidance scales from [guidance_min, guidance_max]
    guidance_max: float = 0.0  # 0: twice the default minus one (symmetric around it)
    schedule_steps: int = 50  # the distillation schedule: every (T / schedule_steps)-th timestep
    train_steps: int | None = None  # None: DEFAULT_TRAIN_STEPS (unless a time budget is given)
    minutes: float | None = None  # a time budget instead: the step count is set after timing the first steps
    batch: int = 16
    lr: float | None = None  # None: STUDENT_LR for the full student, LORA_LR for LCM-LoRA adapters
    target_ema: float = 0.95  # decay of the target network (an EMA of the student, or of its adapters)
    lora_rank: int = 0  # > 0: an LCM-LoRA of this rank instead of the embedded student
    seeds: int = 2  # teacher generations per prompt (the clean latents)
    seed: int = 0
    resume: bool = True
    calibration: CalibrationConfig = field(default_factory=lambda: CalibrationConfig(num_prompts=DEFAULT_PROMPTS))

    def __post_init__(self):
        if not 1 <= self.steps <= self.schedule_steps:
            raise SdoptError(f"lcm: steps {self.steps} must lie in [1, schedule_steps {self.schedule_steps}]")
        if not 1 <= self.schedule_steps <= MAX_STEPS:
            raise SdoptError(f"lcm: schedule_steps {self.schedule_steps} must lie in [1, {MAX_STEPS}]")
        if self.guidance < 0 or self.guidance_min < 1 or (self.guidance_max and self.guidance_max < self.guidance_min):
            raise SdoptError("lcm: guidance must be >= 0, 1 <= guidance_min <= guidance_max (0: automatic)")
        check_budget("lcm", self.train_steps, self.minutes)
        if not 1 <= self.batch <= 4096 or not 0 < (self.lr or STUDENT_LR) < 1 or not 0 <= self.target_ema < 1:
            raise SdoptError("lcm: batch in [1, 4096], lr in (0, 1), target_ema in [0, 1)")
        if not 1 <= self.seeds <= 64:
            raise SdoptError(f"lcm: seeds {self.seeds} must lie in [1, 64]")
        if not 0 <= self.lora_rank <= 1024:
            raise SdoptError(f"lcm: lora_rank {self.lora_rank} must lie in [0, 1024] (0: no LoRA)")


def check(source, config: LcmConfig) -> None:
    backbone = source.backbone
    needed = ("lora_targets", "save_lora") if config.lora_rank else ("guidance_student",)
    missing = [name for name in needed if getattr(backbone, name, None) is None]
    if missing:
        raise SdoptError(f"lcm: the {backbone.family} backbone cannot make this student (no {missing[0]})")
    if source.kind != "sd" or backbone.takes_masked_image(source):
        raise SdoptError("lcm: distils text-to-image SD1.x / SD2.x models (not SDXL, not inpainting)")
    if backbone.embeds_guidance(source.denoiser):
        raise SdoptError("lcm: the denoiser already takes an embedded guidance scale")
    kind = source.pipeline.scheduler.config.get("prediction_type", "epsilon")
    if kind not in ("epsilon", "v_prediction"):
        raise SdoptError(f"lcm: needs an epsilon or v_prediction model, not {kind}")
    if int(source.pipeline.scheduler.config.num_train_timesteps) < config.schedule_steps:
        raise SdoptError(f"lcm: schedule_steps {config.schedule_steps} exceeds the model's training timesteps")
    check_calibration(source, config.calibration)


def guidance_student(teacher):
    """The teacher with a zero-initialised guidance projection in its time embedding: the same outputs."""
    return backbone_of(teacher).guidance_student(teacher, EMBEDDING_DIM)


class Schedule(Objective):
    """The distillation schedule: every k-th training timestep, and the consistency function on it."""

    def __init__(self, scheduler_config: dict, schedule_steps: int, timestep_scaling: float = 10.0):
        super().__init__(scheduler_config)
        train = len(self.alphas)
        self.timesteps = torch.from_numpy(consistency_timesteps(train, schedule_steps))
        self.skip = train // schedule_steps
        self.scaling = timestep_scaling

    def consistency(self, output, sample, t):
        """The consistency function c_skip(t) x_t + c_out(t) x0(x_t)."""
        c_skip, c_out = (torch.from_numpy(v).view(-1, 1, 1, 1) for v in consistency_scalings(t.numpy(), self.scaling))
        return c_skip * sample + c_out * self.x0(sample, t, output)


def lora_student(model, rank: int, seed: int):
    """The denoiser with LoRA adapters whose up-projections start at zero (the same outputs), only they
    trainable."""
    from peft import LoraConfig as PeftLoraConfig

    targets = backbone_of(model).lora_targets
    model.requires_grad_(False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model.add_adapter(PeftLoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                         target_modules=list(targets)), adapter_name="lcm")
    return model


@contextlib.contextmanager
def adapters_off(model):
    model.disable_adapters()
    try:
        yield
    finally:
        model.enable_adapters()


class AdapterTarget(torch.nn.Module):
    """The target network of a LoRA student: an EMA of its adapter weights, swapped into the student for the
    target's forward (a copy of the adapters, not of the denoiser)."""

    def __init__(self, params: list):
        super().__init__()
        self.live = list(params)  # a plain list: not registered, not saved twice
        self.average = torch.nn.ParameterList([torch.nn.Parameter(p.detach().clone(), requires_grad=False)
                                               for p in params])

    def update(self, decay: float) -> None:
        with torch.no_grad():
            for average, p in zip(self.average, self.live):
                average.mul_(decay).add_(p.detach(), alpha=1 - decay)

    @contextlib.contextmanager
    def swapped_in(self):
        saved = [p.detach().clone() for p in self.live]
        self.commit()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, value in zip(self.live, saved):
                    p.copy_(value)

    def commit(self) -> None:
        """The student's adapters become the averaged ones (the artifact gets the target, as the full student's)."""
        with torch.no_grad():
            for p, average in zip(self.live, self.average):
                p.copy_(average)


def lora_file_bytes(pipe, state: dict) -> bytes:
    """The denoiser's adapters (peft keys) as a diffusers LoRA file, as bytes."""
    with tempfile.TemporaryDirectory() as folder:
        backbone_of_pipeline(pipe).save_lora(pipe, folder, state)
        return (Path(folder) / Path(LORA_FILE).name).read_bytes()


def guidance_range(source, config: LcmConfig) -> tuple[float, float, float]:
    default = config.guidance or source.guidance
    if config.lora_rank:  # the LoRA student cannot take a scale: it learns the default one
        return default, default, default
    high = config.guidance_max or max(config.guidance_min, 2 * default - 1)
    return default, config.guidance_min, high


def learning_rate(config: LcmConfig) -> float:
    return config.lr or (LORA_LR if config.lora_rank > 0 else STUDENT_LR)


def _student(teacher, config: LcmConfig, world: int):
    """(student, the module that trains it (DDP-wrapped across processes), its trained parameters, the target
    network's keeper, (teacher mode, target network, target mode)): a LoRA student's teacher is itself with the
    adapters off and its target the EMA adapters swapped in; a full student's target is its EMA copy."""
    lora = config.lora_rank > 0
    student = lora_student(teacher, config.lora_rank, config.seed) if lora else guidance_student(teacher)
    model = across_processes(student, world)
    student.train()
    if not lora:  # a LoRA student trains its adapters only
        student.requires_grad_(True)
    params = [p for p in student.parameters() if p.requires_grad]
    if lora:
        target = AdapterTarget(params)
        return student, model, params, target, ((lambda: adapters_off(student)), student, target.swapped_in)
    target = EMA(student)
    return student, model, params, target, (contextlib.nullcontext, target.average, contextlib.nullcontext)


def _adopt_student(source, teacher, student, target, config: LcmConfig, main_process: bool) -> dict:
    """The trained student becomes the pipeline's denoiser (a LoRA student's adapters fused, its file kept);
    the record's entries."""
    backbone = source.backbone
    if config.lora_rank > 0:
        target.commit()
        return fuse_lcm_lora(source, student, config.lora_rank, main_process)
    source.outputs.teachers.setdefault(backbone.component, teacher)
    backbone.replace(source.pipeline, target.average.eval().requires_grad_(False))
    return {}


def apply(source, config: LcmConfig):
    pipe, backbone, start = source.pipeline, source.backbone, time.perf_counter()
    teacher = backbone.denoiser(pipe).eval().requires_grad_(False)
    default, low, high = guidance_range(source, config)
    latents, embeddings, uncond = generate_latents(source, config.calibration, config.seeds)
    schedule = Schedule(dict(pipe.scheduler.config), config.schedule_steps)
    lora = config.lora_rank > 0
    world, rank = world_and_rank()
    steps = fixed_steps(config.train_steps, config.minutes, DEFAULT_TRAIN_STEPS)
    lr = learning_rate(config)
    settings = {k: v for k, v in asdict(config).items() if k not in ("resume", "minutes", "steps", "guidance")}
    settings.update(train_steps=steps, lr=lr)
    checkpoint = checkpoint_path("lcm", (teacher,), {**settings, "spec": source.spec, "range": [low, high]}, rank)
    student, model, params, target, (teacher_mode, target_net, target_mode) = _student(teacher, config, world)
    # one tensor at a time: the multi-tensor step holds a temporary the size of the model (a fourth of SD's)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, foreach=False)
    losses: list[float] = []

    def loss_fn(step, rng, generator):
        picked = rng.choice(len(latents), size=config.batch, replace=len(latents) < config.batch)
        index = rng.integers(0, len(schedule.timesteps), size=config.batch)
        scales = rng.uniform(low, high, size=config.batch).astype(np.float32)
        noise = torch.randn((config.batch, *latents.shape[1:]), generator=generator)
        mine = slice(rank, None, world)  # this process's share of the step's batch
        picked, index, scales, noise = picked[mine], index[mine], scales[mine], noise[mine]
        x0, text = latents[picked], embeddings[picked]
        t = schedule.timesteps[index]
        t_prev = (t - schedule.skip).clamp(min=0)
        a = schedule.alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        cond = None if lora else torch.from_numpy(guidance_embedding(scales, EMBEDDING_DIM))
        with torch.no_grad():  # first: a LoRA target swaps the student's adapters, which the backward must not see
            n = len(picked)
            with teacher_mode():
                both = backbone.call(teacher, backbone.inputs(torch.cat([x_t, x_t]), torch.cat([t, t]).float(),
                                                              torch.cat([uncond.expand(n, -1, -1), text])))
            (x0_u, eps_u), (x0_c, eps_c) = (schedule.x0_eps(x_t, t, o) for o in both.chunk(2))
            w = torch.from_numpy(scales - 1).view(-1, 1, 1, 1)
            x0_g, eps_g = x0_c + w * (x0_c - x0_u), eps_c + w * (eps_c - eps_u)
            a_prev = schedule.alphas[t_prev].view(-1, 1, 1, 1)
            x_prev = a_prev.sqrt() * x0_g + (1 - a_prev).sqrt() * eps_g
            with target_mode():
                out_prev = backbone.call(target_net, backbone.inputs(x_prev, t_prev.float(), text, cond))
            goal = schedule.consistency(out_prev, x_prev, t_prev)
        out = backbone.call(model, backbone.inputs(x_t, t.float(), text, cond))
        prediction = schedule.consistency(out, x_t, t)
        loss = (torch.sqrt((prediction - goal) ** 2 + HUBER_C**2) - HUBER_C).mean()
        if not torch.isfinite(loss):
            raise SdoptError(f"lcm: the loss became non-finite at step {step}")
        shown = loss.detach().clone()
        if world > 1:
            torch.distributed.all_reduce(shown)
            shown /= world
        losses.append(float(shown))
        return loss * n * world / config.batch, lambda: {"loss": f"{np.mean(losses[-20:]):.4g}"}

    stage = Stage("lcm", 43, config.seed, lr, min(100, (steps or 1000) // 10 + 1), str(checkpoint),
                  steps=steps, minutes=config.minutes or 0.0, resume=config.resume, checkpoint_seconds=60,
                  repeat="--set lcm.train_steps={}")
    modules = {"student": student, "target": target if lora else target.average}
    done = run_stage(stage, modules, optimizer, params, loss_fn, after_step=lambda _s: target.update(config.target_ema),
                     log=lambda message: print(message, file=sys.stderr))
    extra = _adopt_student(source, teacher, student, target, config, rank == 0)
    if lora:
        default = 1.0  # the guidance is in the adapters
    _use_lcm_scheduler(pipe, config.schedule_steps)
    source.steps, source.guidance, source.scheduler = config.steps, default, "lcm"
    source.outputs.secondary = rank != 0  # only the main process exports
    source.outputs.records.append({"pass": "lcm", "train_steps": done["step"], "seconds": round(done["seconds"], 1),
                           "processes": world, "latents": len(latents), "guidance_range": [low, high],
                           "default_steps": config.steps, "default_guidance": default, **extra,
                           "loss_first": losses[0] if losses else None,
                           "loss_curve": [round(v, 6) for v in losses[:: max(1, len(losses) // 50)]],
                           "loss_last": float(np.mean(losses[-20:])) if losses else None,
                           "wall_seconds": round(time.perf_counter() - start, 1)})
    return source


def fuse_lcm_lora(source, student, lora_rank: int, main_process: bool) -> dict:
    """Fuses the trained adapters into the pipeline's denoiser through the `lora` pass's loader (the route the
    saved file takes into other models) and keeps the file for the artifact; the record's entries."""
    import copy

    from peft.utils import get_peft_model_state_dict

    from sdopt.compress.lora import fuse_lora

    pipe, backbone = source.pipeline, source.backbone
    name = backbone.component
    state = {k: v.detach() for k, v in get_peft_model_state_dict(student, adapter_name="lcm").items()}
    parameters = sum(v.numel() for v in state.values())
    student.unload_lora()
    backbone.replace(pipe, student.eval().requires_grad_(False))
    source.outputs.teachers.setdefault(name, copy.deepcopy(backbone.denoiser(pipe)))
    fused = fuse_lora(pipe, {f"{name}.{k}": v for k, v in state.items()}, 1.0, "lcm_lora", label="lcm-lora")
    if main_process:
        source.outputs.files[LORA_FILE] = lora_file_bytes(pipe, state)
    return {"lora_rank": lora_rank, "lora_parameters": parameters, "lora_file": LORA_FILE,
            "lora_fused_layers": fused[name]}


def _use_lcm_scheduler(pipe, schedule_steps: int) -> None:
    """The artifact's scheduler config becomes LCMScheduler's, with the distillation schedule it was trained on."""
    from diffusers import LCMScheduler

    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config, original_inference_steps=schedule_steps)


register("lcm", LcmConfig, apply, check=check, before=("quantize",), excludes=("cache",))
