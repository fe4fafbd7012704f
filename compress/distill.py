"""Data-free distillation of a pruned denoiser (the student) from the one it was pruned from (the teacher).

The student learns the teacher's noise prediction (output KD) and the outputs of every stage the two share
(feature KD, BK-SDM's losses; the backbone adapter names the stages) on denoiser inputs recorded along the
teacher's own sampling trajectories over prompts (the calibration recorder: no image dataset). An optional
image folder (`images`) adds the denoising loss on its VAE latents, captioned by text files beside the images.
Each step draws `batch` recorded denoiser inputs (guidance rows taken singly) with the step's seeded
generator, so a run is reproducible and resumable from its checkpoint (`$SDOPT_CACHE/distill`, keyed by
teacher, student and settings). An EMA of the student's weights is what the artifact gets.

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
from sdopt.compress.denoising import Objective, image_latents, list_images
from sdopt.compress.registry import register
from sdopt.compress.trajectories import record_denoiser_calls
from sdopt.contract.errors import SdoptError
from sdopt.contract.graphs import ADDED_CONDITIONS
from sdopt.training.loop import EMA, Stage, across_processes, checkpoint_path, run_stage, world_and_rank


@dataclass(frozen=True)
class DistillConfig:
    minutes: float = 20.0  # time budget: the step count is set after timing the first steps
    steps: int | None = None  # a fixed step count instead of the budget
    batch: int = 16  # recorded denoiser inputs per step (all processes together)
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
    backbone = source.backbone
    if getattr(backbone, "stage_features", None) is None or getattr(backbone, "shared_stages", None) is None:
        raise SdoptError(f"distill: the {backbone.family} backbone names no stages to distil")
    check_calibration(source, config.calibration)
    if config.images:
        if source.kind != "sd" or backbone.takes_masked_image(source):
            raise SdoptError("distill: images are for text-to-image SD1.x / SD2.x models (not SDXL, not inpainting)")
        list_images(config.images)


@contextlib.contextmanager
def _swapped(backbone, pipe, module):
    """The pipeline with `module` as its denoiser for the block's duration."""
    student = backbone.denoiser(pipe)
    backbone.replace(pipe, module)
    try:
        yield
    finally:
        backbone.replace(pipe, student)


def _training_data(source, teacher, config: DistillConfig):
    """(the teacher's recorded calls, (record, row) of each guidance row, the image folder's (latents,
    embeddings) or None, the denoising objective for them or None)."""
    backbone, pipe = source.backbone, source.pipeline
    latent = backbone.latent_input
    with _swapped(backbone, pipe, teacher):
        records = record_denoiser_calls(source, config.calibration)
    rows = [(i, r) for i, record in enumerate(records) for r in range(record[latent].shape[0])]
    if not config.images:
        return records, rows, None, None
    latent_hw = records[0][latent].shape[-2:]
    images = image_latents(source, list_images(config.images), [d * pipe.vae_scale_factor for d in latent_hw])
    return records, rows, images, Objective(dict(pipe.scheduler.config))


def apply(source, config: DistillConfig):
    backbone = source.backbone
    teacher = source.outputs.teachers.get(backbone.component)
    if teacher is None:
        raise SdoptError("distill: no teacher (a prune pass before distill makes one)")
    pipe, start = source.pipeline, time.perf_counter()
    latent = backbone.latent_input
    keys = (latent, backbone.timestep_input, backbone.text_input, *ADDED_CONDITIONS)  # not an embedded guidance
    records, rows, images, objective = _training_data(source, teacher, config)
    student = backbone.denoiser(pipe)
    world, rank = world_and_rank()
    model = across_processes(student, world)
    student.train().requires_grad_(True)
    teacher.eval().requires_grad_(False)
    ema = EMA(student) if config.ema > 0 else None
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    pairs = backbone.shared_stages(teacher, student)
    teacher_found, student_found = {}, {}
    handles = backbone.stage_features(teacher, teacher_found) + backbone.stage_features(student, student_found)
    losses: list[float] = []

    def loss_fn(step, rng, generator):
        picked = rng.choice(len(rows), size=config.batch, replace=len(rows) < config.batch)
        mine = picked[rank::world]  # this process's share of the step's batch
        inputs = {key: torch.stack([records[rows[j][0]][key][rows[j][1]] for j in mine])
                  for key in keys if key in records[0]}
        with torch.no_grad():
            target = backbone.call(teacher, inputs)
        n, noise_target = len(mine), None
        if images is not None:  # the image rows join the same forward (one DDP forward per step)
            chosen = rng.choice(len(images[0]), size=config.batch, replace=len(images[0]) < config.batch)
            chosen = chosen[rank::world]
            sample, timestep, noise_target = objective.noised(images[0][chosen], generator)
            inputs = backbone.inputs(torch.cat([inputs[latent], sample]),
                                     torch.cat([inputs[backbone.timestep_input], timestep]),
                                     torch.cat([inputs[backbone.text_input], images[1][chosen]]))
        out = backbone.call(model, inputs)
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
    backbone.replace(pipe, final)
    source.outputs.secondary = rank != 0  # only the main process exports
    source.outputs.records.append({"pass": "distill", "steps": done["step"], "seconds": round(done["seconds"], 1),
                           "processes": world, "recorded_calls": len(records),
                           "images": 0 if images is None else len(images[0]), "stages": sorted(pairs),
                           "loss_first": losses[0] if losses else None,
                           "loss_curve": [round(v, 6) for v in losses[:: max(1, len(losses) // 50)]],
                           "loss_last": float(np.mean(losses[-20:])) if losses else None,
                           "wall_seconds": round(time.perf_counter() - start, 1)})
    return source


register("distill", DistillConfig, apply, check=check, requires=("prune",), before=("quantize", "cache"))
