"""Train a reference latent diffusion model of sdopt.families (tiny-shapes: CPU, about an hour).

    python -m sdopt.reference.train --out DIR [--family tiny-shapes|tiny-scenes|tiny-scenes-sd3]
                                     [--minutes-vae M --minutes-unet M]
                                     [--vae-steps N --unet-steps N] [--seed S] [--resume]

Stages (each checkpointed as safetensors in the work folder, default
``DIR.work``; ``--resume`` continues from the last checkpoint):

1. tokenizer: byte-level CLIP BPE over the grammar's words (:mod:`tokenizer`);
2. data: ``--n-images`` renders of training (caption, seed) pairs of the family's grammar;
3. VAE: AutoencoderKL, images to latents a quarter their size (L1 + tiny KL);
4. latents: posterior mean / std of every image, latent std -> scaling_factor;
5. UNet2DConditionModel + CLIPTextModel trained jointly (v-prediction on SD v1
   betas rescaled to zero terminal SNR, 10 % caption dropout to "", EMA of the
   weights);
6. export: a StableDiffusionPipeline folder (EMA weights, DDIMScheduler with
   the same schedule and "trailing" spacing) written to DIR.

``--family tiny-scenes-sd3`` trains the same scenes in SD3's layout: a
16-channel VAE with a shift factor in stages 3-4, then an SD3Transformer2DModel
and two CLIP encoders with projection by rectified flow in stage 5
(:mod:`sdopt.reference.train_sd3`), exported as a StableDiffusion3Pipeline
folder without T5.

Step counts: ``--vae-steps`` / ``--unet-steps`` fix them; otherwise each
stage times its first steps and sets the count from ``--minutes-*`` (the
chosen count is stored in the work folder and printed, so a run can be
repeated exactly with the explicit flags).  All randomness is drawn from
generators seeded by (seed, stage, step), so a resumed run continues exactly
as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from sdopt.training.loop import EMA, Stage, load_checkpoint, run_stage

LATENT_CHANNELS = 4
#: per family: image size, UNet widths and ResNet blocks per level, samples rendered for training
FAMILY_SETTINGS = {
    "tiny-shapes": dict(image_size=32, unet_channels=(48, 96, 96), layers_per_block=1, n_images=20000, unet_lr=1e-3),
    "tiny-scenes": dict(image_size=32, unet_channels=(64, 128, 128), layers_per_block=1, n_images=40000,
                        unet_lr=1e-3),
    # SD3's layout (sdopt.reference.train_sd3): 16-channel VAE, MMDiT, two CLIPs with projection, flow matching
    "tiny-scenes-sd3": dict(image_size=32, n_images=40000, dit_width=192, dit_heads=6, dit_layers=6,
                            unet_lr=5e-4),
}
#: per family whose denoiser is not a UNet: its layout (train_sd3 for "sd3"), generation defaults
LAYOUTS = {"tiny-scenes-sd3": "sd3"}
SD3_SAMPLING = {"steps": 20, "guidance": 2.0}

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    latent_channels=LATENT_CHANNELS,
    norm_num_groups=16,
    sample_size=32,
)


def vae_config(image_size: int, layout: str = "unet") -> dict:
    """The family's VAE; SD3's layout has 16 latent channels and no quant convs (its shift and scale factors
    are set at export)."""
    if layout == "sd3":
        from sdopt.reference.train_sd3 import LATENT_CHANNELS as channels

        return dict(VAE_CONFIG, sample_size=image_size, latent_channels=channels, use_quant_conv=False,
                    use_post_quant_conv=False)
    return dict(VAE_CONFIG, sample_size=image_size)


TEXT_HIDDEN = 128


def text_config(ids: dict) -> dict:
    return dict(
        vocab_size=ids["vocab_size"],
        hidden_size=TEXT_HIDDEN,
        intermediate_size=256,
        projection_dim=TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        pad_token_id=ids["pad"],
    )


def unet_config(latent_size: int, attention_everywhere: bool = False, channels=(48, 96, 96),
                layers_per_block: int = 1) -> dict:
    levels = len(channels)
    down = ("CrossAttnDownBlock2D",) * levels if attention_everywhere else (
        ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",))
    return dict(
        sample_size=latent_size,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=tuple(channels),
        layers_per_block=layers_per_block,
        down_block_types=down,
        up_block_types=tuple(b.replace("Down", "Up") for b in reversed(down)),
        cross_attention_dim=TEXT_HIDDEN,
        attention_head_dim=4,  # diffusers' legacy name: number of heads
        norm_num_groups=16,
    )


SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    timestep_spacing="leading",
)


def scheduler_config(args) -> dict:
    """SD v1 betas; with --zero-terminal-snr rescaled so that t = 999 is pure noise (Lin et al. 2024,
    "Common diffusion noise schedules and sample steps are flawed"), which needs v-prediction and
    "trailing" spacing.  Without it the last timestep keeps enough of a one-object latent for the
    UNet to read the layout from the initial noise instead of the prompt's position words."""
    config = dict(SCHEDULER_CONFIG, prediction_type=args.prediction_type)
    if args.zero_terminal_snr:
        config.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    return config


