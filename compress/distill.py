"""Data-free distillation of a pruned UNet (the student) from the UNet it was pruned from (the teacher).

The student learns the teacher's noise prediction (output KD) and the outputs of every stage the two share
(feature KD, BK-SDM's losses) on UNet inputs recorded along the teacher's own sampling trajectories over
prompts (the calibration recorder: no image dataset). An optional image folder (`images`) adds the denoising
loss on its VAE latents, captioned by text files beside the images. Each step draws `batch` recorded UNet
inputs (guidance rows taken singly) with the step's seeded generator, so a run is reproducible and resumable
from its checkpoint (`$SDOPT_CACHE/distill`, keyed by teacher, student and settings). An EMA of the
student's weights is what the artifact gets.

Scale-out is accelerate's: under `accelerate launch --num_processes N sdopt compress ...` each process takes
its share of every step's batch and DDP averages the gradients, so N processes follow the loss curve of
one; only the main process goes on to export.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from sdopt.calibration.trajectory import CalibrationConfig, check_calibration
from sdopt.compress.denoiser import record_unet_calls, run_unet
from sdopt.compress.denoising import Objective, image_latents, list_images
from sdopt.errors import SdoptError
from sdopt.passes import register
from sdopt.training import EMA, Stage, checkpoint_path, run_stage, world_and_rank

INPUTS = ("sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids")


@dataclass(frozen=True)
class DistillConfig:
    minutes: float = 20.0  # time budget: the step count is set after timing the first steps
    steps: int | None = None  # a fixed step count instead of the budget
    batch: int = 16  # recorded UNet inputs per step (all processes together)
    lr: float = 3e-4
    output_weight: float = 1.0  # output KD
    feature_weight: float = 1.0  # feature KD, summed over the shared stages
    ema: float = 0.999  # decay of the weight average the artifact gets (0: the last weights)
    images: str = ""  # a folder of images: adds the denoising loss on them (captions: NAME.txt beside NAME.png)
    image_weight: float = 1.0
    seed: int = 0
    resume: bool = True  # continue from the checkpoint of the same teacher, student and settings
    calibration: CalibrationConfig = field(default_factory=lambda: CalibrationConfig(num_prompts=64))

    def __post_init__(self):
        if not 0 < self.minutes <= 24 * 60:
            raise SdoptError(f"distill: minutes {self.minutes} must lie in (0, 1440]")
        if self.steps is not None and not 1 <= self.steps <= 10_000_000:
            raise SdoptError(f"distill: steps {self.steps} must lie in [1, 10000000]")
        if not 1 <= self.batch <= 4096:
            raise SdoptError(f"distill: batch {self.batch} must lie in [1, 4096]")
        if not 0 < self.lr < 1:
            raise SdoptError(f"distill: lr {self.lr} must lie in (0, 1)")
        if self.output_weight < 0 or self.feature_weight < 0 or self.output_weight + self.feature_weight == 0:
            raise SdoptError("distill: output_weight and feature_weight must be >= 0, not both 0")
        if self.image_weight < 0:
            raise SdoptError("distill: image_weight must be >= 0")
        if not 0 <= self.ema < 1:
            raise SdoptError(f"distill: ema {self.ema} must lie in [0, 1)")


def check(source, config: DistillConfig) -> None:
    check_calibration(source, config.calibration)
    if config.images:
        unet = source.pipeline.unet
        if source.kind != "sd" or unet.config.in_channels != source.pipeline.vae.config.latent_channels:
            raise SdoptError("distill: images are for text-to-image SD1.x / SD2.x UNets (not SDXL, not inpainting)")
        list_images(config.images)


@contextlib.contextmanager
def _unet(pipe, unet):
    student, pipe.unet = pipe.unet, unet
    try:
        yield
    finally:
        pipe.unet = student


def stage_features(unet, found: dict):
    """Hooks recording each stage's output under its name: a down block's before its downsampler (a pruned
    UNet's new last block has none), a mid or up block's own output."""
    handles = []
    for i, block in enumerate(unet.down_blocks):
        last = (getattr(block, "attentions", None) or block.resnets)[-1]
        handles.append(last.register_forward_hook(_record(found, f"down_blocks.{i}")))
    for i, block in enumerate(unet.up_blocks):
        handles.append(block.register_forward_hook(_record(found, f"up_blocks.{i}")))
    if unet.mid_block is not None:
        handles.append(unet.mid_block.register_forward_hook(_record(found, "mid_block")))
    return handles


def _record(found: dict, name: str):
    def hook(_module, _args, output):
        found[name] = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
    return hook


def shared_stages(teacher, student) -> dict[str, str]:
    """Student stage -> teacher stage with the same role: down blocks by index from the top, up blocks by
    index from the bottom of the teacher's (pruning removes the innermost up blocks first), the mid block."""
    pairs = {f"down_blocks.{i}": f"down_blocks.{i}" for i in range(len(student.down_blocks))}
    removed = len(teacher.up_blocks) - len(student.up_blocks)
    pairs.update({f"up_blocks.{k}": f"up_blocks.{k + removed}" for k in range(len(student.up_blocks))})
    if student.mid_block is not None and teacher.mid_block is not None:
        pairs["mid_block"] = "mid_block"
    return pairs


def apply(source, config: DistillConfig):
    teacher = source.teachers.get("unet")
    if teacher is None:
        raise SdoptError("distill: no teacher (a prune pass before distill makes one)")
    pipe, start = source.pipeline, time.perf_counter()
    with _unet(pipe, teacher):
        records = record_unet_calls(source, config.calibration)
    rows = [(i, r) for i, record in enumerate(records) for r in range(record["sample"].shape[0])]
    images = None
    if config.images:
        latent_hw = records[0]["sample"].shape[-2:]
        images = image_latents(source, list_images(config.images), [d * pipe.vae_scale_factor for d in latent_hw])
    objective = Objective(dict(pipe.scheduler.config)) if images is not None else None
    student = pipe.unet
    world, rank = world_and_rank()
    model = student
    if world > 1:
        from accelerate import Accelerator

        model = Accelerator(cpu=not torch.cuda.is_available()).prepare_model(student)
    student.train().requires_grad_(True)
    teacher.eval().requires_grad_(False)
    ema = EMA(student) if config.ema > 0 else None
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    pairs = shared_stages(teacher, student)
    teacher_found, student_found = {}, {}
    handles = stage_features(teacher, teacher_found) + stage_features(student, student_found)
    losses: list[float] = []

    def loss_fn(step, rng, generator):
        picked = rng.choice(len(rows), size=config.batch, replace=len(rows) < config.batch)
        mine = picked[rank::world]  # this process's share of the step's batch
        inputs = {key: torch.stack([records[rows[j][0]][key][rows[j][1]] for j in mine])
                  for key in INPUTS if key in records[0]}
        with torch.no_grad():
            target = run_unet(teacher, inputs)
        n, noise_target = len(mine), None
        if images is not None:  # the image rows join the same forward (one DDP forward per step)
            chosen = rng.choice(len(images[0]), size=config.batch, replace=len(images[0]) < config.batch)
            chosen = chosen[rank::world]
            sample, timestep, noise_target = objective.noised(images[0][chosen], generator)
            inputs = {"sample": torch.cat([inputs["sample"], sample]),
                      "timestep": torch.cat([inputs["timestep"], timestep]),
                      "encoder_hidden_states": torch.cat([inputs["encoder_hidden_states"], images[1][chosen]])}
        out = run_unet(model, inputs)
        loss = config.output_weight * torch.nn.functional.mse_loss(out[:n], target)
        if config.feature_weight:
            loss = loss + config.feature_weight * sum(
                torch.nn.functional.mse_loss(student_found[s][:n], teacher_found[t]) for s, t in pairs.items()
                if student_found[s].shape[1:] == teacher_found[t].shape[1:])
        if noise_target is not None:
            loss = loss + config.image_weight * torch.nn.functional.mse_loss(out[n:], noise_target)
        shown = loss.detach().clone()
        if world > 1:
            torch.distributed.all_reduce(shown)
            shown /= world
        losses.append(float(shown))
        return loss * len(mine) * world / config.batch, lambda: {"loss": f"{np.mean(losses[-20:]):.4g}"}

    settings = {k: v for k, v in asdict(config).items() if k not in ("resume", "minutes")}
    checkpoint = checkpoint_path("distill", (teacher, student), {**settings, "spec": source.spec}, rank)
    stage = Stage("distill", 41, config.seed, config.lr, min(100, (config.steps or 1000) // 10 + 1), str(checkpoint),
                  steps=config.steps, minutes=config.minutes, resume=config.resume, checkpoint_seconds=60,
                  repeat="--set distill.steps={}")
    modules = {"student": student, **({"ema": ema.average} if ema else {})}
    try:
        done = run_stage(stage, modules, optimizer, params, loss_fn,
                         after_step=(lambda _s: ema.update(config.ema)) if ema else None,
                         log=lambda message: print(message, file=sys.stderr))
    finally:
        for handle in handles:
            handle.remove()
    final = ema.average if ema else student
    final.eval().requires_grad_(False)
    pipe.unet = final
    source.secondary = rank != 0  # only the main process exports
    source.records.append({"pass": "distill", "steps": done["step"], "seconds": round(done["seconds"], 1),
                           "processes": world, "recorded_calls": len(records),
                           "images": 0 if images is None else len(images[0]), "stages": sorted(pairs),
                           "loss_first": losses[0] if losses else None,
                           "loss_curve": [round(v, 6) for v in losses[:: max(1, len(losses) // 50)]],
                           "loss_last": float(np.mean(losses[-20:])) if losses else None,
                           "wall_seconds": round(time.perf_counter() - start, 1)})
    return source


register("distill", DistillConfig, apply, check=check, requires=("prune",), before=("quantize", "cache"))
