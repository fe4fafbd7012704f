"""Calibration data: the UNet's inputs recorded along the fp32 pipeline's own sampling trajectories.

Each record is one UNet call exactly as the pipeline made it: the classifier-free-guidance batch
(unconditional and conditional halves), the timestep, the text embeddings (and SDXL's added
conditions). Seeded: the same source, prompts and config give the same records.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from sdopt.errors import SdoptError

# Generic prompts for models that bring no prompt set of their own.
GENERIC_PROMPTS = (
    "a photograph of an astronaut riding a horse",
    "a red sports car parked on a city street at night",
    "a bowl of fruit on a wooden table, oil painting",
    "a snowy mountain landscape at sunrise",
    "portrait of an old man with a beard, studio lighting",
    "a cat sleeping on a windowsill, watercolor",
    "a futuristic city skyline with flying cars",
    "a lighthouse on a cliff during a storm",
)

SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler", "dpmpp": "DPMSolverMultistepScheduler"}


@dataclass(frozen=True)
class CalibrationConfig:
    prompts: tuple[str, ...] = ()  # empty: the model's built-in calibration set
    num_prompts: int = 4
    steps: int = 10  # sampling steps of each recorded trajectory; every step is recorded
    guidance: float = 7.5
    size: int = 0  # image height = width in pixels; 0: the model's default size
    scheduler: str = "ddim"
    seed: int = 0

    def __post_init__(self):
        if self.num_prompts < 1:
            raise SdoptError("calibration needs at least one prompt")
        if self.steps < 1:
            raise SdoptError("calibration needs at least one sampling step")
        if self.scheduler not in SCHEDULERS:
            raise SdoptError(f"unknown calibration scheduler '{self.scheduler}'; choose one of "
                             + ", ".join(SCHEDULERS))
        if self.size < 0 or self.size % 8:
            raise SdoptError(f"calibration size {self.size} is not a positive multiple of 8")


def calibration_prompts(source, config: CalibrationConfig) -> list[str]:
    pool = list(config.prompts) or list(builtin_prompts(source))
    return [pool[i % len(pool)] for i in range(config.num_prompts)]


def builtin_prompts(source) -> tuple[str, ...]:
    if source.spec == "tiny-shapes":
        from sdopt.tinyshapes.grammar import calibration_prompts as tiny_prompts

        return tuple(tiny_prompts(64))
    return GENERIC_PROMPTS


def record_unet_inputs(source, config: CalibrationConfig) -> list[dict[str, torch.Tensor]]:
    """Run the fp32 pipeline over the calibration prompts; return every UNet call's inputs."""
    import diffusers

    pipe = source.pipeline
    records: list[dict[str, torch.Tensor]] = []

    def capture(_module, args, kwargs):
        sample, timestep = args[0], args[1]
        record = {
            "sample": sample.detach().clone(),
            "timestep": torch.as_tensor(timestep, dtype=torch.float32).reshape(-1).expand(sample.shape[0]).clone(),
            "encoder_hidden_states": kwargs["encoder_hidden_states"].detach().clone(),
        }
        added = kwargs.get("added_cond_kwargs") or {}
        for key in ("text_embeds", "time_ids"):
            if key in added:
                record[key] = added[key].detach().clone().to(torch.float32)
        records.append(record)

    size_h = config.size or source.height
    size_w = config.size or source.width
    original_scheduler = pipe.scheduler
    pipe.scheduler = getattr(diffusers, SCHEDULERS[config.scheduler]).from_config(original_scheduler.config)
    handle = pipe.unet.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        prompts = calibration_prompts(source, config)
        for i, prompt in enumerate(tqdm(prompts, desc="calibration trajectories", unit="prompt")):
            with torch.no_grad():
                pipe(prompt, num_inference_steps=config.steps, guidance_scale=config.guidance,
                     height=size_h, width=size_w, generator=torch.Generator().manual_seed(config.seed + i),
                     output_type="latent")
    finally:
        handle.remove()
        pipe.scheduler = original_scheduler
    return records
