"""The denoising objective on clean latents: noised at random training timesteps, with the target the model's
prediction type asks for. Clean latents come from an image folder (distillation's optional data loss) or from
the teacher's own x0 estimates (channel pruning's Taylor importance)."""

from __future__ import annotations

from pathlib import Path

import torch

from sdopt.contract.errors import SdoptError
from sdopt.contract.prediction import training_target, x0_and_noise

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
MAX_IMAGES = 100_000
MAX_IMAGE_BYTES = 64 << 20


class Objective:
    def __init__(self, scheduler_config: dict):
        from diffusers import DDPMScheduler

        self.kind = scheduler_config.get("prediction_type", "epsilon")
        if self.kind not in ("epsilon", "v_prediction"):
            raise SdoptError(f"the denoising loss needs an epsilon or v_prediction model, not {self.kind}")
        self.alphas = DDPMScheduler.from_config(scheduler_config).alphas_cumprod.float()

    def x0(self, sample, timestep, prediction):
        """The clean latent a prediction at (sample, timestep) implies."""
        return self.x0_eps(sample, timestep, prediction)[0]

    def x0_eps(self, sample, timestep, prediction):
        """(clean latent, noise) a prediction at (sample, timestep) implies."""
        a = self.alphas[timestep.long()].view(-1, 1, 1, 1)
        return x0_and_noise(self.kind, prediction, sample, a.sqrt(), (1 - a).sqrt())

    def noised(self, x0, generator):
        """(noisy sample, timesteps as floats, target) at random timesteps."""
        t = torch.randint(0, len(self.alphas), (x0.shape[0],), generator=generator)
        a = self.alphas[t].view(-1, 1, 1, 1)
        noise = torch.randn(x0.shape, generator=generator)
        alpha, sigma = a.sqrt(), (1 - a).sqrt()
        return alpha * x0 + sigma * noise, t.float(), training_target(self.kind, x0, noise, alpha, sigma)


def list_images(folder: str) -> list[Path]:
    """The folder's images (sorted), checked before any work."""
    path = Path(folder)
    if not path.is_dir():
        raise SdoptError(f"distill: images folder {folder} does not exist")
    found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not found:
        raise SdoptError(f"distill: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    if len(found) > MAX_IMAGES:
        raise SdoptError(f"distill: {len(found)} images in {folder}, over the limit of {MAX_IMAGES}")
    big = next((p for p in found if p.stat().st_size > MAX_IMAGE_BYTES), None)
    if big is not None:
        raise SdoptError(f"distill: {big} is over {MAX_IMAGE_BYTES >> 20} MiB")
    return found


def image_latents(source, paths: list[Path], size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(VAE latents, text embeddings) of the images at `size` (height, width) pixels, centre-cropped; an image's
    caption is the text file of the same name beside it (`cat.png` -> `cat.txt`), or the empty prompt."""
    import numpy as np
    from PIL import Image
    from tqdm.auto import tqdm

    from sdopt.contract.image_files import read_image
    from sdopt.contract.safe_io import read_text

    pipe, latents, captions = source.pipeline, [], []
    for path in tqdm(paths, desc="encoding distillation images", unit="image"):
        image = _square(Image.fromarray(read_image(path, "distill: image"))).resize((size[1], size[0]), Image.BICUBIC)
        pixels = torch.from_numpy(np.asarray(image, np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        with torch.no_grad():
            latents.append(pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor)
        caption = path.with_suffix(".txt")
        captions.append(read_text(caption, "caption").strip() if caption.is_file() else "")
    with torch.no_grad():
        embeddings = pipe.encode_prompt(captions, "cpu", 1, False)[0]
    return torch.cat(latents), embeddings


def _square(image):
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side))