# --------------------------------------------------------------------------- utils
def log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- stages
class Renders:
    """Training images with the background each was drawn on (a few distinct ones, stored once)."""

    def __init__(self, family, n: int, seed: int, size: int):
        render = family.module("render")
        pairs = family.module("grammar").sample_pairs(n, seed)
        self.captions = [c for c, _ in pairs]
        self.images = np.empty((n, size, size, 3), dtype=np.uint8)
        self.bg_index = np.empty(n, dtype=np.int64)
        table: dict[bytes, int] = {}
        for i, (c, s) in enumerate(pairs):
            self.images[i] = render.render(c, s, size)
            self.bg_index[i] = table.setdefault(render.background_of(c, size).tobytes(), len(table))
        self.bg_table = np.stack([np.frombuffer(b, np.uint8).reshape(size, size, 3) for b in table])

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx):
        """(images, their backgrounds) as (B, 3, H, W) tensors in [-1, 1]."""
        return to_tensor(self.images[idx]), to_tensor(self.bg_table[self.bg_index[idx]])


def to_tensor(images_u8):
    import torch

    x = torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def recon_loss(rec, x, bg, fg_weight: float):
    """L1 + 0.1 MSE, pixels of the objects (where x differs from its background bg) weighted 1 + fg_weight
    (objects cover ~5-30 % of an image)."""
    w = 1.0 + fg_weight * ((x - bg).abs().amax(dim=1, keepdim=True) > 0.1).to(x.dtype)
    err = (rec - x).abs() + 0.1 * (rec - x).pow(2)
    return (w * err).sum() / (w.sum() * x.shape[1])


def _stage(args, name: str, stage_id: int, lr: float, warmup: int, checkpoint: str, steps, minutes: float,
           log_every: int = 20, repeat: str = "") -> Stage:
    return Stage(name, stage_id, args.seed, lr, warmup, checkpoint, steps=steps, minutes=minutes,
                 deadline_factor=args.deadline_factor, checkpoint_seconds=args.ckpt_seconds, resume=args.resume,
                 log_every=log_every, repeat=repeat)


def _whole_run_limit(args, clock_before: float | None):
    """The denoiser stage's `stop`: the whole training (earlier stages' `clock_before` seconds included) has
    reached --max-total-minutes."""
    def stop(seconds: float) -> bool:
        return bool(args.max_total_minutes) and clock_before is not None and \
            clock_before + seconds > args.max_total_minutes * 60
    return stop


