"""A tiny VAE decoder (TAESD's design: a few residual conv blocks, nearest upsampling) distilled from the
model's own decoder on latents of the model's own generations: no image dataset.

The tiny decoder is diffusers' `DecoderTiny`, ~1.2 M parameters at 64 channels for SD's 4-channel latents;
its width defaults to min(64, twice the full decoder's narrowest block), its upsamplings follow the VAE's
scale factor. It reads the latents the runtime hands the decoder (VAE space, unscaled) times the VAE's
scaling factor, and learns the full decoder's image (L1 + MSE + L1 of the image gradients). A few hundred
generations are too few for a decoder to generalise from (it learns them by heart), so each step decodes new
inputs with the full decoder: crops of the generations, flipped, turned and cut-and-pasted into each other.
A share of the generations is held out; the record gives the tiny decoder's PSNR on them.
It becomes the artifact's `vae_decoder`; with `keep_full` the full decoder stays as `vae_decoder_full`
(`sdopt run --vae full`). Training is the shared loop's (seeded, checkpoints in `$SDOPT_CACHE/tiny-vae`,
resume, progress).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from sdopt.calibration.trajectory import CalibrationConfig, check_calibration
from sdopt.compress.registry import register
from sdopt.compress.trajectories import generate_latents
from sdopt.contract.errors import SdoptError
from sdopt.contract.graphs import IMAGE_IO, LATENT_INPUT, VAE_DECODER, VAE_DECODER_FULL, GraphSpec
from sdopt.training.loop import Stage, check_budget, checkpoint_path, fixed_steps, run_stage

DECODE_BATCH = 4  # latents per full-decoder call while the targets are made
DEFAULT_TRAIN_STEPS = 6000


@dataclass(frozen=True)
class TinyVaeConfig:
    channels: int = 0  # 0: min(64, twice the full decoder's narrowest block)
    blocks: int = 3  # residual blocks per resolution (the last resolution has one)
    train_steps: int | None = None  # None: DEFAULT_TRAIN_STEPS (unless a time budget is given)
    minutes: float | None = None  # a time budget instead: the step count is set after timing the first steps
    batch: int = 8
    crop: int = 32  # latent pixels per side of the training crops (the full decoder runs on each step's crops)
    augment: bool = True  # flips, quarter turns and cut-and-paste of the crops
    lr: float = 1e-3
    keep_full: bool = True  # the full decoder stays in the artifact as vae_decoder_full
    seeds: int = 4  # generations per prompt (the latents it learns on)
    seed: int = 0
    resume: bool = True
    calibration: CalibrationConfig = field(default_factory=lambda: CalibrationConfig(num_prompts=64))

    def __post_init__(self):
        if not 0 <= self.channels <= 512 or not 1 <= self.blocks <= 8:
            raise SdoptError("tiny-vae: channels must lie in [0, 512] (0: automatic), blocks in [1, 8]")
        check_budget("tiny-vae", self.train_steps, self.minutes)
        if not 1 <= self.batch <= 4096 or not 0 < self.lr < 1 or not 1 <= self.seeds <= 64:
            raise SdoptError("tiny-vae: batch in [1, 4096], lr in (0, 1), seeds in [1, 64]")
        if not 4 <= self.crop <= 1024:
            raise SdoptError(f"tiny-vae: crop {self.crop} must lie in [4, 1024] latent pixels")


class TinyDecoder(torch.nn.Module):
    """(B, C, h, w) VAE latents -> (B, 3, H, W) image in [-1, 1], as the full decoder's graph."""

    def __init__(self, latent_channels: int, scale_factor: int, channels: int, blocks: int, scaling: float):
        from diffusers.models.autoencoders.vae import DecoderTiny

        super().__init__()
        levels = int(round(np.log2(scale_factor))) + 1
        self.decoder = DecoderTiny(latent_channels, 3, (blocks,) * (levels - 1) + (1,), (channels,) * levels, 2,
                                   "relu", "nearest")
        self.scaling = float(scaling)

    def forward(self, latent):
        return self.decoder(latent * self.scaling)


class _FullDecoder(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent):
        return self.vae.decode(latent, return_dict=False)[0]


def tiny_decoder(vae, config: TinyVaeConfig) -> TinyDecoder:
    vae_config = vae.config
    channels = config.channels or min(64, 2 * min(vae_config.block_out_channels))
    scale_factor = 2 ** (len(vae_config.block_out_channels) - 1)
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        return TinyDecoder(vae_config.latent_channels, scale_factor, channels, config.blocks,
                           vae_config.scaling_factor)


def check(source, config: TinyVaeConfig) -> None:
    if getattr(source.pipeline.vae.config, "shift_factor", None):
        raise SdoptError("tiny-vae: VAEs with a shift factor (SD3, Flux) are not supported")
    check_calibration(source, config.calibration)


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """The full decoder's images of (VAE-space) latents, in [-1, 1]."""
    with torch.no_grad():
        return torch.cat([vae.decode(latents[i:i + DECODE_BATCH], return_dict=False)[0]
                          for i in range(0, len(latents), DECODE_BATCH)]).clamp(-1, 1)


