"""The denoiser's calls along the source pipeline's own sampling trajectories (what calibration and
distillation record, in the exported graph's input names), and the clean latents the pipeline generates."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import torch

from sdopt.calibration.trajectory import CalibrationConfig, CallTarget, trajectory_settings
from sdopt.contract.cache import cache_root, weights_key
from sdopt.contract.sampling import SCHEDULERS


def calibration_target(source, config: CalibrationConfig) -> CallTarget:
    """The denoiser's calls along text-to-image trajectories with the config's scheduler, steps, guidance and
    size."""
    pipe, backbone = source.pipeline, source.backbone
    settings = sampling_settings(source, config)

    def run(prompt: str, seed: int) -> None:
        with _scheduler(pipe, config.scheduler or source.scheduler):
            pipe(prompt, **settings, generator=torch.Generator().manual_seed(seed), output_type="latent")

    denoiser = backbone.denoiser(pipe)
    return CallTarget(backbone.component, denoiser, backbone.call_inputs, run,
                      weights=(denoiser, *source.text_encoders))


def sampling_settings(source, config: CalibrationConfig) -> dict:
    """The pipeline call's steps, guidance and size for the config's trajectories (by default the model's)."""
    steps, guidance = trajectory_settings(source, config)
    return {"num_inference_steps": steps, "guidance_scale": guidance, "height": config.size or source.height,
            "width": config.size or source.width}


@contextlib.contextmanager
def _scheduler(pipe, name: str):
    import diffusers

    original = pipe.scheduler
    pipe.scheduler = getattr(diffusers, SCHEDULERS[name]).from_config(original.config)
    try:
        yield
    finally:
        pipe.scheduler = original


def record_denoiser_calls(source, config: CalibrationConfig, use_cache: bool = True) -> list[dict]:
    """The denoiser's recorded calls (cached), as the quantize pass calibrates on them."""
    from sdopt.calibration.trajectory import record_calls

    return record_calls(source, config, calibration_target(source, config), use_cache)


def generate_latents(source, config: CalibrationConfig, seeds: int):
    """(clean latents (N, C, h, w) as the denoiser sees them, text embeddings (N, 77, D), the empty prompt's
    (1, 77, D)): the pipeline's own generations over the calibration config's prompts, `seeds` per prompt, at
    the config's steps, guidance, size and sampler (by default the model's). Cached under
    `$SDOPT_CACHE/latents`, keyed by the weights and every setting: distillations of the same model with other
    seeds or step counts generate them once."""
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from sdopt.calibration.trajectory import calibration_prompts
    from sdopt.contract.errors import SdoptError

    pipe = source.pipeline
    settings = sampling_settings(source, config)
    prompts = calibration_prompts(source, config)
    sampler = config.scheduler or source.scheduler
    path = _latents_cache(source, {"prompts": prompts, "seeds": seeds, "seed": config.seed, "sampler": sampler,
                                   **settings})
    if path.is_file():
        try:
            cached = load_file(str(path))
            return cached["latents"], cached["embeddings"], cached["uncond"]
        except Exception as err:  # whatever damaged the cache file, the cure is to generate again
            print(f"note: latents cache {path} is unreadable ({type(err).__name__}); generating again",
                  file=sys.stderr)
    latents, embeddings = [], []
    with torch.no_grad(), _scheduler(pipe, sampler):
        uncond = pipe.encode_prompt([""], "cpu", 1, False)[0]
        for i, prompt in enumerate(tqdm(prompts, desc="generating latents", unit="prompt")):
            generators = [torch.Generator().manual_seed(config.seed + i * seeds + j) for j in range(seeds)]
            out = pipe([prompt] * seeds, **settings, generator=generators, output_type="latent")
            latents.append(out.images)
            embeddings.append(pipe.encode_prompt([prompt] * seeds, "cpu", 1, False)[0])
    latents = torch.cat(latents)
    if not torch.isfinite(latents).all():
        raise SdoptError("the model's generations hold non-finite values")
    embeddings = torch.cat(embeddings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({"latents": latents.contiguous(), "embeddings": embeddings.contiguous(), "uncond": uncond.contiguous()},
              str(tmp))
    os.replace(tmp, path)
    return latents, embeddings, uncond


def _latents_cache(source, settings: dict) -> Path:
    """`$SDOPT_CACHE/latents/KEY.safetensors`, KEY hashing the denoiser's and text encoders' weights, the scheduler
    config and the generation settings."""
    from importlib.metadata import version

    from sdopt.contract.version import __version__

    settings = {**settings, "scheduler_config": dict(source.pipeline.scheduler.config), "sdopt": __version__,
                "diffusers": version("diffusers"), "torch": torch.__version__}
    key = weights_key((source.denoiser, *source.text_encoders), settings)
    return cache_root() / "latents" / f"{key}.safetensors"