def train_vae(args, work: str, data: Renders, state: dict):
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**vae_config(args.image_size, args.layout))
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    stage = _stage(args, "vae", 1, args.vae_lr, 100, os.path.join(work, "vae.safetensors"), args.vae_steps,
                   args.minutes_vae)
    if state.get("vae_done"):
        load_checkpoint(stage.checkpoint, {"vae": vae}, opt)
        return vae
    shown = {}

    def loss_fn(step, rng, g):
        x, bg = data.batch(rng.integers(0, len(data), size=args.vae_batch))
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g)
        l1 = recon_loss(vae.decode(z).sample, x, bg, args.fg_weight)
        kl = post.kl().mean() / post.mean[0].numel()
        shown.update(l1=l1, kl=kl)
        return l1 + args.vae_kl * kl, lambda: {"l1": f"{shown['l1'].item():.4f}", "kl": f"{shown['kl'].item():.2f}"}

    vae.train()
    done = run_stage(stage, {"vae": vae}, opt, list(vae.parameters()), loss_fn, total=state.get("vae_total"), log=log)
    state.update(vae_done=True, vae_total=done["total"], vae_steps_run=done["step"], vae_seconds=done["seconds"])
    return vae


def train_decoder(args, work: str, vae, data: Renders, latent_mean, latent_std, state: dict):
    """Fine-tune the VAE decoder on the cached latents (encoder frozen: the latent space the UNet
    learns does not move, so this is a separate, cheap stage)."""
    import torch

    dec_params = list(vae.decoder.parameters()) + (list(vae.post_quant_conv.parameters())
                                                    if vae.post_quant_conv is not None else [])
    opt = torch.optim.AdamW(dec_params, lr=args.decoder_lr, weight_decay=0.0)
    stage = _stage(args, "decoder", 3, args.decoder_lr, 50, os.path.join(work, "decoder.safetensors"),
                   args.decoder_steps, args.minutes_decoder)
    if state.get("decoder_done"):
        load_checkpoint(stage.checkpoint, {"vae": vae}, opt)
        return vae
    if args.minutes_decoder <= 0:
        return vae
    shown = {}

    def loss_fn(step, rng, g):
        idx = rng.integers(0, len(data), size=args.vae_batch)
        (x, bg), it = data.batch(idx), torch.from_numpy(idx)
        z = latent_mean[it] + latent_std[it] * torch.randn(latent_mean[it].shape, generator=g)
        shown["loss"] = recon_loss(vae.decode(z).sample, x, bg, args.fg_weight)
        return shown["loss"], lambda: {"loss": f"{shown['loss'].item():.4f}"}

    vae.train()
    done = run_stage(stage, {"vae": vae}, opt, dec_params, loss_fn, total=state.get("decoder_total"), log=log)
    state.update(decoder_done=True, decoder_total=done["total"], decoder_steps_run=done["step"],
                 decoder_seconds=done["seconds"])
    return vae