def training_inputs(latents: torch.Tensor, config: TinyVaeConfig, rng) -> torch.Tensor:
    """A batch of crops of the latents; with `augment`, flipped, turned and cut-and-pasted into each other."""
    h, w = min(config.crop, latents.shape[-2]), min(config.crop, latents.shape[-1])

    def crops(count):
        out = []
        for index in rng.integers(len(latents), size=count):
            top, left = rng.integers(latents.shape[-2] - h + 1), rng.integers(latents.shape[-1] - w + 1)
            out.append(latents[index, :, top:top + h, left:left + w])
        return torch.stack(out)

    batch = crops(config.batch)
    if not config.augment:
        return batch
    if rng.random() < 0.5:
        batch = batch.flip(-1)
    if rng.random() < 0.5:
        batch = batch.flip(-2)
    if h == w and rng.random() < 0.5:
        batch = batch.rot90(1, (-2, -1))
    pasted = crops(config.batch)
    for i in np.flatnonzero(rng.random(config.batch) < 0.5):
        ph, pw = rng.integers(1, h + 1), rng.integers(1, w + 1)
        top, left = rng.integers(h - ph + 1), rng.integers(w - pw + 1)
        batch[i, :, top:top + ph, left:left + pw] = pasted[i, :, top:top + ph, left:left + pw]
    return batch


def image_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 + MSE of the pixels, plus L1 of the horizontal and vertical differences (the edges)."""
    f = torch.nn.functional
    edges = sum(f.l1_loss(out.diff(dim=axis), target.diff(dim=axis)) for axis in (-1, -2))
    return f.l1_loss(out, target) + f.mse_loss(out, target) + edges


def psnr_db(images: torch.Tensor, targets: torch.Tensor) -> float:
    return float(10 * torch.log10(4 / torch.mean((images.clamp(-1, 1) - targets) ** 2)))


def apply(source, config: TinyVaeConfig):
    pipe, start = source.pipeline, time.perf_counter()
    vae = pipe.vae.eval().requires_grad_(False)
    scaled = generate_latents(source, config.calibration, config.seeds)[0]
    latents = scaled / vae.config.scaling_factor  # what the runtime hands the decoder
    held = max(1, len(latents) // 16) if len(latents) > 1 else 0  # the last prompts' generations
    train, heldout = latents[:len(latents) - held], latents[len(latents) - held:]
    student = tiny_decoder(vae, config).train()
    params = list(student.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    losses: list[float] = []

    def loss_fn(step, rng, generator):
        x = training_inputs(train, config, rng)
        loss = image_loss(student(x), decode(vae, x))
        if not torch.isfinite(loss):
            raise SdoptError(f"tiny-vae: the loss became non-finite at step {step}")
        losses.append(loss.item())
        return loss, lambda: {"loss": f"{np.mean(losses[-20:]):.4g}"}

    steps = fixed_steps(config.train_steps, config.minutes, DEFAULT_TRAIN_STEPS)
    settings = {k: v for k, v in asdict(config).items() if k not in ("resume", "minutes", "keep_full")}
    settings["train_steps"] = steps
    checkpoint = checkpoint_path("tiny-vae", (vae,), {**settings, "spec": source.spec, "latents": _digest(latents)})
    stage = Stage("tiny-vae", 47, config.seed, config.lr, min(100, (steps or 1000) // 10 + 1),
                  str(checkpoint), steps=steps, minutes=config.minutes or 0.0, resume=config.resume,
                  checkpoint_seconds=60, repeat="--set tiny-vae.train_steps={}")
    done = run_stage(stage, {"decoder": student}, optimizer, params, loss_fn,
                     log=lambda message: print(message, file=sys.stderr))
    student.eval().requires_grad_(False)
    measured = heldout if held else train
    with torch.no_grad():
        psnr = np.mean([psnr_db(student(measured[i:i + DECODE_BATCH]), decode(vae, measured[i:i + DECODE_BATCH]))
                        for i in range(0, len(measured), DECODE_BATCH)])
    example = latents[:1, :, :8, :8].clone()
    axes = {0: "batch", 2: "height", 3: "width"}
    source.outputs.graphs.append(GraphSpec("vae_decoder", VAE_DECODER, "vae_decoder_tiny", student, {LATENT_INPUT[0]: example},
                                   [IMAGE_IO[0]], {LATENT_INPUT[0]: axes, IMAGE_IO[0]: axes}, scope="/decoder/"))
    if config.keep_full:
        source.outputs.graphs.append(GraphSpec("vae_decoder_full", VAE_DECODER_FULL, "vae", _FullDecoder(vae),
                                       {LATENT_INPUT[0]: example}, [IMAGE_IO[0]],
                                       {LATENT_INPUT[0]: axes, IMAGE_IO[0]: axes},
                                       scope="/vae/"))
    source.outputs.records.append({"pass": "tiny-vae", "parameters": sum(p.numel() for p in params),
                           "full_decoder_parameters": sum(p.numel() for name, p in vae.named_parameters()
                                                          if name.startswith(("decoder.", "post_quant_conv."))),
                           "latents": len(train), "heldout_latents": held, "train_steps": done["step"],
                           "seconds": round(done["seconds"], 1),
                           ("heldout_psnr_db" if held else "train_psnr_db"): round(float(psnr), 2),
                           "loss_first": losses[0] if losses else None,
                           "loss_last": float(np.mean(losses[-20:])) if losses else None,
                           "wall_seconds": round(time.perf_counter() - start, 1)})
    return source


def _digest(tensor: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()[:16]


register("tiny-vae", TinyVaeConfig, apply, check=check)