def reconstruction_alignment(vae, family, image_size: int, n: int = 256) -> dict:
    """Detector alignment of VAE reconstructions of held-out renders: the ceiling for the pipeline."""
    import torch

    pairs = family.heldout_pairs(n)
    images = family.module("render").render_batch(pairs, image_size)
    vae.eval()
    with torch.no_grad():
        rec = vae.decode(vae.encode(to_tensor(images)).latent_dist.mean).sample
    u8 = ((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    res = family.alignment([c for c, _ in pairs], u8)
    res["mae"] = float(np.abs(u8.astype(np.float64) - images).mean())
    return res


def encode_latents(vae, images: np.ndarray, batch: int = 500):
    import torch

    vae.eval()
    means, stds = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            post = vae.encode(to_tensor(images[i:i + batch])).latent_dist
            means.append(post.mean)
            stds.append(post.std)
    return torch.cat(means), torch.cat(stds)


class CaptionBatches:
    """The token ids of every distinct caption (and of the empty one) computed once; training batches drawn from
    them with caption dropout."""

    def __init__(self, captions, tokenizer):
        distinct = sorted(set(captions))
        index = {c: i for i, c in enumerate(distinct)}
        self.ids = tokenizer(distinct + [""], padding="max_length", max_length=tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        self.rows, self.empty = np.array([index[c] for c in captions]), len(distinct)

    def draw(self, rng, batch: int, dropout: float):
        """(training indices, their captions' token ids, a `dropout` share replaced by the empty caption's)."""
        import torch

        idx = rng.integers(0, len(self.rows), size=batch)
        rows = self.rows[idx].copy()
        rows[rng.random(batch) < dropout] = self.empty
        return idx, self.ids[torch.from_numpy(rows)]


def train_unet(args, work: str, captions, latent_mean, latent_std, scaling: float, tok_ids: dict, tokenizer, state,
               clock_before: float | None = None):
    """UNet + text encoder from scratch, uniform timesteps; v-prediction with the plain v loss (default), or
    epsilon with min-SNR-5 weights; an EMA of both."""
    import torch
    from diffusers import DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(args.seed + 1)
    unet = UNet2DConditionModel(**unet_config(latent_mean.shape[-1], args.attention_everywhere, args.unet_channels,
                                              args.layers_per_block))
    text = CLIPTextModel(CLIPTextConfig(**text_config(tok_ids)))
    ema_unet, ema_text = EMA(unet), EMA(text)
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    sched = DDPMScheduler(**{k: v for k, v in scheduler_config(args).items() if k != "set_alpha_to_one"})
    v_prediction = args.prediction_type == "v_prediction"
    snr = sched.alphas_cumprod / (1 - sched.alphas_cumprod)
    modules = {"unet": unet, "text": text, "ema_unet": ema_unet.average, "ema_text": ema_text.average}
    stage = _stage(args, "unet", 2, args.unet_lr, 200, os.path.join(work, "unet.safetensors"), args.unet_steps,
                   args.minutes_unet, log_every=10)
    if state.get("unet_done"):
        load_checkpoint(stage.checkpoint, modules, opt)
        return ema_unet.average, ema_text.average

    batches = CaptionBatches(captions, tokenizer)
    running = {}

    def loss_fn(step, rng, g):
        idx, ids = batches.draw(rng, args.unet_batch, args.caption_dropout)
        idx_t = torch.from_numpy(idx)
        z0 = (latent_mean[idx_t] + latent_std[idx_t] * torch.randn(latent_mean[idx_t].shape, generator=g)) * scaling
        noise = torch.randn(z0.shape, generator=g)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.unet_batch,), generator=g)
        emb = text(ids)[0]
        pred = unet(sched.add_noise(z0, noise, t), t, encoder_hidden_states=emb).sample
        if v_prediction:
            # plain v loss = x0 error weighted SNR + 1: full weight on the layout at high noise
            target, w = sched.get_velocity(z0, noise, t), torch.ones(args.unet_batch)
        else:
            target, w = noise, torch.clamp(snr[t], max=args.snr_gamma) / snr[t]  # min-SNR weighting (epsilon)
        loss = (w * (pred - target).pow(2).mean(dim=(1, 2, 3))).mean()
        running["loss"] = loss.item() if "loss" not in running else 0.98 * running["loss"] + 0.02 * loss.item()
        return loss, lambda: {"loss": f"{running['loss']:.4f}"}

    def update_ema(step):
        decay = min(args.ema, (1 + step) / (10 + step))
        ema_unet.update(decay)
        ema_text.update(decay)

    unet.train()
    text.train()
    done = run_stage(stage, modules, opt, params, loss_fn, total=state.get("unet_total"), after_step=update_ema,
                     stop=_whole_run_limit(args, clock_before), log=log)
    state.update(unet_done=True, unet_total=done["total"], unet_steps_run=done["step"], unet_seconds=done["seconds"])
    return ema_unet.average, ema_text.average


def train_transformer(args, work: str, captions, latent_mean, latent_std, scaling: float, shift: float, tok_ids: dict,
                      tokenizer, state, clock_before: float | None = None):
    """SD3's layout: the transformer and both CLIPs from scratch with rectified flow (sdopt.reference.train_sd3);
    an EMA of all three."""
    import torch

    from sdopt.reference import train_sd3

    transformer, encoders = train_sd3.new_models(args, latent_mean.shape[-1], tok_ids)
    train_sd3.use_training_attention(transformer, True)
    emas = [EMA(m) for m in (transformer, *encoders)]
    params = [p for m in (transformer, *encoders) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.01)
    modules = {"transformer": transformer, "text": encoders[0], "text_2": encoders[1],
               "ema_transformer": emas[0].average, "ema_text": emas[1].average, "ema_text_2": emas[2].average}
    stage = _stage(args, "transformer", 2, args.unet_lr, 200, os.path.join(work, "transformer.safetensors"),
                   args.unet_steps, args.minutes_unet, log_every=10, repeat="--unet-steps {}")
    averages = (emas[0].average, [e.average for e in emas[1:]])
    if state.get("unet_done"):
        load_checkpoint(stage.checkpoint, modules, opt)
        return averages

    batches = CaptionBatches(captions, tokenizer)
    running = {}

    def loss_fn(step, rng, g):
        idx, ids = batches.draw(rng, args.unet_batch, args.caption_dropout)
        it = torch.from_numpy(idx)
        z = latent_mean[it] + latent_std[it] * torch.randn(latent_mean[it].shape, generator=g)
        loss = train_sd3.flow_loss(transformer, encoders, (z - shift) * scaling, ids, g)
        running["loss"] = loss.item() if "loss" not in running else 0.98 * running["loss"] + 0.02 * loss.item()
        return loss, lambda: {"loss": f"{running['loss']:.4f}"}

    def update_ema(step):
        decay = min(args.ema, (1 + step) / (10 + step))
        for ema in emas:
            ema.update(decay)

    for m in (transformer, *encoders):
        m.train()
    done = run_stage(stage, modules, opt, params, loss_fn, total=state.get("unet_total"), after_step=update_ema,
                     stop=_whole_run_limit(args, clock_before), log=log)
    state.update(unet_done=True, unet_total=done["total"], unet_steps_run=done["step"], unet_seconds=done["seconds"])
    diff = train_sd3.check_absent_token_form(averages[0], averages[1], batches.ids[:4], latent_mean.shape[-1])
    state["absent_token_form_max_diff"] = diff
    log(f"one weighted token for the 256 absent T5 tokens: largest output difference {diff:.2e}")
    return averages


def _own_output(folder: str) -> bool:
    """A folder this trainer exported (a family's marker file and pipeline index, nothing else at the top level)."""
    from sdopt.reference.families import family_of_folder
    from sdopt.reference.train_sd3 import PIPELINE_PARTS

    family = family_of_folder(Path(folder)) if os.path.isdir(folder) else None
    expected = {"model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae"} | PIPELINE_PARTS
    return family is not None and set(os.listdir(folder)) <= expected | {family.marker}


def export_pipeline(out: str, family, save) -> None:
    """Write the pipeline folder (`save(folder)`, then the family's marker, weights in float16) to a staging
    folder beside `out`, then put it in place of `out` (checked at the start to be empty, absent or this
    trainer's own output)."""
    from sdopt.contract.safe_io import commit_folder, staging_folder

    staging = staging_folder(os.path.dirname(out), os.path.basename(out))
    try:
        save(str(staging))
        write_marker(str(staging), family)
        store_half(str(staging))
        commit_folder(staging, Path(out))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _save_pipeline(out: str, vae, unet, text, tok_dir: str, scaling: float, scheduler: dict) -> None:
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    vae.register_to_config(scaling_factor=float(scaling))
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    pipe = StableDiffusionPipeline(
        vae=vae.eval(), text_encoder=text.eval(), tokenizer=tokenizer, unet=unet.eval(),
        scheduler=DDIMScheduler(**scheduler), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(out, safe_serialization=True)
    # ship the tokenizer files exactly as built (vocab.json/merges.txt included)
    shutil.rmtree(os.path.join(out, "tokenizer"))
    shutil.copytree(tok_dir, os.path.join(out, "tokenizer"))
    with open(os.path.join(out, "model_index.json")) as f:
        index = json.load(f)
    index["safety_checker"] = [None, None]
    index["feature_extractor"] = [None, None]
    index["requires_safety_checker"] = False
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)


def write_marker(folder: str, family) -> None:
    """Tells sdopt which reference family the folder is: its held-out set, detector and defaults apply."""
    defaults = family.module("evaluate")
    sampling = SD3_SAMPLING if family.name in LAYOUTS else {"steps": defaults.DEFAULT_STEPS,
                                                            "guidance": defaults.DEFAULT_GUIDANCE}
    with open(os.path.join(folder, family.marker), "w") as f:
        json.dump({"family": family.name, **sampling}, f, indent=2)
        f.write("\n")


def store_half(folder: str) -> None:
    """Store every weight file as float16 (diffusers loads them into float32 models as usual): halves
    the shipped size; the model is trained, evaluated and compressed in float32. Text encoder keys get the
    `text_model.` prefix that transformers 4.x needs (5.x saves without it, and reads both)."""
    import torch
    from safetensors.torch import load_file, save_file

    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".safetensors"):
                path = os.path.join(root, name)
                prefix = "text_model." if os.path.basename(root).startswith("text_encoder") else ""
                keep = (prefix, "text_projection.")  # CLIPTextModelWithProjection's projection sits outside
                tensors = {(k if k.startswith(keep) else prefix + k): v.to(torch.float16) if v.is_floating_point()
                           else v for k, v in load_file(path).items()}
                save_file(tensors, path + ".tmp", metadata={"format": "pt"})
                os.replace(path + ".tmp", path)


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m sdopt.reference.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output StableDiffusionPipeline folder")
    p.add_argument("--family", choices=tuple(FAMILY_SETTINGS), default="tiny-shapes",
                   help="which reference family (sdopt.reference.families) to train")
    p.add_argument("--image-size", type=int, default=None, help="pixels (default: the family's)")
    p.add_argument("--unet-channels", type=lambda v: tuple(int(c) for c in v.split(",")), default=None,
                   metavar="C1,C2,...", help="UNet widths per level (default: the family's)")
    p.add_argument("--layers-per-block", type=int, default=None, help="UNet ResNet blocks per level")
    p.add_argument("--work-dir", default=None, help="checkpoints and caches (default: OUT.work)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the work folder's checkpoints")
    p.add_argument("--minutes-vae", type=float, default=10.0)
    p.add_argument("--minutes-decoder", type=float, default=4.0)
    p.add_argument("--minutes-unet", type=float, default=40.0)
    p.add_argument("--max-total-minutes", type=float, default=59.0,
                   help="the UNet stage stops anyway when the whole training reaches this (0: no limit)")
    p.add_argument("--vae-steps", type=int, default=None, help="fixed VAE step count (overrides --minutes-vae)")
    p.add_argument("--decoder-steps", type=int, default=None, help="fixed decoder step count")
    p.add_argument("--unet-steps", type=int, default=None, help="fixed UNet step count (overrides --minutes-unet)")
    p.add_argument("--deadline-factor", type=float, default=1.1,
                   help="stop a timed stage anyway after minutes x this factor (guards a shared, slower "
                        "machine); stages given an explicit step count always run it in full")
    p.add_argument("--n-images", type=int, default=None, help="training renders (default: the family's)")
    p.add_argument("--vae-batch", type=int, default=16)
    p.add_argument("--vae-lr", type=float, default=2e-3)
    p.add_argument("--decoder-lr", type=float, default=1e-3)
    p.add_argument("--fg-weight", type=float, default=10.0, help="extra reconstruction weight of object pixels")
    p.add_argument("--vae-kl", type=float, default=1e-4, help="KL weight (per latent element)")
    p.add_argument("--unet-batch", type=int, default=32)
    p.add_argument("--unet-lr", type=float, default=None, help="denoiser learning rate (default: the family's)")
    p.add_argument("--caption-dropout", type=float, default=0.1)
    p.add_argument("--snr-gamma", type=float, default=5.0, help="min-SNR weighting (epsilon objective)")
    p.add_argument("--attention-everywhere", action=argparse.BooleanOptionalAction, default=True,
                   help="cross-attention at the lowest (2x2) level too: where the UNet can tell the four "
                        "corners apart, so the only place it learns the position words")
    p.add_argument("--prediction-type", choices=("epsilon", "v_prediction"), default="v_prediction")
    p.add_argument("--zero-terminal-snr", action=argparse.BooleanOptionalAction, default=True,
                   help="rescale the betas so that the last timestep is pure noise (see scheduler_config)")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--dit-width", type=int, default=None, help="SD3 layout: transformer width")
    p.add_argument("--dit-heads", type=int, default=None, help="SD3 layout: attention heads")
    p.add_argument("--dit-layers", type=int, default=None, help="SD3 layout: transformer blocks")
    p.add_argument("--flow-shift", type=float, default=3.0,
                   help="SD3 layout: the shipped flow-matching scheduler's sigma shift")
    p.add_argument("--ckpt-seconds", type=float, default=120.0, help="checkpoint interval")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    for key, value in FAMILY_SETTINGS[args.family].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.layout = LAYOUTS.get(args.family, "unet")
    from sdopt.reference.tinyshapes.tokenizer import MODEL_MAX_LENGTH
    from sdopt.reference.train_sd3 import TEXT_MAX_LENGTH

    args.text_max_length = TEXT_MAX_LENGTH if args.layout == "sd3" else MODEL_MAX_LENGTH
    return args


def _work_state(args, work: str) -> dict | None:
    """The training state of the work folder: resumed (same seed and family) or started afresh; None (after
    one line on stderr) where the folder holds another training."""
    os.makedirs(work, exist_ok=True)
    state_path = os.path.join(work, "state.json")
    state: dict = {}
    if args.resume and os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
        if state.get("seed") != args.seed:
            log(f"error: the work folder was trained with seed {state.get('seed')}")
            return None
        if state.get("args", {}).get("family", "tiny-shapes") != args.family:
            log(f"error: the work folder holds a {state['args'].get('family', 'tiny-shapes')} training")
            return None
    elif os.path.exists(state_path):
        log(f"starting afresh in {work} (use --resume to continue)")
        for name in ("vae.safetensors", "unet.safetensors", "transformer.safetensors", "latents.safetensors"):
            if os.path.exists(os.path.join(work, name)):
                os.remove(os.path.join(work, name))
    state["seed"] = args.seed
    state.setdefault("args", {k: v for k, v in vars(args).items() if k not in ("resume",)})
    return state


def _latent_statistics(args, work: str, vae, data, state: dict):
    """(latent means, latent standard deviations, scaling factor) of the renders under the trained VAE
    (cached in the work folder); the state records the latents' statistics."""
    import torch
    from safetensors.torch import load_file, save_file

    lat_path = os.path.join(work, "latents.safetensors")
    if args.resume and os.path.exists(lat_path) and state.get("latents_done"):
        lat = load_file(lat_path)
        latent_mean, latent_std = lat["mean"], lat["std"]
    else:
        t = time.time()
        latent_mean, latent_std = encode_latents(vae, data.images)
        save_file({"mean": latent_mean.contiguous(), "std": latent_std.contiguous()}, lat_path)
        log(f"latents: {tuple(latent_mean.shape)} in {time.time() - t:.1f}s")
    g = torch.Generator().manual_seed(args.seed)
    sample = latent_mean + latent_std * torch.randn(latent_mean.shape, generator=g)
    latent_sd = float(sample.std())
    scaling = 1.0 / latent_sd  # SD's convention (zero terminal SNR, not a latent rescale, frees the layout)
    # SD3's VAE also carries a shift_factor (the latents' mean); SD 1.x latents are only scaled
    shift = float(sample.mean()) if args.layout == "sd3" else 0.0
    if args.layout == "sd3":
        latent_sd = float((sample - shift).std())
        scaling = 1.0 / latent_sd
    state.update(latents_done=True, latent_std=latent_sd, latent_mean=float(sample.mean()), scaling_factor=scaling,
                 shift_factor=shift)
    log(f"latents: std {latent_sd:.4f} mean {float(sample.mean()):.4f} -> scaling_factor {scaling:.4f}, "
        f"shift_factor {shift:.4f}")
    del sample
    return latent_mean, latent_std, scaling, shift


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from sdopt.reference.families import FAMILIES
    from sdopt.reference.tinyshapes.tokenizer import write_tokenizer

    family = FAMILIES[args.family]
    if args.threads:
        torch.set_num_threads(args.threads)
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not _own_output(out):
        log(f"error: --out {out} exists and is not a model this trainer wrote; not replaced (choose another --out)")
        return 2
    work = os.path.abspath(args.work_dir or out.rstrip("/") + ".work")
    state = _work_state(args, work)
    if state is None:
        return 2
    state_path = os.path.join(work, "state.json")

    def save_state():
        with open(state_path + ".tmp", "w") as f:
            json.dump(state, f, indent=2)
        os.replace(state_path + ".tmp", state_path)

    t_all = time.time()
    tok_dir = os.path.join(work, "tokenizer")
    tok_ids = write_tokenizer(tok_dir, family.module("grammar").vocabulary_words(), args.text_max_length)
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    log(f"tokenizer: {tok_ids['vocab_size']} tokens; threads {torch.get_num_threads()}")

    t = time.time()
    data = Renders(family, args.n_images, args.seed, args.image_size)
    log(f"data: {len(data)} {family.name} renders of {args.image_size}x{args.image_size} in {time.time() - t:.1f}s")

    vae = train_vae(args, work, data, state)
    save_state()

    latent_mean, latent_std, scaling, shift = _latent_statistics(args, work, vae, data, state)
    save_state()

    vae = train_decoder(args, work, vae, data, latent_mean, latent_std, state)
    save_state()
    if "recon" not in state:
        rec = reconstruction_alignment(vae, family, args.image_size)
        state["recon"] = rec
        log(f"vae reconstruction of held-out renders: alignment {rec['alignment']:.4f} "
            f"{rec['per_attribute']} mae {rec['mae']:.2f}")
    if state.get("seconds_before_unet") is None:
        # whole-run clock before the UNet stage (a resumed run counts the earlier stages' own time
        # plus this run's overhead)
        this_run = time.time() - t_all
        earlier = state.get("vae_seconds", 0.0) + state.get("decoder_seconds", 0.0)
        state["seconds_before_unet"] = this_run if not args.resume else max(this_run, earlier + 60.0)
    save_state()

    if args.layout == "sd3":
        from sdopt.reference import train_sd3

        transformer, encoders = train_transformer(args, work, data.captions, latent_mean, latent_std, scaling, shift,
                                                  tok_ids, tokenizer, state, clock_before=state["seconds_before_unet"])
        save_state()
        export_pipeline(out, family, lambda folder: train_sd3.save_pipeline(
            folder, vae, transformer, encoders, tok_dir, scaling, shift, args.flow_shift))
        parts = (("transformer", transformer), ("vae", vae), ("text_encoder", encoders[0]),
                 ("text_encoder_2", encoders[1]))
    else:
        unet, text = train_unet(args, work, data.captions, latent_mean, latent_std, scaling, tok_ids, tokenizer, state,
                                clock_before=state["seconds_before_unet"])
        save_state()
        export_pipeline(out, family, lambda folder: _save_pipeline(folder, vae, unet, text, tok_dir, scaling,
                                                                   scheduler_config(args)))
        parts = (("unet", unet), ("vae", vae), ("text_encoder", text))
    state["export_dir"] = out
    state["total_seconds_this_run"] = time.time() - t_all
    save_state()
    n_params = {name: sum(p.numel() for p in m.parameters()) for name, m in parts}
    log(f"params {n_params}; exported to {out} in {time.time() - t_all:.0f}s this run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
